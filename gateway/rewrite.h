/*
 * rewrite.h: answering a GET with a member's JSON answer, changed for the caller.
 *
 * For the few answers that must not pass through as they are (GET /1.0, token operations): the gateway fetches the
 * same path from a member with the caller's identity, lets `fn` change the parsed answer, and sends it with the
 * member's status and ETag.
 */
#ifndef GW_REWRITE_H
#define GW_REWRITE_H

#include <jansson.h>
#include <h2o.h>
#include "trust.h"

/* changes `answer` (the whole LXD envelope) in place; `status` is the member's HTTP status */
typedef void (*gw_rewrite_cb)(h2o_req_t *req, json_t *answer, long status, const gw_caller_t *caller);

/* fetches req's path from a member as `caller`, applies `fn`, answers */
void gw_rewrite_pass(h2o_req_t *req, const gw_caller_t *caller, gw_rewrite_cb fn);

#endif
