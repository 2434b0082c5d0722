/*
 * eventstream.h: the clients' /1.0/events streams, served by the gateway so that its own operations reach them.
 *
 * A client's stream is relayed from a member's stream opened with the caller's identity and the client's own query
 * (type, project, all-projects): the member applies LXD's filters and rights to the cluster's events. The events of
 * the gateway's own operations are added, for the types and projects the client asked for and may see. The client's
 * upgrade is answered once the member's listener is registered (its first frame: LXD upgrades before it registers
 * and pings right after), or 2.5 s after it asked (clients give the upgrade 5 s); an operation end lost in the gap
 * left reaches the stream from the member's own stream, which the gateway follows (follow.h), 5 s later.
 */
#ifndef GW_EVENTSTREAM_H
#define GW_EVENTSTREAM_H

#include <h2o.h>
#include <h2o/websocket.h>
#include <jansson.h>
#include "path.h"
#include "trust.h"

/* subscribes to the gateway's operation events; call once at start */
void gw_eventstream_init(h2o_context_t *ctx);
/* hands LXD's event JSON `event` of type "operation" in `project` to every stream that asked for it and may see it
 * (another replica's operations, from its feed) */
void gw_eventstream_publish(const char *project, json_t *event);
/* events a websocket client may leave unread before it is disconnected (LXD drops listeners that do not keep up):
 * the gateway's memory does not grow with a client that stopped reading */
#define GW_EVENTSTREAM_MAX_QUEUED (8 * 1024 * 1024)

/* queues `text` as one text frame to the server-side websocket `conn` (a client's event stream, a peer's feed);
 * returns 0, or -1 when the client has more than GW_EVENTSTREAM_MAX_QUEUED bytes unread: nothing was queued and the
 * caller closes the connection */
int gw_eventstream_send(h2o_websocket_conn_t *conn, const char *text, size_t len);
/* takes a websocket GET /1.0/events of a trusted caller (returns 1); 0 for anything else */
int gw_eventstream_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
