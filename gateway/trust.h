/*
 * trust.h: who is calling. A mirror of the cluster's trust store, and the caller it makes of a client certificate.
 *
 * The mirror is read with GET /1.0/certificates?recursion=1 (as the gateway) whenever the cluster's lifecycle events
 * say a certificate was created, updated or deleted, when the event stream (re)connects, every second while the
 * stream is down, and at least every `identity.trust_refresh` as a safety net. Until the first read succeeds, and
 * when the copy is older than trust_refresh + 15 s, every caller is untrusted: the gateway fails closed, never open.
 */
#ifndef GW_TRUST_H
#define GW_TRUST_H

#include <h2o.h>
#include "identity.h"
#include "projects.h"
#include "tls.h"

/* what a caller that is not a trusted client may send in one request body (LXD takes nothing larger from one: a
 * certificate add is a few KiB); a larger body is refused as it arrives, before it is stored (server.h) */
#define GW_UNTRUSTED_MAX_BODY (64 * 1024)

typedef enum en_gw_trust_kind_t {
    GW_TRUST_NONE,       /* no certificate, or one the cluster does not trust */
    GW_TRUST_CLIENT,     /* type client, unrestricted */
    GW_TRUST_RESTRICTED, /* type client, restricted to projects */
    GW_TRUST_METRICS,    /* type metrics */
    GW_TRUST_SERVER,     /* type server (a cluster member's certificate) */
} gw_trust_kind_t;

typedef struct st_gw_caller_t {
    char fingerprint[GW_FINGERPRINT_LEN + 1]; /* of the client's certificate; "" when it sent none */
    gw_trust_kind_t kind;                     /* what the cluster's trust store says of it (and its validity period) */
    const gw_projects_t *projects;            /* the projects it is restricted to (GW_TRUST_RESTRICTED; GW_TRUST_METRICS when the
                                               * metrics certificate is restricted); NULL = not restricted. Held by the request */
    X509 *cert;                               /* the client's certificate (freed with the request), or NULL */
    const gw_identity_t *identity;            /* what the gateway presents to members on its behalf */
} gw_caller_t;

/* one entry of the mirror, as gw_trust_foreach shows it (valid during the call) */
typedef struct st_gw_trust_entry_t {
    const char *fingerprint;       /* GW_FINGERPRINT_LEN hex characters */
    const char *name;              /* its name in the trust store */
    gw_trust_kind_t kind;          /* its type (and restriction, for clients) */
    const gw_projects_t *projects; /* as in gw_caller_t */
} gw_trust_entry_t;
typedef void (*gw_trust_visit_cb)(const gw_trust_entry_t *entry, void *data);

/* starts the periodic mirror refresh */
void gw_trust_init(h2o_context_t *ctx, uint64_t refresh_ms);
/* fills `caller` (but its identity) for this request's client certificate; a certificate outside its validity period
 * is untrusted, as LXD's CheckTrustState has it, whatever the trust store says */
void gw_trust_identify(h2o_req_t *req, gw_caller_t *caller);
/* fills `caller` (but its identity and certificate) for the certificate of `fingerprint` (a caller another replica
 * forwards) */
void gw_trust_lookup(h2o_req_t *req, const char *fingerprint, gw_caller_t *caller);
/* the same, its projects held by `pool` (a caller outside any request: a flow resumed for it) */
void gw_trust_lookup_in(h2o_mem_pool_t *pool, const char *fingerprint, gw_caller_t *caller);
/* what the trust store (and the validity period) makes of the certificate `peer`, as gw_trust_identify decides it; for
 * a connection whose handshake just ended (NULL: GW_TRUST_NONE) */
gw_trust_kind_t gw_trust_kind_of(const gw_tls_peer_t *peer);
/* `caller` is a client the cluster trusts, restricted or not (who may use operations, events and volumes) */
int gw_trust_is_client(const gw_caller_t *caller);
/* calls `cb` for every entry of the current copy */
void gw_trust_foreach(gw_trust_visit_cb cb, void *data);
/* reads the trust store now; `done(data)` runs once that read ended (whatever its result) */
void gw_trust_refresh_now(void (*done)(void *data), void *data);
/* the answer to `req` (a write to the trust store passing through) is sent only once the trust store was read again
 * after the member answered it (a 2xx answer; others are sent as they come) */
void gw_trust_reread_before_answer(h2o_req_t *req);
/* `cb` runs after every successful read of the trust store (one hook) */
void gw_trust_on_refresh(void (*cb)(void));
/* h2o_now() when the read that made the current copy was sent: a change made after it may not show in it */
uint64_t gw_trust_read_sent_at(void);
/* milliseconds since the mirror was last read successfully (UINT64_MAX: never) */
uint64_t gw_trust_age_ms(void);
/* name of a trust kind, for logs: "untrusted", "client", ... */
const char *gw_trust_kind_name(gw_trust_kind_t kind);

#endif
