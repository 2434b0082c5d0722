/*
 * operations.h: operations the gateway itself runs (a single-call move), shown to clients exactly as LXD shows its own.
 *
 * An operation is LXD's Operation JSON: a UUID `id`, `class: task`, `description`, RFC 3339 timestamps,
 * `status`/`status_code`, `resources`, `metadata`, `may_cancel`, `err`, `location`. Clients reach it with the
 * usual calls, which the gateway answers itself for its own ids: GET /1.0/operations/<id> (`?target=` and
 * `?project=` ignored), GET .../wait?timeout=N, DELETE (cancel). Every other id passes through to the cluster. GET
 * /1.0/operations (the cluster's list with the gateway's own merged in) is oplist.h's, a floor above.
 *
 * Ids are random UUIDs whose first group is this replica's tag (8 hex digits), so that a replica can tell from an id
 * which replica runs it (load-balancer issue). A finished operation stays visible for 5 s, as in LXD.
 */
#ifndef GW_OPERATIONS_H
#define GW_OPERATIONS_H

#include <jansson.h>
#include <h2o.h>
#include "path.h"
#include "trust.h"

#define GW_OP_KEEP_MS 5000 /* a finished operation stays visible this long */

typedef enum en_gw_op_status_t {
    GW_OP_RUNNING = 103,
    GW_OP_CANCELLING = 104,
    GW_OP_SUCCESS = 200,
    GW_OP_FAILURE = 400,
    GW_OP_CANCELLED = 401,
} gw_op_status_t;

typedef struct st_gw_op_t gw_op_t;

/* asked to cancel `op` (DELETE): the runner stops and later calls gw_op_finish(op, GW_OP_CANCELLED, ...) */
typedef void (*gw_op_cancel_cb)(gw_op_t *op, void *data);
/* told of every change of an operation: `event` is LXD's event JSON of type "operation" (valid during the call) */
typedef void (*gw_op_event_cb)(const gw_op_t *op, json_t *event);

/* sets up the registry; `tag` (8 hex digits) starts every id; `name` is what events give as their location */
void gw_ops_init(h2o_context_t *ctx, const char *tag);
/* a new Running task operation in `project`, on `location` (a member name); `resources` is stolen;
 * cancel == NULL: it may not be cancelled */
gw_op_t *gw_op_start(const char *description, const char *project, const char *location, json_t *resources, gw_op_cancel_cb cancel,
                     void *data);
/* gw_op_start for a flow adopted from another replica (flows.h): the operation keeps the id `id` its first replica
 * gave it, so that clients following it see its outcome here. NULL (and `resources` freed) if `id` is not an
 * operation id or is in the registry already */
gw_op_t *gw_op_adopt(const char *id, const char *description, const char *project, const char *location, json_t *resources,
                     gw_op_cancel_cb cancel, void *data);
/* its id */
const char *gw_op_id(const gw_op_t *op);
/* its project */
const char *gw_op_project(const gw_op_t *op);
/* sets metadata key `key` to `value` (stolen) and tells listeners when it changed */
void gw_op_set(gw_op_t *op, const char *key, json_t *value);
/* ends it (GW_OP_SUCCESS, GW_OP_FAILURE with `err`, GW_OP_CANCELLED); it is dropped GW_OP_KEEP_MS later */
void gw_op_finish(gw_op_t *op, gw_op_status_t status, const char *err);
/* LXD's Operation JSON of `op` (a new reference) */
json_t *gw_op_json(const gw_op_t *op);
/* LXD's event JSON (type "operation") of `op` as it is now (a new reference, or NULL if it cannot be encoded) */
json_t *gw_op_event(const gw_op_t *op);
/* answers `req` as LXD answers a request that started an operation: 202, Location, the async envelope */
void gw_op_send_created(h2o_req_t *req, const gw_op_t *op);
/* adds a listener of every change (at most GW_OPS_MAX_LISTENERS: the client event streams, the peers' feeds) */
#define GW_OPS_MAX_LISTENERS 4
void gw_ops_on_event(gw_op_event_cb cb);
/* this replica's tag (8 hex digits) */
const char *gw_ops_tag(void);
/* how many have not ended yet */
size_t gw_ops_running(void);
/* the gateway is stopping (SIGTERM): an operation made of many flows (a drain) starts no new one and ends once its
 * running ones have, rather than being cut short at exit */
void gw_ops_stop(void);
/* 1 once gw_ops_stop was called */
int gw_ops_stopping(void);
/* calls `cb` for every operation in the registry, running or kept */
void gw_ops_foreach(void (*cb)(const gw_op_t *op, void *data), void *data);
/* 1 if the registry holds no operation at all: none of this replica's, none mirrored, running or kept */
int gw_ops_is_empty(void);

/*
 * Operations other replicas run, as their event feeds show them (peers.h): listed in GET /1.0/operations next to this
 * replica's own. `op` is LXD's Operation JSON (borrowed); an ended one is dropped GW_OP_KEEP_MS later.
 */
/* returns 1 if `op` is news (not mirrored yet, or another status or update time than the mirrored one), else 0 */
int gw_ops_mirror(const char *project, json_t *op);
/* the running mirrored operations whose id starts with `tag` end as Failure with `err`; `cb` hears of each one, with
 * LXD's event JSON for that change */
void gw_ops_mirror_fail(const char *tag, const char *err, void (*cb)(const char *project, json_t *event));

/* calls `cb` for every mirrored operation, running or kept: its project and LXD's Operation JSON (borrowed) */
void gw_ops_mirror_foreach(void (*cb)(const char *project, json_t *op, void *data), void *data);

/* operation `id` (this replica's or a peer's, as its feed shows it) has not ended */
int gw_ops_is_running(const char *id);
/* LXD lets a caller of trust `kind` (restricted to `projects`) see the operations of `project` */
int gw_ops_may_see(gw_trust_kind_t kind, const gw_projects_t *projects, const char *project);
/* takes GET/DELETE of /1.0/operations/<id>[/wait] for the gateway's own ids (returns 1 and answers); returns 0 for
 * anything else */
int gw_ops_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
