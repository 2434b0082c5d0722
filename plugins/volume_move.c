/*
 * volume_move.c: the single-call move of a custom volume from one cluster member to another, as ONE gateway-owned
 * operation (API extension `cluster_internal_custom_volume_copy`, LXD 5.20).
 *
 * Claims `POST /1.0/storage-pools/<pool>/volumes/custom/<vol>?target=<dst>` whose body has `source.location`.
 * Without `target` or `location` it passes through (a rename on the member, as LXD does it).
 *
 * request -> checks -> 202 with a gateway operation "Moving storage volume" -> journal "begin" -> migrate.h (step 1
 * on the source, step 2 on the target) -> journal "transferring" -> the target's transfer watched to its end (LXD
 * 5.21 reports success too early natively; we wait for the target's own operation) -> target volume verified ->
 * journal "transferred" -> source deleted -> journal "end". The target gets the source's config, description and
 * content type (native LXD and Incus drop them).
 *
 * Nothing is deleted without a verified copy: the source only after "transferred" is journaled and the target was
 * seen; a target only when this move created it (its name was free when the move began). After a crash the next
 * start finishes or rolls back every unfinished move from the journal (gateway/journal.h).
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "journal.h"
#include "log.h"
#include "lxd.h"
#include "text.h"
#include "metrics.h"
#include "migrate.h"
#include "operations.h"
#include "plugin.h"
#include "proxy.h"
#include "volumes.h"

#define POLL_WAIT_S "1"       /* long-poll of the target's operation; progress is relayed at this pace */
#define RECOVER_RETRY_MS 2000 /* an interrupted move waits this long for its members to be reachable */
#define WATCH_RETRIES 10      /* unusable answers in a row about a transfer before it is given up (RECOVER_RETRY_MS apart) */

typedef struct st_move_t {
    h2o_req_t *req;                          /* the client's request until the operation is created; then NULL */
    struct st_move_t **holder;               /* the request pool's pointer to us */
    const gw_identity_t *id;                 /* the caller's identity (recovery: the gateway's) */
    gw_member_t *src, *dst;                  /* source.location, ?target= */
    char *pool, *project, *name;             /* the source volume */
    char *dst_pool, *dst_project, *dst_name; /* where it goes */
    json_t *volume;                          /* what the target creates: name, type, config, description, content_type */
    char *move_id;                           /* journal key: the operation's id */
    gw_op_t *op;                             /* NULL during recovery */
    char *transfer_op;                       /* the target's operation running the transfer */
    gw_relay_t *relay;                       /* the transfer's data path through the gateway (cut to cancel) */
    int cancelled;                           /* the caller asked to cancel */
    unsigned watch_errors;                   /* watch calls in a row that got no usable answer */
    json_t *journal;                         /* the journal record of the move (recovery) */
    char *why;                               /* why it is rolled back (malloc'd; a member's words of any length) */
    h2o_timeout_entry_t retry;               /* recovery (or a roll-back) waiting for members */
} move_t;

static h2o_context_t *ctx;
static h2o_timeout_t retry_timeout;

/* test hook: LXDGW_TEST_PAUSE_AT=<step> freezes the whole gateway right after it journaled <step> (the move goes no
 * further; the loop gets PAUSE_DELAY_MS to send what it owes, such as the 202), so that a test can kill it there
 * (SIGKILL) and check what the next start makes of the journal */
#define PAUSE_DELAY_MS 200
static h2o_timeout_t pause_timeout;
static h2o_timeout_entry_t pause_entry;

static void on_pause(h2o_timeout_entry_t *entry)
{
    (void)entry;
    for (;;)
        pause();
}

static int pause_at(const char *step)
{
    const char *at = getenv("LXDGW_TEST_PAUSE_AT");
    if (at == NULL || strcmp(at, step) != 0)
        return 0;
    gw_log(GW_LOG_WARN, "paused for a test", "step", step, NULL);
    pause_entry.cb = on_pause;
    h2o_timeout_link(ctx->loop, &pause_timeout, &pause_entry);
    return 1;
}

static void move_free(move_t *m)
{
    if (m->relay != NULL)
        gw_relay_close(m->relay);
    if (m->req != NULL)
        *m->holder = NULL;
    free(m->pool), free(m->project), free(m->name), free(m->dst_pool), free(m->dst_project), free(m->dst_name);
    free(m->move_id), free(m->transfer_op), free(m->why);
    json_decref(m->volume);
    json_decref(m->journal);
    free(m);
}

static json_t *record(move_t *m)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "src", m->src != NULL ? m->src->name : "", "dst",
                     m->dst != NULL ? m->dst->name : "", "pool", m->pool, "project", m->project, "name", m->name, "dst_pool",
                     m->dst_pool, "dst_project", m->dst_project, "dst_name", m->dst_name, "transfer_op",
                     m->transfer_op != NULL ? m->transfer_op : "");
}

/* journals `step` before the step is taken; a move that cannot record its steps must not take them.
 * 1: recorded; 0: not recorded (the caller ends the move safely); -1: the test hook froze the move here */
static int journal(move_t *m, const char *step)
{
    json_t *r = record(m);
    const char *err = gw_journal_write(m->move_id, step, r);
    json_decref(r);
    if (err != NULL) {
        gw_log(GW_LOG_ERROR, "cannot write the move journal", "move", m->move_id, "step", step, "err", err, NULL);
        return 0;
    }
    return pause_at(step) ? -1 : 1;
}

/* the end of a move: journal, operation, log */
static void finish(move_t *m, const char *outcome, gw_op_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void finish(move_t *m, const char *outcome, gw_op_status_t status, const char *fmt, ...)
{
    char *err = NULL;
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err = gw_text_vformat(fmt, ap);
        va_end(ap);
    }
    json_t *r = json_pack("{s:s}", "outcome", outcome);
    gw_journal_write(m->move_id, "end", r); /* if this one is lost, the next start only re-checks a finished move */
    json_decref(r);
    gw_log(status == GW_OP_SUCCESS ? GW_LOG_INFO : GW_LOG_WARN, "volume move ended", "move", m->move_id, "outcome", outcome,
           "volume", m->name, "from", m->src != NULL ? m->src->name : "-", "to", m->dst != NULL ? m->dst->name : "-", "err",
           err != NULL ? err : "", NULL);
    if (m->op != NULL)
        gw_op_finish(m->op, status, err);
    free(err);
    move_free(m);
}

/* ---- the end of the move: delete the source, or roll the target back ---- */

static void on_source_deleted(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    if (err != NULL || status / 100 != 2) {
        finish(m, "kept-both", GW_OP_FAILURE,
               "The volume was copied, but deleting the source failed (%s); both copies exist: %s/%s on %s and %s/%s on %s",
               err != NULL ? err : gw_vol_str(json, "error"), m->pool, m->name, m->src->name, m->dst_pool, m->dst_name,
               m->dst->name);
        return;
    }
    finish(m, "moved", GW_OP_SUCCESS, NULL);
}

/* the target was seen after a completed transfer: only now may the source go */
static void on_target_verified(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    (void)json;
    if (err != NULL || status != 200) {
        finish(m, "kept-source", GW_OP_FAILURE, "The transfer reported success but the volume is not on %s; the source was kept",
               m->dst->name);
        return;
    }
    int recorded = journal(m, "transferred");
    if (recorded < 0)
        return;
    if (recorded == 0)
        return finish(m, "kept-both", GW_OP_FAILURE, "Cannot record the move's progress; both copies were kept");
    gw_vol_delete(m->src, m->id, m->pool, m->name, m->project, on_source_deleted, m);
}

static void rolled_back(move_t *m, const char *why)
{
    if (m->cancelled)
        finish(m, "cancelled", GW_OP_CANCELLED, "Operation cancelled; the source was kept");
    else
        finish(m, "rolled-back", GW_OP_FAILURE, "%s", why);
}

static void roll_back_now(move_t *m);

static void on_rollback_retry(h2o_timeout_entry_t *entry)
{
    roll_back_now(H2O_STRUCT_FROM_MEMBER(move_t, retry, entry));
}

/* the target cannot be reached to remove what this move left there: the caller learns now, the removal is retried
 * (and, if the gateway stops first, its next start does it: the journal has no "end" for this move yet) */
static void retry_rollback(move_t *m, const char *err)
{
    if (m->op != NULL) {
        gw_op_finish(m->op, m->cancelled ? GW_OP_CANCELLED : GW_OP_FAILURE, m->why);
        m->op = NULL;
    }
    gw_log(GW_LOG_WARN, "cannot reach the target to roll back, retrying", "move", m->move_id, "member", m->dst->name, "err", err,
           NULL);
    m->retry.cb = on_rollback_retry;
    h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
}

static void on_target_removed(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    if (err != NULL) {
        retry_rollback(m, err);
        return;
    }
    if (status / 100 != 2 && status != 404)
        gw_log(GW_LOG_ERROR, "cannot remove a partial target", "move", m->move_id, "member", m->dst->name, "err",
               gw_vol_str(json, "error"), NULL);
    rolled_back(m, m->why);
}

static void on_target_checked(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    (void)json;
    if (err != NULL) {
        retry_rollback(m, err);
        return;
    }
    if (status == 404) { /* nothing was left behind */
        rolled_back(m, m->why);
        return;
    }
    /* this move created it (the name was free when it began): remove it, the source stays */
    gw_vol_delete(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_target_removed, m);
}

static void roll_back_now(move_t *m)
{
    gw_vol_get(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_target_checked, m);
}

/* the transfer did not complete (or was cancelled): remove any partial target, keep the source */
static void roll_back(move_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void roll_back(move_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(m->why);
    m->why = gw_text_vformat(fmt, ap);
    va_end(ap);
    roll_back_now(m);
}

/* ---- the transfer ---- */

static void watch(move_t *m);

/* progress values are strings for lxc (it type-asserts them) */
static void relay_progress(move_t *m, json_t *meta)
{
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v)
    {
        size_t len = strlen(key);
        if (m->op == NULL || len < 9 || strcmp(key + len - 9, "_progress") != 0)
            continue;
        if (json_is_string(v))
            gw_op_set(m->op, key, json_incref(v));
        else if (json_is_number(v))
            gw_op_set(m->op, key, json_sprintf("%g", json_number_value(v)));
    }
}

static void on_watch_retry(h2o_timeout_entry_t *entry)
{
    watch(H2O_STRUCT_FROM_MEMBER(move_t, retry, entry));
}

static void on_transfer_state(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    json_t *op = json_object_get(json, "metadata");
    int answered = err == NULL && json_is_object(op) && (status == 200 || status == 404);
    if (!answered && !(err != NULL && gw_backend_not_sent()) && ++m->watch_errors <= WATCH_RETRIES) {
        /* a glitch (reset, timeout, 5xx) says nothing of the transfer, which may still run: ask again. Rolling back
         * under a running transfer could leave its volume behind */
        gw_log(GW_LOG_WARN, "transfer state unknown, asking again", "move", m->move_id, "status", gw_log_num((int)status), "err",
               err != NULL ? err : gw_vol_str(json, "error"), NULL);
        m->retry.cb = on_watch_retry;
        h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
        return;
    }
    if (err != NULL || status != 200 || !json_is_object(op)) { /* the target is down (its transfer with it), or forgot it */
        roll_back(m, "Lost track of the transfer on %s (status %ld: %s); the source was kept", m->dst->name, status,
                  err != NULL ? err : gw_vol_str(json, "error"));
        return;
    }
    m->watch_errors = 0;
    relay_progress(m, json_object_get(op, "metadata"));
    json_int_t code = json_integer_value(json_object_get(op, "status_code"));
    if (code < 200) {
        watch(m);
    } else if (code == 200 && !m->cancelled) {
        gw_vol_get(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_target_verified, m);
    } else {
        roll_back(m, "Error transferring storage volume: %s", gw_vol_str(op, "err"));
    }
}

/* long-polls the target's operation until it ends */
static void watch(move_t *m)
{
    char *path = gw_text_dupf("/1.0/operations/%s/wait?timeout=" POLL_WAIT_S, m->transfer_op);
    gw_backend_call(m->dst->url, m->id, "GET", path, NULL, 30000, on_transfer_state, m);
    free(path);
}

static void on_migrated(void *data, const char *err, long status, json_t *json, const char *location)
{
    move_t *m = data;
    (void)location;
    const char *tid = json_string_value(json_object_get(json_object_get(json, "metadata"), "id"));
    if (err != NULL || status != 202 || tid == NULL) { /* nothing was created on the target */
        finish(m, "refused", GW_OP_FAILURE, "%s",
               err != NULL                          ? err
               : *gw_vol_str(json, "error") != '\0' ? gw_vol_str(json, "error")
                                                    : "the target refused the transfer");
        return;
    }
    m->transfer_op = strdup(tid);
    if (journal(m, "transferring") < 0) /* if it cannot be recorded, "transferred" cannot either: the source is kept */
        return;
    watch(m);
}

static void on_cancel(gw_op_t *op, void *data)
{
    move_t *m = data;
    (void)op;
    /* LXD 5.0.2 cannot cancel either side of a transfer: cutting its data path (the relay) makes it fail on both
     * members; the roll-back then removes what the target kept. Without a relay it runs to its end first. */
    m->cancelled = 1;
    gw_log(GW_LOG_INFO, "volume move cancel requested", "move", m->move_id, "cut", m->relay != NULL ? "yes" : "no", NULL);
    if (m->relay != NULL) {
        gw_relay_close(m->relay);
        m->relay = NULL;
    }
}

/* every check passed: the operation starts */
static void begin(move_t *m)
{
    h2o_req_t *req = m->req;
    if (req == NULL) { /* the client left before anything was changed */
        move_free(m);
        return;
    }
    char *res = gw_text_dupf("/1.0/storage-pools/%s/volumes/custom/%s", m->pool, m->name);
    m->op =
        gw_op_start("Moving storage volume", m->project, m->dst->name, json_pack("{s:[s]}", "storage_volumes", res), on_cancel, m);
    free(res);
    m->move_id = strdup(gw_op_id(m->op));
    *m->holder = NULL;
    m->req = NULL;
    gw_op_send_created(req, m->op);
    gw_metrics_single_call("volume_move", "started");
    int recorded = journal(m, "begin");
    if (recorded < 0)
        return;
    if (recorded == 0) {
        finish(m, "refused", GW_OP_FAILURE, "Cannot record the move in the gateway's journal; nothing was changed");
        return;
    }
    gw_log(GW_LOG_INFO, "volume move started", "move", m->move_id, "volume", m->name, "from", m->src->name, "to", m->dst->name,
           NULL);
    gw_migrate_spec_t spec = {m->id,       m->src,         m->dst,    m->pool, m->project, m->name,
                              m->dst_pool, m->dst_project, m->volume, 0,       0,          &m->relay};
    gw_migrate_start(&spec, on_migrated, m);
}

/* ---- checks, before anything is changed ---- */

static void refuse(move_t *m, long status, json_t *json, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse(move_t *m, long status, json_t *json, const char *fmt, ...)
{
    gw_metrics_single_call("volume_move", "refused");
    if (m->req != NULL) {
        h2o_req_t *req = m->req;
        *m->holder = NULL;
        m->req = NULL;
        if (fmt == NULL && json_is_object(json)) {
            gw_lxd_send_json(req, (int)status, json_incref(json));
        } else {
            va_list ap;
            va_start(ap, fmt);
            char *msg = gw_text_vformat(fmt != NULL ? fmt : "Cluster member did not answer", ap);
            va_end(ap);
            gw_lxd_send_error(req, (int)status, "%s", msg);
            free(msg);
        }
    }
    move_free(m);
}

static void on_target_name(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    if (err == NULL && status == 200)
        refuse(m, 409, NULL, "Volume by that name already exists on %s", m->dst->name);
    else if (err == NULL && status == 404 && strcmp(gw_vol_str(json, "error"), "Storage volume not found") == 0)
        begin(m);
    else
        refuse(m, err != NULL ? 502 : status, json, err != NULL ? "Cluster member did not answer: %s" : NULL, err);
}

static void on_target_pool(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    if (err != NULL || status != 200) {
        refuse(m, err != NULL ? 502 : status, json, err != NULL ? "Cluster member did not answer: %s" : NULL, err);
        return;
    }
    gw_vol_get(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_target_name, m);
}

static void on_source(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    json_t *vol = json_object_get(json, "metadata");
    if (err != NULL || status != 200) {
        refuse(m, err != NULL ? 502 : status, json, err != NULL ? "Cluster member did not answer: %s" : NULL, err);
        return;
    }
    if (*gw_vol_str(vol, "location") == '\0') { /* a remote pool: LXD moves it itself */
        h2o_req_t *req = m->req;
        const gw_identity_t *id = m->id;
        move_free(m);
        if (req != NULL)
            gw_proxy_pass(req, id);
        return;
    }
    /* the target keeps what the source had (native LXD and Incus drop it) */
    m->volume =
        json_pack("{s:s, s:s, s:O, s:s, s:s}", "name", m->dst_name, "type", "custom", "config", json_object_get(vol, "config"),
                  "description", gw_vol_str(vol, "description"), "content_type", gw_vol_str(vol, "content_type"));
    if (!json_is_object(json_object_get(m->volume, "config")))
        json_object_set_new(m->volume, "config", json_object());
    gw_vol_get(m->dst, m->id, m->dst_pool, NULL, m->dst_project, on_target_pool, m);
}

static int is_volume_post(h2o_req_t *req, h2o_iovec_t *pool, h2o_iovec_t *vol)
{
    static const char prefix[] = "/1.0/storage-pools/", mid[] = "/volumes/custom/";
    h2o_iovec_t p = req->path_normalized;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) || p.len <= sizeof(prefix) - 1 ||
        memcmp(p.base, prefix, sizeof(prefix) - 1) != 0 || memchr(p.base, '\0', p.len) != NULL)
        return 0; /* (a decoded %00 would cut a name short: such a path is LXD's to judge, as it comes) */
    const char *start = p.base + sizeof(prefix) - 1, *end = p.base + p.len, *slash = memchr(start, '/', end - start);
    if (slash == NULL || (size_t)(end - slash) <= sizeof(mid) - 1 || memcmp(slash, mid, sizeof(mid) - 1) != 0)
        return 0;
    const char *name = slash + sizeof(mid) - 1;
    if (memchr(name, '/', end - name) != NULL)
        return 0; /* a snapshot, or a sub-resource */
    *pool = h2o_iovec_init(start, slash - start);
    *vol = h2o_iovec_init(name, end - name);
    return 1;
}

static int claims(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t pool, vol;
    if (!is_volume_post(req, &pool, &vol) || !gw_trust_is_client(caller))
        return 0;
    const char *target = gw_lxd_query(req, "target");
    json_t *body = gw_vol_body(req);
    int ours = target != NULL && *target != '\0' && *gw_vol_str(json_object_get(body, "source"), "location") != '\0';
    json_decref(body);
    return ours;
}

static void on_req_dispose(void *data)
{
    move_t *m = *(move_t **)data;
    if (m != NULL)
        m->req = NULL;
}

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t pool, vol;
    is_volume_post(req, &pool, &vol);
    move_t *m = calloc(1, sizeof(*m)), **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), on_req_dispose);
    *holder = m;
    m->holder = holder;
    m->req = req;
    m->id = caller->identity;
    json_t *body = gw_vol_body(req);
    const char *project = gw_lxd_query(req, "project"), *target = gw_lxd_query(req, "target"),
               *location = gw_vol_str(json_object_get(body, "source"), "location");
    m->pool = h2o_strdup(NULL, pool.base, pool.len).base;
    m->name = h2o_strdup(NULL, vol.base, vol.len).base;
    m->project = strdup(project != NULL && *project != '\0' ? project : "default");
    m->dst_pool = strdup(*gw_vol_str(body, "pool") != '\0' ? gw_vol_str(body, "pool") : m->pool);
    m->dst_project = strdup(*gw_vol_str(body, "project") != '\0' ? gw_vol_str(body, "project") : m->project);
    m->dst_name = strdup(*gw_vol_str(body, "name") != '\0' ? gw_vol_str(body, "name") : m->name);
    int status = 400;
    char *msg = NULL;
    static const char *const names[] = {"pool", "volume name", "project", "target", NULL};
    const char *values[] = {m->pool, m->name, m->project, target}, *bad = gw_vol_bad_text(names, values);
    if (bad != NULL)
        refuse(m, 400, NULL, "The %s in the request is not valid UTF-8", bad);
    else if (strchr(m->dst_name, '/') != NULL)
        refuse(m, 400, NULL, "Storage volume names may not contain slashes");
    else if (strcmp(location, target) == 0)
        refuse(m, 400, NULL, "The volume is already on %s: source.location and target name the same member", target);
    else if ((m->src = gw_vol_member(location, "source.location", &status, &msg)) == NULL ||
             (m->dst = gw_vol_member(target, "target", &status, &msg)) == NULL)
        refuse(m, status, NULL, "%s", msg);
    else {
        gw_member_note(req, m->dst);
        gw_vol_get(m->src, m->id, m->pool, m->name, m->project, on_source, m);
    }
    free(msg);
    json_decref(body);
}

/* ---- recovery of the moves a crash interrupted ---- */

static const char *jstr(json_t *rec, const char *key)
{
    return gw_vol_str(rec, key);
}

static void recover(move_t *m);

static void on_recover_retry(h2o_timeout_entry_t *entry)
{
    recover(H2O_STRUCT_FROM_MEMBER(move_t, retry, entry));
}

static void on_recover_target(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    (void)json;
    if (err != NULL) { /* the target does not answer yet: try again */
        h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
        return;
    }
    if (status == 200) {
        gw_log(GW_LOG_WARN, "recovering a move: transfer completed, deleting the source", "move", m->move_id, NULL);
        gw_vol_delete(m->src, m->id, m->pool, m->name, m->project, on_source_deleted, m);
    } else {
        finish(m, "kept-source", GW_OP_FAILURE, "recovered: the target volume is missing, the source was kept");
    }
}

static void on_recover_transfer(void *data, const char *err, long status, json_t *json)
{
    move_t *m = data;
    json_int_t code = json_integer_value(json_object_get(json_object_get(json, "metadata"), "status_code"));
    if (err == NULL && status == 200 && code != 0 && code < 200) { /* still running on the target: let it end first */
        h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
        return;
    }
    gw_log(GW_LOG_WARN, "recovering a move: transfer not recorded as complete, rolling back", "move", m->move_id, NULL);
    roll_back(m, "recovered: the move was interrupted before the transfer completed; the source was kept");
}

static void recover(move_t *m)
{
    json_t *r = m->journal;
    m->src = gw_members_find(jstr(r, "src"));
    m->dst = gw_members_find(jstr(r, "dst"));
    if (m->src == NULL || m->dst == NULL || !m->src->healthy || !m->dst->healthy) { /* not known/reachable yet */
        h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
        return;
    }
    if (strcmp(jstr(r, "step"), "transferred") == 0) {
        gw_vol_get(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_recover_target, m);
    } else if (*jstr(r, "transfer_op") != '\0') {
        char *path = gw_text_dupf("/1.0/operations/%s", jstr(r, "transfer_op"));
        gw_backend_call(m->dst->url, m->id, "GET", path, NULL, 30000, on_recover_transfer, m);
        free(path);
    } else {
        gw_log(GW_LOG_WARN, "recovering a move: interrupted before the transfer, rolling back", "move", m->move_id, NULL);
        roll_back(m, "recovered: the move was interrupted before the transfer; the source was kept");
    }
}

static void recover_all(void)
{
    json_t *list = gw_journal_unfinished(), *r;
    size_t i;
    json_array_foreach(list, i, r)
    {
        move_t *m = calloc(1, sizeof(*m));
        m->journal = json_incref(r);
        m->id = &gw_identities[GW_IDENTITY_GATEWAY];
        m->move_id = strdup(jstr(r, "move"));
        m->pool = strdup(jstr(r, "pool")), m->project = strdup(jstr(r, "project")), m->name = strdup(jstr(r, "name"));
        m->dst_pool = strdup(jstr(r, "dst_pool")), m->dst_project = strdup(jstr(r, "dst_project"));
        m->dst_name = strdup(jstr(r, "dst_name"));
        m->retry.cb = on_recover_retry;
        gw_log(GW_LOG_WARN, "found an interrupted move", "move", m->move_id, "step", jstr(r, "step"), "volume", m->name, "from",
               jstr(r, "src"), "to", jstr(r, "dst"), NULL);
        h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry); /* once members are known */
    }
    json_decref(list);
}

static const char *init(const gw_config_t *conf, h2o_context_t *c)
{
    const char *err;
    ctx = c;
    h2o_timeout_init(ctx->loop, &retry_timeout, RECOVER_RETRY_MS);
    h2o_timeout_init(ctx->loop, &pause_timeout, PAUSE_DELAY_MS);
    if ((err = gw_journal_open(conf->state_dir)) != NULL)
        return err;
    recover_all();
    return NULL;
}

const gw_plugin_t gw_plugin_volume_move = {"volume_move", "cluster_internal_custom_volume_copy", init, claims, handle};
