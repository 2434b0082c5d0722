/*
 * tokens.h: trust tokens that lead clients to the gateway, not around it.
 *
 * `lxc config trust add` makes LXD mint a token operation whose metadata names the members' addresses and the
 * cluster certificate's fingerprint; a client given that token would dial the members directly (and fail the pin
 * against the gateway). The gateway rewrites `addresses` to `public_addresses` and `fingerprint` to its own server
 * certificate's, wherever a token operation passes: the enrolment answer, GET /1.0/operations, GET
 * /1.0/operations/<id>. The secret is untouched: LXD checks it when the client enrols through the gateway.
 */
#ifndef GW_TOKENS_H
#define GW_TOKENS_H

#include <jansson.h>
#include <h2o.h>
#include "config.h"
#include "path.h"
#include "trust.h"

/* remembers what tokens must name: the public addresses and the fingerprint of the server certificate */
void gw_tokens_init(const gw_config_t *conf, const char *server_fingerprint);
/* rewrites every token operation inside an LXD answer (an operation, a list of them, or lists by status) */
void gw_tokens_rewrite(json_t *answer);
/* takes GET /1.0/operations and GET /1.0/operations/<id> (returns 1, and answers); 0 for anything else */
int gw_tokens_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
