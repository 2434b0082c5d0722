/*
 * wsclient.h: a websocket client to a cluster member (its /1.0/events stream) or a peer replica, on h2o's loop.
 *
 * h2o's HTTP/1 client sends the upgrade request with the chosen identity's TLS context; after the member's 101 the
 * socket is taken over and wslay speaks the websocket protocol on it. Text messages are handed up whole; pings are
 * answered by wslay. No callback runs after gw_wsclient_close.
 */
#ifndef GW_WSCLIENT_H
#define GW_WSCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "members.h"

typedef struct st_gw_wsclient_t gw_wsclient_t;

typedef struct st_gw_wsclient_cbs_t {
    /* the member answered 101: messages may follow */
    void (*on_open)(gw_wsclient_t *ws, void *data);
    /* one text message (valid during the call) */
    void (*on_message)(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len);
    /* the connection ended, or never opened (`err` says why); `ws` is freed after this returns */
    void (*on_close)(gw_wsclient_t *ws, void *data, const char *err);
    /* optional: the first frame of any kind came (before on_message, if it is a text message). LXD answers the
     * upgrade of /1.0/events BEFORE it registers the listener (a database transaction later) and pings the moment it
     * has: only from this frame on does the stream miss no event. */
    void (*on_ready)(gw_wsclient_t *ws, void *data);
} gw_wsclient_cbs_t;

/* connects to `m` as `id` and asks to upgrade `path` (with its query); `cbs` must outlive the connection; a
 * connection that fails marks `m` failed */
gw_wsclient_t *gw_wsclient_open(gw_member_t *m, const gw_identity_t *id, const char *path, const gw_wsclient_cbs_t *cbs,
                                void *data);
/* the same to `url` ("https://host:port"), which is not a member (another gateway replica); `id`'s TLS context decides
 * which server certificate is accepted */
gw_wsclient_t *gw_wsclient_open_url(const char *url, const gw_identity_t *id, const char *path, const gw_wsclient_cbs_t *cbs,
                                    void *data);
/* the HTTP/1.1 upgrade request for `path` (with its query) to `authority` with the client key `key` (any length: the
 * request is sized to fit; every part comes from outside and none may hold CR or LF, which h2o's parser guarantees
 * for what a client sent); malloc'd into the returned iovec */
h2o_iovec_t gw_wsclient_upgrade_request(const char *path, h2o_iovec_t authority, h2o_iovec_t key);
/* sends a ping (a dead peer then shows as silence: see gw_wsclient_last_rx) */
void gw_wsclient_ping(gw_wsclient_t *ws);
/* the HTTP status the member answered the upgrade with (101; 403 when it refused the caller; 0: no answer) */
int gw_wsclient_status(gw_wsclient_t *ws);
/* h2o_now() of the last bytes received (0 before the upgrade) */
uint64_t gw_wsclient_last_rx(gw_wsclient_t *ws);
/* closes and frees it; no callback runs afterwards */
void gw_wsclient_close(gw_wsclient_t *ws);

#endif
