/*
 * follow.h: every member's own operation events, straight from that member.
 *
 * LXD members relay each other's events (each member pulls the others' streams, an "event hub"); a link that drops
 * loses whatever passed meanwhile, and a client whose stream comes from one member then never hears that an operation
 * on another member ended (seen on LXD 5.0.2: a link down for 10 s, the ends of 22 operations missing on one member's
 * stream). The gateway follows each member's stream itself (as the gateway, every project, operations only) and keeps
 * of each what that member says of its OWN operations (`location` is the member): their ends, which reach every
 * client stream even when the hub lost them (eventstream.c).
 */
#ifndef GW_FOLLOW_H
#define GW_FOLLOW_H

#include <jansson.h>
#include <h2o.h>

/* an operation of `member` ended (status_code >= 200): LXD's event JSON `event` (valid during the call), in `project` */
typedef void (*gw_follow_cb)(const char *member, const char *project, const char *id, json_t *event);

/* follows every member the cluster lists, from now on; `on_end` hears of each operation that ends */
void gw_follow_init(h2o_context_t *ctx, gw_follow_cb on_end);
/* members whose own stream is up now */
size_t gw_follow_up(void);

/* A task operation that ended, as its member's own stream last showed it; kept GW_FOLLOW_KEEP_MS after it ended (LXD
 * forgets an operation 5 s after it ends: a client whose event listener came late then reads "Operation not found") */
#define GW_FOLLOW_KEEP_MS 60000
typedef struct st_gw_follow_ended_t {
    const char *project; /* the operation's project */
    json_t *operation;   /* the operation, as LXD renders it (borrowed: valid until the loop runs again) */
    uint64_t ago_ms;     /* how long ago its member said it ended */
} gw_follow_ended_t;
/* the task operation `id` (`len` bytes) if it ended within GW_FOLLOW_KEEP_MS: 1 and `*out`; else 0 */
int gw_follow_ended(const char *id, size_t len, gw_follow_ended_t *out);

#endif
