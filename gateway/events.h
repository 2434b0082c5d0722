/*
 * events.h: the gateway's own subscription to the cluster's event stream.
 *
 * One websocket to a member's /1.0/events (as the gateway), re-established on another member when it drops. Each
 * event is handed to the callback as parsed JSON. While the stream is down, gw_events_connected() is false and
 * users fall back to polling.
 */
#ifndef GW_EVENTS_H
#define GW_EVENTS_H

#include <jansson.h>
#include <h2o.h>

/* called for each event; `event` is valid during the call */
typedef void (*gw_events_cb)(json_t *event);

/* subscribes to `types` ("lifecycle", "operation,lifecycle", ...) and keeps the subscription up */
void gw_events_init(h2o_context_t *ctx, const char *types, gw_events_cb cb);
/* the subscription is established (events are flowing) */
int gw_events_connected(void);
/* reconnects (the events of the time it was down may be lost: `on_up` lets users catch up) */
void gw_events_on_up(void (*on_up)(void));
/* another reader of the same stream: `cb` for each event, `on_up` when it is up again (either may be NULL); all
 * callbacks (gw_events_init's, gw_events_on_up's, these; at most 8) run in the order they were added */
void gw_events_listen(gw_events_cb cb, void (*on_up)(void));

#endif
