/*
 * volume_drain.c: every custom volume that no running instance uses, moved off one cluster member, as ONE
 * gateway-owned operation (what no LXD does: `lxc cluster evacuate` leaves local custom volumes where they are,
 * canonical/lxd#15218).
 *
 * A volume in use (by an instance, running or stopped, or a profile) stays: LXD 5.0.2 refuses to delete a volume in use,
 * so its move could only be rolled back after a whole copy.
 *
 * Opt-in and explicit, under the gateway's own prefix (LXD's own evacuate call is passed through untouched):
 *
 *   POST /lxd-gateway/members/<member>/drain[?project=<p> | ?all-projects=true]
 *   body (optional): {"pools": ["pool1", ...], "parallel": 1..8 (default 2), "dry_run": false}
 *
 * answers 202 with an operation "Draining custom volumes" (wait, cancel with DELETE, events, as LXD's), whose
 * metadata counts the volumes (`volumes_total`, `volumes_moved`, `volumes_failed`, `volumes_skipped`) and ends with
 * `report`: each volume moved (and where to), skipped (and why: in use, nowhere to go) or failed
 * (and the move's error). It succeeds when nothing failed.
 *
 * Every call is made with the caller's identity: the caller drains only the volumes LXD lets it see and move (a
 * restricted certificate: those of its projects). Each volume is moved by the single-call move's journaled flow
 * (volume_move.h), after the move's own checks (volumes.h): a crash loses no volume, and the flows are finished or
 * rolled back at the next start. The drain itself is recorded too ("drain-planned", with its caller's fingerprint and
 * its request, then "end"), in the journal and in the cluster (flows.h): after a crash the next start, or another
 * replica once the lease has run out, RESUMES it under the same operation id, as its caller: the caller is looked up
 * again in the trust store once it has been read, and again before the drain plans (no longer trusted, restricted to
 * projects that no longer cover the drain, or a restricted one whose shadow identity cannot be made within
 * RESUME_START_MS: the drain ends as interrupted, to be run again); it waits until the flows adopted with it have ended
 * (no volume on the member carries the mark of a flow still in the cluster: at most RESUME_WAIT_MS), then plans again
 * from what the member holds now.
 *
 * The steps run in the order of `drain_state_t`, one member call at a time until the moves, driven by advance().
 * Targets: of the members the cluster lists when the drain starts (read then, not the gateway's view of a few seconds
 * ago), those not evacuated and answering for the pool's resources (`GET .../resources?target=`): the one with the
 * most free space, less what the drain already sends it (a volume's usage, `GET .../state`, or, where the pool cannot
 * tell, its `size`). A member LXD calls Offline but that answers is a target: LXD's Offline is a heartbeat that came
 * late (busy members are called Offline for a round), and the move checks the target again before it begins.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "clock.h"
#include "flows.h"
#include "journal.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "metrics.h"
#include "operations.h"
#include "plugin.h"
#include "shadow.h"
#include "text.h"
#include "volume_move.h"
#include "volumes.h"
#include "volumes_all.h"

#define PREFIX "/lxd-gateway/members/"
#define SUFFIX "/drain"
#define DEFAULT_PARALLEL 2
#define MAX_PARALLEL 8
#define CALL_MS 30000
#define DESCRIPTION "Draining custom volumes" /* its operation's */
/* a drain that cannot resume ends with this, the reason in %s */
#define CANNOT_RESUME                                                                                                              \
    "The drain was interrupted (its gateway replica stopped) and cannot resume (%s); its moves were finished or rolled "           \
    "back: run the drain again to move the rest"
#define RESUME_POLL_MS 1000             /* a resumed drain looks again this often for the flows it waits for */
#define RESUME_WAIT_MS (15 * 60 * 1000) /* ... and plans anyway after this long (what is still marked is skipped) */
#define RESUME_START_MS 60000           /* ... and gives up if its caller cannot be looked up (or its shadow made) by then */

typedef enum {
    DR_MEMBERS, /* GET /1.0/cluster/members: the members that may take volumes (not the drained one, not evacuated) */
    DR_POOLS,   /* GET /1.0/storage-pools: which pools there are */
    DR_VOLUMES, /* GET each pool's custom volumes on the member (one pool per call) */
    DR_SPACE,   /* GET each pool's resources on each other online member: its free space */
    DR_SIZES,   /* GET each volume's state on the member: the space it uses */
    DR_MOVING,  /* the moves, `parallel` at a time: each checked (volumes.h), then run (volume_move.h) */
    DR_NUM_STATES
} drain_state_t;

typedef enum { V_PENDING, V_CHECKING, V_MOVING, V_MOVED, V_FAILED, V_SKIPPED } vol_state_t;

typedef struct st_vol_t {
    char *pool, *project, *name; /* the volume */
    uint64_t bytes;              /* the space it uses on the member (0: unknown) */
    gw_member_t *to;             /* where it goes */
    vol_state_t state;
    char *why;            /* V_SKIPPED, V_FAILED: why */
    json_t *taken_on;     /* the members found to have a volume of its name (not chosen again), or NULL */
    gw_move_t *move;      /* V_MOVING: its flow */
    char *move_id;        /* V_MOVING: its flow's operation id */
    struct st_drain_t *d; /* (for the callbacks) */
} vol_t;

typedef struct st_space_t {
    const char *pool;   /* (a pool name of `pools`) */
    gw_member_t *m;     /* a member that may take volumes */
    int64_t free_bytes; /* its free space in the pool, less what this drain sends it */
} space_t;

typedef struct st_drain_t {
    struct st_drain_t *next; /* the list of running drains (drains) */
    drain_state_t state;
    const gw_identity_t *id;   /* the caller's */
    gw_member_t *member;       /* the one drained */
    char *project;             /* ?project= ("default"; "default" with all_projects too: where its operation shows) */
    int all_projects;          /* ?all-projects=true */
    json_t *only_pools;        /* body "pools": the pools to drain (NULL: all) */
    unsigned parallel;         /* moves at a time */
    int dry_run;               /* plan only */
    char *drain_id;            /* the operation's id: journal key */
    gw_flow_t *flow;           /* its state in the cluster (flows.h), once planned */
    gw_op_t *op;               /* the operation */
    int cancelled;             /* DELETE of the operation */
    json_t *targets;           /* the names of the members that may take volumes */
    json_t *pools;             /* names */
    vol_t *vols;               /* the volumes found on the member */
    size_t num_vols;           /* ... how many */
    space_t *space;            /* (pool, member) free space */
    size_t num_space;          /* ... how many */
    size_t cursor;             /* the item the current step is at */
    unsigned running;          /* moves under way (checking or moving) */
    int starting;              /* gw_move_run is under way: a flow that ends at once is counted, not followed */
    char *error;               /* a listing failed: the drain ends with it */
    char *caller;              /* the caller's certificate fingerprint (recorded: a resumed drain is run as it) */
    int resumed;               /* resumed after its replica stopped: waits for the flows adopted with it */
    uint64_t resumed_at;       /* ... when (gw_clock_ms) */
    uint64_t waiting_since;    /* ... since when it waits to look its caller up (0: it does not) */
    int busy;                  /* ... a volume on the member carries the mark of a live flow: listed again later */
    h2o_mem_pool_t pool;       /* ... holds its caller's projects */
    gw_caller_t who;           /* ... its caller, looked up again (its identity: once its shadow is ready, if restricted) */
    h2o_timeout_entry_t later; /* ... the next look */
} drain_t;

static struct st_drain_t *drains; /* the running drains: one per member at a time */
static h2o_context_t *ctx;
static h2o_timeout_t resume_timeout; /* RESUME_POLL_MS */

static int is_drain_post(h2o_req_t *req, h2o_iovec_t *member)
{
    h2o_iovec_t p = req->path_normalized;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) || p.len <= sizeof(PREFIX) - 1 + sizeof(SUFFIX) - 1 ||
        memcmp(p.base, PREFIX, sizeof(PREFIX) - 1) != 0 ||
        memcmp(p.base + p.len - (sizeof(SUFFIX) - 1), SUFFIX, sizeof(SUFFIX) - 1) != 0)
        return 0;
    *member = h2o_iovec_init(p.base + sizeof(PREFIX) - 1, p.len - (sizeof(PREFIX) - 1) - (sizeof(SUFFIX) - 1));
    return member->len != 0 && memchr(member->base, '/', member->len) == NULL && memchr(member->base, '\0', member->len) == NULL;
}

static int claims(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t member;
    (void)caller;
    return is_drain_post(req, &member); /* (every caller: one the cluster does not trust is refused here, as LXD would) */
}

static void free_vols(drain_t *d)
{
    for (size_t i = 0; i != d->num_vols; ++i) {
        vol_t *v = &d->vols[i];
        free(v->pool), free(v->project), free(v->name), free(v->why), free(v->move_id);
        json_decref(v->taken_on);
    }
    free(d->vols);
    d->vols = NULL, d->num_vols = 0;
}

static void drain_free(drain_t *d)
{
    for (drain_t **p = &drains; *p != NULL; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            break;
        }
    free_vols(d);
    free(d->space), free(d->project), free(d->drain_id), free(d->error), free(d->caller);
    if (h2o_timeout_is_linked(&d->later))
        h2o_timeout_unlink(&d->later);
    if (d->resumed)
        h2o_mem_clear_pool(&d->pool);
    json_decref(d->only_pools);
    json_decref(d->pools);
    json_decref(d->targets);
    if (d->flow != NULL) /* (not ended: left in the cluster for an adoption) */
        gw_flow_release(d->flow);
    free(d);
}

/* ---- the end ---- */

static const char *const state_names[] = {[V_PENDING] = "pending", [V_CHECKING] = "checking", [V_MOVING] = "moving",
                                          [V_MOVED] = "moved",     [V_FAILED] = "failed",     [V_SKIPPED] = "skipped"};

static size_t count(drain_t *d, vol_state_t s)
{
    size_t n = 0;
    for (size_t i = 0; i != d->num_vols; ++i)
        n += d->vols[i].state == s;
    return n;
}

/* the operation's resources: the member drained */
static json_t *member_resources(const char *member)
{
    char *res = gw_text_dupf("/1.0/cluster/members/%s", member);
    json_t *j = json_pack("{s:[s]}", "cluster_members", res);
    free(res);
    return j;
}

static void show_progress(drain_t *d)
{
    gw_op_set(d->op, "volumes_total", json_sprintf("%zu", d->num_vols));
    gw_op_set(d->op, "volumes_moved", json_sprintf("%zu", count(d, V_MOVED)));
    gw_op_set(d->op, "volumes_failed", json_sprintf("%zu", count(d, V_FAILED)));
    gw_op_set(d->op, "volumes_skipped", json_sprintf("%zu", count(d, V_SKIPPED)));
    json_t *moving = json_array(); /* each with its own operation, whose progress is the transfer's */
    for (size_t i = 0; i != d->num_vols; ++i)
        if (d->vols[i].state == V_MOVING && d->vols[i].move_id != NULL) {
            char *op = gw_text_dupf("/1.0/operations/%s", d->vols[i].move_id);
            json_array_append_new(moving,
                                  json_pack("{s:s, s:s, s:s, s:s, s:s}", "pool", d->vols[i].pool, "project", d->vols[i].project,
                                            "volume", d->vols[i].name, "to", d->vols[i].to->name, "operation", op));
            free(op);
        }
    gw_op_set(d->op, "moving", moving);
}

static void finish(drain_t *d)
{
    json_t *report = json_array();
    for (size_t i = 0; i != d->num_vols; ++i) {
        vol_t *v = &d->vols[i];
        json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "pool", v->pool, "project", v->project, "volume", v->name, "outcome",
                              state_names[v->state]);
        if (v->to != NULL)
            json_object_set_new(e, "to", json_string(v->to->name));
        if (v->why != NULL)
            json_object_set_new(e, "reason", json_string(v->why));
        json_array_append_new(report, e);
    }
    show_progress(d);
    gw_op_set(d->op, "report", report);
    size_t failed = count(d, V_FAILED), left = count(d, V_PENDING);
    gw_op_status_t status = d->cancelled                                   ? GW_OP_CANCELLED
                            : d->error != NULL || failed != 0 || left != 0 ? GW_OP_FAILURE
                                                                           : GW_OP_SUCCESS;
    char *err = d->error != NULL ? strdup(d->error)
                : d->cancelled   ? gw_text_dupf("Operation cancelled; %zu volumes were not moved", left + failed)
                : left != 0
                    ? gw_text_dupf("The gateway was stopped; %zu volumes were not moved: run the drain again", left + failed)
                : failed != 0 ? gw_text_dupf("%zu of %zu volumes could not be moved: see the report", failed, d->num_vols)
                              : NULL;
    json_t *r = json_pack("{s:s, s:s}", "kind", "drain", "outcome", status == GW_OP_SUCCESS ? "drained" : "incomplete");
    gw_journal_end(d->drain_id, r);
    json_decref(r);
    if (d->flow != NULL) {
        gw_flow_end(d->flow);
        d->flow = NULL;
    }
    gw_log(status == GW_OP_SUCCESS ? GW_LOG_INFO : GW_LOG_WARN, "drain ended", "drain", d->drain_id, "member", d->member->name,
           "moved", gw_log_num((long long)count(d, V_MOVED)), "skipped", gw_log_num((long long)count(d, V_SKIPPED)), "failed",
           gw_log_num((long long)failed), "err", err != NULL ? err : "", NULL);
    gw_op_finish(d->op, status, err);
    free(err);
    drain_free(d);
}

/* a listing failed (`fmt`): the drain ends with it, having moved nothing */
static void fail(drain_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(drain_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    d->error = gw_text_vformat(fmt, ap);
    va_end(ap);
    finish(d);
}

/* ---- the calls ---- */

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call);
static void act(drain_t *d);
static void plan_done(drain_t *d);

static void get(drain_t *d, char *path)
{
    gw_member_t *m = gw_members_usable(d->member->name); /* (the member's own lists, if it answers; any member otherwise) */
    if (gw_members_call_first(m, d->id, "GET", path, NULL, CALL_MS, on_answer, d) == NULL)
        on_answer(d, "no cluster member answers", 0, NULL, NULL);
    free(path);
}

static char *esc(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0), *out = strdup(e);
    curl_free(e);
    return out;
}

/* "project=<p>" or "all-projects=true", for a listing */
static char *scope(drain_t *d)
{
    if (d->all_projects)
        return strdup("all-projects=true");
    char *p = esc(d->project), *out = gw_text_dupf("project=%s", p);
    free(p);
    return out;
}

static void on_later(h2o_timeout_entry_t *entry);

/* a resumed drain looks again in RESUME_POLL_MS */
static void look_later(drain_t *d)
{
    d->later.cb = on_later;
    h2o_timeout_link(ctx->loop, &resume_timeout, &d->later);
}

/* a resumed drain cannot go on as its caller (`why`): ended, to be run again */
static void cannot_resume(drain_t *d, const char *why)
{
    fail(d, CANNOT_RESUME, why);
}

/* a resumed drain's caller, looked up (again) in the trust store: 1 when d->id is its identity now; else 0, and it looks
 * again later (the trust store not read yet, the flows adopted with it not known yet, a restricted caller's shadow being
 * made: at most RESUME_START_MS) or it has ended (the caller may not drain this any more) */
static int resume_as_caller(drain_t *d)
{
    const char *wait = gw_trust_age_ms() == UINT64_MAX ? "the cluster's trust store could not be read"
                       : !gw_flows_settled()           ? "the cluster's flows could not be read"
                                                       : NULL;
    if (wait == NULL) {
        gw_trust_lookup_in(&d->pool, d->caller, &d->who);
        if (!gw_trust_is_client(&d->who)) {
            cannot_resume(d, "its caller is no longer trusted");
            return 0;
        }
        if (d->who.kind == GW_TRUST_RESTRICTED &&
            (d->all_projects || !gw_ops_may_see(d->who.kind, d->who.projects, d->project))) { /* (as handle() refuses it) */
            cannot_resume(d, "its caller is restricted to other projects now");
            return 0;
        }
        if ((d->id = gw_shadow_prepare(&d->who)) != NULL) {
            d->waiting_since = 0;
            return 1;
        }
        wait = "its caller's restricted identity is not trusted by the cluster";
    }
    if (d->waiting_since == 0)
        d->waiting_since = gw_clock_ms();
    if (gw_clock_ms() - d->waiting_since > RESUME_START_MS) {
        cannot_resume(d, wait);
        return 0;
    }
    look_later(d);
    return 0;
}

/* the step's call for the item at d->cursor; moves to the next step when the step's items are done */
static void act(drain_t *d)
{
    for (;;) {
        switch (d->state) {
        case DR_MEMBERS:
            if (d->resumed && d->id == NULL && !resume_as_caller(d))
                return; /* (looks again later, or ended) */
            return get(d, strdup("/1.0/cluster/members?recursion=1"));
        case DR_POOLS:
            return get(d, strdup("/1.0/storage-pools"));
        case DR_VOLUMES:
            if (d->cursor < json_array_size(d->pools)) {
                char *p = esc(json_string_value(json_array_get(d->pools, d->cursor))), *s = scope(d), *m = esc(d->member->name);
                char *path = gw_text_dupf("/1.0/storage-pools/%s/volumes/custom?recursion=1&%s&target=%s", p, s, m);
                free(p), free(s), free(m);
                return get(d, path);
            }
            if (d->busy && gw_clock_ms() - d->resumed_at < RESUME_WAIT_MS) { /* a resumed drain: flows to wait for */
                free_vols(d);
                d->busy = 0, d->cursor = 0;
                return look_later(d);
            }
            if (d->resumed && !resume_as_caller(d)) /* (its caller looked up again before it plans: the wait may be long) */
                return;
            d->state = DR_SPACE, d->cursor = 0;
            continue;
        case DR_SPACE:
            if (d->cursor < d->num_space) {
                space_t *s = &d->space[d->cursor];
                char *p = esc(s->pool), *m = esc(s->m->name);
                char *path = gw_text_dupf("/1.0/storage-pools/%s/resources?target=%s", p, m);
                free(p), free(m);
                return get(d, path);
            }
            d->state = DR_SIZES, d->cursor = 0;
            continue;
        case DR_SIZES:
            while (d->cursor < d->num_vols && d->vols[d->cursor].state != V_PENDING)
                ++d->cursor;
            if (d->cursor < d->num_vols) {
                vol_t *v = &d->vols[d->cursor];
                char *path = gw_lxd_volume_path(v->pool, v->name, v->project, d->member->name), *q = strchr(path, '?');
                char *full = gw_text_dupf("%.*s/state%s", (int)(q - path), path, q);
                free(path);
                return get(d, full);
            }
            d->state = DR_MOVING, d->cursor = 0;
            return plan_done(d);
        case DR_MOVING:
        case DR_NUM_STATES:
            return;
        }
    }
}

/* ---- the plan ---- */

static int wanted_pool(drain_t *d, const char *pool)
{
    size_t i;
    json_t *p;
    if (d->only_pools == NULL)
        return 1;
    json_array_foreach(d->only_pools, i, p) if (json_is_string(p) && strcmp(json_string_value(p), pool) == 0) return 1;
    return 0;
}

/* DR_POOLS' answer: the pool names (LXD's URLs "/1.0/storage-pools/<name>"), and the (pool, member) pairs to size */
static void take_pools(drain_t *d, json_t *list)
{
    size_t i;
    json_t *u;
    d->pools = json_array();
    json_array_foreach(list, i, u)
    {
        char *name = gw_volumes_all_pool_name(json_string_value(u)); /* (decoded; NULL: not LXD's form) */
        if (name != NULL && wanted_pool(d, name))
            json_array_append_new(d->pools, json_string(name));
        free(name);
    }
}

/* DR_MEMBERS' answer: the members, other than the drained one, that are not evacuated (an evacuated member is out of
 * service by the operator's hand: it takes nothing). A member's entry is LXD's text: names are kept as text only. */
static void take_members(drain_t *d, json_t *list)
{
    size_t i;
    json_t *e;
    d->targets = json_array();
    json_array_foreach(list, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "server_name"));
        const char *status = json_string_value(json_object_get(e, "status"));
        if (name != NULL && status != NULL && strcmp(name, d->member->name) != 0 &&
            (strcmp(status, "Online") == 0 || strcmp(status, "Offline") == 0))
            json_array_append_new(d->targets, json_string(name));
    }
}

/* the (pool, member) pairs whose free space DR_SPACE reads: every pool on every target the gateway knows */
static void add_space(drain_t *d)
{
    for (size_t t = 0; t != json_array_size(d->targets); ++t) {
        gw_member_t *m = gw_members_find(json_string_value(json_array_get(d->targets, t)));
        if (m == NULL || m == d->member || !m->present)
            continue;
        for (size_t i = 0; i != json_array_size(d->pools); ++i) {
            d->space = realloc(d->space, (d->num_space + 1) * sizeof(*d->space));
            d->space[d->num_space++] = (space_t){json_string_value(json_array_get(d->pools, i)), m, -1};
        }
    }
}

/* an LXD size ("40MiB", "1GB", "512"): bytes; 0 when it is not one (a member's text: checked, never trusted) */
static uint64_t parse_size(const char *s)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"kB", 1000},
                 {"MB", 1000000},
                 {"GB", 1000000000},
                 {"TB", 1000000000000},
                 {"KiB", 1ull << 10},
                 {"MiB", 1ull << 20},
                 {"GiB", 1ull << 30},
                 {"TiB", 1ull << 40},
                 {"PiB", 1ull << 50}};
    uint64_t n = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return 0;
    for (; *p >= '0' && *p <= '9'; ++p) {
        if (n > (UINT64_MAX - 9) / 10)
            return 0;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') /* (a fraction: rounded down) */
        for (++p; *p >= '0' && *p <= '9'; ++p)
            ;
    while (*p == ' ')
        ++p;
    for (size_t i = 0; i != sizeof(units) / sizeof(units[0]); ++i)
        if (strcmp(p, units[i].unit) == 0)
            return n <= UINT64_MAX / units[i].mult ? n * units[i].mult : 0;
    return 0;
}

/* DR_VOLUMES' answer for the pool at d->cursor: the volumes on the member (a remote pool's, everywhere, are not) */
static void take_volumes(drain_t *d, json_t *list)
{
    const char *pool = json_string_value(json_array_get(d->pools, d->cursor));
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (name == NULL || strcmp(gw_vol_str(v, "location"), d->member->name) != 0 || strchr(name, '/') != NULL)
            continue;
        d->vols = realloc(d->vols, (d->num_vols + 1) * sizeof(*d->vols));
        vol_t *nv = &d->vols[d->num_vols++];
        *nv =
            (vol_t){strdup(pool), strdup(*gw_vol_str(v, "project") != '\0' ? gw_vol_str(v, "project") : d->project), strdup(name)};
        nv->d = d;
        nv->bytes = parse_size(gw_vol_str(json_object_get(v, "config"), "size")); /* (until its usage is known) */
        json_t *users = json_object_get(v, "used_by");
        const char *mover = json_string_value(json_object_get(json_object_get(v, "config"), GW_VOL_MOVE_MARK));
        if (json_array_size(users) != 0) { /* LXD deletes no volume in use, even by a stopped instance: it stays */
            nv->state = V_SKIPPED;
            char *list = json_dumps(users, JSON_COMPACT);
            nv->why = gw_text_dupf("in use by %s: LXD does not delete a volume in use (detach it, or move what uses it)", list);
            free(list);
        } else if (mover != NULL && strcmp(mover, d->drain_id) != 0 &&
                   (gw_ops_is_running(mover) || (d->resumed && gw_flows_live(mover)))) { /* (a user key: its own id is no move) */
            nv->state = V_SKIPPED;
            nv->why = gw_text_dupf("being moved by operation %s", mover);
            d->busy |= d->resumed; /* (a flow adopted with the drain, most likely: waited for) */
        }
    }
}

static int taken_on(const vol_t *v, const gw_member_t *m)
{
    size_t i;
    json_t *n;
    json_array_foreach(v->taken_on, i, n) if (strcmp(json_string_value(n), m->name) == 0) return 1;
    return 0;
}

/* the target of `v`: the member with the most free space in its pool, less what this drain sends it, among those not
 * found to have a volume of its name */
static void choose(drain_t *d, vol_t *v)
{
    space_t *best = NULL;
    for (size_t i = 0; i != d->num_space; ++i) {
        space_t *s = &d->space[i];
        if (strcmp(s->pool, v->pool) == 0 && s->free_bytes >= 0 && !taken_on(v, s->m) &&
            (best == NULL || s->free_bytes > best->free_bytes))
            best = s;
    }
    if (best == NULL || best->free_bytes < (int64_t)v->bytes) {
        v->state = V_SKIPPED;
        v->why =
            strdup(best == NULL ? "no other member (not evacuated, answering) has the pool" : "no other member has room for it");
        return;
    }
    best->free_bytes -= (int64_t)v->bytes;
    v->to = best->m;
}

/* ---- the moves ---- */

static void next_moves(drain_t *d);

/* no move may start: cancelled, or the gateway is stopping */
static int halted(const drain_t *d)
{
    return d->cancelled || gw_ops_stopping();
}

/* `v`'s target has a volume of its name: the next best target, if any, takes it (the space planned on the first is given
 * back); else it fails, naming where its name is taken */
static void choose_again(drain_t *d, vol_t *v)
{
    for (size_t i = 0; i != d->num_space; ++i)
        if (d->space[i].m == v->to && strcmp(d->space[i].pool, v->pool) == 0 && d->space[i].free_bytes >= 0)
            d->space[i].free_bytes += (int64_t)v->bytes;
    if (v->taken_on == NULL)
        v->taken_on = json_array();
    json_array_append_new(v->taken_on, json_string(v->to->name));
    v->to = NULL;
    choose(d, v);
    if (v->to != NULL) {
        v->state = V_PENDING;
        return;
    }
    char *names = json_dumps(v->taken_on, JSON_COMPACT);
    free(v->why);
    v->state = V_FAILED;
    v->why = gw_text_dupf("a volume of its name exists on %s, and no other member can take it", names);
    free(names);
}

static void on_moved(void *data, int status, const char *err)
{
    vol_t *v = data;
    drain_t *d = v->d;
    v->move = NULL;
    free(v->move_id);
    v->move_id = NULL;
    v->state = status == GW_OP_SUCCESS ? V_MOVED : V_FAILED;
    if (status != GW_OP_SUCCESS)
        v->why = strdup(err != NULL ? err : "failed");
    --d->running;
    if (d->starting)
        return; /* (ended inside gw_move_run: on_checked goes on) */
    show_progress(d);
    next_moves(d);
}

static void on_checked(void *data, const gw_vol_checked_t *r)
{
    vol_t *v = data;
    drain_t *d = v->d;
    if (r->verdict != GW_VOL_CHECKED || halted(d)) {
        v->state = halted(d) ? V_PENDING : V_FAILED;
        if (!halted(d) && r->verdict == GW_VOL_TAKEN)
            choose_again(d, v);
        else if (!halted(d))
            v->why = r->verdict == GW_VOL_REMOTE ? strdup("on a remote pool: not on one member")
                                                 : gw_text_dupf("%s", gw_vol_str(r->answer, "error"));
        --d->running;
        show_progress(d);
        return next_moves(d);
    }
    json_t *volume = json_pack("{s:O, s:s, s:s}", "config", json_object_get(r->source, "config"), "description",
                               gw_vol_str(r->source, "description"), "content_type", gw_vol_str(r->source, "content_type"));
    gw_move_spec_t spec = {.id = d->id,
                           .src = d->member,
                           .dst = v->to,
                           .pool = v->pool,
                           .project = v->project,
                           .name = v->name,
                           .dst_pool = v->pool,
                           .dst_project = v->project,
                           .dst_name = v->name,
                           .volume = volume};
    v->state = V_MOVING;
    const char *move_id;
    d->starting = 1;
    gw_move_t *move = gw_move_run(&spec, on_moved, v, &move_id);
    d->starting = 0;
    json_decref(volume);
    if (v->state == V_MOVING) {
        v->move = move;
        v->move_id = strdup(move_id);
        show_progress(d);
        gw_log(GW_LOG_INFO, "drain: moving", "drain", d->drain_id, "move", move_id, "volume", v->name, "pool", v->pool, "to",
               v->to->name, NULL);
        return;
    }
    show_progress(d); /* it ended at once (its journal could not be written) */
    next_moves(d);
}

/* starts moves until `parallel` run; the drain ends when none runs and none is left, or none may start (cancelled, or
 * the gateway is stopping: the drain ends with what it moved rather than being cut short at exit) */
static void next_moves(drain_t *d)
{
    for (size_t i = 0; i != d->num_vols && d->running < d->parallel && !halted(d); ++i) {
        vol_t *v = &d->vols[i];
        if (v->state != V_PENDING)
            continue;
        v->state = V_CHECKING;
        ++d->running;
        gw_vol_check_spec_t spec = {.id = d->id,
                                    .src = d->member,
                                    .dst = v->to,
                                    .src_pool = v->pool,
                                    .src_project = v->project,
                                    .src_name = v->name,
                                    .dst_pool = v->pool,
                                    .dst_project = v->project,
                                    .dst_name = v->name,
                                    .not_moving = 1};
        gw_vol_check(&spec, on_checked, v);
    }
    if (d->running == 0 && (halted(d) || count(d, V_PENDING) == 0))
        finish(d);
}

/* the plan is recorded in the cluster too (or not: nothing was moved) */
static void on_planned(void *data, const char *err, int lost)
{
    drain_t *d = data;
    if (err != NULL || lost)
        return fail(d, "Cannot record the drain in the cluster (%s); nothing was moved",
                    err != NULL ? err : "another replica took it over");
    gw_log(GW_LOG_INFO, "drain started", "drain", d->drain_id, "member", d->member->name, "volumes",
           gw_log_num((long long)d->num_vols), "to_move", gw_log_num((long long)count(d, V_PENDING)), NULL);
    if (gw_move_pause_at("drain-planned"))
        return;
    next_moves(d);
}

static void plan_done(drain_t *d)
{
    for (size_t i = 0; i != d->num_vols; ++i)
        if (d->vols[i].state == V_PENDING)
            choose(d, &d->vols[i]);
    show_progress(d);
    json_t *plan = json_array();
    for (size_t i = 0; i != d->num_vols; ++i)
        if (d->vols[i].to != NULL)
            json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s}", "pool", d->vols[i].pool, "project", d->vols[i].project,
                                                  "volume", d->vols[i].name, "to", d->vols[i].to->name));
    if (d->dry_run) {
        for (size_t i = 0; i != d->num_vols; ++i)
            if (d->vols[i].state == V_PENDING)
                d->vols[i].state = V_SKIPPED, d->vols[i].why = strdup("dry run");
        json_decref(plan);
        return finish(d);
    }
    json_t *r = json_pack("{s:s, s:s, s:s, s:o, s:s, s:b, s:O?, s:i}", "kind", "drain", "member", d->member->name, "project",
                          d->project, "plan", plan, "caller", d->caller, "all_projects", d->all_projects, "pools", d->only_pools,
                          "parallel", (int)d->parallel);
    json_object_set_new(r, GW_FLOWS_IN_CLUSTER, json_true());
    const char *err = gw_journal_write(d->drain_id, "drain-planned", r);
    if (err != NULL) {
        json_decref(r);
        return fail(d, "Cannot record the drain in the gateway's journal (%s); nothing was moved", err);
    }
    if (d->flow == NULL) /* (a resumed drain has its flow: adopted) */
        d->flow = gw_flow_new(d->drain_id, "drain");
    gw_flow_write(d->flow, "drain-planned", r, on_planned, d);
    json_decref(r);
}

/* ---- the one function every answer comes to ---- */

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    drain_t *d = data;
    (void)call;
    json_t *meta = json_object_get(json, "metadata");
    int ok = err == NULL && status == 200;
    if (d->cancelled)
        return finish(d);
    switch (d->state) {
    case DR_MEMBERS:
        if (!ok || !json_is_array(meta))
            return fail(d, "Cannot list the cluster members (%s)", err != NULL ? err : gw_vol_str(json, "error"));
        take_members(d, meta);
        d->state = DR_POOLS;
        return act(d);
    case DR_POOLS:
        if (!ok || !json_is_array(meta))
            return fail(d, "Cannot list the storage pools (%s)", err != NULL ? err : gw_vol_str(json, "error"));
        take_pools(d, meta);
        add_space(d);
        d->state = DR_VOLUMES, d->cursor = 0;
        return act(d);
    case DR_VOLUMES:
        if (!ok || !json_is_array(meta))
            return fail(d, "Cannot list the volumes of pool %s on %s (%s)", json_string_value(json_array_get(d->pools, d->cursor)),
                        d->member->name, err != NULL ? err : gw_vol_str(json, "error"));
        take_volumes(d, meta);
        ++d->cursor;
        return act(d);
    case DR_SPACE: {
        json_t *space = json_object_get(meta, "space");
        json_int_t total = json_integer_value(json_object_get(space, "total")),
                   used = json_integer_value(json_object_get(space, "used"));
        d->space[d->cursor].free_bytes = ok && total > 0 && used >= 0 && used <= total ? total - used : -1; /* (-1: not a target) */
        ++d->cursor;
        return act(d);
    }
    case DR_SIZES: {
        json_int_t used = json_integer_value(json_object_get(json_object_get(meta, "usage"), "used"));
        if (ok && used > 0) /* (a pool that cannot tell, as dir without quotas: its `size`, if it has one) */
            d->vols[d->cursor].bytes = (uint64_t)used;
        ++d->cursor;
        return act(d);
    }
    case DR_MOVING:
    case DR_NUM_STATES:
        break;
    }
}

/* ---- the caller ---- */

static void on_cancel(gw_op_t *op, void *data)
{
    drain_t *d = data;
    (void)op;
    gw_log(GW_LOG_INFO, "drain cancel requested", "drain", d->drain_id, NULL);
    d->cancelled = 1;
    for (size_t i = 0; i != d->num_vols; ++i)
        if (d->vols[i].state == V_MOVING && d->vols[i].move != NULL)
            gw_move_cancel(d->vols[i].move);
    if (d->state == DR_MOVING && d->running == 0)
        finish(d);
}

/* the running drain of `m` (on this replica), or NULL */
static drain_t *drain_of(const gw_member_t *m)
{
    for (drain_t *d = drains; d != NULL; d = d->next)
        if (d->member == m)
            return d;
    return NULL;
}

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t member;
    is_drain_post(req, &member);
    if (!gw_trust_is_client(caller)) {
        gw_lxd_send_error(req, 403, "Forbidden");
        return;
    }
    char *name = h2o_strdup(NULL, member.base, member.len).base;
    const char *project = gw_lxd_query(req, "project"), *all = gw_lxd_query(req, "all-projects");
    if (req->entity.len > GW_VOL_MAX_BODY) {
        gw_lxd_send_error(req, 400, "The request body is too large");
        return;
    }
    json_t *body = req->entity.len != 0 ? json_loadb(req->entity.base, req->entity.len, 0, NULL) : json_object();
    json_t *pools = json_object_get(body, "pools"), *parallel = json_object_get(body, "parallel"), *p;
    size_t i;
    int pools_ok = pools == NULL || json_is_array(pools);
    json_array_foreach(pools, i, p) pools_ok &= json_is_string(p);
    gw_member_t *m = gw_members_find(name);
    const char *bad = NULL;
    if (!gw_text_is_utf8(name, strlen(name)) || (project != NULL && !gw_text_is_utf8(project, strlen(project))))
        bad = "The member or project in the request is not valid UTF-8";
    else if (!json_is_object(body))
        bad = "The request body must be a JSON object";
    else if (!pools_ok)
        bad = "\"pools\" must be a list of pool names";
    else if (parallel != NULL &&
             (!json_is_integer(parallel) || json_integer_value(parallel) < 1 || json_integer_value(parallel) > MAX_PARALLEL))
        bad = "\"parallel\" must be a number from 1 to 8";
    else if (all != NULL && strcmp(all, "true") == 0 && project != NULL && *project != '\0')
        bad = "Cannot specify a project when requesting all projects";
    int all_projects = all != NULL && strcmp(all, "true") == 0;
    if (bad != NULL) {
        gw_lxd_send_error(req, 400, "%s", bad);
    } else if (caller->kind == GW_TRUST_RESTRICTED &&
               (all_projects ||
                !gw_ops_may_see(caller->kind, caller->projects, project != NULL && *project != '\0' ? project : "default"))) {
        gw_lxd_send_error(req, 403, "not authorized"); /* (LXD's answer to a restricted certificate out of its projects) */
    } else if (m == NULL || !m->present) {
        gw_lxd_send_error(req, 404, "Cluster member not found: \"%s\"", name);
    } else if (drain_of(m) != NULL) {
        gw_lxd_send_error(req, 409, "A drain of %s is running (operation %s)", m->name, drain_of(m)->drain_id);
    } else {
        drain_t *d = calloc(1, sizeof(*d));
        d->id = caller->identity;
        d->caller = strdup(caller->fingerprint);
        d->member = m;
        d->all_projects = all_projects;
        d->project = strdup(project != NULL && *project != '\0' ? project : "default");
        d->only_pools = json_incref(pools);
        d->parallel = parallel != NULL ? (unsigned)json_integer_value(parallel) : DEFAULT_PARALLEL;
        d->dry_run = json_is_true(json_object_get(body, "dry_run"));
        d->op = gw_op_start(DESCRIPTION, d->project, m->name, member_resources(m->name), on_cancel, d);
        d->drain_id = strdup(gw_op_id(d->op));
        d->next = drains, drains = d;
        gw_op_send_created(req, d->op);
        gw_metrics_single_call("volume_drain", "started");
        act(d);
    }
    json_decref(body);
    free(name);
}

/* a resumed drain's next look (or it was cancelled meanwhile; or the gateway is stopping: it ends, as a drain the stop
 * finds running does, to be run again) */
static void on_later(h2o_timeout_entry_t *entry)
{
    drain_t *d = H2O_STRUCT_FROM_MEMBER(drain_t, later, entry);
    if (d->cancelled)
        return finish(d);
    if (gw_ops_stopping())
        return fail(d, "The gateway was stopped before the drain resumed: run the drain again");
    act(d);
}

/* the drain recorded in `r` cannot resume (`why`): it ends as interrupted, under its own operation id */
static void end_interrupted(gw_flow_t *flow, json_t *r, const char *from, const char *why)
{
    const char *id = gw_flow_id(flow), *member = gw_vol_str(r, "member");
    gw_log(GW_LOG_WARN,
           "found an interrupted drain that cannot resume: its moves are finished or rolled back; run the drain "
           "again to move the rest",
           "drain", id, "member", member, "owner", from, "why", why, NULL);
    json_t *end = json_pack("{s:s, s:s}", "kind", "drain", "outcome", "interrupted");
    gw_journal_end(id, end);
    json_decref(end);
    gw_op_t *op = gw_op_adopt(id, DESCRIPTION, *gw_vol_str(r, "project") != '\0' ? gw_vol_str(r, "project") : "default", member,
                              member_resources(member), NULL, NULL);
    if (op != NULL) {
        char *err = gw_text_dupf(CANNOT_RESUME, why);
        gw_op_finish(op, GW_OP_FAILURE, err);
        free(err);
    }
    gw_flow_end(flow);
}

/* a drain whose replica stopped (a crash; or another replica's, its lease run out): resumed under its own operation id,
 * as its caller, looked up again (see the top of this file); its moves are flows of their own, adopted apart */
static void adopt_drain(gw_flow_t *flow, json_t *r, const char *from)
{
    const char *member = gw_vol_str(r, "member"), *fp = gw_vol_str(r, "caller"), *project = gw_vol_str(r, "project");
    json_t *pools = json_object_get(r, "pools"), *parallel = json_object_get(r, "parallel"), *p;
    size_t i;
    int pools_ok = pools == NULL || json_is_null(pools) || json_is_array(pools);
    json_array_foreach(pools, i, p) pools_ok &= json_is_string(p);
    gw_member_t *m = gw_members_find(member);
    const char *why = NULL; /* (its caller is looked up once the trust store has been read: resume_as_caller) */
    if (strlen(fp) != GW_FINGERPRINT_LEN || strspn(fp, "0123456789abcdef") != GW_FINGERPRINT_LEN || !pools_ok || *project == '\0')
        why = "its record has no caller or request (written by an older version)";
    else if (m == NULL || !m->present)
        why = "its member is gone";
    else if (drain_of(m) != NULL)
        why = "another drain of its member runs";
    if (why != NULL)
        return end_interrupted(flow, r, from, why);
    drain_t *d = calloc(1, sizeof(*d));
    h2o_mem_init_pool(&d->pool);
    d->resumed = 1;
    d->member = m;
    d->caller = strdup(fp);
    d->project = strdup(project);
    d->all_projects = json_is_true(json_object_get(r, "all_projects"));
    d->only_pools = json_is_array(pools) ? json_incref(pools) : NULL;
    d->parallel = json_is_integer(parallel) && json_integer_value(parallel) >= 1 && json_integer_value(parallel) <= MAX_PARALLEL
                      ? (unsigned)json_integer_value(parallel)
                      : DEFAULT_PARALLEL;
    d->drain_id = strdup(gw_flow_id(flow));
    d->flow = flow;
    d->resumed_at = gw_clock_ms();
    d->op = gw_op_adopt(d->drain_id, DESCRIPTION, d->project, m->name, member_resources(m->name), on_cancel, d);
    if (d->op == NULL) { /* (its id is in use here: not this drain's to run) */
        d->flow = NULL;
        drain_free(d);
        return end_interrupted(flow, r, from, "its operation id is in use");
    }
    d->next = drains, drains = d;
    gw_log(GW_LOG_WARN, "resuming an interrupted drain: it waits for the moves adopted with it, then plans again", "drain",
           d->drain_id, "member", m->name, "owner", from, NULL);
    show_progress(d);
    act(d);
}

static const char *init(const gw_config_t *conf, h2o_context_t *c)
{
    (void)conf;
    ctx = c;
    h2o_timeout_init(ctx->loop, &resume_timeout, RESUME_POLL_MS);
    gw_flows_on_adopt("drain", adopt_drain);
    return NULL;
}

const gw_plugin_t gw_plugin_volume_drain = {"volume_drain", NULL, init, claims, handle};
