/*
 * hold.h: holding a client's request across an asynchronous call, the one way every module does it.
 *
 * A handler that cannot answer at once (it asks a member, waits for an operation, opens a stream) keeps the request in
 * a gw_hold_t embedded in its own state. Two things may happen first, and the hold says which did:
 *   - the module answers: gw_hold_take() hands it the request (and detaches: the request may now end any time);
 *   - the client goes (h2o disposes the request and its pool): the hold forgets the request, and its on_gone callback,
 *     if any, cancels what was in flight for it (a member call, a connect, a stream); gw_hold_take() then gives NULL.
 * Modelled on h2o's lib/core/proxy.c (the generator in the request's pool, whose dispose cancels the in-flight client
 * only if there still is one) and h2o_socketpool_connect/cancel_connect (the caller holds the in-flight slot; cancel is
 * one verb).
 *
 * Who frees what, and when. The hold itself allocates only a pointer in the request's pool (freed with it). The state
 * the hold is embedded in is of one of two kinds, chosen per module:
 *   - state that dies with the request: allocated with h2o_mem_alloc_pool(&req->pool, ...) (not _shared). It is freed
 *     with the pool, after on_gone has run (h2o_mem_clear_pool runs the disposes before it frees the pool's memory).
 *     on_gone undoes what links the state elsewhere (timers, lists, calls in flight) and frees nothing. After
 *     gw_hold_take() the state may be used only until the answer is sent: the pool goes soon after.
 *   - state that outlives the request (a flow that goes on after it answered, or after the client left): malloc'd,
 *     and freed by the module, which must first have taken the request (answered it) or seen the client go. on_gone may
 *     free it (the hold is not touched after on_gone returns), or leave it to finish its flow and find NULL.
 * A zeroed gw_hold_t holds nothing: gw_hold_take() on it gives NULL.
 *
 * Not a hold: an answer streamed over many h2o_send calls (forward.c). Its state is an h2o generator whose buffers h2o
 * may read until the pool goes, so it stays in h2o's own form: h2o_mem_alloc_shared with a dispose that frees them
 * and cancels what is in flight (a pointer kept NULL when nothing is).
 */
#ifndef GW_HOLD_H
#define GW_HOLD_H

#include <h2o.h>

typedef struct st_gw_hold_t gw_hold_t;

/* the held request's client went before it was taken: `hold` is empty already (and may be freed by the callee) */
typedef void (*gw_hold_gone_cb)(gw_hold_t *hold);

struct st_gw_hold_t {
    h2o_req_t *req;          /* the request held: from gw_hold_attach until it is taken or its client is gone; else NULL */
    gw_hold_t **slot;        /* the request pool's pointer back to this hold, while `req` is held (set to NULL on take) */
    gw_hold_gone_cb on_gone; /* run once if the client goes while held; NULL: nothing to cancel */
};

/* holds `req` (its pool gets a back pointer whose dispose notices the client going); `hold` must hold nothing */
void gw_hold_attach(gw_hold_t *hold, h2o_req_t *req, gw_hold_gone_cb on_gone);
/* the request, to answer it now, or NULL if its client has gone; either way the hold is empty afterwards */
h2o_req_t *gw_hold_take(gw_hold_t *hold);

/* the request still held (to read it, not to answer it), or NULL */
static inline h2o_req_t *gw_hold_req(const gw_hold_t *hold)
{
    return hold->req;
}

#endif
