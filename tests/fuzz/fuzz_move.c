/*
 * fuzz_move.c: a move's dealings with its members (plugins/volume_move.c included for its static callbacks; calls to
 * members are fuzz_backend.h's). A move is taken from the point where the target's transfer runs (after step 2) and
 * every call it makes is answered from the input, one answer a line: "<status> <json>" (status 0: the call got no
 * answer at all; -1: not even sent, the member refused the connection). When no call is pending, a retry the move has set is fired
 * at once. Contract: no crash, no leak; never a DELETE of a volume unless the last GET of that same volume showed this move's mark
 * (nothing the move did not start with or make is ever deleted, whatever the members answer); the move never waits on nothing (a
 * call pending, a retry set, or it ended); no call is left pending for a move that ended.
 */
#include <stdlib.h>
#include "fuzz_req.h"
#include "fuzz_backend.h"
#include "fuzz_flows.h"

static void *live; /* the move under test, until volume_move.c frees it */

static void fuzz_free(void *p)
{
    if (p != NULL && p == live)
        live = NULL;
    free(p);
}

#define free fuzz_free
#include "../../plugins/volume_move.c"
#undef free

#define MOVE_ID "0123abcd-0000-4000-8000-000000000001"
#define MAX_MARKED 16

static h2o_context_t fuzz_ctx;
static gw_member_t src = {.name = "node1", .url = "https://10.0.0.1:8443"}, dst = {.name = "node2", .url = "https://10.0.0.2:8443"};
static char *marked[MAX_MARKED]; /* volume paths whose last GET showed the mark */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static char dir[] = "/dev/shm/gw-fuzz-move-XXXXXX"; /* the journal (tmpfs: fsync is cheap) */
    if (mkdtemp(dir) == NULL)
        abort();
    fuzz_ctx.loop = h2o_evloop_create();
    gw_ops_init(&fuzz_ctx, "0123abcd");
    static gw_config_t conf;
    conf.state_dir = dir;
    const char *err = init(&conf, &fuzz_ctx);
    FUZZ_CHECK(err == NULL, "init: %s", err);
    return 0;
}

static int is_marked(const char *path)
{
    for (size_t i = 0; i != MAX_MARKED; ++i)
        if (marked[i] != NULL && strcmp(marked[i], path) == 0)
            return 1;
    return 0;
}

static void set_marked(const char *path, int yes)
{
    for (size_t i = 0; i != MAX_MARKED; ++i)
        if (marked[i] != NULL && strcmp(marked[i], path) == 0) {
            if (!yes)
                free(marked[i]), marked[i] = NULL;
            return;
        }
    for (size_t i = 0; yes && i != MAX_MARKED; ++i)
        if (marked[i] == NULL) {
            marked[i] = strdup(path);
            return;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    move_t *m = calloc(1, sizeof(*m));
    m->id = &gw_identities[GW_IDENTITY_GATEWAY];
    m->src = &src, m->dst = &dst;
    m->pool = strdup("pool1"), m->project = strdup("default"), m->name = strdup("v");
    m->dst_pool = strdup("pool1"), m->dst_project = strdup("default"), m->dst_name = strdup("v");
    m->move_id = strdup(MOVE_ID);
    m->transfer_op = strdup("t-op");
    m->progress_at = gw_clock_ms();
    live = m;
    resume(m, MV_WATCH);

    const char *p = (const char *)data, *end = p + size;
    for (int turn = 0; live != NULL && turn != 256; ++turn) {
        if (fuzz_pending == NULL) {
            move_t *lm = live;
            FUZZ_CHECK(h2o_timeout_is_linked(&lm->retry), "the move waits on nothing (no call pending, no retry set) at %s",
                       steps[lm->state].name);
            h2o_timeout_unlink(&lm->retry);
            lm->retry.cb(&lm->retry);
            continue;
        }
        if (p >= end)
            break;
        const char *nl = memchr(p, '\n', end - p), *line_end = nl != NULL ? nl : end;
        char *line = strndup(p, line_end - p);
        p = nl != NULL ? nl + 1 : end;
        long status = strtol(line, NULL, 10);
        const char *sp = strchr(line, ' ');
        json_t *json = sp != NULL ? json_loads(sp + 1, 0, NULL) : NULL;
        gw_call_t *c = fuzz_pending;
        fuzz_pending = c->next;
        int is_volume = strstr(c->path, "/volumes/custom/") != NULL && strstr(c->path, "/1.0/operations") == NULL;
        if (strcmp(c->method, "DELETE") == 0 && is_volume)
            FUZZ_CHECK(is_marked(c->path), "DELETE %s, which no GET showed with the move's mark", c->path);
        if (strcmp(c->method, "GET") == 0 && is_volume) {
            const char *mark =
                json_string_value(json_object_get(json_object_get(json_object_get(json, "metadata"), "config"), MOVE_MARK));
            set_marked(c->path, status == 200 && mark != NULL && strcmp(mark, MOVE_ID) == 0);
        }
        c->not_sent = status < 0; /* "-1": the member refused the connection (nothing was sent) */
        if (status < 0)
            status = 0;
        c->cb(c->data, status == 0 ? "fuzz: no answer" : NULL, status, status == 0 ? NULL : json, c);
        free(c->method), free(c->path), free(c);
        json_decref(json);
        free(line);
    }
    if (live == NULL)
        FUZZ_CHECK(fuzz_pending == NULL, "a call is pending for a move that ended (%s %s)", fuzz_pending->method,
                   fuzz_pending->path);
    while (fuzz_pending != NULL) { /* the input ended first */
        gw_call_t *c = fuzz_pending;
        fuzz_pending = c->next;
        free(c->method), free(c->path), free(c);
    }
    if (live != NULL) {
        move_t *lm = live;
        if (h2o_timeout_is_linked(&lm->retry))
            h2o_timeout_unlink(&lm->retry);
        move_free(lm);
        live = NULL;
    }
    for (size_t i = 0; i != MAX_MARKED; ++i)
        free(marked[i]), marked[i] = NULL;
    return 0;
}
