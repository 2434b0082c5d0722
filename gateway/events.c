/*
 * events.c: see events.h. A wslay client on a socket stolen from h2o's HTTP/1 client after the 101 answer.
 */
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>
#include "events.h"
#include "identity.h"
#include "log.h"
#include "members.h"

#define RETRY_MS 1000 /* wait before connecting again */
#define PING_MS 15000 /* our ping, so that a dead peer is noticed */
#define DEAD_MS 45000 /* nothing received for this long: the connection is dead */

static struct {
    h2o_context_t *ctx;
    char *types;
    gw_events_cb cb;
    void (*on_up)(void);
    h2o_http1client_t *client; /* handshake in flight */
    gw_member_t *member;       /* the member the stream comes from */
    size_t cursor;             /* next member to try */
    h2o_socket_t *sock;        /* the stream, once upgraded */
    wslay_event_context_ptr ws;
    h2o_buffer_t *out, *writing; /* frames to send; frames being written */
    uint64_t last_rx;            /* h2o_now() of the last bytes received */
    uint64_t last_ping;
    h2o_iovec_t req; /* the handshake request */
    h2o_timeout_t timeout;
    h2o_timeout_entry_t tick;
} E;

int gw_events_connected(void)
{
    return E.ws != NULL;
}

void gw_events_on_up(void (*on_up)(void))
{
    E.on_up = on_up;
}

static void drop(const char *why)
{
    if (E.ws != NULL) {
        gw_log(GW_LOG_WARN, "event stream lost", "member", E.member != NULL ? E.member->name : "-", "reason", why, NULL);
        wslay_event_context_free(E.ws);
        E.ws = NULL;
    }
    if (E.sock != NULL) {
        h2o_socket_close(E.sock);
        E.sock = NULL;
    }
    if (E.writing != NULL) {
        h2o_buffer_dispose(&E.writing);
        E.writing = NULL;
    }
    if (E.out != NULL)
        E.out->size = 0;
}

static void flush(void);

static void on_written(h2o_socket_t *sock, const char *err)
{
    (void)sock;
    h2o_buffer_dispose(&E.writing);
    E.writing = NULL;
    if (err != NULL) {
        drop(err);
        return;
    }
    flush();
}

static void flush(void)
{
    if (E.ws == NULL)
        return;
    wslay_event_send(E.ws);
    if (E.writing != NULL || E.out->size == 0)
        return;
    E.writing = E.out;
    h2o_buffer_init(&E.out, &h2o_socket_buffer_prototype);
    h2o_iovec_t buf = h2o_iovec_init(E.writing->bytes, E.writing->size);
    h2o_socket_write(E.sock, &buf, 1, on_written);
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags, (void)user;
    h2o_buffer_t *in = E.sock->input;
    if (in->size == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > in->size)
        len = in->size;
    memcpy(buf, in->bytes, len);
    h2o_buffer_consume(&E.sock->input, len);
    return len;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
    (void)ctx, (void)flags, (void)user;
    h2o_buffer_reserve(&E.out, len);
    memcpy(E.out->bytes + E.out->size, data, len);
    E.out->size += len;
    return len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx, (void)user;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    (void)ctx, (void)user;
    if (arg->opcode != WSLAY_TEXT_FRAME)
        return;
    json_t *event = json_loadb((const char *)arg->msg, arg->msg_length, 0, NULL);
    if (event != NULL)
        E.cb(event);
    json_decref(event);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    (void)sock;
    if (err != NULL) {
        drop(err);
        return;
    }
    E.last_rx = h2o_now(E.ctx->loop);
    if (wslay_event_recv(E.ws) != 0 || (!wslay_event_want_read(E.ws) && !wslay_event_want_write(E.ws))) {
        drop("closed by the member");
        return;
    }
    flush();
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    (void)minor_version, (void)msg, (void)headers, (void)num_headers;
    E.client = NULL;
    if (status != 101) {
        gw_log(GW_LOG_WARN, "event stream refused", "member", E.member->name, "status", gw_log_num(status), "err", errstr, NULL);
        return NULL;
    }
    static const struct wslay_event_callbacks callbacks = {ws_recv, ws_send, ws_genmask, NULL, NULL, NULL, ws_on_msg};
    E.sock = h2o_http1client_steal_socket(client);
    h2o_buffer_consume(&E.sock->input, rlen); /* the 101 head; what follows is websocket frames */
    wslay_event_context_client_init(&E.ws, &callbacks, NULL);
    if (E.out == NULL)
        h2o_buffer_init(&E.out, &h2o_socket_buffer_prototype);
    E.last_rx = E.last_ping = h2o_now(E.ctx->loop);
    gw_log(GW_LOG_INFO, "event stream up", "member", E.member->name, "types", E.types, NULL);
    h2o_socket_read_start(E.sock, on_read);
    if (E.sock->input->size != 0)
        on_read(E.sock, NULL);
    if (E.on_up != NULL)
        E.on_up();
    return NULL;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs, size_t *reqbufcnt,
                                          int *method_is_head)
{
    (void)client;
    if (errstr != NULL) {
        E.client = NULL;
        gw_member_failed(E.member, errstr);
        return NULL;
    }
    *reqbufs = &E.req;
    *reqbufcnt = 1;
    *method_is_head = 0;
    return on_head;
}

static void connect_next(void)
{
    if ((E.member = gw_members_next(&E.cursor)) == NULL) {
        E.cursor = 0;
        return; /* tried them all: the next tick starts over */
    }
    h2o_url_t url;
    if (h2o_url_parse(E.member->url, SIZE_MAX, &url) != 0)
        return;
    unsigned char nonce[16], key[32];
    RAND_bytes(nonce, sizeof(nonce));
    EVP_EncodeBlock(key, nonce, sizeof(nonce));
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "GET /1.0/events?type=%s HTTP/1.1\r\nHost: %.*s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: lxd-gateway\r\n\r\n",
                     E.types, (int)url.authority.len, url.authority.base, key);
    free(E.req.base);
    E.req = h2o_strdup(NULL, buf, n);
    h2o_http1client_connect(&E.client, NULL, (h2o_http1client_ctx_t *)&gw_identities[GW_IDENTITY_GATEWAY].client_ctx, url.host,
                            h2o_url_get_port(&url), 1, on_connect);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    uint64_t now = h2o_now(E.ctx->loop);
    if (E.ws != NULL && now - E.last_rx > DEAD_MS)
        drop("no traffic (ping unanswered)");
    if (E.ws != NULL && now - E.last_ping >= PING_MS) {
        struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
        wslay_event_queue_msg(E.ws, &ping);
        E.last_ping = now;
        flush();
    }
    if (E.ws == NULL && E.client == NULL && E.sock == NULL)
        connect_next();
    h2o_timeout_link(E.ctx->loop, &E.timeout, &E.tick);
}

void gw_events_init(h2o_context_t *ctx, const char *types, gw_events_cb cb)
{
    E.ctx = ctx;
    E.types = strdup(types);
    E.cb = cb;
    h2o_timeout_init(ctx->loop, &E.timeout, RETRY_MS);
    E.tick.cb = on_tick;
    on_tick(&E.tick);
}
