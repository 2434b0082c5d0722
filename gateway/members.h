/*
 * members.h: the cluster members the gateway sends requests to.
 *
 * Seeds come from `cluster.members`; the full list from GET /1.0/cluster/members (re-read periodically). Each
 * member is probed with GET /1.0 every `cluster.health_interval`. A member that refuses a connection, or leaves
 * PROBE_TIMEOUTS probes in a row unanswered, is skipped until a probe succeeds again (a single slow answer may be
 * the gateway's own loop being busy, e.g. reading a large upload). When no member is healthy, all are tried. Members are never
 * freed (a removed one is only marked absent), so a pointer to one stays valid for the life of the process.
 */
#ifndef GW_MEMBERS_H
#define GW_MEMBERS_H

#include <sys/socket.h>
#include <h2o.h>
#include "backend.h"
#include "config.h"
#include "identity.h"

typedef struct st_gw_member_t {
    char *name;                   /* cluster member name ("node1"); the URL until discovery names it */
    char *url;                    /* "https://host:port" (no trailing slash) */
    h2o_iovec_t authority;        /* "host:port": the Host the proxy sends */
    struct sockaddr_storage addr; /* where to connect */
    socklen_t addrlen;            /* its length */
    int present;                  /* still listed by the cluster (or a seed of a non-clustered server) */
    int online;                   /* the cluster reports it Online */
    int healthy;                  /* answered our last probe (optimistic until the first probe) */
    unsigned timeouts;            /* probes in a row that got no answer in time */
    uint64_t last_ok_at;          /* h2o_now() of the last good probe; 0 = never */
    gw_call_t *probe;             /* probe in flight, or NULL */
    json_t *extensions;           /* api_extensions of its last GET /1.0 answer (NULL: none yet) */
    int probed;                   /* a probe has ended (answered or failed) at least once */
    size_t slot;                  /* its place in the member list: the index of its pool in each identity */
} gw_member_t;

/* sets up the seeds and starts discovery and health checks */
const char *gw_members_init(h2o_context_t *ctx, const gw_config_t *conf);
/* the next usable member at list position >= *cursor, advancing *cursor past it; NULL when none is left */
gw_member_t *gw_members_next(size_t *cursor);
/* one member lacks API extension `name`, and every healthy member has answered its GET /1.0 probe (0 while a healthy
 * one has not: the gateway does not know, and must not do for a member what it may do natively). Asked on every
 * request: the answer is computed once, and kept until a member is added or its presence, health or extension list
 * changes */
int gw_members_lack_extension(const char *name);
/* the member list was read once and every member probed once: the gateway knows the cluster (ready to serve) */
int gw_members_settled(void);
/* calls `cb` for every member the cluster lists */
void gw_members_foreach(void (*cb)(const gw_member_t *m, void *data), void *data);
/* a number that changes whenever something changes that the choice of a member (gw_members_next, gw_members_usable) or
 * gw_members_lack_extension depends on: a member added, renamed, gone or back, online or not, healthy or not, its API
 * extensions. What was decided from the members under one number holds while the number stays (api10.c's cache) */
uint64_t gw_members_generation(void);
/* the member named `name` (or NULL) */
gw_member_t *gw_members_find(const char *name);
/* the member named `name` when requests can go to it now (listed, online, answering probes); NULL otherwise, and for
 * a NULL or empty name. A request that names a member in ?target= goes there first: LXD handles it as if another
 * member had forwarded it, without the member-to-member hop, which waits up to 10 s for its event link ("Missing
 * event connection with target cluster member"; under load it read an operation after LXD had forgotten it) */
gw_member_t *gw_members_usable(const char *name);
/* the socket pool of `m` for identity `id` (created on first use; owned by the identity) */
h2o_socketpool_t *gw_member_pool(gw_member_t *m, const gw_identity_t *id);
/* 1 if the next connection h2o's socketpool hands out from `pool` is an idle one that is alive (not past the pool's
 * idle timeout, and the member has not closed it: the peek h2o itself makes), so taking it cannot fail; 0 if taking
 * from the pool would open a new connection or find a dead one. Takes nothing out of the pool. */
int gw_member_pool_has_live(h2o_socketpool_t *pool);
/* records that `m` serves `req` (for the access log); copied into the request's pool, as a member's name can
 * change (a seed is renamed when discovery names it) while the request is in flight */
void gw_member_note(h2o_req_t *req, const gw_member_t *m);
/* a connection to `m` failed: skip it until a probe succeeds, and probe now */
void gw_member_failed(gw_member_t *m, const char *err);
/* probes `m` now rather than at the next round (a stream from it broke: if it died, it is skipped as soon as it refuses
 * the probe, and what was decided from it, api10.c's cache, is dropped) */
void gw_member_probe(gw_member_t *m);

/*
 * A backend call to any healthy member: the first one that takes the connection. A member that refuses it (nothing
 * was sent) is marked failed and the next is tried. The callback is gw_backend_call's; during it,
 * gw_members_call_member(call) names the member that answered. Returns NULL (and never calls back) when no member
 * is usable at all.
 */
typedef struct st_gw_mcall_t gw_mcall_t;
gw_mcall_t *gw_members_call(const gw_identity_t *id, const char *method, const char *path, const char *body, uint64_t timeout_ms,
                            gw_call_cb cb, void *data);
/* the same, trying `first` (when not NULL: gw_members_usable) before the others */
gw_mcall_t *gw_members_call_first(gw_member_t *first, const gw_identity_t *id, const char *method, const char *path,
                                  const char *body, uint64_t timeout_ms, gw_call_cb cb, void *data);
gw_member_t *gw_members_call_member(gw_mcall_t *call);
/* drops a call that has not called back yet */
void gw_members_call_cancel(gw_mcall_t *call);

#endif
