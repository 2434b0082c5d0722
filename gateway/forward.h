/*
 * forward.h: pass-through of requests with a large body (image and backup imports, file pushes), over libcurl.
 *
 * Why not h2o's proxy: h2o 2.2.5 sizes TLS records by the bytes already written on a socket (about 1.4 KB until
 * 200 KB, for browsers' first paint), and a pooled upstream socket starts from zero on every request. A buffered
 * body written in one go thus leaves as ~1.4 KB records, which LXD reads at a tenth of its speed (seen: 512 MiB in
 * 41 s instead of 4 s). libcurl writes 16 KB records from h2o's buffered entity without copying it.
 */
#ifndef GW_FORWARD_H
#define GW_FORWARD_H

#include <h2o.h>
#include "identity.h"

#define GW_FORWARD_MIN_BODY (256 * 1024) /* bytes of request body from which requests go through here */

/* sends `req` (its body already buffered by h2o) to a healthy member as `id`; streams the answer back */
void gw_forward_pass(h2o_req_t *req, const gw_identity_t *id);
/* starts sending `req`, whose body h2o is still reading (upload.h), to a member as `id`: the body follows as the
 * client sends it. The answer is given once the flow passes the request through (gw_forward_streamed). A body that
 * cannot be followed is left to h2o, read whole as any other */
void gw_forward_stream(h2o_req_t *req, const gw_identity_t *id);
/* the flow passes `req` through as `id`: when its body was streamed already, the member's answer (or the gateway's
 * error) is given (returns 1); 0 for any other request */
int gw_forward_streamed(h2o_req_t *req, const gw_identity_t *id);

#endif
