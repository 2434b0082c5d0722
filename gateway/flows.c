/*
 * flows.c: see flows.h. Two parts: the owner's writes (gw_flow_*), and every replica's reading of the list, which
 * adopts the flows whose owner is gone (adopt_*). Every call is made as the gateway's identity to any member.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/sha.h>
#include "clock.h"
#include "flows.h"
#include "identity.h"
#include "journal.h"
#include "log.h"
#include "members.h"
#include "text.h"

#define CALL_MS 30000       /* one call to the cluster (a busy cluster takes seconds to write; a write cut short may still land) */
#define END_RETRY_MS 5000   /* a record that could not be deleted is tried again this long after */
#define FIRST_LIST_MS 1000  /* the first reading of the list, after start (the members are known by then, or soon) */
#define BARRIER_POLL_MS 100 /* test hook: how often the adoption barrier's file is looked for */
#define KEY(k) "user.lxd-gateway." k
#define MAX_KINDS 4
/* bytes: a record text longer than this is not the gateway's writing (a move's is < 1 KiB, a drain's plan about 150 bytes
 * a volume); the whole list is bounded by backend.c's MAX_BODY */
#define RECORD_MAX (16 << 20)
#define GONE_KEEP_MS (10 * 60 * 1000) /* an ended flow's last owner is remembered this long (its operation is asked there) */

/* the steps of a write, in order */
typedef enum {
    W_IDLE,    /* nothing in flight */
    W_PROJECT, /* POST /1.0/projects: the project did not exist (the first write of the first flow) */
    W_CREATE,  /* POST the object of epoch 1 (the flow's first write) */
    W_PUT,     /* PUT the object of this replica's epoch */
    W_CHECK,   /* GET the object of the next epoch: none, and the write is confirmed */
    W_GONE,    /* (the PUT said 404) GET this replica's object: gone, or was that another 404? */
    W_DELETE,  /* DELETE this replica's object: the flow ended */
} write_state_t;

struct st_gw_flow_t {
    char *id, *kind;
    unsigned epoch;            /* this replica's epoch: its object is flow-<id>-<epoch> */
    int created;               /* that object exists (it was created by this replica) */
    unsigned long beat;        /* writes made at this epoch */
    json_t *record;            /* the merged record */
    write_state_t state;       /* the write in flight */
    gw_mcall_t *call;          /* its call, or NULL */
    uint64_t sent_at;          /* gw_clock_ms() when the write in flight was sent */
    uint64_t confirmed_at;     /* sent_at of the last confirmed write (0: none) */
    gw_flow_written_cb cb;     /* the write's caller (NULL: a beat) */
    void *data;                /* ... its argument */
    int queued;                /* a caller's write waits for the beat in flight: */
    json_t *q_fields;          /* ... its fields (with "step") */
    gw_flow_written_cb q_cb;   /* ... its callback */
    void *q_data;              /* ... and argument */
    int ending;                /* gw_flow_end: deleting, then freed */
    int project_tried;         /* W_PROJECT was tried for this write */
    h2o_timeout_entry_t timer; /* the next beat, or the next try of the deletion */
    struct st_gw_flow_t *next; /* the list of flows this replica owns (S.flows) */
};

/* an adoption under way: the steps in order */
typedef enum {
    A_BARRIER, /* test hook: waiting for the barrier's file */
    A_CLAIM,   /* POST the object of the next epoch: exactly one replica creates it */
    A_REREAD,  /* GET the old epoch's object: written since it was seen? */
    A_GRACE,   /* it was: the old owner may act until lease/2 after its last write; wait that long */
    A_FENCE,   /* DELETE the old epochs' objects: the old owner's next write fails */
} adopt_state_t;

typedef struct st_adopt_t {
    adopt_state_t state;
    char *id, *kind, *from, *beat; /* the flow, its kind, its owner and beat when it was seen */
    unsigned epoch;                /* the epoch seen (the claim is epoch + 1) */
    json_t *record;                /* its record */
    json_t *fence;                 /* the epochs to delete (numbers) */
    gw_mcall_t *call;
    h2o_timeout_entry_t timer;
    struct st_adopt_t *next;
} adopt_t;

static struct {
    h2o_context_t *ctx;
    char *replica;
    int (*ours)(const char *owner);
    uint64_t lease_ms;
    h2o_timeout_t beat_timeout;  /* lease/4 */
    h2o_timeout_t end_timeout;   /* END_RETRY_MS */
    h2o_timeout_t grace_timeout; /* lease/2 */
    h2o_timeout_t barrier_timeout;
    h2o_timeout_t first_timeout; /* FIRST_LIST_MS */
    h2o_timeout_entry_t list_timer;
    gw_mcall_t *list_call;
    int listed;         /* the list was read once (the start's adoptions are done) */
    json_t *seen;       /* id -> {"epoch", "owner", "beat", "since"}: the last reading */
    json_t *gone;       /* id -> {"owner", "at"}: flows gone from the list, their last owner (for GONE_KEEP_MS) */
    json_t *unfinished; /* the journal's unfinished records, published at the first reading */
    gw_flow_t *flows;
    adopt_t *adopts;
    size_t unlocking; /* gw_flows_unlock's calls in flight */
    struct {
        const char *kind;
        gw_flow_adopt_cb cb;
    } kinds[MAX_KINDS];
    size_t num_kinds;
} S;

/* ---- helpers ---- */

static char *object_path(const char *id, unsigned epoch)
{
    return gw_text_dupf(GW_FLOWS_OBJECTS "/flow-%s-%u?project=" GW_FLOWS_PROJECT, id, epoch);
}

static const char *answer_error(const char *err, json_t *json)
{
    const char *e = json_string_value(json_object_get(json, "error"));
    return err != NULL ? err : e != NULL && *e != '\0' ? e : "unexpected answer";
}

static gw_mcall_t *call(const char *method, const char *path, json_t *body, gw_call_cb cb, void *data)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], method, path, text, CALL_MS, cb, data);
    free(text);
    return c;
}

/* the object's body: what the owner writes */
static json_t *object_body(gw_flow_t *f, int with_name)
{
    char *record = json_dumps(f->record, JSON_COMPACT | JSON_SORT_KEYS), beat[32];
    snprintf(beat, sizeof(beat), "%lu", f->beat);
    json_t *b =
        json_pack("{s:s, s:{s:s, s:s, s:s, s:s}, s:{}}", "description",
                  "lxd-gateway: the state of a running operation (do not edit; removed when it ends)", "config", KEY("owner"),
                  S.replica, KEY("beat"), beat, KEY("kind"), f->kind, KEY("record"), record != NULL ? record : "{}", "devices");
    free(record);
    if (with_name) {
        char *name = gw_text_dupf("flow-%s-%u", f->id, f->epoch);
        json_object_set_new(b, "name", json_string(name));
        free(name);
    }
    return b;
}

static gw_flow_adopt_cb adopter_of(const char *kind)
{
    for (size_t i = 0; i != S.num_kinds; ++i)
        if (strcmp(S.kinds[i].kind, kind) == 0)
            return S.kinds[i].cb;
    return NULL;
}

static gw_flow_t *owned(const char *id)
{
    for (gw_flow_t *f = S.flows; f != NULL; f = f->next)
        if (strcmp(f->id, id) == 0)
            return f;
    return NULL;
}

static int adopting(const char *id)
{
    for (adopt_t *a = S.adopts; a != NULL; a = a->next)
        if (strcmp(a->id, id) == 0)
            return 1;
    return 0;
}

/* ---- the owner's writes ---- */

static void flow_free(gw_flow_t *f)
{
    for (gw_flow_t **p = &S.flows; *p != NULL; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    if (h2o_timeout_is_linked(&f->timer))
        h2o_timeout_unlink(&f->timer);
    if (f->call != NULL)
        gw_members_call_cancel(f->call);
    json_decref(f->record);
    json_decref(f->q_fields);
    free(f->id), free(f->kind);
    free(f);
}

static void on_write(void *data, const char *err, long status, json_t *json, const gw_call_t *c);
static void start_write(gw_flow_t *f);

static void on_beat_timer(h2o_timeout_entry_t *entry)
{
    gw_flow_t *f = H2O_STRUCT_FROM_MEMBER(gw_flow_t, timer, entry);
    if (f->state == W_IDLE && !f->ending) {
        f->cb = NULL; /* a beat */
        start_write(f);
    }
}

static void arm_beat(gw_flow_t *f)
{
    if (h2o_timeout_is_linked(&f->timer))
        h2o_timeout_unlink(&f->timer);
    f->timer.cb = on_beat_timer;
    h2o_timeout_link(S.ctx->loop, &S.beat_timeout, &f->timer);
}

/* the write in flight ended: its caller is told, then the queued one starts */
static void write_done(gw_flow_t *f, const char *err, int lost)
{
    f->state = W_IDLE;
    f->call = NULL;
    f->project_tried = 0;
    if (err == NULL && !lost)
        f->confirmed_at = f->sent_at;
    if (lost)
        gw_log(GW_LOG_WARN, "flow lost to another replica; not touched again here", "flow", f->id, NULL);
    else if (err != NULL)
        gw_log(GW_LOG_WARN, "flow state not written to the cluster", "flow", f->id, "err", err, NULL);
    gw_flow_written_cb cb = f->cb;
    void *data = f->data;
    f->cb = NULL;
    if (f->queued && lost) { /* one caller hears of the loss: the one waiting (it may forget `f` at once) */
        gw_flow_written_cb q_cb = f->q_cb;
        f->queued = 0;
        json_decref(f->q_fields), f->q_fields = NULL;
        q_cb(f->q_data, NULL, 1);
        return;
    }
    if (!lost && !f->ending)
        arm_beat(f);
    if (f->queued) { /* the caller's write, which waited for the one in flight */
        f->queued = 0;
        json_object_update(f->record, f->q_fields);
        json_decref(f->q_fields), f->q_fields = NULL;
        f->cb = f->q_cb, f->data = f->q_data;
        start_write(f);
    }
    if (cb != NULL) /* (last: it may forget `f`) */
        cb(data, err, lost);
}

static void start_write(gw_flow_t *f)
{
    f->sent_at = gw_clock_ms();
    ++f->beat;
    json_t *body;
    if (!f->created) {
        f->state = W_CREATE;
        body = object_body(f, 1);
        f->call = call("POST", GW_FLOWS_OBJECTS "?project=" GW_FLOWS_PROJECT, body, on_write, f);
    } else {
        f->state = W_PUT;
        body = object_body(f, 0);
        char *path = object_path(f->id, f->epoch);
        f->call = call("PUT", path, body, on_write, f);
        free(path);
    }
    json_decref(body);
    if (f->call == NULL)
        write_done(f, "no cluster member answers", 0);
}

static void create_project(gw_mcall_t **slot, gw_call_cb cb, void *data)
{
    json_t *p = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "name", GW_FLOWS_PROJECT, "description",
                          "lxd-gateway: the state of the gateway's running operations (moves, copies, drains); do not edit",
                          "config", "features.profiles", "true", "features.networks", "false", "features.images", "false",
                          "features.storage.volumes", "false");
    *slot = call("POST", "/1.0/projects", p, cb, data);
    json_decref(p);
}

/* a creation refused because the name exists (LXD: "... already exists" from its API, or the database's "UNIQUE
 * constraint failed" when two creations raced): the one atomic step this module builds on */
static int name_taken(const char *err, json_t *json)
{
    const char *e = json_string_value(json_object_get(json, "error"));
    return err == NULL && e != NULL && (strstr(e, "exists") != NULL || strstr(e, "UNIQUE") != NULL);
}

static int project_missing(long status, json_t *json)
{
    const char *e = json_string_value(json_object_get(json, "error"));
    return status == 404 && e != NULL && strstr(e, "roject") != NULL;
}

static void on_write(void *data, const char *err, long status, json_t *json, const gw_call_t *c)
{
    gw_flow_t *f = data;
    (void)c;
    f->call = NULL;
    switch (f->state) {
    case W_PROJECT: /* (made, or another replica made it meanwhile: the creation is tried again either way) */
        f->state = W_CREATE;
        --f->beat;
        start_write(f);
        return;
    case W_CREATE:
        if (err == NULL && (status == 200 || status == 201)) {
            f->created = 1;
            return write_done(f, NULL, 0); /* (epoch 1: there is no older owner to take it over yet) */
        }
        if (name_taken(err, json)) {
            f->created = 1; /* (an earlier try that timed out had made it: epoch 1 is only ever made by this replica) */
            --f->beat;
            return start_write(f);
        }
        if (err == NULL && !f->project_tried && project_missing(status, json)) {
            f->project_tried = 1;
            f->state = W_PROJECT;
            create_project(&f->call, on_write, f);
            if (f->call == NULL)
                write_done(f, "no cluster member answers", 0);
            return;
        }
        return write_done(f, answer_error(err, json), 0);
    case W_PUT:
        if (err == NULL && project_missing(status, json)) { /* the project was deleted by hand: made again, and the record */
            gw_log(GW_LOG_ERROR, "the gateway's project was deleted while flows ran; writing their state again", "project",
                   GW_FLOWS_PROJECT, "flow", f->id, NULL);
            f->created = 0, --f->beat;
            return start_write(f);
        }
        if (err == NULL && status == 404) { /* gone (an adopter deleted it)? LXD says 404 for other reasons too: asked */
            f->state = W_GONE;
            char *path = object_path(f->id, f->epoch);
            f->call = call("GET", path, NULL, on_write, f);
            free(path);
            if (f->call == NULL)
                write_done(f, "no cluster member answers", 0);
            return;
        }
        if (err != NULL || status != 200)
            return write_done(f, answer_error(err, json), 0);
        f->state = W_CHECK;
        {
            char *path = object_path(f->id, f->epoch + 1);
            f->call = call("GET", path, NULL, on_write, f);
            free(path);
        }
        if (f->call == NULL)
            write_done(f, "no cluster member answers", 0);
        return;
    case W_CHECK:
        if (err == NULL && status == 404)
            return write_done(f, NULL, 0);
        if (err == NULL && status == 200) { /* a newer epoch exists: adopted */
            gw_log(GW_LOG_WARN, "flow's next epoch exists in the cluster", "flow", f->id, "epoch", gw_log_num(f->epoch + 1), NULL);
            return write_done(f, NULL, 1);
        }
        return write_done(f, answer_error(err, json), 0);
    case W_GONE:
        if (err == NULL && status == 404) {
            gw_log(GW_LOG_WARN, "flow's state is gone from the cluster", "flow", f->id, "epoch", gw_log_num(f->epoch), NULL);
            return write_done(f, NULL, 1);
        }
        return write_done(f, err != NULL ? err : "the cluster refused the write (404) of a record it has", 0);
    case W_DELETE:
        if (err == NULL && (status == 200 || status == 404)) {
            json_t *seen = json_object_get(S.seen, f->id);
            if (seen != NULL && (unsigned)json_integer_value(json_object_get(seen, "epoch")) == f->epoch) {
                /* gone, as the next reading will show (gw_flows_live: at once); a later epoch is another replica's */
                json_object_set_new(S.gone, f->id, json_pack("{s:s, s:I}", "owner", S.replica, "at", (json_int_t)gw_clock_ms()));
                json_object_del(S.seen, f->id);
            }
            flow_free(f);
            return;
        }
        gw_log(GW_LOG_WARN, "ended flow's state not removed from the cluster; will retry", "flow", f->id, "err",
               answer_error(err, json), NULL);
        f->state = W_IDLE;
        h2o_timeout_link(S.ctx->loop, &S.end_timeout, &f->timer);
        return;
    case W_IDLE:
        return;
    }
}

gw_flow_t *gw_flow_new(const char *id, const char *kind)
{
    gw_flow_t *f = calloc(1, sizeof(*f));
    f->id = strdup(id), f->kind = strdup(kind);
    f->epoch = 1;
    f->record = json_object();
    f->next = S.flows, S.flows = f;
    return f;
}

void gw_flow_write(gw_flow_t *f, const char *step, json_t *fields, gw_flow_written_cb cb, void *data)
{
    json_t *all = fields != NULL ? json_deep_copy(fields) : json_object();
    if (step != NULL)
        json_object_set_new(all, "step", json_string(step));
    if (f->state != W_IDLE) { /* a beat in flight */
        f->queued = 1;
        f->q_fields = all, f->q_cb = cb, f->q_data = data;
        return;
    }
    json_object_update(f->record, all);
    json_decref(all);
    f->cb = cb, f->data = data;
    start_write(f);
}

int gw_flow_may_act(const gw_flow_t *f)
{
    return f->confirmed_at != 0 && gw_clock_ms() - f->confirmed_at < S.lease_ms / 2;
}

static void on_end_timer(h2o_timeout_entry_t *entry)
{
    gw_flow_t *f = H2O_STRUCT_FROM_MEMBER(gw_flow_t, timer, entry);
    if (f->state != W_IDLE)
        return;
    if (!f->created) {
        flow_free(f);
        return;
    }
    f->state = W_DELETE;
    char *path = object_path(f->id, f->epoch);
    f->call = call("DELETE", path, NULL, on_write, f);
    free(path);
    if (f->call == NULL) {
        f->state = W_IDLE;
        h2o_timeout_link(S.ctx->loop, &S.end_timeout, &f->timer);
    }
}

void gw_flow_end(gw_flow_t *f)
{
    f->ending = 1;
    f->cb = NULL, f->queued = 0;
    if (h2o_timeout_is_linked(&f->timer))
        h2o_timeout_unlink(&f->timer);
    f->timer.cb = on_end_timer;
    if (f->call != NULL) { /* (a beat in flight: dropped; the deletion follows at once) */
        gw_members_call_cancel(f->call);
        f->call = NULL;
        f->state = W_IDLE;
    }
    on_end_timer(&f->timer);
}

void gw_flow_release(gw_flow_t *f)
{
    flow_free(f);
}

void gw_flow_forget(gw_flow_t *f)
{
    flow_free(f);
}

const char *gw_flow_id(const gw_flow_t *f)
{
    return f->id;
}

/* ---- adoption ---- */

static void adopt_free(adopt_t *a)
{
    for (adopt_t **p = &S.adopts; *p != NULL; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    if (h2o_timeout_is_linked(&a->timer))
        h2o_timeout_unlink(&a->timer);
    if (a->call != NULL)
        gw_members_call_cancel(a->call);
    free(a->id), free(a->kind), free(a->from), free(a->beat);
    json_decref(a->record), json_decref(a->fence);
    free(a);
}

static void adopt_step(adopt_t *a);
static void list_now(void);

static void on_adopt_timer(h2o_timeout_entry_t *entry)
{
    adopt_step(H2O_STRUCT_FROM_MEMBER(adopt_t, timer, entry));
}

static void deliver(adopt_t *a)
{
    gw_flow_adopt_cb cb = adopter_of(a->kind);
    gw_flow_t *f = gw_flow_new(a->id, a->kind);
    f->epoch = a->epoch + 1;
    f->created = 1;
    json_object_update(f->record, a->record);
    f->confirmed_at = gw_clock_ms(); /* (the older epochs are gone: nobody else may write this flow) */
    arm_beat(f);
    gw_log(GW_LOG_WARN, "flow adopted", "flow", a->id, "kind", a->kind, "from", a->from, "epoch", gw_log_num(f->epoch), NULL);
    json_t *record = json_incref(a->record);
    char *from = strdup(a->from);
    adopt_free(a);
    if (cb != NULL)
        cb(f, record, from);
    else
        gw_flow_release(f);
    json_decref(record);
    free(from);
}

static void on_adopt(void *data, const char *err, long status, json_t *json, const gw_call_t *c)
{
    adopt_t *a = data;
    (void)c;
    a->call = NULL;
    switch (a->state) {
    case A_CLAIM:
        if (err == NULL && (status == 200 || status == 201)) {
            a->state = A_REREAD;
            return adopt_step(a);
        }
        if (name_taken(err, json)) {
            gw_log(GW_LOG_INFO, "flow adoption lost to another replica", "flow", a->id, NULL);
            list_now(); /* (who won: its operation is asked there from now on) */
        } else
            gw_log(GW_LOG_WARN, "flow not adopted now; tried again later", "flow", a->id, "err", answer_error(err, json), NULL);
        return adopt_free(a);
    case A_REREAD: {
        const char *beat =
            json_string_value(json_object_get(json_object_get(json_object_get(json, "metadata"), "config"), KEY("beat")));
        if (err != NULL || (status != 200 && status != 404)) { /* (tried again: the claim is ours) */
            a->timer.cb = on_adopt_timer;
            h2o_timeout_link(S.ctx->loop, &S.end_timeout, &a->timer);
            return;
        }
        if (status == 200 && (beat == NULL || strcmp(beat, a->beat) != 0)) {
            gw_log(GW_LOG_WARN, "flow's old owner wrote after its lease seemed over; waiting for it to see the adoption", "flow",
                   a->id, "from", a->from, NULL);
            a->state = A_GRACE;
            a->timer.cb = on_adopt_timer;
            h2o_timeout_link(S.ctx->loop, &S.grace_timeout, &a->timer);
            return;
        }
        a->state = A_FENCE;
        return adopt_step(a);
    }
    case A_FENCE:
        if (err == NULL && (status == 200 || status == 404)) {
            json_array_remove(a->fence, 0);
            return adopt_step(a);
        }
        a->timer.cb = on_adopt_timer; /* (tried again) */
        h2o_timeout_link(S.ctx->loop, &S.end_timeout, &a->timer);
        return;
    case A_BARRIER:
    case A_GRACE:
        return;
    }
}

static void adopt_step(adopt_t *a)
{
    char *path;
    switch (a->state) {
    case A_BARRIER: {
        const char *barrier = getenv("LXDGW_TEST_ADOPT_BARRIER"); /* (a test-only hook) */
        if (barrier != NULL && access(barrier, F_OK) != 0) {
            a->timer.cb = on_adopt_timer;
            h2o_timeout_link(S.ctx->loop, &S.barrier_timeout, &a->timer);
            return;
        }
        a->state = A_CLAIM;
    }
        /* fall through */
    case A_CLAIM: {
        gw_flow_t tmp = {.id = a->id, .kind = a->kind, .epoch = a->epoch + 1, .record = a->record};
        json_t *body = object_body(&tmp, 1);
        json_object_set_new(json_object_get(body, "config"), KEY("adopted_from"), json_string(a->from));
        a->call = call("POST", GW_FLOWS_OBJECTS "?project=" GW_FLOWS_PROJECT, body, on_adopt, a);
        json_decref(body);
        break;
    }
    case A_REREAD:
        path = object_path(a->id, a->epoch);
        a->call = call("GET", path, NULL, on_adopt, a);
        free(path);
        break;
    case A_GRACE:
        a->state = A_FENCE;
        /* fall through */
    case A_FENCE:
        if (json_array_size(a->fence) == 0)
            return deliver(a);
        path = object_path(a->id, (unsigned)json_integer_value(json_array_get(a->fence, 0)));
        a->call = call("DELETE", path, NULL, on_adopt, a);
        free(path);
        break;
    }
    if (a->call == NULL) {
        gw_log(GW_LOG_WARN, "flow not adopted now; tried again later", "flow", a->id, "err", "no cluster member answers", NULL);
        adopt_free(a);
    }
}

static void adopt(const char *id, unsigned epoch, json_t *seen, json_t *fence)
{
    adopt_t *a = calloc(1, sizeof(*a));
    a->id = strdup(id);
    a->kind = strdup(json_string_value(json_object_get(seen, "kind")));
    a->from = strdup(json_string_value(json_object_get(seen, "owner")));
    a->beat = strdup(json_string_value(json_object_get(seen, "beat")));
    a->epoch = epoch;
    a->record = json_incref(json_object_get(seen, "record"));
    a->fence = json_incref(fence);
    a->next = S.adopts, S.adopts = a;
    if (getenv("LXDGW_TEST_ADOPT_BARRIER") != NULL)
        gw_log(GW_LOG_INFO, "adoption held for a test", "flow", a->id, NULL);
    a->state = A_BARRIER;
    adopt_step(a);
}

/* ---- the list ---- */

/* "flow-<36 characters of [0-9a-f-]>-<epoch>": 1 and the parts, or 0 (an object the gateway did not make) */
static int parse_name(const char *name, char *id, unsigned *epoch)
{
    size_t len = strlen(name);
    if (len < 5 + 36 + 2 || len > 5 + 36 + 1 + 9 || strncmp(name, "flow-", 5) != 0 || name[5 + 36] != '-')
        return 0;
    for (size_t i = 5; i != 5 + 36; ++i)
        if (strchr("0123456789abcdef-", name[i]) == NULL)
            return 0;
    unsigned e = 0;
    for (const char *p = name + 5 + 36 + 1; *p != '\0'; ++p) {
        if (*p < '0' || *p > '9')
            return 0;
        e = e * 10 + (unsigned)(*p - '0');
    }
    memcpy(id, name + 5, 36);
    id[36] = '\0';
    *epoch = e;
    return e != 0;
}

/* a member's text, checked: a short string of printable ASCII, or NULL */
static const char *text_field(json_t *config, const char *key)
{
    const char *s = json_string_value(json_object_get(config, key));
    if (s == NULL || strlen(s) > 64)
        return NULL;
    for (const char *p = s; *p != '\0'; ++p)
        if (*p < 0x21 || *p > 0x7e)
            return NULL;
    return s;
}

static void schedule_list(void);

/* the journal's unfinished flows the cluster does not know: published (epoch 1, this replica's), then recovered */
static void on_published(void *data, const char *err, int lost)
{
    gw_flow_t *f = data;
    if (err != NULL || lost) {
        gw_log(GW_LOG_ERROR, "cannot publish an unfinished flow of the journal to the cluster; tried at the next start", "flow",
               f->id, "err", err != NULL ? err : "taken by another replica", NULL);
        gw_flow_forget(f);
        return;
    }
    gw_flow_adopt_cb cb = adopter_of(f->kind);
    json_t *record = json_incref(f->record);
    gw_log(GW_LOG_WARN, "flow adopted", "flow", f->id, "kind", f->kind, "from", "journal", "epoch", gw_log_num(f->epoch), NULL);
    if (cb != NULL)
        cb(f, record, S.replica);
    else
        gw_flow_release(f);
    json_decref(record);
}

static void publish_unfinished(void)
{
    size_t i;
    json_t *r;
    json_array_foreach(S.unfinished, i, r)
    {
        const char *id = json_string_value(json_object_get(r, "move"));
        if (id == NULL || json_object_get(S.seen, id) != NULL || owned(id) != NULL || adopting(id))
            continue;
        if (json_is_true(json_object_get(r, GW_FLOWS_IN_CLUSTER))) {
            /* written by a version that records its flows in the cluster, which no longer has this one: it ended (here,
             * or where it was adopted), or its first record never reached the cluster (then no member was touched) */
            json_t *end = json_pack("{s:s}", "outcome", "not in the cluster: ended, or never begun");
            gw_journal_end(id, end);
            json_decref(end);
            continue;
        }
        const char *kind = json_string_value(json_object_get(r, "kind"));
        gw_flow_t *f = gw_flow_new(id, kind != NULL ? kind : "move");
        json_t *fields = json_deep_copy(r);
        json_object_del(fields, "kind");
        gw_flow_write(f, NULL, fields, on_published, f);
        json_decref(fields);
    }
    json_decref(S.unfinished);
    S.unfinished = NULL;
}

static void on_list(void *data, const char *err, long status, json_t *json, const gw_call_t *c)
{
    (void)data, (void)c;
    S.list_call = NULL;
    json_t *list = json_object_get(json, "metadata");
    if (err == NULL && project_missing(status, json)) { /* the first start against this cluster: made now */
        create_project(&S.list_call, on_list, NULL);
        return schedule_list();
    }
    if (err != NULL || status != 200 || !json_is_array(list)) {
        if (err != NULL || (status != 200 && !(status == 200 || status == 201)))
            gw_debug("flow list not read", "err", answer_error(err, json), NULL);
        return schedule_list();
    }
    uint64_t now = gw_clock_ms();
    json_t *seen = json_object(), *epochs = json_object(); /* id -> [epochs] */
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        char id[37];
        unsigned epoch;
        json_t *config = json_object_get(p, "config");
        const char *name = json_string_value(json_object_get(p, "name")), *owner = text_field(config, KEY("owner")),
                   *beat = text_field(config, KEY("beat")), *kind = text_field(config, KEY("kind")),
                   *record = json_string_value(json_object_get(config, KEY("record")));
        if (name == NULL || !parse_name(name, id, &epoch))
            continue;
        if (json_object_get(epochs, id) == NULL)
            json_object_set_new(epochs, id, json_array());
        json_array_append_new(json_object_get(epochs, id), json_integer(epoch));
        json_t *prev = json_object_get(seen, id);
        if (prev != NULL && json_integer_value(json_object_get(prev, "epoch")) >= epoch)
            continue;
        json_t *rec = record != NULL && strlen(record) <= RECORD_MAX ? json_loads(record, 0, NULL) : NULL;
        if (owner == NULL || beat == NULL || kind == NULL || !json_is_object(rec)) {
            json_decref(rec);
            continue; /* (not the gateway's writing: left alone) */
        }
        json_t *old = json_object_get(S.seen, id);
        json_int_t since = now;
        if (old != NULL && json_integer_value(json_object_get(old, "epoch")) == epoch &&
            strcmp(json_string_value(json_object_get(old, "beat")), beat) == 0)
            since = json_integer_value(json_object_get(old, "since"));
        json_object_set_new(seen, id,
                            json_pack("{s:I, s:s, s:s, s:s, s:o, s:I}", "epoch", (json_int_t)epoch, "owner", owner, "beat", beat,
                                      "kind", kind, "record", rec, "since", since));
    }
    int first = !S.listed;
    S.listed = 1;
    const char *gid;
    json_t *g, *tmp;
    json_object_foreach_safe(S.gone, tmp, gid, g)
    {
        if (now - (uint64_t)json_integer_value(json_object_get(g, "at")) > GONE_KEEP_MS)
            json_object_del(S.gone, gid);
    }
    json_object_foreach(S.seen, gid, g)
    {
        if (json_object_get(seen, gid) == NULL)
            json_object_set_new(S.gone, gid, json_pack("{s:O, s:I}", "owner", json_object_get(g, "owner"), "at", (json_int_t)now));
    }
    json_decref(S.seen);
    S.seen = seen;
    const char *id;
    json_t *e;
    json_object_foreach(seen, id, e)
    {
        const char *owner = json_string_value(json_object_get(e, "owner"));
        unsigned epoch = (unsigned)json_integer_value(json_object_get(e, "epoch"));
        int mine = strcmp(owner, S.replica) == 0;
        if (owned(id) != NULL || adopting(id) || (!mine && (S.ours == NULL || !S.ours(owner))))
            continue;
        if (!(mine && first) && now - (uint64_t)json_integer_value(json_object_get(e, "since")) < S.lease_ms)
            continue;
        json_t *fence = json_array(), *all = json_object_get(epochs, id), *n;
        size_t k;
        json_array_foreach(all, k, n) if ((unsigned)json_integer_value(n) <= epoch) json_array_append(fence, n);
        adopt(id, epoch, e, fence);
        json_decref(fence);
    }
    json_decref(epochs);
    if (first)
        publish_unfinished();
    schedule_list();
}

static void on_list_timer(h2o_timeout_entry_t *entry)
{
    (void)entry;
    if (S.list_call != NULL)
        return schedule_list();
    S.list_call = call("GET", GW_FLOWS_OBJECTS "?project=" GW_FLOWS_PROJECT "&recursion=1", NULL, on_list, NULL);
    if (S.list_call == NULL)
        schedule_list();
}

/* the list is read at once (unless a reading is under way) */
static void list_now(void)
{
    if (S.list_call != NULL)
        return;
    if (h2o_timeout_is_linked(&S.list_timer))
        h2o_timeout_unlink(&S.list_timer);
    on_list_timer(&S.list_timer);
}

static void schedule_list(void)
{
    if (!h2o_timeout_is_linked(&S.list_timer))
        h2o_timeout_link(S.ctx->loop, &S.beat_timeout, &S.list_timer);
}

const char *gw_flows_owner(const char *id)
{
    gw_flow_t *f = owned(id);
    if (f != NULL)
        return S.replica;
    json_t *e = json_object_get(S.seen, id);
    return json_string_value(json_object_get(e != NULL ? e : json_object_get(S.gone, id), "owner"));
}

int gw_flows_live(const char *id)
{
    return owned(id) != NULL || adopting(id) || json_object_get(S.seen, id) != NULL;
}

int gw_flows_settled(void)
{
    return S.listed && S.adopts == NULL;
}

void gw_flows_on_adopt(const char *kind, gw_flow_adopt_cb cb)
{
    if (S.num_kinds < MAX_KINDS)
        S.kinds[S.num_kinds].kind = kind, S.kinds[S.num_kinds++].cb = cb;
}

const char *gw_flows_init(h2o_context_t *ctx, const gw_config_t *conf, const char *replica, int (*ours)(const char *owner),
                          json_t *unfinished)
{
    S.ctx = ctx;
    free(S.replica);
    S.replica = strdup(replica);
    S.ours = ours;
    S.lease_ms = conf->flow_lease_ms;
    S.seen = json_object();
    S.gone = json_object();
    S.unfinished = unfinished != NULL ? unfinished : json_array();
    h2o_timeout_init(ctx->loop, &S.beat_timeout, S.lease_ms / 4);
    h2o_timeout_init(ctx->loop, &S.end_timeout, END_RETRY_MS);
    h2o_timeout_init(ctx->loop, &S.grace_timeout, S.lease_ms / 2);
    h2o_timeout_init(ctx->loop, &S.barrier_timeout, BARRIER_POLL_MS);
    h2o_timeout_init(ctx->loop, &S.first_timeout, FIRST_LIST_MS);
    S.list_timer.cb = on_list_timer;
    h2o_timeout_link(ctx->loop, &S.first_timeout, &S.list_timer); /* (the first reading: the start's adoptions) */
    return NULL;
}

/* ---- locks ---- */

typedef enum {
    L_CREATE, /* POST lock-<digest>: 201, it is ours */
    L_READ,   /* (it exists) GET it: whose? */
    L_FLOWS,  /* GET the list's names: is its holder's flow still in the cluster? */
    L_DROP,   /* (stale) DELETE it, then L_CREATE once more */
} lock_state_t;

typedef struct st_lock_t {
    lock_state_t state;
    char *key, *id, *name; /* the key, the flow asking, the profile's name */
    char *holder;          /* L_READ's answer */
    int retried;           /* L_CREATE was tried again after a stale lock was dropped */
    gw_flow_locked_cb cb;
    void *data;
} lock_t;

static char *lock_name(const char *key)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * 24 + 1];
    SHA256((const unsigned char *)key, strlen(key), md);
    for (size_t i = 0; i != 24; ++i)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return gw_text_dupf("lock-%s", hex);
}

static lock_t *lock_new(const char *key, const char *flow_id)
{
    lock_t *l = calloc(1, sizeof(*l));
    l->key = strdup(key), l->id = strdup(flow_id), l->name = lock_name(key);
    return l;
}

static void lock_free(lock_t *l)
{
    free(l->key), free(l->id), free(l->name), free(l->holder);
    free(l);
}

/* the lock's object */
static char *lock_path(const lock_t *l)
{
    return gw_text_dupf(GW_FLOWS_OBJECTS "/%s?project=" GW_FLOWS_PROJECT, l->name);
}

static void lock_step(lock_t *l);

static void lock_done(lock_t *l, const char *err, const char *holder)
{
    l->cb(l->data, err, holder);
    lock_free(l);
}

static void on_lock(void *data, const char *err, long status, json_t *json, const gw_call_t *c)
{
    lock_t *l = data;
    (void)c;
    const char *e = answer_error(err, json);
    switch (l->state) {
    case L_CREATE:
        if (err == NULL && (status == 200 || status == 201))
            return lock_done(l, NULL, NULL);
        if (!name_taken(err, json))
            return lock_done(l, e, NULL);
        l->state = L_READ;
        return lock_step(l);
    case L_READ: {
        const char *holder = text_field(json_object_get(json_object_get(json, "metadata"), "config"), KEY("flow"));
        if (err == NULL && status == 404) { /* (given up meanwhile) */
            l->state = L_CREATE;
            return l->retried++ ? lock_done(l, "the lock changed hands twice", NULL) : lock_step(l);
        }
        if (err != NULL || status != 200)
            return lock_done(l, e, NULL);
        if (holder != NULL && strcmp(holder, l->id) == 0)
            return lock_done(l, NULL, NULL);
        free(l->holder);
        l->holder = strdup(holder != NULL ? holder : "");
        if (holder != NULL && owned(holder) != NULL)
            return lock_done(l, NULL, l->holder);
        l->state = L_FLOWS;
        return lock_step(l);
    }
    case L_FLOWS: {
        json_t *names = json_object_get(json, "metadata"), *n;
        size_t i;
        if (err != NULL || status != 200 || !json_is_array(names))
            return lock_done(l, e, NULL);
        char *prefix = gw_text_dupf(GW_FLOWS_OBJECTS "/flow-%s-", l->holder);
        int live = 0;
        json_array_foreach(names, i, n) live |= json_is_string(n) && strncmp(json_string_value(n), prefix, strlen(prefix)) == 0;
        free(prefix);
        if (live && *l->holder != '\0')
            return lock_done(l, NULL, l->holder);
        gw_log(GW_LOG_WARN, "a lock's flow is gone; taking the lock over", "lock", l->key, "was", l->holder, NULL);
        l->state = L_DROP;
        return lock_step(l);
    }
    case L_DROP:
        if (err != NULL || (status != 200 && status != 404) || l->retried++)
            return lock_done(l, err != NULL || (status != 200 && status != 404) ? e : "the lock changed hands twice", NULL);
        l->state = L_CREATE;
        return lock_step(l);
    }
}

static void lock_step(lock_t *l)
{
    char *path = NULL;
    json_t *body = NULL;
    const char *method = "GET";
    switch (l->state) {
    case L_CREATE:
        method = "POST";
        path = strdup(GW_FLOWS_OBJECTS "?project=" GW_FLOWS_PROJECT);
        body = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{}}", "name", l->name, "description",
                         "lxd-gateway: held by a running operation (do not edit; removed when it ends)", "config", KEY("flow"),
                         l->id, KEY("key"), l->key, "devices");
        break;
    case L_READ:
        path = lock_path(l);
        break;
    case L_FLOWS:
        path = strdup(GW_FLOWS_OBJECTS "?project=" GW_FLOWS_PROJECT);
        break;
    case L_DROP:
        method = "DELETE";
        path = lock_path(l);
        break;
    }
    gw_mcall_t *c = call(method, path, body, on_lock, l);
    free(path);
    json_decref(body);
    if (c == NULL)
        lock_done(l, "no cluster member answers", NULL);
}

void gw_flows_lock(const char *key, const char *flow_id, gw_flow_locked_cb cb, void *data)
{
    lock_t *l = lock_new(key, flow_id);
    l->cb = cb, l->data = data;
    l->state = L_CREATE;
    lock_step(l);
}

static void on_ignored(void *data, const char *err, long status, json_t *json, const gw_call_t *c)
{
    (void)data, (void)err, (void)status, (void)json, (void)c; /* (a lock left behind is stale once its flow ended) */
    --S.unlocking;
}

static void on_unlock_read(void *data, const char *err, long status, json_t *json, const gw_call_t *c)
{
    lock_t *l = data;
    (void)c;
    const char *holder = text_field(json_object_get(json_object_get(json, "metadata"), "config"), KEY("flow"));
    if (err == NULL && status == 200 && holder != NULL && strcmp(holder, l->id) == 0) {
        char *path = lock_path(l);
        if (call("DELETE", path, NULL, on_ignored, NULL) != NULL)
            ++S.unlocking;
        free(path);
    }
    --S.unlocking;
    lock_free(l);
}

void gw_flows_unlock(const char *key, const char *flow_id)
{
    lock_t *l = lock_new(key, flow_id);
    char *path = lock_path(l);
    if (call("GET", path, NULL, on_unlock_read, l) == NULL)
        lock_free(l);
    else
        ++S.unlocking;
    free(path);
}

size_t gw_flows_ending(void)
{
    size_t n = S.unlocking;
    for (gw_flow_t *f = S.flows; f != NULL; f = f->next)
        n += f->ending;
    return n;
}
