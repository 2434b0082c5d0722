/*
 * proxy.h: pass-through of a request to a cluster member, unchanged but for the hygiene the gateway owes LXD.
 *
 * h2o's own reverse proxy does the HTTP work (streaming responses, websocket tunnels); this module chooses, per
 * request, the identity it connects with (the pool of connections opened with that identity's certificate) and the
 * member, skipping members that refuse the connection before anything of the request is sent.
 */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include <h2o.h>
#include "identity.h"

/* strips what no client may send to a member (forwarded-identity headers, the cluster notifier's user agent,
 * hop-by-hop headers); returns NULL, or the reason to refuse the request (an internal path) */
const char *gw_proxy_sanitize(h2o_req_t *req);
/* sends `req` to a healthy member as `id`, and the member's answer back to the client */
void gw_proxy_pass(h2o_req_t *req, const gw_identity_t *id);

#endif
