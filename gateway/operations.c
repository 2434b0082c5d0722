/*
 * operations.c: see operations.h.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include "hold.h"
#include "lxd.h"
#include "log.h"
#include "text.h"
#include "metrics.h"
#include "operations.h"

struct st_gw_op_t {
    char id[37];                /* UUID, first group = the replica's tag */
    char *description;          /* "Moving storage volume" */
    char *project;              /* project the operation belongs to (events, listing, access) */
    char *location;             /* member name shown in `location` */
    json_t *resources;          /* {"storage_volumes": [...]} */
    json_t *metadata;           /* object; progress values are strings */
    gw_op_status_t status;      /* LXD status code */
    char *err;                  /* failure reason, or NULL */
    struct timespec created_at; /* CLOCK_REALTIME */
    struct timespec updated_at; /* CLOCK_REALTIME */
    gw_op_cancel_cb cancel;     /* NULL: may not be cancelled */
    void *cancel_data;          /* passed to cancel */
    h2o_linklist_t waiters;     /* wait_t.link: GET .../wait requests */
    h2o_timeout_entry_t drop;   /* GW_OP_KEEP_MS after the end */
    h2o_linklist_t link;        /* in O.ops */
};

/* a GET .../wait in progress; in the request's pool: it dies with the request */
typedef struct st_wait_t {
    gw_hold_t hold; /* the request, until it is answered (wait_done) or its client leaves (on_wait_gone) */
    gw_op_t *op;
    h2o_linklist_t link;        /* in op->waiters */
    h2o_timeout_entry_t expire; /* the client's timeout */
    h2o_timeout_t timeout;      /* its own (timeouts differ per request) */
} wait_t;

/* another replica's operation, as its feed last showed it */
typedef struct st_mirror_t {
    char id[37];
    char *project;
    json_t *json;             /* LXD's Operation JSON */
    h2o_timeout_entry_t drop; /* GW_OP_KEEP_MS after the end */
    h2o_linklist_t link;      /* in O.mirrored */
} mirror_t;

static struct {
    h2o_context_t *ctx;
    char tag[9];
    h2o_linklist_t ops;      /* gw_op_t.link */
    h2o_linklist_t mirrored; /* mirror_t.link */
    h2o_timeout_t keep;
    h2o_timeout_t now; /* 0 ms: an expired wait ends from here, not from its own timeout (see on_wait_expire) */
    gw_op_event_cb on_event[GW_OPS_MAX_LISTENERS];
    size_t num_on_event;
    int stopping; /* gw_ops_stop was called */
} O;

void gw_ops_init(h2o_context_t *ctx, const char *tag)
{
    O.ctx = ctx;
    snprintf(O.tag, sizeof(O.tag), "%.8s", tag);
    h2o_linklist_init_anchor(&O.ops);
    h2o_linklist_init_anchor(&O.mirrored);
    h2o_timeout_init(ctx->loop, &O.keep, GW_OP_KEEP_MS);
    h2o_timeout_init(ctx->loop, &O.now, 0);
}

void gw_ops_on_event(gw_op_event_cb cb)
{
    if (O.num_on_event != GW_OPS_MAX_LISTENERS)
        O.on_event[O.num_on_event++] = cb;
}

const char *gw_ops_tag(void)
{
    return O.tag;
}

const char *gw_op_id(const gw_op_t *op)
{
    return op->id;
}

const char *gw_op_project(const gw_op_t *op)
{
    return op->project;
}

static const char *status_name(gw_op_status_t s)
{
    switch (s) {
    case GW_OP_RUNNING:
        return "Running";
    case GW_OP_CANCELLING:
        return "Cancelling";
    case GW_OP_SUCCESS:
        return "Success";
    case GW_OP_FAILURE:
        return "Failure";
    case GW_OP_CANCELLED:
        return "Cancelled";
    }
    return "Unknown";
}

/* RFC 3339 with nanoseconds, as Go prints LXD's timestamps */
static json_t *timestamp(const struct timespec *ts)
{
    struct tm tm;
    char buf[64];
    gmtime_r(&ts->tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%09ldZ", ts->tv_nsec);
    return json_string(buf);
}

json_t *gw_op_json(const gw_op_t *op)
{
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:i, s:O, s:O, s:b, s:s, s:s}", "id", op->id, "class", "task", "description",
                     op->description, "created_at", timestamp(&op->created_at), "updated_at", timestamp(&op->updated_at), "status",
                     status_name(op->status), "status_code", (int)op->status, "resources", op->resources, "metadata", op->metadata,
                     "may_cancel", op->cancel != NULL && op->status == GW_OP_RUNNING, "err", op->err != NULL ? op->err : "",
                     "location", op->location);
}

json_t *gw_op_event(const gw_op_t *op)
{
    return json_pack("{s:s, s:o, s:o, s:s, s:s}", "type", "operation", "timestamp", timestamp(&op->updated_at), "metadata",
                     gw_op_json(op), "location", op->location, "project", op->project);
}

/* LXD's event for a change of `op`, to the listener */
static void changed(gw_op_t *op)
{
    clock_gettime(CLOCK_REALTIME, &op->updated_at);
    if (O.num_on_event == 0)
        return;
    json_t *event = gw_op_event(op);
    if (event == NULL) { /* cannot happen with the cleaned strings above; never hand a listener NULL */
        gw_log(GW_LOG_ERROR, "operation event could not be encoded", "operation", op->id, NULL);
        return;
    }
    for (size_t i = 0; i != O.num_on_event; ++i)
        O.on_event[i](op, event);
    json_decref(event);
}

static gw_op_t *find(const char *id, size_t len);

/* a new operation with id `id` (36 characters) */
static gw_op_t *op_new(const char *id, const char *description, const char *project, const char *location, json_t *resources,
                       gw_op_cancel_cb cancel, void *data)
{
    gw_op_t *op = calloc(1, sizeof(*op));
    memcpy(op->id, id, 36);
    op->description = gw_text_clean(description, strlen(description), GW_TEXT_REPLACE); /* JSON strings, always */
    op->project = gw_text_clean(project, strlen(project), GW_TEXT_REPLACE);
    op->location = gw_text_clean(location, strlen(location), GW_TEXT_REPLACE);
    op->resources = resources != NULL ? resources : json_object();
    op->metadata = json_object();
    op->status = GW_OP_RUNNING;
    op->cancel = cancel;
    op->cancel_data = data;
    h2o_linklist_init_anchor(&op->waiters);
    clock_gettime(CLOCK_REALTIME, &op->created_at);
    h2o_linklist_insert(&O.ops, &op->link);
    changed(op);
    return op;
}

gw_op_t *gw_op_start(const char *description, const char *project, const char *location, json_t *resources, gw_op_cancel_cb cancel,
                     void *data)
{
    unsigned char r[16];
    char id[37];
    RAND_bytes(r, sizeof(r));
    r[6] = (r[6] & 0x0f) | 0x40; /* version 4 */
    r[8] = (r[8] & 0x3f) | 0x80; /* variant 1 */
    snprintf(id, sizeof(id), "%s-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", O.tag, r[4], r[5], r[6], r[7], r[8], r[9],
             r[10], r[11], r[12], r[13], r[14], r[15]);
    return op_new(id, description, project, location, resources, cancel, data);
}

gw_op_t *gw_op_adopt(const char *id, const char *description, const char *project, const char *location, json_t *resources,
                     gw_op_cancel_cb cancel, void *data)
{
    size_t len = strlen(id);
    if (len != 36 || strspn(id, "0123456789abcdef-") != len || find(id, len) != NULL) {
        json_decref(resources);
        return NULL;
    }
    return op_new(id, description, project, location, resources, cancel, data);
}

void gw_op_set(gw_op_t *op, const char *key, json_t *value)
{
    json_t *old = json_object_get(op->metadata, key);
    if (old != NULL && json_equal(old, value)) {
        json_decref(value);
        return;
    }
    json_object_set_new(op->metadata, key, value);
    changed(op);
}

static void send_op(h2o_req_t *req, const gw_op_t *op)
{
    gw_lxd_send_sync(req, gw_op_json(op));
}

/* the wait is over (its operation ended, or its timeout passed): it is no longer linked anywhere */
static void wait_unlink(wait_t *w)
{
    h2o_linklist_unlink(&w->link);
    h2o_timeout_unlink(&w->expire);
    h2o_timeout_dispose(O.ctx->loop, &w->timeout);
}

static void wait_done(wait_t *w)
{
    wait_unlink(w);
    h2o_req_t *req = gw_hold_take(&w->hold); /* (held: on_wait_gone unlinks a wait whose client left) */
    if (req != NULL)
        send_op(req, w->op);
}

static void on_drop(h2o_timeout_entry_t *entry)
{
    gw_op_t *op = H2O_STRUCT_FROM_MEMBER(gw_op_t, drop, entry);
    h2o_linklist_unlink(&op->link);
    free(op->description), free(op->project), free(op->location), free(op->err);
    json_decref(op->resources);
    json_decref(op->metadata);
    free(op);
}

void gw_op_finish(gw_op_t *op, gw_op_status_t status, const char *err)
{
    op->status = status;
    gw_metrics_op_finished(op->description, status == GW_OP_SUCCESS     ? "success"
                                            : status == GW_OP_CANCELLED ? "cancelled"
                                                                        : "failure");
    free(op->err);
    op->err = err != NULL ? gw_text_clean(err, strlen(err), GW_TEXT_REPLACE) : NULL; /* a member's words may be anything */
    changed(op);
    while (!h2o_linklist_is_empty(&op->waiters))
        wait_done(H2O_STRUCT_FROM_MEMBER(wait_t, link, op->waiters.next));
    op->drop.cb = on_drop;
    h2o_timeout_link(O.ctx->loop, &O.keep, &op->drop);
}

void gw_op_send_created(h2o_req_t *req, const gw_op_t *op)
{
    char loc[64];
    int n = snprintf(loc, sizeof(loc), "/1.0/operations/%s", op->id);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, h2o_strdup(&req->pool, loc, n).base, n);
    json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:o}", "type", "async", "status", "Operation created", "status_code", 100,
                          "operation", loc, "error_code", 0, "error", "", "metadata", gw_op_json(op));
    gw_lxd_send_json(req, 202, j);
}

void gw_ops_foreach(void (*cb)(const gw_op_t *op, void *data), void *data)
{
    for (h2o_linklist_t *l = O.ops.next; l != &O.ops; l = l->next)
        cb(H2O_STRUCT_FROM_MEMBER(gw_op_t, link, l), data);
}

int gw_ops_is_empty(void)
{
    return h2o_linklist_is_empty(&O.ops) && h2o_linklist_is_empty(&O.mirrored);
}

size_t gw_ops_running(void)
{
    size_t n = 0;
    for (h2o_linklist_t *l = O.ops.next; l != &O.ops; l = l->next)
        n += H2O_STRUCT_FROM_MEMBER(gw_op_t, link, l)->status < GW_OP_SUCCESS;
    return n;
}

void gw_ops_stop(void)
{
    O.stopping = 1;
}

int gw_ops_stopping(void)
{
    return O.stopping;
}

static gw_op_t *find(const char *id, size_t len)
{
    if (len != 36) /* (any tag: an adopted flow's operation keeps the id its first replica gave it) */
        return NULL;
    for (h2o_linklist_t *l = O.ops.next; l != &O.ops; l = l->next) {
        gw_op_t *op = H2O_STRUCT_FROM_MEMBER(gw_op_t, link, l);
        if (memcmp(op->id, id, 36) == 0)
            return op;
    }
    return NULL;
}

static void on_mirror_drop(h2o_timeout_entry_t *entry)
{
    mirror_t *m = H2O_STRUCT_FROM_MEMBER(mirror_t, drop, entry);
    h2o_linklist_unlink(&m->link);
    free(m->project);
    json_decref(m->json);
    free(m);
}

static int ended(json_t *op)
{
    return json_integer_value(json_object_get(op, "status_code")) >= GW_OP_SUCCESS;
}

static int same_state(json_t *a, json_t *b)
{
    const char *ua = json_string_value(json_object_get(a, "updated_at")), *ub = json_string_value(json_object_get(b, "updated_at"));
    return json_integer_value(json_object_get(a, "status_code")) == json_integer_value(json_object_get(b, "status_code")) &&
           ua != NULL && ub != NULL && strcmp(ua, ub) == 0;
}

int gw_ops_mirror(const char *project, json_t *op)
{
    const char *id = json_string_value(json_object_get(op, "id"));
    if (id == NULL || strlen(id) != 36)
        return 0;
    mirror_t *m = NULL;
    for (h2o_linklist_t *l = O.mirrored.next; l != &O.mirrored && m == NULL; l = l->next)
        if (strcmp(H2O_STRUCT_FROM_MEMBER(mirror_t, link, l)->id, id) == 0)
            m = H2O_STRUCT_FROM_MEMBER(mirror_t, link, l);
    if (m == NULL) {
        m = calloc(1, sizeof(*m));
        memcpy(m->id, id, 37);
        m->project = strdup(project);
        m->drop.cb = on_mirror_drop;
        h2o_linklist_insert(&O.mirrored, &m->link);
    } else if (same_state(m->json, op)) {
        return 0; /* seen already (a feed's opening snapshot) */
    }
    json_decref(m->json);
    m->json = json_incref(op);
    if (ended(op) && !h2o_timeout_is_linked(&m->drop))
        h2o_timeout_link(O.ctx->loop, &O.keep, &m->drop);
    else if (!ended(op) && h2o_timeout_is_linked(&m->drop)) /* running again (failed here while its replica was down) */
        h2o_timeout_unlink(&m->drop);
    return 1;
}

void gw_ops_mirror_fail(const char *tag, const char *err, void (*cb)(const char *project, json_t *event))
{
    for (h2o_linklist_t *l = O.mirrored.next; l != &O.mirrored; l = l->next) {
        mirror_t *m = H2O_STRUCT_FROM_MEMBER(mirror_t, link, l);
        if (memcmp(m->id, tag, 8) != 0 || ended(m->json))
            continue;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        json_t *op = json_deep_copy(m->json);
        json_object_set_new(op, "status", json_string("Failure"));
        json_object_set_new(op, "status_code", json_integer(GW_OP_FAILURE));
        json_object_set_new(op, "err", json_string(err));
        json_object_set_new(op, "may_cancel", json_false());
        json_object_set_new(op, "updated_at", timestamp(&now));
        json_decref(m->json);
        m->json = op;
        if (!h2o_timeout_is_linked(&m->drop)) /* (an entry linked again while linked breaks O.keep's list) */
            h2o_timeout_link(O.ctx->loop, &O.keep, &m->drop);
        const char *location = json_string_value(json_object_get(op, "location"));
        json_t *event = json_pack("{s:s, s:o, s:O, s:s, s:s}", "type", "operation", "timestamp", timestamp(&now), "metadata", op,
                                  "location", location != NULL ? location : "", "project", m->project);
        cb(m->project, event);
        json_decref(event);
    }
}

void gw_ops_mirror_foreach(void (*cb)(const char *project, json_t *op, void *data), void *data)
{
    for (h2o_linklist_t *l = O.mirrored.next; l != &O.mirrored; l = l->next) {
        mirror_t *m = H2O_STRUCT_FROM_MEMBER(mirror_t, link, l);
        cb(m->project, m->json, data);
    }
}

int gw_ops_is_running(const char *id)
{
    size_t len = strlen(id);
    gw_op_t *op = find(id, len);
    if (op != NULL)
        return op->status < GW_OP_SUCCESS;
    for (h2o_linklist_t *l = O.mirrored.next; l != &O.mirrored; l = l->next) {
        mirror_t *m = H2O_STRUCT_FROM_MEMBER(mirror_t, link, l);
        if (strcmp(m->id, id) == 0)
            return !ended(m->json);
    }
    return 0;
}

int gw_ops_may_see(gw_trust_kind_t kind, const gw_projects_t *projects, const char *project)
{
    if (kind == GW_TRUST_CLIENT)
        return 1;
    return kind == GW_TRUST_RESTRICTED && gw_projects_has(projects, project);
}

static void on_wait_gone(gw_hold_t *hold)
{
    wait_unlink(H2O_STRUCT_FROM_MEMBER(wait_t, hold, hold)); /* the client left while waiting */
}

static void on_wait_end(h2o_timeout_entry_t *entry)
{
    wait_t *w = H2O_STRUCT_FROM_MEMBER(wait_t, expire, entry);
    wait_done(w); /* LXD answers the operation as it is when the timeout passes */
}

/* Runs inside h2o's walk over the wait's own timeout (h2o_evloop_run, then h2o_timeout_run): ending the wait here would
 * dispose that timeout under the walk (it goes on from the node's next, NULL once unlinked) and the answer may free the
 * request's pool holding it (run_pending right after this callback): a segfault in h2o_timeout_run. The wait ends from
 * O.now, at the loop's next turn. */
static void on_wait_expire(h2o_timeout_entry_t *entry)
{
    entry->cb = on_wait_end;
    h2o_timeout_link(O.ctx->loop, &O.now, entry);
}

static void start_wait(h2o_req_t *req, gw_op_t *op, long secs)
{
    if (op->status >= GW_OP_SUCCESS || secs == 0) {
        send_op(req, op);
        return;
    }
    wait_t *w = h2o_mem_alloc_pool(&req->pool, sizeof(*w));
    *w = (wait_t){.op = op};
    gw_hold_attach(&w->hold, req, on_wait_gone);
    h2o_linklist_insert(&op->waiters, &w->link);
    h2o_timeout_init(O.ctx->loop, &w->timeout, secs > 0 ? (uint64_t)secs * 1000 : UINT32_MAX);
    w->expire.cb = on_wait_expire;
    h2o_timeout_link(O.ctx->loop, &w->timeout, &w->expire);
}

static void cancel(h2o_req_t *req, gw_op_t *op)
{
    if (op->status != GW_OP_RUNNING) {
        gw_lxd_send_error(req, 400, "Only running operations can be cancelled");
        return;
    }
    if (op->cancel == NULL) {
        gw_lxd_send_error(req, 400, "This operation can't be cancelled");
        return;
    }
    op->status = GW_OP_CANCELLING;
    changed(op);
    op->cancel(op, op->cancel_data);
    gw_lxd_send_sync(req, NULL);
}

int gw_ops_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    gw_op_t *op = find(path->id.base, path->id.len);
    if (op == NULL)
        return 0; /* not ours: the cluster's */
    if (!gw_ops_may_see(caller->kind, caller->projects, op->project)) {
        gw_lxd_send_error(req, 403, "not authorized");
        return 1;
    }
    int plain = path->kind == GW_PATH_OPERATION;
    if (plain && get)
        send_op(req, op);
    else if (path->kind == GW_PATH_OPERATION_WAIT && get)
        start_wait(req, op, path->timeout_s);
    else if (plain && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE")))
        cancel(req, op);
    else
        gw_lxd_send_error(req, plain ? 405 : 404, plain ? "method not allowed" : "not found");
    return 1;
}
