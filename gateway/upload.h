/*
 * upload.h: a request body passed on while h2o is still reading it (HTTP/1.1), through a bounded window.
 *
 * h2o 2.2.5 calls a handler only once a request's body was read whole, and keeps all of it (in memory, spilling to
 * an unlinked file past 32 MiB); a 1 GiB `lxc file push` thus sat whole in the gateway before a byte reached LXD.
 * This module looks, after every turn of the event loop, for each HTTP/1.1 request of a context whose body is being
 * read, offers it to the
 * gateway (`gw_upload_offer_cb`: the request flow decides, from the head alone, whether it would pass it through
 * unchanged), and for a request taken follows the body: what h2o reads is moved out of its input buffer into the
 * follower's window, which its consumer empties (gw_upload_read). When the window holds GW_UPLOAD_WINDOW bytes,
 * reading from the client stops until the consumer has taken half of them: the client is held to the member's pace,
 * and the gateway never holds more than the window (plus what one read lets in) of a body. One read is bounded by the
 * kernel's receive buffer, which is set small on every client connection (gw_upload_accepted): a gateway that was not
 * scheduled for a while finds no more than that waiting, where the kernel's own tuning lets it grow to tens of MiB.
 *
 * When h2o has read the last byte it calls the handler as always, with `req->entity` holding the bytes of the body
 * not moved yet; the consumer then calls gw_upload_complete. Nothing about the request differs for the handler.
 *
 * h2o 2.2.5 has no API for any of this: the module reads and changes private fields of h2o's HTTP/1 connection
 * (lib/http1.c: the entity reader, `_reqsize`, the request timeout). Every request is checked against that layout
 * before it is followed (the connection's socket and request are where the layout says, the reader's state agrees
 * with the head); a request that does not match is left to h2o, buffered whole, as before.
 *
 * The request timeout of h2o's HTTP/1 connection (`http1.req_timeout`, one timer over the head and the whole body) is
 * re-armed at every byte of a followed body, and unlinked while the gateway itself stops reading: a followed body
 * may take as long as the member needs, and a client that sends nothing for that long is dropped.
 */
#ifndef GW_UPLOAD_H
#define GW_UPLOAD_H

#include <h2o.h>

#define GW_UPLOAD_WINDOW (8u << 20) /* bytes of a body held at most (then the client is not read until half went) */

typedef struct st_gw_upload_t gw_upload_t;

/* a request of the scanned context whose body h2o is reading: the gateway may call gw_upload_follow on it, at once */
typedef void (*gw_upload_offer_cb)(h2o_req_t *req);
/* the follower has something for its consumer: bytes in the window, the body complete, or the body failed */
typedef void (*gw_upload_cb)(void *data);

/* makes the module look at `ctx`'s HTTP/1 connections bound to `hosts` (gw_upload_after_turn) and offer each request
 * with a body being read, once, when h2o holds at least `min_body` bytes of it */
void gw_upload_init(h2o_context_t *ctx, h2o_hostconf_t **hosts, size_t min_body, gw_upload_offer_cb offer);
/* after each turn of the event loop: the look (cheap for a connection reading no body) */
void gw_upload_after_turn(void);
/* a client's connection, before h2o's HTTP/1 reads from it: its receive buffer gets the bound one read relies on */
void gw_upload_accepted(h2o_socket_t *sock);
/* follows req's body from now on (req: one offered right now); NULL when the request cannot be followed. The
 * follower lives in the request's pool and goes with the request. A Content-Length below `min_body` is not followed;
 * `max_body`: bytes of body allowed in all */
gw_upload_t *gw_upload_follow(h2o_req_t *req, uint64_t min_body, uint64_t max_body, gw_upload_cb cb, void *data);
/* the follower of `req`, or NULL */
gw_upload_t *gw_upload_of(h2o_req_t *req);
/* moves up to `len` bytes of the window into buf; returns how many (0: none waiting). Reading from the client starts
 * again when the window has drained to half */
size_t gw_upload_read(gw_upload_t *u, char *buf, size_t len);
/* the handler has the request: its req->entity (the body's last bytes) joins the window; the body is whole */
void gw_upload_complete(gw_upload_t *u);
/* the body is whole (gw_upload_complete was called): once the window is empty, the consumer has all of it */
int gw_upload_is_complete(const gw_upload_t *u);
/* the body went over max_body: its bytes are dropped from now on, and the request is to be refused (413) */
int gw_upload_is_too_large(const gw_upload_t *u);
/* the body ends here (the member failed): h2o is made to see its end at once, so that the handler answers now, and
 * the connection closes after that answer (the client may still be sending) */
void gw_upload_end(gw_upload_t *u);
/* the body's length as the client said it (Content-Length), or -1 (chunked) */
int64_t gw_upload_length(const gw_upload_t *u);
/* the `data` given to gw_upload_follow */
void *gw_upload_data(const gw_upload_t *u);

#endif
