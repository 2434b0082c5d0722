/*
 * volume_move.c: the single-call move of a custom volume from one cluster member to another, as ONE gateway-owned
 * operation (API extension `cluster_internal_custom_volume_copy`, LXD 5.20).
 *
 * Claims `POST /1.0/storage-pools/<pool>/volumes/custom/<vol>?target=<dst>` whose body has `source.location`.
 * Without `target` or `location` it passes through (a rename on the member, as LXD does it).
 *
 * request -> the members named -> gw_vol_check (volumes.h: source, target pool, name free) -> 202 with a gateway
 * operation "Moving storage volume" -> the steps of `move_state_t`, in order, driven by advance(). The target gets
 * the source's config, description and content type (native LXD and Incus drop them).
 *
 * Nothing is deleted without a verified copy, and nothing but what the move started with or made: right after
 * "begin" is journaled the source is marked `user.lxd-gateway.move: <move id>`, and the target is created with the
 * same mark (never copied from the source). A roll-back removes a target only if it carries the mark, and takes the
 * mark off the source; the source is deleted only after "transferred" is journaled, the marked target was seen, and
 * only if it carries the mark (LXD 5.0.2 has nothing else that tells a volume from one made later under its name: its
 * `created_at` is the zero time); the last step takes the mark off the target. After a crash the next start finishes
 * or rolls back every unfinished move from the journal (gateway/journal.h) by the same rules: a volume made by hand
 * under either name meanwhile is left alone.
 *
 * How to read it: `move_state_t` lists the steps in the order they run; `steps[]` gives each its journal record
 * (written before the step touches a member), its retry policy and, for a journaled step, where recovery resumes
 * after a crash there; act() makes the one member call of the current step; advance() is the one function every
 * answer and every timer comes to, and decides the next step. Recovery = the step from the journal, then act().
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "clock.h"
#include "flows.h"
#include "hold.h"
#include "journal.h"
#include "log.h"
#include "lxd.h"
#include "text.h"
#include "metrics.h"
#include "migrate.h"
#include "operations.h"
#include "plugin.h"
#include "proxy.h"
#include "volume_move.h"
#include "volumes.h"

#define POLL_WAIT_S "1"                 /* long-poll of the target's operation; progress is relayed at this pace */
#define RETRY_MS 2000                   /* a step that got no usable answer is tried again this long after */
#define WATCH_RETRIES 10                /* unusable answers in a row about a transfer before it is given up */
#define FINAL_RETRIES 10                /* tries of a last step (checking or deleting the source, removing a mark) */
#define ROLLBACK_RETRIES 30             /* tries to reach the target to remove a partial copy, then left to the next start */
#define RECOVER_MAX_MS (10 * 60 * 1000) /* recovery waits this long for members or a transfer, then leaves it to the next start */
#define STALL_MS (15 * 60 * 1000)       /* a transfer whose operation shows no change for this long is stopped */
#define MOVE_MARK GW_VOL_MOVE_MARK      /* on the source and the target while the move runs: its id */

/* the steps of a move, in the order they run ("used to remember what to do next": each names the member call it
 * makes; advance() reads its answer). A snapshot copy starts at MV_MAKE_TEMP and ends at MV_DROP_TEMP; a move skips
 * both: the volume it moves ("the source" below) is the temporary one of a snapshot copy */
typedef enum {
    /* a snapshot copy's first steps: the volume to move, made from the snapshot */
    MV_MAKE_TEMP,  /* POST a copy of the snapshot into a temporary volume on its member, marked (journal "temp" first) */
    MV_WATCH_TEMP, /* long-poll that copy's operation until it ends            (journal "temp-copying" first) */
    /* the way forward */
    MV_MARK_SOURCE,         /* GET the source, to put the move's mark on it          (journal "begin" first) */
    MV_MARK_SOURCE_PATCH,   /* PATCH the mark onto the source */
    MV_TRANSFER,            /* migrate.h: step 1 on the source, step 2 on the target: the target's transfer operation */
    MV_WATCH,               /* long-poll the transfer operation until it ends        (journal "transferring" first) */
    MV_VERIFY_TARGET,       /* GET the target: the marked copy this move made? */
    MV_CHECK_SOURCE,        /* GET the source: still the one the move started with?  (journal "transferred" first) */
    MV_CHECK_TARGET,        /* GET the target: made by this move? only then may the source go */
    MV_DELETE_SOURCE,       /* DELETE the source */
    MV_RECHECK_SOURCE,      /* GET the source, after a DELETE that failed but may have acted: gone? */
    MV_TARGET_KEPT,         /* GET the target, the source being gone already (recovery): anything left to do? */
    MV_UNMARK_TARGET,       /* GET the target, to take the mark off */
    MV_UNMARK_TARGET_PATCH, /* PATCH the mark off the target: the move is done */
    /* the way back */
    MV_ROLLBACK,            /* GET the target: did this move leave a volume there?   (journal "rolling-back" first) */
    MV_ROLLBACK_DELETE,     /* DELETE the volume this move left on the target */
    MV_UNMARK_SOURCE,       /* GET the source, to take the mark off */
    MV_UNMARK_SOURCE_PATCH, /* PATCH the mark off the source: the move is undone */
    /* a snapshot copy's last steps, whatever its outcome */
    MV_DROP_TEMP,        /* GET the temporary volume: still there, with this flow's mark? */
    MV_DROP_TEMP_DELETE, /* DELETE it */
    /* recovery of a move a crash interrupted */
    MV_RECOVER,          /* no call: wait until both members are known and healthy, then resume (steps[].resume) */
    MV_RECOVER_TRANSFER, /* GET the transfer operation: a transfer still running is let end before the roll-back */
    MV_RECOVER_TEMP,     /* GET the temporary volume's copy operation (or, unknown, the member's running copies): let
                          * it end before the temporary volume is removed */
    MV_NUM_STATES
} move_state_t;

/* what the next step does when its own record cannot be written */
typedef enum {
    J_REFUSE,    /* end the move: nothing was changed yet */
    J_GO_ON,     /* take the step all the same: the next record decides (or the marks make it safe) */
    J_ROLL_BACK, /* roll back: the step may not be taken unrecorded */
} journal_fail_t;

/* retries share one budget within a phase: entering a step of another phase starts a new one */
typedef enum { P_MARK, P_TRANSFER, P_FINAL, P_UNMARK_TARGET, P_ROLLBACK, P_UNMARK_SOURCE, P_DROP_TEMP, P_RECOVER } phase_t;

static const struct {
    const char *name;      /* in logs */
    phase_t phase;         /* see phase_t */
    const char *journal;   /* recorded (and fsync'd) before the step touches a member, or NULL */
    journal_fail_t j_fail; /* ... and what happens when that record cannot be written */
    move_state_t resume;   /* a journaled step: where recovery resumes after a crash at it */
    unsigned tries;        /* retries in the phase (RETRY_MS apart); 0: for recover_max_ms from the phase's start */
    const char *metric;    /* what the retries count as (lxd_gateway_retries_total{what}) */
} steps[MV_NUM_STATES] = {
    [MV_MAKE_TEMP] = {"make-temp", P_MARK, "temp", J_REFUSE, MV_RECOVER_TEMP, 0, NULL}, /* (never retried: see advance) */
    [MV_WATCH_TEMP] = {"watch-temp", P_MARK, "temp-copying", J_GO_ON, MV_RECOVER_TEMP, WATCH_RETRIES, "move_watch"},
    [MV_MARK_SOURCE] = {"mark-source", P_MARK, "begin", J_REFUSE, MV_ROLLBACK, 0, NULL}, /* (never retried: a failure rolls back) */
    [MV_MARK_SOURCE_PATCH] = {"mark-source", P_MARK},
    [MV_TRANSFER] = {"transfer", P_TRANSFER},
    [MV_WATCH] = {"watch", P_TRANSFER, "transferring", J_GO_ON, MV_RECOVER_TRANSFER, WATCH_RETRIES, "move_watch"},
    [MV_VERIFY_TARGET] = {"verify-target", P_TRANSFER},
    [MV_CHECK_SOURCE] = {"check-source", P_RECOVER, "transferred", J_ROLL_BACK, MV_CHECK_SOURCE, 0, "move_recovery"},
    [MV_CHECK_TARGET] = {"check-target", P_RECOVER, NULL, 0, 0, 0, "move_recovery"},
    [MV_DELETE_SOURCE] = {"delete-source", P_FINAL, NULL, 0, 0, FINAL_RETRIES, "move_source"},
    [MV_RECHECK_SOURCE] = {"recheck-source", P_FINAL, NULL, 0, 0, FINAL_RETRIES, "move_source"},
    [MV_TARGET_KEPT] = {"target-kept", P_RECOVER, NULL, 0, 0, 0, "move_recovery"},
    [MV_UNMARK_TARGET] = {"unmark-target", P_UNMARK_TARGET, NULL, 0, 0, FINAL_RETRIES, "move_unmark"},
    [MV_UNMARK_TARGET_PATCH] = {"unmark-target", P_UNMARK_TARGET, NULL, 0, 0, FINAL_RETRIES, "move_unmark"},
    [MV_ROLLBACK] = {"rollback", P_ROLLBACK, "rolling-back", J_GO_ON, MV_ROLLBACK, ROLLBACK_RETRIES, "move_rollback"},
    [MV_ROLLBACK_DELETE] = {"rollback-delete", P_ROLLBACK, NULL, 0, 0, ROLLBACK_RETRIES, "move_rollback"},
    [MV_UNMARK_SOURCE] = {"unmark-source", P_UNMARK_SOURCE, NULL, 0, 0, FINAL_RETRIES, "move_unmark"},
    [MV_UNMARK_SOURCE_PATCH] = {"unmark-source", P_UNMARK_SOURCE, NULL, 0, 0, FINAL_RETRIES, "move_unmark"},
    [MV_DROP_TEMP] = {"drop-temp", P_DROP_TEMP, "dropping-temp", J_GO_ON, MV_DROP_TEMP, FINAL_RETRIES, "move_temp"},
    [MV_DROP_TEMP_DELETE] = {"drop-temp", P_DROP_TEMP, NULL, 0, 0, FINAL_RETRIES, "move_temp"},
    [MV_RECOVER] = {"recover", P_RECOVER, NULL, 0, 0, 0, "move_recovery"},
    [MV_RECOVER_TRANSFER] = {"recover-transfer", P_RECOVER, NULL, 0, 0, 0, "move_recovery"},
    [MV_RECOVER_TEMP] = {"recover-temp", P_RECOVER, NULL, 0, 0, 0, "move_recovery"},
};

typedef struct st_move_t {
    move_state_t state;          /* the step under way: its call is in flight, or its retry timer runs */
    gw_hold_t hold;              /* the client's request until the operation is created (hold.h) */
    const gw_identity_t *id;     /* the caller's identity (recovery: the gateway's) */
    gw_member_t *src, *dst;      /* source.location, ?target= */
    char *pool, *project, *name; /* the source volume (a snapshot copy: the temporary volume) */
    char *snapshot, *origin;     /* a snapshot copy: the snapshot, of volume `origin`; NULL for a move */
    json_t *temp_config;         /* a snapshot copy: the temporary volume's config (the snapshot's) */
    char *temp_op;               /* a snapshot copy: the operation making the temporary volume, or NULL */
    int temp_dropped;            /* a snapshot copy: its temporary volume is gone (MV_DROP_TEMP) */
    char *end_outcome, *end_err; /* a snapshot copy: the outcome finish() keeps while the temp is dropped */
    gw_op_status_t end_status;
    int leave_open;                          /* the journal keeps the flow for the next start: its end is not written */
    char *etag;                              /* MV_MARK_SOURCE: the source's ETag, which the mark's PATCH must match */
    struct st_move_t *next;                  /* the list of live flows (flows) */
    char *dst_pool, *dst_project, *dst_name; /* where it goes */
    json_t *volume;                          /* what the target creates: name, type, config, description, content_type */
    char *move_id;                           /* journal key: the operation's id */
    gw_flow_t *flow;                         /* its state in the cluster (flows.h), once its first step was recorded */
    move_state_t recording;                  /* the step whose record is being written to the cluster */
    int flow_lost;                           /* a record written in the background found the flow adopted elsewhere */
    char *lock;                              /* a move: its source's lock in the cluster (flows.h), named from "begin" on */
    int locked;                              /* ... and held by this flow */
    gw_op_t *op;                             /* the client's operation; NULL in recovery, or once the client was told */
    gw_move_done_cb done;                    /* gw_move_run's: told of the outcome with the client (then NULL) */
    void *done_data;                         /* ... its argument */
    json_t *journal;                         /* the journal record of the move (recovery), or NULL (a running move) */
    char *transfer_op;                       /* the target's operation running the transfer */
    gw_relay_t *relay;                       /* the transfer's data path through the gateway (cut to cancel) */
    int cancelled;                           /* the caller asked to cancel */
    char *why;                               /* why it is rolled back, or why deleting the source failed (malloc'd) */
    char *patch;                             /* the PATCH body of a *_PATCH step (JSON text, malloc'd) */
    unsigned tries;                          /* retries spent in the current phase */
    uint64_t since;                          /* gw_clock_ms() when the current phase started (recovery's bound) */
    uint64_t progress_at;                    /* gw_clock_ms() when the transfer last showed progress (stall detection) */
    json_t *last_state;                      /* the transfer operation's metadata, as last seen (stall detection) */
    uint64_t last_bytes;                     /* bytes through the relay, as last seen (stall detection) */
    int stalled;                             /* the transfer made no progress for STALL_MS and its data path was cut */
    h2o_timeout_entry_t retry;               /* linked: the current step's call is made again when it fires */
} move_t;

/* a member's answer to the current step's call, as advance() reads it */
typedef struct st_answer_t {
    const char *err; /* no HTTP answer (then status is 0) */
    int not_sent;    /* ... and nothing was sent: the member is down, nothing was done */
    long status;     /* the HTTP status */
    json_t *json;    /* the body (NULL: not JSON) */
} answer_t;

static h2o_context_t *ctx;
static move_t *starting; /* gw_move_run's move while begin() runs: NULL once it ended there */
static move_t *flows;    /* every live flow of this process: running, rolling back, recovering */

/* `id` names a flow of this process that has not ended (a recovering one has no operation: gw_ops_is_running cannot
 * tell) */
static int flow_is_live(const char *id)
{
    for (move_t *m = flows; m != NULL; m = m->next)
        if (m->move_id != NULL && strcmp(m->move_id, id) == 0)
            return 1;
    return 0;
}
static h2o_timeout_t retry_timeout;              /* RETRY_MS */
static uint64_t recover_max_ms = RECOVER_MAX_MS; /* (test hook: LXDGW_TEST_RECOVER_MAX_MS) */

static void move_free(move_t *m)
{
    if (m == starting)
        starting = NULL;
    for (move_t **p = &flows; *p != NULL; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    if (h2o_timeout_is_linked(&m->retry))
        h2o_timeout_unlink(&m->retry);
    if (m->relay != NULL)
        gw_relay_close(m->relay);
    if (m->flow != NULL) /* (not ended: left in the cluster for an adoption, after its lease) */
        gw_flow_release(m->flow);
    gw_hold_take(&m->hold); /* (the request, if still held, is not ours to answer any more) */
    free(m->pool), free(m->project), free(m->name), free(m->dst_pool), free(m->dst_project), free(m->dst_name);
    free(m->move_id), free(m->transfer_op), free(m->why), free(m->patch);
    free(m->lock);
    free(m->snapshot), free(m->origin), free(m->temp_op), free(m->end_outcome), free(m->end_err), free(m->etag);
    json_decref(m->temp_config);
    json_decref(m->last_state);
    json_decref(m->volume);
    json_decref(m->journal);
    free(m);
}

static json_t *record(move_t *m)
{
    json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "src", m->src != NULL ? m->src->name : "", "dst",
                          m->dst != NULL ? m->dst->name : "", "pool", m->pool, "project", m->project, "name", m->name, "dst_pool",
                          m->dst_pool, "dst_project", m->dst_project, "dst_name", m->dst_name, "transfer_op",
                          m->transfer_op != NULL ? m->transfer_op : "");
    if (m->lock != NULL)
        json_object_set_new(r, "lock", json_string(m->lock));
    if (m->snapshot != NULL) /* (a move's records stay as they were) */
        json_object_set_new(r, "snapshot",
                            json_pack("{s:s, s:s, s:s, s:s}", "name", m->snapshot, "of", m->origin, "temp_op",
                                      m->temp_op != NULL ? m->temp_op : "", "outcome",
                                      m->end_outcome != NULL ? m->end_outcome : ""));
    return r;
}

/* `answer` (a member's answer to GET of the source, or of the target) shows the volume this move started with or
 * made: the one asked for (its name; its member, when it says: a member's answer is checked, not trusted), carrying
 * the move's mark */
static int made_by_move(move_t *m, json_t *answer, int source)
{
    json_t *vol = json_object_get(answer, "metadata");
    const char *mark = json_string_value(json_object_get(json_object_get(vol, "config"), MOVE_MARK)),
               *name = gw_vol_str(vol, "name"), *location = gw_vol_str(vol, "location");
    const char *want_name = source ? m->name : m->dst_name, *want_member = source ? m->src->name : m->dst->name;
    return mark != NULL && strcmp(mark, m->move_id) == 0 && strcmp(name, want_name) == 0 &&
           (*location == '\0' || strcmp(location, want_member) == 0);
}

/* the body of a PATCH that sets (set = 1) or takes off the mark on the volume `answer` shows (LXD's PATCH of a
 * volume takes the description as given, "" unless sent: it is sent as it is) */
static char *mark_patch(move_t *m, json_t *answer, int set)
{
    json_t *body = json_pack("{s:{s:s}, s:s}", "config", MOVE_MARK, set ? m->move_id : "", "description",
                             gw_vol_str(json_object_get(answer, "metadata"), "description"));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

/* what an unusable answer says, for the caller and the log */
static const char *why(const answer_t *a, const char *dflt)
{
    return a->err != NULL ? a->err : *gw_vol_str(a->json, "error") != '\0' ? gw_vol_str(a->json, "error") : dflt;
}

static void go(move_t *m, move_state_t next);

/* the caller learns the outcome (its operation ends; gw_move_run's callback runs), now or at the end: the move's
 * steps may go on (a roll-back retrying, recovery waiting) */
static void tell_caller(move_t *m, gw_op_status_t status, const char *err)
{
    if (m->op != NULL) {
        gw_op_finish(m->op, status, err);
        m->op = NULL;
    }
    if (m->done != NULL) {
        gw_move_done_cb cb = m->done;
        m->done = NULL;
        cb(m->done_data, status, err);
    }
}

/* the end of a move: journal, operation, log. A snapshot copy's temporary volume is removed first (MV_DROP_TEMP,
 * which comes back here) */
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
    if (m->snapshot != NULL && !m->temp_dropped) {
        free(m->end_outcome), free(m->end_err);
        m->end_outcome = strdup(strcmp(outcome, "moved") == 0 ? "copied" : outcome);
        m->end_err = err, m->end_status = status;
        go(m, MV_DROP_TEMP);
        return;
    }
    if (m->leave_open) { /* (leave_to_next_start: the temporary volume is gone, the rest waits for the next start) */
        gw_log(GW_LOG_WARN, "removed a snapshot copy's temporary volume; the journal keeps the copy for the next start", "move",
               m->move_id, NULL);
        free(err);
        move_free(m);
        return;
    }
    json_t *r = json_pack("{s:s}", "outcome", outcome);
    gw_journal_end(m->move_id, r); /* written again until it is (a lost one: the next start re-checks a finished move) */
    json_decref(r);
    if (m->lock != NULL) /* (the source's lock first: a lock whose flow is gone is stale, the other way round it is not; it
                          * is given up only if this flow holds it) */
        gw_flows_unlock(m->lock, m->move_id);
    if (m->flow != NULL) { /* its state leaves the cluster (tried again until it does; a lost one: adopted, re-checked) */
        gw_flow_end(m->flow);
        m->flow = NULL;
    }
    gw_log(status == GW_OP_SUCCESS ? GW_LOG_INFO : GW_LOG_WARN, m->snapshot != NULL ? "snapshot copy ended" : "volume move ended",
           "move", m->move_id, "outcome", outcome, "volume", m->snapshot != NULL ? m->origin : m->name, "snapshot",
           m->snapshot != NULL ? m->snapshot : "", "from", m->src != NULL ? m->src->name : "-", "to",
           m->dst != NULL ? m->dst->name : "-", "err", err != NULL ? err : "", NULL);
    tell_caller(m, status, err);
    free(err);
    move_free(m);
}

/* ---- moving from step to step ---- */

static void act(move_t *m);

/* the next step: recorded first if it is a journaled one (see steps[]), then its call is made */
static void go(move_t *m, move_state_t next);
/* the way back, from any step: why (printf-style) is what the caller is told */
static void roll_back(move_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void on_retry(h2o_timeout_entry_t *entry)
{
    act(H2O_STRUCT_FROM_MEMBER(move_t, retry, entry));
}

/* the current step got no usable answer: 1 if step `at` (the current one, or the one before it whose answer it
 * relies on) runs again RETRY_MS later; 0 if the phase's retries are spent */
static int again(move_t *m, move_state_t at)
{
    if (steps[at].tries != 0 ? ++m->tries > steps[at].tries : gw_clock_ms() - m->since >= recover_max_ms)
        return 0;
    gw_metrics_retry(steps[at].metric);
    m->state = at;
    m->retry.cb = on_retry;
    h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
    return 1;
}

/* step `state` without recording it (recovery, which resumes at a step the journal holds already) */
static void resume(move_t *m, move_state_t state)
{
    if (steps[state].phase != steps[m->state].phase)
        m->tries = 0, m->since = gw_clock_ms();
    m->state = state;
    act(m);
}

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

/* the test hook asks to pause at `step` */
static int pause_wanted(const char *step)
{
    const char *at = getenv("LXDGW_TEST_PAUSE_AT");
    return at != NULL && strcmp(at, step) == 0;
}

int gw_move_pause_at(const char *step)
{
    if (!pause_wanted(step))
        return 0;
    gw_log(GW_LOG_WARN, "paused for a test", "step", step, NULL);
    if (h2o_timeout_is_linked(&pause_entry)) /* two flows at the step at once: one pause (an entry is linked once) */
        return 1;
    pause_entry.cb = on_pause;
    h2o_timeout_link(ctx->loop, &pause_timeout, &pause_entry);
    return 1;
}

/* step `next`, its record written */
static void take(move_t *m, move_state_t next)
{
    if (steps[next].phase != steps[m->state].phase || next == MV_MARK_SOURCE || next == MV_MAKE_TEMP)
        m->tries = 0, m->since = gw_clock_ms();
    m->state = next;
    act(m);
}

/* the record of step `next` could not be written (`where`): what steps[next].j_fail says; 1 if the step is not taken */
static int record_failed(move_t *m, move_state_t next, const char *where, const char *err)
{
    gw_log(GW_LOG_ERROR, "cannot record the move's step", "move", m->move_id, "step", steps[next].journal, "in", where, "err", err,
           NULL);
    if (steps[next].j_fail == J_REFUSE && (m->snapshot == NULL || next == MV_MAKE_TEMP)) {
        finish(m, "refused", GW_OP_FAILURE, "Cannot record the move in %s; nothing was changed", where);
        return 1;
    }
    if (steps[next].j_fail == J_REFUSE) { /* (a snapshot copy's temporary volume exists: it goes) */
        roll_back(m, "Cannot record the copy in %s; nothing was kept", where);
        return 1;
    }
    if (steps[next].j_fail == J_ROLL_BACK) {
        roll_back(m, "Cannot record the move's progress in %s; the copy was removed, the source kept", where);
        return 1;
    }
    return 0;
}

/* another replica adopted the flow (its lease had run out here: this process was stopped or cut off): nothing of it
 * is touched again here; its operation is answered by the adopter */
static void lost(move_t *m)
{
    gw_flow_forget(m->flow);
    m->flow = NULL;
    tell_caller(m, GW_OP_FAILURE,
                "Another gateway replica took this operation over (this one had stopped renewing it); it "
                "finishes it, and answers for it");
    move_free(m);
}

/* a record written behind its step (see go()): a loss is acted on at the next act(), when no member call is in
 * flight; a failure was logged and changes nothing (the step goes on, as steps[].j_fail says) */
static void on_recorded_behind(void *data, const char *err, int was_lost)
{
    move_t *m = data;
    (void)err;
    if (was_lost)
        m->flow_lost = 1;
}

static void on_recorded(void *data, const char *err, int was_lost)
{
    move_t *m = data;
    move_state_t next = m->recording;
    if (was_lost)
        return lost(m);
    if (err != NULL && record_failed(m, next, "the cluster", err))
        return;
    if (gw_move_pause_at(steps[next].journal))
        return;
    take(m, next);
}

static void go(move_t *m, move_state_t next)
{
    const char *step = steps[next].journal;
    if (step == NULL)
        return take(m, next);
    /* a move that cannot record its steps must not take them: first the replica's own journal, then the cluster (the
     * record other replicas adopt it from) */
    json_t *r = record(m);
    json_object_set_new(r, GW_FLOWS_IN_CLUSTER, json_true()); /* (its absence from the cluster then says it ended) */
    const char *err = gw_journal_write(m->move_id, step, r);
    if (err != NULL && record_failed(m, next, "the gateway's journal", err)) {
        json_decref(r);
        return;
    }
    if (m->flow == NULL)
        m->flow = gw_flow_new(m->move_id, "move");
    if (steps[next].j_fail == J_GO_ON && !pause_wanted(step)) {
        /* a step taken whether or not it is recorded (a watch; a roll-back, safe by the marks) does not wait for the
         * cluster: a transfer must be watched at once (a finished one is dropped by LXD within seconds), and a busy
         * cluster can take seconds to write. (A test pausing here waits, so that the cluster has the record.) */
        gw_flow_write(m->flow, step, r, on_recorded_behind, m);
        json_decref(r);
        return take(m, next);
    }
    m->recording = next;
    gw_flow_write(m->flow, step, r, on_recorded, m);
    json_decref(r);
}

static void roll_back(move_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *w = gw_text_vformat(fmt, ap);
    va_end(ap);
    free(m->why);
    m->why = w;
    go(m, MV_ROLLBACK); /* (its record not written: the roll-back is safe all the same, by the marks) */
}

/* ---- the member calls, one per step ---- */

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call);
static void on_migrated(void *data, const char *err, long status, json_t *json, const char *location);

static void get_source(move_t *m)
{
    gw_vol_get(m->src, m->id, m->pool, m->name, m->project, on_answer, m);
}

static void get_target(move_t *m)
{
    gw_vol_get(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_answer, m);
}

/* GET of operation `op` on member `on` (suffix: "" or a /wait) */
static void get_op(move_t *m, gw_member_t *on, const char *op, const char *suffix)
{
    char *e = curl_easy_escape(NULL, op, 0), *path = gw_text_dupf("/1.0/operations/%s%s", e, suffix);
    gw_backend_call(on->url, m->id, "GET", path, NULL, 30000, on_answer, m);
    curl_free(e);
    free(path);
}

static void get_transfer(move_t *m, const char *suffix)
{
    get_op(m, m->dst, m->transfer_op, suffix);
}

/* MV_MAKE_TEMP: the copy of the snapshot into the temporary volume, on the snapshot's member, carrying the mark */
static void make_temp(move_t *m)
{
    json_t *config = json_deep_copy(m->temp_config);
    if (!json_is_object(config)) {
        json_decref(config);
        config = json_object();
    }
    json_object_del(config, MOVE_MARK);
    json_object_set_new(config, MOVE_MARK, json_string(m->move_id));
    char *from = gw_text_dupf("%s/%s", m->origin, m->snapshot),
         *desc = gw_text_dupf("lxd-gateway: a temporary copy of snapshot %s for operation %s; "
                              "removed when the operation ends",
                              from, m->move_id);
    json_t *body = json_pack("{s:s, s:s, s:s, s:o, s:{s:s, s:s, s:s, s:b}}", "name", m->name, "type", "custom", "description", desc,
                             "config", config, "source", "type", "copy", "name", from, "pool", m->pool, "volume_only", 1);
    json_t *ct = json_object_get(m->volume, "content_type");
    if (json_is_string(ct))
        json_object_set(body, "content_type", ct);
    char *text = json_dumps(body, JSON_COMPACT), *path = gw_lxd_volume_path(m->pool, NULL, m->project, m->src->name);
    gw_backend_call(m->src->url, m->id, "POST", path, text, 30000, on_answer, m);
    free(from), free(desc), free(text), free(path);
    json_decref(body);
}

/* MV_RECOVER_TEMP: the operation that made the temporary volume, or (not known: a crash came before it was recorded)
 * every operation of its project on its member */
static void get_temp_ops(move_t *m)
{
    if (m->temp_op != NULL && *m->temp_op != '\0')
        return get_op(m, m->src, m->temp_op, "");
    char *e = curl_easy_escape(NULL, m->project, 0), *path = gw_text_dupf("/1.0/operations?recursion=1&project=%s", e);
    gw_backend_call(m->src->url, m->id, "GET", path, NULL, 30000, on_answer, m);
    curl_free(e);
    free(path);
}

static void advance(move_t *m, const answer_t *a);

/* makes the current step's call (or, MV_RECOVER, looks at the members) */
static void on_confirmed(void *data, const char *err, int was_lost);
static void on_locked(void *data, const char *err, const char *holder);

static void act(move_t *m)
{
    if (m->flow_lost)
        return lost(m);
    if (m->flow != NULL && !gw_flow_may_act(m->flow)) { /* this replica's lease is confirmed before a member is called */
        gw_flow_write(m->flow, NULL, NULL, on_confirmed, m);
        return;
    }
    switch (m->state) {
    case MV_MAKE_TEMP: /* ("temp" is journaled; never retried) */
        gw_log(GW_LOG_INFO, "snapshot copy started", "move", m->move_id, "volume", m->origin, "snapshot", m->snapshot, "from",
               m->src->name, "to", m->dst->name, "temporary", m->name, NULL);
        make_temp(m);
        return;
    case MV_WATCH_TEMP:
        get_op(m, m->src, m->temp_op, "/wait?timeout=" POLL_WAIT_S);
        return;
    case MV_RECOVER_TEMP:
        get_temp_ops(m);
        return;
    case MV_MARK_SOURCE:                     /* ("begin" is journaled; never retried) */
        if (m->lock != NULL && !m->locked) { /* one flow per volume, cluster-wide, whichever replica runs it */
            gw_flows_lock(m->lock, m->move_id, on_locked, m);
            return;
        }
        if (m->snapshot == NULL)
            gw_log(GW_LOG_INFO, "volume move started", "move", m->move_id, "volume", m->name, "from", m->src->name, "to",
                   m->dst->name, NULL);
        get_source(m);
        return;
    case MV_DROP_TEMP:
    case MV_CHECK_SOURCE:
    case MV_RECHECK_SOURCE:
    case MV_UNMARK_SOURCE:
        get_source(m);
        return;
    case MV_VERIFY_TARGET:
    case MV_CHECK_TARGET:
    case MV_TARGET_KEPT:
    case MV_UNMARK_TARGET:
    case MV_ROLLBACK:
        get_target(m);
        return;
    case MV_MARK_SOURCE_PATCH: { /* only if the source is as it was read: two flows cannot both mark it (LXD checks If-Match) */
        char *path = gw_lxd_volume_path(m->pool, m->name, m->project, m->src->name),
             *header = m->etag != NULL ? gw_text_dupf("If-Match: %s", m->etag) : NULL;
        gw_call_opts_t opts = {.header = header};
        gw_backend_call_opts(&opts, m->src->url, m->id, "PATCH", path, m->patch, 30000, on_answer, m);
        free(path), free(header);
        return;
    }
    case MV_UNMARK_SOURCE_PATCH:
        gw_vol_patch(m->src, m->id, m->pool, m->name, m->project, m->patch, on_answer, m);
        return;
    case MV_UNMARK_TARGET_PATCH:
        gw_vol_patch(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, m->patch, on_answer, m);
        return;
    case MV_TRANSFER: {
        gw_migrate_spec_t spec = {
            m->id,   m->src,      m->dst,         m->pool,   m->project,
            m->name, m->dst_pool, m->dst_project, m->volume, m->snapshot != NULL /* (the temporary volume has none) */,
            0,       &m->relay};
        gw_migrate_start(&spec, on_migrated, m);
        return;
    }
    case MV_WATCH:
        get_transfer(m, "/wait?timeout=" POLL_WAIT_S);
        return;
    case MV_RECOVER_TRANSFER:
        get_transfer(m, "");
        return;
    case MV_DELETE_SOURCE:
    case MV_DROP_TEMP_DELETE:
        gw_vol_delete(m->src, m->id, m->pool, m->name, m->project, on_answer, m);
        return;
    case MV_ROLLBACK_DELETE:
        gw_vol_delete(m->dst, m->id, m->dst_pool, m->dst_name, m->dst_project, on_answer, m);
        return;
    case MV_RECOVER:
        advance(m, NULL);
        return;
    case MV_NUM_STATES:
        break;
    }
    abort();
}

/* the source's lock (MV_MARK_SOURCE): held, or another flow has it (nothing was changed yet) */
static void on_locked(void *data, const char *err, const char *holder)
{
    move_t *m = data;
    if (err != NULL)
        return roll_back(m, "Cannot lock the volume for the move in the cluster (%s); nothing was changed", err);
    if (holder != NULL)
        return roll_back(m, "The volume is being moved by operation %s; nothing was changed", holder);
    m->locked = 1;
    act(m);
}

/* act()'s lease confirmed (or not: the cluster did not answer, and nothing is done until it does) */
static void on_confirmed(void *data, const char *err, int was_lost)
{
    move_t *m = data;
    if (was_lost)
        return lost(m);
    if (err != NULL) {
        m->retry.cb = on_retry;
        h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry);
        return;
    }
    act(m);
}

/* an ETag as a header value: what LXD sends (a quoted hex digest), checked: it goes into a request header */
static int etag_ok(const char *etag)
{
    size_t len = strlen(etag);
    return len != 0 && len < 200 && strspn(etag, "\"0123456789abcdefABCDEF") == len;
}

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    move_t *m = data;
    if (m->state == MV_MARK_SOURCE && err == NULL) {
        const char *etag = gw_call_header(call, "ETag");
        free(m->etag);
        m->etag = etag != NULL && etag_ok(etag) ? strdup(etag) : NULL;
    }
    answer_t a = {err, err != NULL && gw_call_not_sent(call), status, json};
    advance(data, &a);
}

static void on_migrated(void *data, const char *err, long status, json_t *json, const char *location)
{
    (void)location;
    answer_t a = {err, 0, status, json};
    advance(data, &a);
}

/* ---- what each answer means: the one function every answer and every timer comes to ---- */

static void relay_progress(move_t *m, json_t *meta);
static void watched(move_t *m, const answer_t *a);

/* the source is gone or the target unmarked: the move's end */
static void done(move_t *m)
{
    if (m->state == MV_UNMARK_TARGET || m->state == MV_UNMARK_TARGET_PATCH)
        finish(m, "moved", GW_OP_SUCCESS, NULL);
    else if (m->cancelled)
        finish(m, "cancelled", GW_OP_CANCELLED, "Operation cancelled; the source was kept");
    else
        finish(m, "rolled-back", GW_OP_FAILURE, "%s", m->why);
}

/* taking a mark off failed (`err`): tried again from its GET (FINAL_RETRIES in all), then left for the operator, who
 * removes the key */
static void unmark_failed(move_t *m, const char *err)
{
    move_state_t get = m->state == MV_UNMARK_TARGET_PATCH   ? MV_UNMARK_TARGET
                       : m->state == MV_UNMARK_SOURCE_PATCH ? MV_UNMARK_SOURCE
                                                            : m->state;
    if (again(m, get))
        return;
    int source = get == MV_UNMARK_SOURCE;
    gw_log(GW_LOG_ERROR, "a volume keeps the gateway's mark; remove it with `lxc storage volume unset`", "move", m->move_id,
           "volume", source ? m->name : m->dst_name, "member", source ? m->src->name : m->dst->name, "key", MOVE_MARK, "err", err,
           NULL);
    done(m);
}

/* deleting the source failed for good: both are kept (the copy is never removed once the source may be gone) */
static void kept_both(move_t *m)
{
    if (m->snapshot != NULL) /* the temporary volume: the copy is complete, MV_DROP_TEMP tries again at the end */
        return go(m, MV_UNMARK_TARGET);
    finish(m, "kept-both", GW_OP_FAILURE,
           "The volume was copied, but deleting the source on %s failed (%s); both are kept: %s/%s on %s is a complete copy "
           "(both carry %s until you remove it)",
           m->src->name, m->why, m->dst_pool, m->dst_name, m->dst->name, MOVE_MARK);
}

static void leave_to_next_start(move_t *m);

/* the target cannot be reached to remove what this move left there: the caller learns now, the removal is retried
 * ROLLBACK_RETRIES times, then left to the next start (the journal has no "end" for this move yet) */
static void rollback_failed(move_t *m, const char *err)
{
    tell_caller(m, m->cancelled ? GW_OP_CANCELLED : GW_OP_FAILURE, m->why);
    if (m->tries == 0)
        gw_log(GW_LOG_WARN, "cannot reach the target to roll back, retrying", "move", m->move_id, "member", m->dst->name, "err",
               err, NULL);
    if (again(m, MV_ROLLBACK))
        return;
    gw_log(GW_LOG_ERROR, "cannot reach the target to remove the move's partial copy; the journal keeps the move for the next start",
           "move", m->move_id, "member", m->dst->name, "err", err, "tries", gw_log_num(m->tries - 1), NULL);
    leave_to_next_start(m);
}

/* the journal keeps the flow for the next start (a member did not answer long enough). A snapshot copy's temporary
 * volume goes now all the same if its member answers and no copy can still be making it: every resume point removes
 * it anyway, and meanwhile it takes space (and a project's disk quota) */
static void leave_to_next_start(move_t *m)
{
    if (m->snapshot != NULL && !m->temp_dropped && m->src != NULL && m->src->healthy && m->state != MV_MAKE_TEMP &&
        m->state != MV_WATCH_TEMP && m->state != MV_RECOVER_TEMP) {
        m->leave_open = 1;
        resume(m, MV_DROP_TEMP); /* (not journaled: the journal's step is where the next start resumes) */
        return;
    }
    move_free(m);
}

/* the roll-back's last step: the mark off the source (a snapshot copy: nothing; its end removes the temporary volume) */
static void undo_source(move_t *m)
{
    if (m->snapshot != NULL)
        return done(m);
    go(m, MV_UNMARK_SOURCE);
}

/* a snapshot copy's outcome, kept by finish() while its temporary volume was removed */
static void finish_kept(move_t *m)
{
    m->temp_dropped = 1;
    char *outcome = m->end_outcome, *err = m->end_err;
    m->end_outcome = NULL, m->end_err = NULL;
    if (outcome == NULL || err != NULL)
        finish(m, outcome != NULL ? outcome : "rolled-back", m->end_status, "%s", err != NULL ? err : "recovered");
    else
        finish(m, outcome, m->end_status, NULL);
    free(outcome), free(err);
}

/* the temporary volume cannot be removed now (`err`): tried again (FINAL_RETRIES in all), then the caller learns the
 * outcome and the journal keeps the copy for the next start, which removes it */
static void drop_failed(move_t *m, const char *err)
{
    if (again(m, MV_DROP_TEMP))
        return;
    gw_log(GW_LOG_ERROR, "cannot remove a snapshot copy's temporary volume; the journal keeps it for the next start", "move",
           m->move_id, "volume", m->name, "member", m->src->name, "err", err, NULL);
    tell_caller(m, m->end_status, m->end_err);
    move_free(m);
}

/* MV_RECOVER_TEMP: `meta` (the `metadata` of a member's answer) shows no running copy that may be making the
 * temporary volume: its own operation ended, or (not known) none of the member's "Copying storage volume" runs */
static int temp_copy_ended(move_t *m, json_t *meta)
{
    if (m->temp_op != NULL && *m->temp_op != '\0')
        return json_integer_value(json_object_get(meta, "status_code")) >= 200;
    json_t *running = json_object_get(meta, "running"), *op;
    size_t i;
    if (!json_is_object(meta) || (running != NULL && !json_is_array(running)))
        return 0;
    json_array_foreach(running, i, op)
    {
        const char *at = gw_vol_str(op, "location"); /* (LXD lists every member's: only the temporary volume's member counts) */
        if (strcmp(gw_vol_str(op, "description"), "Copying storage volume") == 0 && (*at == '\0' || strcmp(at, m->src->name) == 0))
            return 0;
    }
    return 1;
}

/* where a recovery step that got no usable answer starts again: from the top, so that nothing is deleted on a check
 * older than one round trip (a running move: the source's check; recovery: the members, then the journal's step) */
static move_state_t recover_from(move_t *m)
{
    return m->journal != NULL ? MV_RECOVER : MV_CHECK_SOURCE;
}

/* a member recovery needs did not answer (`err`): tried again for recover_max_ms, then left to the next start */
static void recover_later(move_t *m, const char *err)
{
    uint64_t waited = gw_clock_ms() - m->since;
    if (waited < recover_max_ms && m->tries++ % 15 == 0) /* every 30 s */
        gw_log(GW_LOG_WARN, "recovering a move: waiting", "move", m->move_id, "err", err, "waited_s",
               gw_log_num((long long)(waited / 1000)), NULL);
    if (again(m, recover_from(m)))
        return;
    gw_log(GW_LOG_ERROR, "cannot recover a move now; the journal keeps it for the next start", "move", m->move_id, "err", err,
           "waited_s", gw_log_num((long long)(waited / 1000)), NULL);
    tell_caller(m, GW_OP_FAILURE,
                m->snapshot != NULL ? "A member does not answer to finish the copy; the gateway finishes it at its next start"
                                    : "The volume was copied, but a member does not answer to finish the move; the gateway "
                                      "finishes it at its next start (both volumes are kept until then)");
    leave_to_next_start(m);
}

/* where recovery resumes: at steps[].resume of the step the journal says the move was at (a roll-back is journaled
 * again, as when a running move rolls back) */
static void recovered(move_t *m)
{
    const char *at = gw_vol_str(m->journal, "step");
    move_state_t s = 0;
    while (s != MV_NUM_STATES && (steps[s].journal == NULL || strcmp(steps[s].journal, at) != 0))
        ++s;
    move_state_t next = s != MV_NUM_STATES ? steps[s].resume : MV_RECOVER_TRANSFER; /* (unknown: as "transferring") */
    if (next == MV_RECOVER_TRANSFER && *gw_vol_str(m->journal, "transfer_op") == '\0')
        next = MV_ROLLBACK; /* (no transfer was started) */
    free(m->why);           /* (recovery may come here again: a member stopped answering meanwhile) */
    m->why = NULL;
    if (next == MV_RECOVER_TEMP) {
        gw_log(GW_LOG_WARN,
               "recovering a snapshot copy: interrupted while the snapshot was copied on its member, removing "
               "that copy",
               "move", m->move_id, NULL);
        m->why = strdup("recovered: the copy was interrupted while the snapshot was copied on its member; nothing was kept");
    } else if (next == MV_DROP_TEMP) {
        gw_log(GW_LOG_WARN, "recovering a snapshot copy: removing its temporary volume", "move", m->move_id, NULL);
    } else if (s == MV_ROLLBACK) {
        gw_log(GW_LOG_WARN, "recovering a move: it was being rolled back, going on", "move", m->move_id, NULL);
        m->why = strdup(m->snapshot != NULL ? "recovered: the copy was rolled back; nothing was kept"
                                            : "recovered: the move was rolled back; the source was kept");
    } else if (next == MV_ROLLBACK) {
        gw_log(GW_LOG_WARN, "recovering a move: interrupted before the transfer, rolling back", "move", m->move_id, NULL);
        m->why = strdup("recovered: the move was interrupted before the transfer; the source was kept");
    }
    if (next == MV_ROLLBACK)
        go(m, MV_ROLLBACK); /* (recorded again: the roll-back is what happens from now on) */
    else
        resume(m, next);
}

static void advance(move_t *m, const answer_t *a)
{
    int ok = a != NULL && a->err == NULL, gone = ok && a->status == 404;
    switch (m->state) {
    /* ---- a snapshot copy's temporary volume ---- */
    case MV_MAKE_TEMP: {
        const char *tid = json_string_value(json_object_get(json_object_get(ok ? a->json : NULL, "metadata"), "id"));
        if (ok && a->status == 202 && tid != NULL) {
            m->temp_op = strdup(tid);
            return go(m, MV_WATCH_TEMP); /* (if "temp-copying" cannot be recorded, recovery waits for every copy) */
        }
        if (a->not_sent || (ok && a->status / 100 == 4)) /* refused before anything was made */
            return finish(m, "refused", GW_OP_FAILURE, "Cannot copy the snapshot on %s (%s); nothing was changed", m->src->name,
                          why(a, "refused"));
        /* no usable answer to what went out: a copy may be running; it ends before its volume is removed */
        free(m->why);
        m->why = gw_text_dupf("Lost track of the snapshot's copy on %s (%s); nothing was kept", m->src->name, why(a, "no answer"));
        return go(m, MV_RECOVER_TEMP);
    }
    case MV_WATCH_TEMP: {
        json_t *op = json_object_get(ok ? a->json : NULL, "metadata");
        json_int_t code = json_integer_value(json_object_get(op, "status_code"));
        if (!ok || a->status != 200 || code == 0 || strcmp(gw_vol_str(op, "id"), m->temp_op) != 0) {
            if (ok && gone)
                return roll_back(m, "Lost track of the snapshot's copy on %s (its operation is gone); nothing was kept",
                                 m->src->name);
            if (!a->not_sent && again(m, MV_WATCH_TEMP))
                return; /* a glitch: the copy may still run */
            free(m->why);
            m->why =
                gw_text_dupf("Lost track of the snapshot's copy on %s (%s); nothing was kept", m->src->name, why(a, "no status"));
            return go(m, MV_RECOVER_TEMP); /* (waits for it to end, then removes what it made) */
        }
        m->tries = 0; /* (WATCH_RETRIES counts unusable answers in a row) */
        if (code < 200)
            return act(m); /* the next long-poll */
        if (code != 200)
            return roll_back(m, "Cannot copy the snapshot on %s: %s", m->src->name, gw_vol_str(op, "err"));
        if (m->cancelled)
            return roll_back(m, "Operation cancelled");
        return go(m, MV_MARK_SOURCE);
    }
    case MV_RECOVER_TEMP:
        if (ok && (gone || (a->status == 200 && temp_copy_ended(m, json_object_get(a->json, "metadata")))))
            return finish(m, "rolled-back", GW_OP_FAILURE, "%s",
                          m->why != NULL ? m->why : "The copy was interrupted while the snapshot was copied; nothing was kept");
        if (again(m, MV_RECOVER_TEMP))
            return; /* still running (or its member does not answer): asked again */
        return recover_later(m, why(a, "the snapshot's copy on its member does not end"));
    case MV_DROP_TEMP:
        if (!ok || (a->status != 200 && !gone))
            return drop_failed(m, why(a, "no answer"));
        if (gone || !made_by_move(m, a->json, 1)) /* gone (a volume of its name without the mark is not it) */
            return finish_kept(m);
        return go(m, MV_DROP_TEMP_DELETE);
    case MV_DROP_TEMP_DELETE:
        if (ok && (a->status / 100 == 2 || gone))
            return finish_kept(m);
        return drop_failed(m, why(a, "the member refused"));
    /* ---- forward ---- */
    case MV_MARK_SOURCE:
        if (!ok || a->status != 200)
            return roll_back(m, "Cannot mark the source volume for the move (%s); nothing was changed",
                             gone ? "the volume is gone" : why(a, "no answer"));
        if (m->snapshot != NULL && made_by_move(m, a->json, 1)) /* the temporary volume: marked when it was made */
            return m->cancelled ? roll_back(m, "Operation cancelled") : go(m, MV_TRANSFER);
        const char *other =
            json_string_value(json_object_get(json_object_get(json_object_get(a->json, "metadata"), "config"), MOVE_MARK));
        if (other != NULL && strcmp(other, m->move_id) != 0 && (flow_is_live(other) || gw_ops_is_running(other)))
            return roll_back(m, "The volume is being moved by operation %s; nothing was changed",
                             other); /* (a stale one: taken over) */
        m->patch = mark_patch(m, a->json, 1);
        return go(m, MV_MARK_SOURCE_PATCH);
    case MV_MARK_SOURCE_PATCH:
        if (!ok || a->status / 100 != 2)
            return roll_back(m, "Cannot mark the source volume for the move (%s); nothing was changed",
                             why(a, "the member refused the change"));
        if (m->cancelled) /* before the transfer: nothing to cut, nothing to wait for */
            return roll_back(m, "Operation cancelled");
        return go(m, MV_TRANSFER);
    case MV_TRANSFER: {
        const char *tid = json_string_value(json_object_get(json_object_get(a->json, "metadata"), "id"));
        if (!ok || a->status != 202 || tid == NULL) /* refused (or unknown, after a timeout): undone by the marks */
            return roll_back(m, "%s", why(a, "the target refused the transfer"));
        m->transfer_op = strdup(tid);
        m->progress_at = gw_clock_ms();
        return go(m, MV_WATCH); /* (if "transferring" cannot be recorded, "transferred" cannot either: the source is kept) */
    }
    case MV_WATCH:
        return watched(m, a);
    case MV_VERIFY_TARGET:
        if (!ok || a->status != 200)
            return roll_back(m, "The transfer reported success but the volume is not on %s; the source was kept", m->dst->name);
        if (!made_by_move(m, a->json, 0)) /* (the roll-back leaves a volume without the mark alone) */
            return roll_back(m,
                             "The transfer reported success but the volume %s on %s is not the one this move made; the "
                             "source was kept",
                             m->dst_name, m->dst->name);
        return go(m, MV_CHECK_SOURCE); /* the source is deleted as recovery would: only while it carries the mark */
    case MV_CHECK_SOURCE:
        if (!ok || (a->status != 200 && !gone))
            return recover_later(m, why(a, "no answer"));
        if (gone) /* deleted before a crash */
            return go(m, MV_TARGET_KEPT);
        if (!made_by_move(m, a->json, 1)) { /* the move deleted it; a volume of its name was made by hand since */
            gw_log(GW_LOG_WARN,
                   "recovering a move: the volume of the source's name is not the one the move started with, left alone", "move",
                   m->move_id, "volume", m->name, "member", m->src->name, NULL);
            return go(m, MV_TARGET_KEPT);
        }
        return go(m, MV_CHECK_TARGET);
    case MV_CHECK_TARGET:
        if (!ok || (a->status != 200 && !gone))
            return recover_later(m, why(a, "no answer"));
        if (gone)
            return roll_back(m, "recovered: the target volume is missing; the source was kept");
        if (!made_by_move(m, a->json, 0))
            return finish(m, "kept-both", GW_OP_FAILURE,
                          "recovered: the volume %s on %s is not the one this move made; nothing was deleted", m->dst_name,
                          m->dst->name);
        gw_log(m->journal == NULL ? GW_LOG_DEBUG : GW_LOG_WARN, "recovering a move: transfer completed, deleting the source",
               "move", m->move_id, NULL);
        return go(m, MV_DELETE_SOURCE);
    case MV_DELETE_SOURCE:
        if (ok && (a->status / 100 == 2 || gone))
            return go(m, MV_UNMARK_TARGET);
        if (m->snapshot != NULL) /* the temporary volume: the copy is complete; MV_DROP_TEMP tries again at the end */
            return go(m, MV_UNMARK_TARGET);
        free(m->why);
        m->why = gw_text_dupf("%s", why(a, ""));
        if (ok && a->status / 100 == 4) { /* LXD refused it before acting (in use, not allowed): the move is undone */
            char *w = m->why;
            m->why = NULL;
            roll_back(m, "Deleting the source failed (%s); the copy on %s was removed, the source kept", w, m->dst->name);
            free(w);
            return;
        }
        if (a->not_sent) /* its member is down: nothing was done; try again */
            return again(m, MV_DELETE_SOURCE) ? (void)0 : kept_both(m);
        return go(m, MV_RECHECK_SOURCE); /* a 5xx, or no answer to what went out: it may be gone, or half */
    case MV_RECHECK_SOURCE:
        /* a volume that is still there may be half deleted (LXD removes the data first, the record last): the copy is
         * kept whatever happens */
        if (gone || (ok && a->status == 200 && !made_by_move(m, a->json, 1)))
            return go(m, MV_UNMARK_TARGET); /* gone (a volume of its name without the mark is not it) */
        if (ok && a->status == 200)         /* still there: delete it again */
            return again(m, MV_DELETE_SOURCE) ? (void)0 : kept_both(m);
        return again(m, MV_RECHECK_SOURCE) ? (void)0 : kept_both(m);
    case MV_TARGET_KEPT: /* the source is gone (the move deleted it): what is left is the target's mark */
        if (!ok || (a->status != 200 && !gone))
            return recover_later(m, why(a, "no answer"));
        if (gone) {
            gw_log(GW_LOG_ERROR, "recovering a move: the target volume does not exist and the source is gone", "move", m->move_id,
                   "volume", m->name, NULL);
            return finish(m, "missing", GW_OP_FAILURE, "recovered: %s on %s is gone and %s on %s does not exist", m->name,
                          m->src->name, m->dst_name, m->dst->name);
        }
        gw_log(GW_LOG_WARN, "recovering a move: the source was deleted, taking the mark off the target", "move", m->move_id, NULL);
        return go(m, MV_UNMARK_TARGET);
    case MV_UNMARK_TARGET:
    case MV_UNMARK_SOURCE:
        if (!ok || (a->status != 200 && !gone))
            return unmark_failed(m, why(a, "no answer"));
        if (gone || !made_by_move(m, a->json, m->state == MV_UNMARK_SOURCE))
            return done(m); /* no mark of this move (none left, or a volume it never touched) */
        free(m->patch);
        m->patch = mark_patch(m, a->json, 0);
        return go(m, m->state == MV_UNMARK_SOURCE ? MV_UNMARK_SOURCE_PATCH : MV_UNMARK_TARGET_PATCH);
    case MV_UNMARK_TARGET_PATCH:
    case MV_UNMARK_SOURCE_PATCH:
        if (!ok || a->status / 100 != 2)
            return unmark_failed(m, why(a, "the member refused the change"));
        return done(m);
    /* ---- back ---- */
    case MV_ROLLBACK:
        if (!ok || (a->status != 200 && !gone))
            return rollback_failed(m, why(a, "no answer"));
        if (gone) /* nothing was left behind */
            return undo_source(m);
        if (!made_by_move(m, a->json, 0)) { /* a volume of that name this move did not make (made by hand meanwhile) */
            gw_log(GW_LOG_WARN, "rolling back a move: the volume on the target does not carry this move's mark, left alone", "move",
                   m->move_id, "volume", m->dst_name, "member", m->dst->name, NULL);
            return undo_source(m);
        }
        return go(m, MV_ROLLBACK_DELETE); /* this move made it: remove it, the source stays */
    case MV_ROLLBACK_DELETE:
        if (!ok)
            return rollback_failed(m, a->err);
        if (a->status / 100 != 2 && !gone)
            gw_log(GW_LOG_ERROR, "cannot remove a partial target", "move", m->move_id, "member", m->dst->name, "err",
                   gw_vol_str(a->json, "error"), NULL);
        return undo_source(m);
    /* ---- recovery ---- */
    case MV_RECOVER:
        m->src = gw_members_find(gw_vol_str(m->journal, "src"));
        m->dst = gw_members_find(gw_vol_str(m->journal, "dst"));
        if (m->src == NULL || m->dst == NULL)
            return recover_later(m, "a member of the move is not in the cluster (yet)");
        if (!m->src->healthy || !m->dst->healthy)
            return recover_later(m, "a member of the move does not answer");
        return recovered(m);
    case MV_RECOVER_TRANSFER: {
        json_int_t code = json_integer_value(json_object_get(json_object_get(ok ? a->json : NULL, "metadata"), "status_code"));
        if (ok && a->status == 200 && code != 0 && code < 200 && again(m, MV_RECOVER))
            return; /* still running on the target: let it end first (asked again from the members' check) */
        gw_log(GW_LOG_WARN, "recovering a move: transfer not recorded as complete, rolling back", "move", m->move_id, NULL);
        return roll_back(m, "recovered: the move was interrupted before the transfer completed; the source was kept");
    }
    case MV_NUM_STATES:
        break;
    }
    abort();
}

/* MV_WATCH: the transfer operation, as its member reports it */
static void watched(move_t *m, const answer_t *a)
{
    json_t *op = json_object_get(a->json, "metadata");
    /* a usable answer: the operation with its status code, or LXD's "not found" */
    int answered =
        a->err == NULL && ((a->status == 200 && json_is_object(op) && json_is_integer(json_object_get(op, "status_code")) &&
                            strcmp(gw_vol_str(op, "id"), m->transfer_op) == 0) || /* (about the operation asked) */
                           a->status == 404);                                     /* (LXD's 404: "metadata": null) */
    const char *what = a->err != NULL                           ? a->err
                       : a->status == 200 && json_is_object(op) ? "its operation has no status_code"
                                                                : gw_vol_str(a->json, "error");
    /* a glitch (reset, timeout, 5xx) says nothing of the transfer, which may still run: ask again. Rolling back under
     * a running transfer could leave its volume behind */
    if (!answered && !a->not_sent && again(m, MV_WATCH)) {
        gw_log(GW_LOG_WARN, "transfer state unknown, asking again", "move", m->move_id, "status", gw_log_num((int)a->status), "err",
               a->err == NULL && a->status == 200 && json_is_object(op) ? "the answer has no status_code" : what, NULL);
        return;
    }
    if (!answered || a->status != 200) /* the target is down (its transfer with it), or forgot it, or never says */
        return roll_back(m, "Lost track of the transfer on %s (status %ld: %s); the source was kept", m->dst->name, a->status,
                         what);
    m->tries = 0; /* (WATCH_RETRIES counts unusable answers in a row) */
    json_t *meta = json_object_get(op, "metadata");
    relay_progress(m, meta);
    json_int_t code = json_integer_value(json_object_get(op, "status_code"));
    uint64_t now = gw_clock_ms(), bytes = m->relay != NULL ? gw_relay_bytes(m->relay) : 0;
    if (m->last_state == NULL || !json_equal(m->last_state, meta) || bytes != m->last_bytes) { /* progress */
        m->last_bytes = bytes;
        json_decref(m->last_state);
        m->last_state = json_deep_copy(meta);
        m->progress_at = now;
    }
    if (code < 200 && now - m->progress_at >= STALL_MS) {
        if (m->stalled) /* stopped, and it still does not end: given up; the roll-back removes only what carries the mark */
            return roll_back(m,
                             "The transfer on %s made no progress for %d minutes and did not end when stopped; the source "
                             "was kept",
                             m->dst->name, STALL_MS / 60000);
        /* stopped as a cancel stops it: its data path cut, it fails on both members */
        gw_log(GW_LOG_ERROR, "transfer made no progress, stopping it", "move", m->move_id, "minutes", gw_log_num(STALL_MS / 60000),
               NULL);
        m->stalled = 1;
        m->progress_at = now;
        if (m->relay != NULL) {
            gw_relay_close(m->relay);
            m->relay = NULL;
        }
    }
    if (code < 200)
        return act(m); /* the next long-poll */
    if (m->stalled)
        return roll_back(m, "The transfer on %s made no progress for %d minutes and was stopped; the source was kept", m->dst->name,
                         STALL_MS / 60000);
    if (code != 200 || m->cancelled)
        return roll_back(m, "Error transferring storage volume: %s", gw_vol_str(op, "err"));
    return go(m, MV_VERIFY_TARGET);
}

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

/* ---- the caller: cancel, and the request until the operation exists ---- */

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

/* every check passed: the operation starts, and with it the first step */
static void begin(move_t *m)
{
    h2o_req_t *req = gw_hold_take(&m->hold);
    if (req == NULL && m->done == NULL) { /* the client left before anything was changed */
        move_free(m);
        return;
    }
    char *res = m->snapshot != NULL
                    ? gw_text_dupf("/1.0/storage-pools/%s/volumes/custom/%s/snapshots/%s", m->pool, m->origin, m->snapshot)
                    : gw_text_dupf("/1.0/storage-pools/%s/volumes/custom/%s", m->pool, m->name);
    m->op = gw_op_start(m->snapshot != NULL ? "Copying storage volume" : "Moving storage volume", m->project, m->dst->name,
                        json_pack("{s:[s]}", "storage_volumes", res), on_cancel, m);
    free(res);
    m->move_id = strdup(gw_op_id(m->op));
    json_object_set_new(json_object_get(m->volume, "config"), MOVE_MARK, json_string(m->move_id));
    if (m->snapshot != NULL) { /* the volume moved is the temporary one, named after the operation */
        free(m->name);
        m->name = gw_text_dupf("lxd-gateway-snapshot-copy-%s", m->move_id);
    }
    if (req != NULL)
        gw_op_send_created(req, m->op);
    gw_metrics_single_call(m->snapshot != NULL ? "volume_snapshot_copy" : "volume_move", "started");
    if (m->snapshot == NULL) /* (named in "begin", so that whoever ends the flow gives it up) */
        m->lock = gw_text_dupf("volume/%s/%s/%s/%s", m->src->name, m->pool, m->project, m->name);
    go(m, m->snapshot != NULL ? MV_MAKE_TEMP : MV_MARK_SOURCE);
}

static move_t *move_new(const gw_move_spec_t *spec)
{
    move_t *m = calloc(1, sizeof(*m));
    m->next = flows, flows = m;
    m->id = spec->id, m->src = spec->src, m->dst = spec->dst;
    m->pool = strdup(spec->pool), m->project = strdup(spec->project), m->name = strdup(spec->name);
    m->dst_pool = strdup(spec->dst_pool), m->dst_project = strdup(spec->dst_project), m->dst_name = strdup(spec->dst_name);
    if (spec->snapshot != NULL) {
        m->snapshot = strdup(spec->snapshot), m->origin = strdup(spec->name);
        m->temp_config = json_deep_copy(spec->temp_config);
    }
    m->volume = json_deep_copy(spec->volume);
    json_object_set_new(m->volume, "name", json_string(m->dst_name));
    json_object_set_new(m->volume, "type", json_string("custom"));
    if (!json_is_object(json_object_get(m->volume, "config")))
        json_object_set_new(m->volume, "config", json_object());
    json_object_del(json_object_get(m->volume, "config"), MOVE_MARK); /* another flow's mark (a stale one) is never copied */
    return m;
}

void gw_move_begin(h2o_req_t *req, const gw_move_spec_t *spec)
{
    move_t *m = move_new(spec);
    gw_hold_attach(&m->hold, req, NULL);
    begin(m);
}

gw_move_t *gw_move_run(const gw_move_spec_t *spec, gw_move_done_cb cb, void *data, const char **id)
{
    move_t *m = move_new(spec);
    m->done = cb, m->done_data = data;
    starting = m;
    begin(m);
    *id = starting != NULL ? m->move_id : NULL;
    m = starting;
    starting = NULL;
    return (gw_move_t *)m;
}

void gw_move_cancel(gw_move_t *move)
{
    on_cancel(NULL, move);
}

static void refuse(move_t *m, long status, json_t *json, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse(move_t *m, long status, json_t *json, const char *fmt, ...)
{
    gw_metrics_single_call("volume_move", "refused");
    h2o_req_t *req = gw_hold_take(&m->hold);
    if (req != NULL) {
        if (fmt == NULL) {
            gw_lxd_send_json(req, (int)status, json_incref(json));
        } else {
            va_list ap;
            va_start(ap, fmt);
            char *msg = gw_text_vformat(fmt, ap);
            va_end(ap);
            gw_lxd_send_error(req, (int)status, "%s", msg);
            free(msg);
        }
    }
    move_free(m);
}

/* gw_vol_check's outcome: begin, pass through, or refuse */
static void on_checked(void *data, const gw_vol_checked_t *r)
{
    move_t *m = data;
    if (r->verdict == GW_VOL_REFUSED)
        return refuse(m, r->status, r->answer, NULL);
    if (r->verdict == GW_VOL_REMOTE) { /* a remote pool: LXD moves it itself */
        h2o_req_t *req = gw_hold_take(&m->hold);
        const gw_identity_t *id = m->id;
        move_free(m);
        if (req != NULL)
            gw_proxy_pass(req, id);
        return;
    }
    if (r->verdict == GW_VOL_TAKEN)
        return refuse(m, 409, NULL, "Volume by that name already exists on %s", m->dst->name);
    /* the target keeps what the source had (native LXD and Incus drop it) */
    m->volume = json_pack("{s:s, s:s, s:O, s:s, s:s}", "name", m->dst_name, "type", "custom", "config",
                          json_object_get(r->source, "config"), "description", gw_vol_str(r->source, "description"), "content_type",
                          gw_vol_str(r->source, "content_type"));
    if (!json_is_object(json_object_get(m->volume, "config")))
        json_object_set_new(m->volume, "config", json_object());
    json_object_del(json_object_get(m->volume, "config"), MOVE_MARK); /* another move's mark (a stale one) is never copied */
    begin(m);
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

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t pool, vol;
    is_volume_post(req, &pool, &vol);
    move_t *m = calloc(1, sizeof(*m));
    m->next = flows, flows = m;
    gw_hold_attach(&m->hold, req, NULL); /* (a client gone before the 202: begin() finds it so and changes nothing) */
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
        gw_vol_check_spec_t spec = {.id = m->id,
                                    .src = m->src,
                                    .dst = m->dst,
                                    .src_pool = m->pool,
                                    .src_project = m->project,
                                    .src_name = m->name,
                                    .dst_pool = m->dst_pool,
                                    .dst_project = m->dst_project,
                                    .dst_name = m->dst_name,
                                    .not_moving = 1};
        gw_vol_check(&spec, on_checked, m);
    }
    free(msg);
    json_decref(body);
}

/* ---- recovery of the moves a crash interrupted ---- */

/* a flow to recover: this replica's after a crash, or another replica's whose lease ran out (flows.h). It is finished
 * or rolled back by the rules of recovery, and its operation, under the id it always had, answers with the outcome */
static void adopt_move(gw_flow_t *flow, json_t *r, const char *from)
{
    move_t *m = calloc(1, sizeof(*m));
    m->next = flows, flows = m;
    m->flow = flow;
    m->journal = json_incref(r);
    m->id = &gw_identities[GW_IDENTITY_GATEWAY];
    m->move_id = strdup(gw_flow_id(flow));
    m->pool = strdup(gw_vol_str(r, "pool")), m->project = strdup(gw_vol_str(r, "project"));
    m->name = strdup(gw_vol_str(r, "name"));
    m->dst_pool = strdup(gw_vol_str(r, "dst_pool")), m->dst_project = strdup(gw_vol_str(r, "dst_project"));
    m->dst_name = strdup(gw_vol_str(r, "dst_name"));
    m->transfer_op = strdup(gw_vol_str(r, "transfer_op"));
    if (*gw_vol_str(r, "lock") != '\0')
        m->lock = strdup(gw_vol_str(r, "lock"));
    json_t *snap = json_object_get(r, "snapshot");
    if (json_is_object(snap)) { /* a snapshot copy */
        m->end_status = GW_OP_FAILURE;
        m->snapshot = strdup(gw_vol_str(snap, "name")), m->origin = strdup(gw_vol_str(snap, "of"));
        m->temp_op = strdup(gw_vol_str(snap, "temp_op"));
        const char *outcome = gw_vol_str(snap, "outcome"); /* ("dropping-temp": the outcome the copy had come to) */
        if (*outcome != '\0') {
            m->end_outcome = strdup(outcome);
            m->end_status = strcmp(outcome, "copied") == 0 ? GW_OP_SUCCESS : GW_OP_FAILURE;
            if (m->end_status != GW_OP_SUCCESS)
                m->end_err = gw_text_dupf("recovered: the copy had ended (%s); its temporary volume was removed", outcome);
        }
    }
    /* (an adopted flow cannot be cancelled: it is finished or rolled back by the rules of recovery) */
    char *res = gw_text_dupf("/1.0/storage-pools/%s/volumes/custom/%s", m->pool, m->snapshot != NULL ? m->origin : m->name);
    m->op = gw_op_adopt(m->move_id, m->snapshot != NULL ? "Copying storage volume" : "Moving storage volume", m->project,
                        gw_vol_str(r, "dst"), json_pack("{s:[s]}", "storage_volumes", res), NULL, NULL);
    free(res);
    m->state = MV_RECOVER;
    m->since = gw_clock_ms();
    m->retry.cb = on_retry; /* (MV_RECOVER's act) */
    gw_log(GW_LOG_WARN, "found an interrupted move", "move", m->move_id, "step", gw_vol_str(r, "step"), "volume", m->name, "from",
           gw_vol_str(r, "src"), "to", gw_vol_str(r, "dst"), "owner", from, NULL);
    h2o_timeout_link(ctx->loop, &retry_timeout, &m->retry); /* once members are known */
}

static const char *init(const gw_config_t *conf, h2o_context_t *c)
{
    const char *err;
    ctx = c;
    h2o_timeout_init(ctx->loop, &retry_timeout, RETRY_MS);
    h2o_timeout_init(ctx->loop, &pause_timeout, PAUSE_DELAY_MS);
    const char *max = getenv("LXDGW_TEST_RECOVER_MAX_MS"); /* a test-only hook, like LXDGW_TEST_PAUSE_AT */
    if (max != NULL && atol(max) > 0)
        recover_max_ms = (uint64_t)atol(max);
    if ((err = gw_journal_open(conf->state_dir, ctx->loop)) != NULL)
        return err;
    gw_flows_on_adopt("move", adopt_move);
    return NULL;
}

const gw_plugin_t gw_plugin_volume_move = {"volume_move", "cluster_internal_custom_volume_copy", init, claims, handle};
