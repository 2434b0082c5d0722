/*
 * test_operations.c: a GET .../wait whose timeout passes before its operation ends, on a real h2o event loop. The
 * wait's expiry runs from h2o_evloop_run's walk over the loop's timeouts, and the wait has its own h2o_timeout_t in
 * that walk: ending the wait there (disposing that timeout, freeing the request's pool) left the walk on a node with
 * no next (h2o 2.2.5 reads node->next after h2o_timeout_run): a segfault in h2o_timeout_run. Run under ASan too.
 * operations.c is included for its static wait functions (the unit binary links without operations.o).
 */
#include "../../gateway/operations.c"
#include "unit.h"

/* runs `loop` until `done` says so or `ms` pass; 1 if done */
static int run_until(h2o_evloop_t *loop, int (*done)(void *), void *data, uint64_t ms)
{
    uint64_t until = h2o_now(loop) + ms;
    while (!done(data) && h2o_now(loop) < until)
        h2o_evloop_run(loop, 50);
    return done(data);
}

static int no_waiters(void *data)
{
    return h2o_linklist_is_empty(&((gw_op_t *)data)->waiters);
}

static void drop_op(gw_op_t *op)
{
    h2o_timeout_unlink(&op->drop);
    on_drop(&op->drop);
}

/* O.keep's entries form a proper ring: every step forward comes back by prev, and the anchor is reached */
static int keep_ring_ok(void)
{
    h2o_linklist_t *anchor = &O.keep._entries, *n = anchor;
    for (size_t steps = 0; steps != 1000; ++steps) {
        if (n->next == NULL || n->next->prev != n)
            return 0;
        n = n->next;
        if (n == anchor)
            return 1;
    }
    return 0;
}

static json_t *peer_op(const char *id, int status_code, const char *updated_at)
{
    return json_pack("{s:s, s:i, s:s, s:s}", "id", id, "status_code", status_code, "updated_at", updated_at, "location", "node1");
}

static void ignore_event(const char *project, json_t *event)
{
    (void)project, (void)event;
}

/* a peer's running operation, failed here when the peer went down, shown running by its feed when it came back, and
 * failed again when it went down once more (within GW_OP_KEEP_MS): its drop entry was linked a second time while
 * linked, which breaks O.keep's list (a later h2o_timeout_run reads a freed entry) */
static void mirror_flaps(void)
{
    const char *id = "feed0001-0000-4000-8000-000000000001";
    json_t *op = peer_op(id, GW_OP_RUNNING, "2026-01-01T00:00:00.000000001Z");
    CHECK(gw_ops_mirror("default", op) == 1);
    json_decref(op);
    gw_ops_mirror_fail("feed0001", "down", ignore_event);
    CHECK(!gw_ops_is_running(id) && keep_ring_ok());
    op = peer_op(id, GW_OP_RUNNING, "2026-01-01T00:00:01.000000001Z"); /* back: its feed's opening snapshot */
    CHECK(gw_ops_mirror("default", op) == 1);
    json_decref(op);
    CHECK(gw_ops_is_running(id) && keep_ring_ok());
    gw_ops_mirror_fail("feed0001", "down again", ignore_event);
    CHECK(!gw_ops_is_running(id) && keep_ring_ok());
    mirror_t *m = H2O_STRUCT_FROM_MEMBER(mirror_t, link, O.mirrored.next);
    if (keep_ring_ok()) {
        h2o_timeout_unlink(&m->drop);
        on_mirror_drop(&m->drop);
    }
    CHECK(h2o_linklist_is_empty(&O.mirrored) && h2o_linklist_is_empty(&O.keep._entries));
}

void test_operations(void)
{
    static h2o_context_t ctx;
    h2o_evloop_t *loop = h2o_evloop_create();
    ctx.loop = loop;
    gw_ops_init(&ctx, "0123abcd");

    /* two waits of 1 s on one operation, and one of 1 s on another: all expire in one walk of the loop */
    gw_op_t *op = gw_op_start("Testing", "default", "node1", NULL, NULL, NULL);
    gw_op_t *other = gw_op_start("Testing", "default", "node1", NULL, NULL, NULL);
    h2o_req_t reqs[3];
    gw_op_t *of[3] = {op, op, other};
    for (size_t i = 0; i != 3; ++i) {
        memset(&reqs[i], 0, sizeof(reqs[i]));
        h2o_mem_init_pool(&reqs[i].pool);
        start_wait(&reqs[i], of[i], 1);
    }
    /* no connection to answer on here: the module takes the requests (as if answered), the expiry must still end the waits */
    for (h2o_linklist_t *l = op->waiters.next; l != &op->waiters; l = l->next)
        gw_hold_take(&H2O_STRUCT_FROM_MEMBER(wait_t, link, l)->hold);
    gw_hold_take(&H2O_STRUCT_FROM_MEMBER(wait_t, link, other->waiters.next)->hold);

    CHECK(run_until(loop, no_waiters, op, 3000));
    CHECK(run_until(loop, no_waiters, other, 1000));
    h2o_evloop_run(loop, 10); /* and the loop goes on after */
    CHECK(op->status == GW_OP_RUNNING);

    /* a wait whose operation ends first, then its client goes: nothing of it is left in the loop */
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_mem_init_pool(&req.pool);
    start_wait(&req, op, 1);
    gw_hold_take(&H2O_STRUCT_FROM_MEMBER(wait_t, link, op->waiters.next)->hold); /* (no connection to answer on) */
    gw_op_finish(op, GW_OP_SUCCESS, NULL);
    CHECK(h2o_linklist_is_empty(&op->waiters));
    h2o_mem_clear_pool(&req.pool);
    h2o_evloop_run(loop, 10);

    for (size_t i = 0; i != 3; ++i)
        h2o_mem_clear_pool(&reqs[i].pool);
    drop_op(op);
    drop_op(other);
    CHECK(h2o_linklist_is_empty(&O.ops));

    mirror_flaps();
}
