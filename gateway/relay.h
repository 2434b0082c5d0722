/*
 * relay.h: a migration's data path through the gateway, so that the gateway can cut it (cancel).
 *
 * Natively the target member pulls straight from the source member's migration operation, and LXD 5.0.2 cannot
 * cancel either side. A relay stands in for the source operation: the target is told to pull from
 * https://<gateway>/1.0/operations/<relay id> with the relay's own secrets and the gateway's certificate; each
 * websocket it opens there is joined, byte for byte, to the matching websocket of the real source operation. Closing
 * the relay breaks both ends: the transfer fails on both members (the target removes its partial volume; the source
 * only ever read).
 */
#ifndef GW_RELAY_H
#define GW_RELAY_H

#include <jansson.h>
#include <h2o.h>
#include "config.h"
#include "members.h"
#include "path.h"

struct st_gw_caller_t; /* trust.h (a floor up): the relay does not look at the caller */

typedef struct st_gw_relay_t gw_relay_t;

/* reads the gateway's certificate and the address members reach it at (first public address, else the first listen
 * address unless it is a wildcard); returns NULL or an error. Without such an address relays are not available. */
const char *gw_relay_init(const gw_config_t *conf);
/* members reach this replica at `url` (its own entry in `peers`, found by the peers module), whatever the
 * configured addresses say: behind a load balancer, only this replica knows its relays */
void gw_relay_set_base(const char *url);
/* relays can be made (the gateway has an address members can reach) */
int gw_relay_available(void);
/* a relay in front of operation `op` on `src` whose websockets open with `secrets` ({"control":..,"fs":..});
 * connections to `src` are made as `id` */
gw_relay_t *gw_relay_open(gw_member_t *src, const gw_identity_t *id, const char *op, json_t *secrets);
/* what the target is given instead of the source operation: its URL, secrets (borrowed) and certificate (PEM) */
const char *gw_relay_url(gw_relay_t *r);
json_t *gw_relay_secrets(gw_relay_t *r);
const char *gw_relay_certificate(void);
/* breaks every connection of the relay and frees it */
void gw_relay_close(gw_relay_t *r);
/* bytes carried through it so far, both ways (a transfer that moves is making progress) */
uint64_t gw_relay_bytes(const gw_relay_t *r);

/* takes a target's GET /1.0/operations/<relay id>/websocket?secret=.. (returns 1); 0 for anything else */
int gw_relay_handle(h2o_req_t *req, const struct st_gw_caller_t *caller, const gw_path_t *path);

#endif
