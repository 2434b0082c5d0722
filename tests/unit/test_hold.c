/*
 * test_hold.c: gw_hold_t, both ends: the module answers first, or the client goes first (h2o clears the request's
 * pool); with state in the request's pool and with state the module frees itself. Run under the ASan build too.
 */
#include <stdlib.h>
#include <string.h>
#include "hold.h"
#include "unit.h"

/* a module's state with a hold in it, and what its on_gone did */
typedef struct st_held_t {
    gw_hold_t hold;
    int *gone;       /* incremented by on_gone (outside the state: it may be freed) */
    int in_flight;   /* a call the module would cancel */
    char marker[16]; /* touched by on_gone: ASan sees it if the state were freed before */
} held_t;

static void on_gone(gw_hold_t *hold)
{
    held_t *h = H2O_STRUCT_FROM_MEMBER(held_t, hold, hold);
    ++*h->gone;
    h->in_flight = 0;
    memcpy(h->marker, "cancelled", 10);
}

static void on_gone_free(gw_hold_t *hold)
{
    held_t *h = H2O_STRUCT_FROM_MEMBER(held_t, hold, hold);
    ++*h->gone;
    free(h); /* state that outlives the request, freed when the client goes */
}

static void init_req(h2o_req_t *req)
{
    memset(req, 0, sizeof(*req));
    h2o_mem_init_pool(&req->pool);
}

/* the module answers: it gets the request; the pool going later calls nothing */
static void answered(void)
{
    h2o_req_t req;
    init_req(&req);
    int gone = 0;
    held_t *h = calloc(1, sizeof(*h));
    h->gone = &gone;
    gw_hold_attach(&h->hold, &req, on_gone);
    CHECK(gw_hold_req(&h->hold) == &req);
    CHECK(gw_hold_take(&h->hold) == &req);
    CHECK(gw_hold_req(&h->hold) == NULL && h->hold.slot == NULL);
    CHECK(gw_hold_take(&h->hold) == NULL); /* answered once */
    free(h);                               /* before the pool: its dispose must not reach it */
    h2o_mem_clear_pool(&req.pool);
    CHECK(gone == 0);
}

/* the client goes before the answer: on_gone runs once, then the module finds nothing to answer */
static void client_gone(void)
{
    h2o_req_t req;
    init_req(&req);
    int gone = 0;
    held_t *h = calloc(1, sizeof(*h));
    h->gone = &gone;
    h->in_flight = 1;
    gw_hold_attach(&h->hold, &req, on_gone);
    h2o_mem_clear_pool(&req.pool);
    CHECK(gone == 1 && h->in_flight == 0);
    CHECK(gw_hold_req(&h->hold) == NULL && h->hold.slot == NULL);
    CHECK(gw_hold_take(&h->hold) == NULL); /* the late answer finds the client gone */
    free(h);
    CHECK(gone == 1);
}

/* the client goes and on_gone frees the state (the hold is not touched after it) */
static void client_gone_frees(void)
{
    h2o_req_t req;
    init_req(&req);
    int gone = 0;
    held_t *h = calloc(1, sizeof(*h));
    h->gone = &gone;
    gw_hold_attach(&h->hold, &req, on_gone_free);
    h2o_mem_clear_pool(&req.pool);
    CHECK(gone == 1);
}

/* state in the request's pool (dies with it): alive while on_gone runs, whichever was allocated first */
static void pool_state(void)
{
    h2o_req_t req;
    init_req(&req);
    int gone = 0;
    held_t *h = h2o_mem_alloc_pool(&req.pool, sizeof(*h));
    memset(h, 0, sizeof(*h));
    h->gone = &gone;
    h->in_flight = 1;
    gw_hold_attach(&h->hold, &req, on_gone);
    (void)h2o_mem_alloc_pool(&req.pool, 100000); /* a direct chunk after it, freed too */
    h2o_mem_clear_pool(&req.pool);
    CHECK(gone == 1);

    /* answered: the pool going calls nothing */
    init_req(&req);
    gone = 0;
    h = h2o_mem_alloc_pool(&req.pool, sizeof(*h));
    memset(h, 0, sizeof(*h));
    h->gone = &gone;
    gw_hold_attach(&h->hold, &req, on_gone);
    CHECK(gw_hold_take(&h->hold) == &req);
    h2o_mem_clear_pool(&req.pool);
    CHECK(gone == 0);
}

/* a zeroed hold holds nothing; one without on_gone just forgets the request */
static void empty_and_quiet(void)
{
    gw_hold_t zero;
    memset(&zero, 0, sizeof(zero));
    CHECK(gw_hold_take(&zero) == NULL);
    h2o_req_t req;
    init_req(&req);
    gw_hold_t quiet;
    memset(&quiet, 0, sizeof(quiet));
    gw_hold_attach(&quiet, &req, NULL);
    h2o_mem_clear_pool(&req.pool);
    CHECK(gw_hold_take(&quiet) == NULL);
    /* held again after it was taken (one state, one request after another) */
    init_req(&req);
    gw_hold_attach(&quiet, &req, NULL);
    CHECK(gw_hold_take(&quiet) == &req);
    h2o_req_t req2;
    init_req(&req2);
    gw_hold_attach(&quiet, &req2, NULL);
    h2o_mem_clear_pool(&req.pool);
    CHECK(gw_hold_req(&quiet) == &req2);
    h2o_mem_clear_pool(&req2.pool);
    CHECK(gw_hold_req(&quiet) == NULL);
}

void test_hold(void)
{
    answered();
    client_gone();
    client_gone_frees();
    pool_state();
    empty_and_quiet();
}
