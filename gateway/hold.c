/*
 * hold.c: see hold.h.
 */
#include <assert.h>
#include "hold.h"

/* the request's pool goes: if the request is still held, its client left before it was answered */
static void on_pool_dispose(void *data)
{
    gw_hold_t *hold = *(gw_hold_t **)data;
    if (hold == NULL)
        return; /* taken (answered) before */
    hold->req = NULL;
    hold->slot = NULL;
    if (hold->on_gone != NULL)
        hold->on_gone(hold); /* last: it may free the state the hold is in */
}

void gw_hold_attach(gw_hold_t *hold, h2o_req_t *req, gw_hold_gone_cb on_gone)
{
    assert(hold->req == NULL && hold->slot == NULL);
    hold->req = req;
    hold->on_gone = on_gone;
    hold->slot = h2o_mem_alloc_shared(&req->pool, sizeof(*hold->slot), on_pool_dispose);
    *hold->slot = hold;
}

h2o_req_t *gw_hold_take(gw_hold_t *hold)
{
    h2o_req_t *req = hold->req;
    if (hold->slot != NULL)
        *hold->slot = NULL; /* the request may end (and its pool go) as soon as it is answered */
    hold->req = NULL;
    hold->slot = NULL;
    return req;
}
