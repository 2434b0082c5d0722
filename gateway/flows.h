/*
 * flows.h: the state of the gateway's multi-step flows (a move, a snapshot copy, a drain), held in the cluster's own
 * database, so that any replica of the deployment finishes a flow whose replica is gone.
 *
 * Where: one LXD profile per flow and ownership epoch, `flow-<flow id>-<epoch>`, used by nothing, in the project
 * `lxd-gateway` (made by the gateway, with its own profiles and nothing else). Its config: `user.lxd-gateway.owner`
 * (the owning replica's id), `user.lxd-gateway.beat` (how many times the owner wrote it), `user.lxd-gateway.kind` and
 * `user.lxd-gateway.record` (the flow's record: JSON, the fields of every step merged, the last step in "step"). The
 * user's volumes carry nothing of it but the move's own mark while a flow runs; the profile is deleted when the flow
 * ends. (A network ACL is cheaper to write, 41 ms against 68 ms on the test cluster, as a profile's PUT is also pushed
 * to every other member; but LXD 5.0.2 fails the PUT of one ACL with 404 while another ACL of the project is being
 * deleted, which many flows ending at once do.)
 *
 * Why names, not ETags: LXD 5.0.2 checks a profile's (and a volume's) If-Match in one database transaction and
 * writes in another: two PUTs with the same ETag at once BOTH succeed (36 of 40 tries on the test cluster), so it
 * is no compare-and-swap. Creating an object whose name exists fails in the database itself: exactly one of two
 * creations succeeds (40 of 40 profiles, 20 of 20 ACLs). So ownership is a name: the owner of epoch N is whoever created
 * `flow-<id>-<N>`; to adopt, a replica creates `flow-<id>-<N+1>`.
 *
 * The lease, on each replica's own monotonic clock (no clocks are compared across machines):
 *   - the owner writes its profile before each step that touches a member (gw_flow_write) and at least every
 *     lease/4 (a beat). Each write is confirmed by a GET that finds no `flow-<id>-<N+1>`: then, and only for
 *     lease/2 from when that write was SENT, the owner may make member calls (gw_flow_may_act);
 *   - every replica reads the list every lease/4. A flow of this deployment (owned by this replica's id or by a
 *     peer's: `gw_flows_init`'s `ours`) whose profile this replica has seen unchanged for a whole lease, and that it
 *     does not run, is adopted: `flow-<id>-<N+1>` created (one replica wins), the older profile read again (written
 *     meanwhile: the old owner was alive, so the adopter waits lease/2 more, by when that owner has seen the new
 *     profile and stopped), then deleted (the old owner's next write fails: it stops, touching nothing), and the
 *     flow handed to its kind's adopt callback, which finishes it or rolls it back by the rules of recovery;
 *   - at start, the flows this replica's own id owns are adopted at once (this process runs none of them), and so
 *     are the flows its local journal (journal.h) holds unfinished, that the cluster does not have, and that were
 *     journaled by a version without this (a move under way at an upgrade). A flow journaled with GW_FLOWS_IN_CLUSTER
 *     and gone from the cluster ended (here, or where it was adopted: it is not run twice), or never reached it
 *     (then no member was touched); its journal entry is ended.
 *
 * The local journal is still written first, and read only for that: it is the replica's own ordered history of
 * steps (the cluster's record is merged, and gone at the end), which the crash tests and an operator read.
 */
#ifndef GW_FLOWS_H
#define GW_FLOWS_H

#include <jansson.h>
#include <h2o.h>
#include "config.h"

#define GW_FLOWS_PROJECT "lxd-gateway"
#define GW_FLOWS_OBJECTS "/1.0/profiles" /* the kind of object each flow's state is */
#define GW_FLOWS_IN_CLUSTER "in_cluster" /* true in a journal record whose flow is recorded in the cluster too */

typedef struct st_gw_flow_t gw_flow_t;

/* a write ended: err == NULL and lost == 0: recorded, and this replica still owns the flow (it may act for lease/2);
 * lost: another replica owns it now (this one must not touch anything of it again: gw_flow_forget); err: not recorded,
 * the cluster did not answer (nothing is known about ownership: the step must not be taken) */
typedef void (*gw_flow_written_cb)(void *data, const char *err, int lost);
/* a flow adopted by this replica: `record` (borrowed) is its record as the last owner wrote it, `from` that owner's
 * replica id. The callee takes `flow` (and ends it with gw_flow_end, or gw_flow_release) */
typedef void (*gw_flow_adopt_cb)(gw_flow_t *flow, json_t *record, const char *from);

/* binds the store to the loop; `replica` is this replica's id; `ours(owner)` says whether a replica id belongs to this
 * deployment (a peer's); `unfinished` (stolen, may be NULL) the journal's unfinished records, published at start */
const char *gw_flows_init(h2o_context_t *ctx, const gw_config_t *conf, const char *replica, int (*ours)(const char *owner),
                          json_t *unfinished);
/* registers the adopter of the flows of `kind` ("move", "drain"); every kind must have one before the first list is read */
void gw_flows_on_adopt(const char *kind, gw_flow_adopt_cb cb);

/* a new flow `id` of `kind`, owned by this replica; nothing is written until gw_flow_write */
gw_flow_t *gw_flow_new(const char *id, const char *kind);
/* records step `step` with `fields` (borrowed, merged into the record) in the cluster; `cb` runs once, later. One write
 * at a time per flow (a beat in flight is waited for) */
void gw_flow_write(gw_flow_t *flow, const char *step, json_t *fields, gw_flow_written_cb cb, void *data);
/* 1 while this replica may make member calls for `flow` (its last confirmed write was sent less than lease/2 ago); 0:
 * confirm first (gw_flow_write with step NULL: a beat) */
int gw_flow_may_act(const gw_flow_t *flow);
/* the flow ended: its record is deleted from the cluster (tried again until it is); `flow` is gone */
void gw_flow_end(gw_flow_t *flow);
/* how many ended flows' records (and their locks) are still being deleted from the cluster: a stopping gateway waits
 * for them (else a restart, or another replica, would find the flow and recover it a lease later, and its volume's
 * lock held until then) */
size_t gw_flows_ending(void);
/* the flow is left as it is in the cluster, not renewed (adopted again once its lease has passed); `flow` is gone */
void gw_flow_release(gw_flow_t *flow);
/* the flow was lost to another replica: forgotten here, nothing written; `flow` is gone */
void gw_flow_forget(gw_flow_t *flow);
/* its id */
const char *gw_flow_id(const gw_flow_t *flow);

/*
 * Locks: a name only one flow holds at a time, cluster-wide (a volume being moved: the key names its member, pool,
 * project and name). A profile `lock-<digest of key>` created by the flow (creation is the one atomic step LXD
 * offers, see above). A lock whose holder's flow is no longer in the cluster is stale: taken over.
 */
/* `holder` != NULL: another flow, still in the cluster, holds `key`; err != NULL: the cluster did not answer; both NULL:
 * `flow_id` holds it now (or held it already) */
typedef void (*gw_flow_locked_cb)(void *data, const char *err, const char *holder);
void gw_flows_lock(const char *key, const char *flow_id, gw_flow_locked_cb cb, void *data);
/* gives `key` up if `flow_id` holds it (tried once: a lock left behind is stale once its flow has ended) */
void gw_flows_unlock(const char *key, const char *flow_id);

/* the replica id that owns flow `id`, as the last reading of the list showed it, or NULL */
const char *gw_flows_owner(const char *id);
/* 1 while flow `id` is in the cluster as last read (lease/4 ago at most), run here or being adopted here */
int gw_flows_live(const char *id);
/* 1 once the list was read and no adoption is under way here (what a start finds is adopted by then) */
int gw_flows_settled(void);

#endif
