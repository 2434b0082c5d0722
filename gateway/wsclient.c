/*
 * wsclient.c: see wsclient.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>
#include "log.h"
#include "wsclient.h"

struct st_gw_wsclient_t {
    const gw_wsclient_cbs_t *cbs;
    void *data;
    gw_member_t *member;
    h2o_loop_t *loop;
    h2o_http1client_t *client;   /* handshake in flight */
    h2o_socket_t *sock;          /* once upgraded */
    wslay_event_context_ptr ws;  /* once upgraded */
    h2o_buffer_t *out, *writing; /* frames to send; frames being written */
    h2o_iovec_t req;             /* the handshake request */
    uint64_t last_rx;            /* h2o_now() of the last bytes received */
    int closed;                  /* on_close was called (or gw_wsclient_close): free at the end of the current callback */
    int busy;                    /* inside a callback chain of ours: defer the free */
    int status;                  /* the upgrade's answer */
    int ready;                   /* a frame came (on_ready was called) */
};

static void destroy(gw_wsclient_t *c)
{
    if (c->client != NULL)
        h2o_http1client_cancel(c->client);
    if (c->ws != NULL)
        wslay_event_context_free(c->ws);
    if (c->sock != NULL)
        h2o_socket_close(c->sock);
    if (c->writing != NULL)
        h2o_buffer_dispose(&c->writing);
    if (c->out != NULL)
        h2o_buffer_dispose(&c->out);
    free(c->req.base);
    free(c);
}

/* ends the connection once; the user hears of it unless it closed it itself */
static void end(gw_wsclient_t *c, const char *err)
{
    if (c->closed)
        return;
    c->closed = 1;
    if (c->sock != NULL) /* no more reads or writes: the user may still call us from on_close */
        h2o_socket_read_stop(c->sock);
    c->cbs->on_close(c, c->data, err);
}

/* frees `c` if it ended, unless a caller up the stack still uses it */
static void settle(gw_wsclient_t *c)
{
    if (c->closed && c->busy == 0)
        destroy(c);
}

static void flush(gw_wsclient_t *c);

static void on_written(h2o_socket_t *sock, const char *err)
{
    gw_wsclient_t *c = sock->data;
    h2o_buffer_dispose(&c->writing);
    c->writing = NULL;
    ++c->busy;
    if (err != NULL)
        end(c, err);
    else
        flush(c);
    --c->busy;
    settle(c);
}

static void flush(gw_wsclient_t *c)
{
    if (c->ws == NULL || c->closed)
        return;
    wslay_event_send(c->ws);
    if (c->writing != NULL || c->out->size == 0)
        return;
    c->writing = c->out;
    h2o_buffer_init(&c->out, &h2o_socket_buffer_prototype);
    h2o_iovec_t buf = h2o_iovec_init(c->writing->bytes, c->writing->size);
    h2o_socket_write(c->sock, &buf, 1, on_written);
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    gw_wsclient_t *c = user;
    (void)flags;
    h2o_buffer_t *in = c->sock->input;
    if (in->size == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > in->size)
        len = in->size;
    memcpy(buf, in->bytes, len);
    h2o_buffer_consume(&c->sock->input, len);
    return len;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
    gw_wsclient_t *c = user;
    (void)ctx, (void)flags;
    h2o_buffer_reserve(&c->out, len);
    memcpy(c->out->bytes + c->out->size, data, len);
    c->out->size += len;
    return len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx, (void)user;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    gw_wsclient_t *c = user;
    (void)ctx;
    if (!c->ready && !c->closed) {
        c->ready = 1;
        if (c->cbs->on_ready != NULL)
            c->cbs->on_ready(c, c->data);
    }
    if (arg->opcode == WSLAY_TEXT_FRAME && !c->closed)
        c->cbs->on_message(c, c->data, arg->msg, arg->msg_length);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    gw_wsclient_t *c = sock->data;
    ++c->busy;
    if (err != NULL) {
        end(c, err);
    } else {
        c->last_rx = h2o_now(c->loop);
        if (wslay_event_recv(c->ws) != 0 || (!wslay_event_want_read(c->ws) && !wslay_event_want_write(c->ws)))
            end(c, "closed by the member");
        else
            flush(c);
    }
    --c->busy;
    settle(c);
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    gw_wsclient_t *c = client->data;
    (void)minor_version, (void)msg, (void)headers, (void)num_headers;
    c->client = NULL;
    c->status = status;
    ++c->busy;
    if (status != 101) {
        char why[128];
        snprintf(why, sizeof(why), "upgrade refused (status %d%s%s)", status, errstr != NULL ? ": " : "",
                 errstr != NULL ? errstr : "");
        end(c, why);
    } else {
        static const struct wslay_event_callbacks callbacks = {ws_recv, ws_send, ws_genmask, NULL, NULL, NULL, ws_on_msg};
        c->sock = h2o_http1client_steal_socket(client);
        c->sock->data = c;
        h2o_buffer_consume(&c->sock->input, rlen); /* the 101 head; what follows is websocket frames */
        wslay_event_context_client_init(&c->ws, &callbacks, c);
        h2o_buffer_init(&c->out, &h2o_socket_buffer_prototype);
        c->last_rx = h2o_now(c->loop);
        c->cbs->on_open(c, c->data);
        if (!c->closed) {
            h2o_socket_read_start(c->sock, on_read);
            if (c->sock->input->size != 0)
                on_read(c->sock, NULL);
        }
    }
    --c->busy;
    settle(c);
    return NULL;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs, size_t *reqbufcnt,
                                          int *method_is_head)
{
    gw_wsclient_t *c = client->data;
    if (errstr != NULL) {
        c->client = NULL;
        if (c->member != NULL)
            gw_member_failed(c->member, errstr);
        ++c->busy;
        end(c, errstr);
        --c->busy;
        settle(c);
        return NULL;
    }
    *reqbufs = &c->req;
    *reqbufcnt = 1;
    *method_is_head = 0;
    return on_head;
}

h2o_iovec_t gw_wsclient_upgrade_request(const char *path, h2o_iovec_t authority, h2o_iovec_t key)
{
    char *buf;
    int n = asprintf(&buf,
                     "GET %s HTTP/1.1\r\nHost: %.*s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %.*s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: lxd-gateway\r\n\r\n",
                     path, (int)authority.len, authority.base, (int)key.len, key.base);
    if (n < 0)
        abort();
    return h2o_iovec_init(buf, n);
}

gw_wsclient_t *gw_wsclient_open_url(const char *url, const gw_identity_t *id, const char *path, const gw_wsclient_cbs_t *cbs,
                                    void *data)
{
    gw_wsclient_t *c = calloc(1, sizeof(*c));
    c->cbs = cbs;
    c->data = data;
    c->loop = id->client_ctx.loop;
    h2o_url_t parsed;
    if (h2o_url_parse(url, SIZE_MAX, &parsed) != 0) {
        free(c);
        return NULL;
    }
    unsigned char nonce[16], key[32];
    RAND_bytes(nonce, sizeof(nonce));
    int klen = EVP_EncodeBlock(key, nonce, sizeof(nonce));
    c->req = gw_wsclient_upgrade_request(path, parsed.authority, h2o_iovec_init(key, klen));
    h2o_http1client_connect(&c->client, c, (h2o_http1client_ctx_t *)&id->client_ctx, parsed.host, h2o_url_get_port(&parsed), 1,
                            on_connect);
    return c;
}

gw_wsclient_t *gw_wsclient_open(gw_member_t *m, const gw_identity_t *id, const char *path, const gw_wsclient_cbs_t *cbs, void *data)
{
    gw_wsclient_t *c = gw_wsclient_open_url(m->url, id, path, cbs, data);
    if (c != NULL)
        c->member = m;
    return c;
}

void gw_wsclient_ping(gw_wsclient_t *c)
{
    if (c->ws == NULL || c->closed)
        return;
    struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
    wslay_event_queue_msg(c->ws, &ping);
    flush(c);
}

int gw_wsclient_status(gw_wsclient_t *c)
{
    return c->status;
}

uint64_t gw_wsclient_last_rx(gw_wsclient_t *c)
{
    return c->last_rx;
}

void gw_wsclient_close(gw_wsclient_t *c)
{
    c->closed = 1;
    settle(c);
}
