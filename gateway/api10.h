/*
 * api10.h: GET /1.0, the server's description, as the caller must see it.
 *
 * The gateway fetches it from a member with the caller's identity and rewrites it: a trusted caller sees its own
 * fingerprint in auth_user_name (the member saw the gateway's or a shadow's). Plugins add rewrite steps (the API
 * extensions they bring).
 */
#ifndef GW_API10_H
#define GW_API10_H

#include <jansson.h>
#include <h2o.h>
#include "trust.h"

/* a rewrite step: changes the `metadata` of a GET /1.0 answer in place */
typedef void (*gw_api10_rewrite_cb)(json_t *metadata, const gw_caller_t *caller);

/* takes GET /1.0 (returns 1, and answers it); returns 0 for any other request */
int gw_api10_handle(h2o_req_t *req, const gw_caller_t *caller);
/* adds a rewrite step, run after the built-in ones in the order added (at most 8) */
void gw_api10_add_rewrite(gw_api10_rewrite_cb cb);

#endif
