/*
 * relay.c: see relay.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <h2o.h>
#include <h2o/http1.h>
#include "log.h"
#include "lxd.h"
#include "relay.h"
#include "tls.h"
#include "wsclient.h"

#define MAX_CHANNELS 8 /* websockets per relay (LXD opens control and fs; criu for instances) */

typedef struct st_chan_t chan_t;

struct st_gw_relay_t {
    char id[37];              /* in the URL the target pulls from */
    gw_member_t *src;         /* the source member */
    const gw_identity_t *who; /* identity of the connections to it */
    char *op;                 /* the source operation */
    json_t *secrets;          /* its secrets */
    json_t *ours;             /* the relay's secrets, same names */
    char *url;                /* https://<gateway>/1.0/operations/<id> */
    chan_t *chans[MAX_CHANNELS];
    uint64_t bytes;      /* carried so far, both ways */
    h2o_linklist_t link; /* in relays */
};

/* one websocket: the target's connection to us, joined to ours to the source. The target's upgrade is answered at once
 * (101): LXD's migration sink gives its whole websocket dial 5 s (lxd/migrate.go, HandshakeTimeout), and dialling the
 * source before answering spent that time twice on a busy machine (a CI run: a transfer failed with "i/o timeout" on
 * the target's dial of the relay). The source is dialled meanwhile; the target's bytes wait in its socket, unread,
 * until both sides are up. malloc'd: it outlives the target's request; freed by chan_end */
struct st_chan_t {
    gw_relay_t *relay;         /* NULL once ended */
    h2o_http1client_t *client; /* our upgrade request to the source, in flight */
    h2o_iovec_t upreq;         /* its text */
    char accept[32];           /* the Sec-WebSocket-Accept for the target's key: the source's answer must carry it too */
    h2o_socket_t *target;      /* the target's, once upgraded (until joined) */
    h2o_socket_t *up;          /* the source's, once upgraded (until joined) */
    h2o_socket_t *sock[2];     /* [0] the target's, [1] the source's, once joined */
    h2o_buffer_t *out[2];      /* out[i]: bytes read from sock[i], being written to the other side (empty: no write out) */
    int eof[2];                /* sock[i] ended: the channel ends once out[i] is written */
    int upgrading;             /* the 101 is being written (h2o_http1_upgrade): h2o calls on_upgraded with us later */
    int ended;                 /* chan_end came while upgrading: on_upgraded frees us */
    h2o_timeout_entry_t delay; /* test hook LXDGW_TEST_RELAY_DIAL_DELAY_MS: the dial of the source waits in it */
    h2o_url_t src;             /* (what that dial needs) */
};

static struct {
    char *cert; /* the gateway's server certificate (PEM) */
    char *base; /* "https://host:port" members reach the gateway at, or NULL */
    char *self; /* this replica's own URL among `peers` (a load balancer's address may lead to another replica) */
    h2o_linklist_t relays;
} R = {NULL, NULL, NULL, {&R.relays, &R.relays}};

void gw_relay_set_base(const char *url)
{
    free(R.self);
    R.self = url != NULL ? strdup(url) : NULL;
}

const char *gw_relay_init(const gw_config_t *conf)
{
    free(R.cert); /* again on reload */
    free(R.base);
    R.base = NULL;
    const char *err = NULL;
    if ((R.cert = gw_tls_cert_pem(conf->tls_certificate, &err)) == NULL)
        return err;
    const char *addr = conf->num_public_addresses != 0 ? conf->public_addresses[0] : conf->listen[0];
    if (strncmp(addr, "0.0.0.0:", 8) != 0 && strncmp(addr, "[::]:", 5) != 0) {
        R.base = malloc(strlen(addr) + 9);
        sprintf(R.base, "https://%s", addr);
    }
    return NULL;
}

int gw_relay_available(void)
{
    return R.base != NULL || R.self != NULL;
}

const char *gw_relay_certificate(void)
{
    return R.cert;
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char r[64];
    RAND_bytes(r, (int)bytes);
    for (size_t i = 0; i != bytes; ++i)
        sprintf(out + 2 * i, "%02x", r[i]);
}

gw_relay_t *gw_relay_open(gw_member_t *src, const gw_identity_t *who, const char *op, json_t *secrets)
{
    gw_relay_t *r = calloc(1, sizeof(*r));
    char hex[33];
    random_hex(hex, 16);
    snprintf(r->id, sizeof(r->id), "%.8s-%.4s-4%.3s-a%.3s-%.12s", hex, hex + 8, hex + 12, hex + 15, hex + 18);
    r->src = src;
    r->who = who;
    r->op = strdup(op);
    r->secrets = json_incref(secrets);
    r->ours = json_object();
    const char *name;
    json_t *v;
    json_object_foreach(secrets, name, v)
    {
        char s[65];
        random_hex(s, 32);
        json_object_set_new(r->ours, name, json_string(s));
    }
    const char *base = R.self != NULL ? R.self : R.base;
    r->url = malloc(strlen(base) + 64);
    sprintf(r->url, "%s/1.0/operations/%s", base, r->id);
    h2o_linklist_insert(&R.relays, &r->link);
    return r;
}

const char *gw_relay_url(gw_relay_t *r)
{
    return r->url;
}

json_t *gw_relay_secrets(gw_relay_t *r)
{
    return r->ours;
}

/* ---- one channel ---- */

static void chan_end(chan_t *c)
{
    gw_relay_t *r = c->relay;
    if (r != NULL)
        for (size_t i = 0; i != MAX_CHANNELS; ++i)
            if (r->chans[i] == c)
                r->chans[i] = NULL;
    if (c->client != NULL)
        h2o_http1client_cancel(c->client);
    c->client = NULL;
    if (h2o_timeout_is_linked(&c->delay))
        h2o_timeout_unlink(&c->delay);
    h2o_socket_t **socks[] = {&c->target, &c->up, &c->sock[0], &c->sock[1]};
    for (size_t i = 0; i != sizeof(socks) / sizeof(socks[0]); ++i) {
        if (*socks[i] != NULL)
            h2o_socket_close(*socks[i]);
        *socks[i] = NULL;
    }
    for (size_t i = 0; i != 2; ++i)
        if (c->out[i] != NULL)
            h2o_buffer_dispose(&c->out[i]);
    c->relay = NULL;
    if (c->upgrading) { /* (an end while the 101 goes out: h2o still owns a pointer to us) */
        c->ended = 1;
        return;
    }
    free(c->upreq.base);
    free(c);
}

static void pipe_on_read(h2o_socket_t *sock, const char *err);
static void pipe_on_written(h2o_socket_t *dst, const char *err);

/* what sock[i] has read goes to the other side: its input buffer becomes out[i] (no copy), written from there; reading
 * goes on into a fresh buffer meanwhile */
static void forward(chan_t *c, size_t i)
{
    h2o_buffer_t *spare = c->out[i];
    c->out[i] = c->sock[i]->input;
    c->sock[i]->input = spare;
    c->relay->bytes += c->out[i]->size;
    h2o_iovec_t buf = h2o_iovec_init(c->out[i]->bytes, c->out[i]->size);
    h2o_socket_write(c->sock[1 - i], &buf, 1, pipe_on_written);
}

static void pipe_on_written(h2o_socket_t *dst, const char *err)
{
    chan_t *c = dst->data;
    size_t i = dst == c->sock[0] ? 1 : 0; /* the direction whose bytes were written */
    if (err != NULL) {
        chan_end(c);
        return;
    }
    h2o_buffer_consume(&c->out[i], c->out[i]->size);
    if (c->sock[i]->input->size != 0)
        forward(c, i); /* what was read meanwhile */
    if (c->eof[i]) {
        if (c->out[i]->size == 0)
            chan_end(c); /* its side ended and all it sent is written: the other side ends too */
        return;
    }
    h2o_socket_read_start(c->sock[i], pipe_on_read);
}

/* Each direction holds at most two reads' worth: one being written (out[i]), one read meanwhile (then reading stops
 * until the write is done), so a slow side slows the other down, as TCP would */
static void pipe_on_read(h2o_socket_t *sock, const char *err)
{
    chan_t *c = sock->data;
    size_t i = sock == c->sock[0] ? 0 : 1;
    if (err != NULL) { /* this side ended: the other one must too, once what it sent is written */
        h2o_socket_read_stop(sock);
        c->eof[i] = 1;
        if (sock->input->size != 0 && c->out[i]->size == 0)
            forward(c, i);
        if (c->out[i]->size == 0)
            chan_end(c);
        return;
    }
    if (sock->input->size == 0)
        return;
    if (c->out[i]->size != 0) {
        h2o_socket_read_stop(sock); /* a write is out: what was read waits for it */
        return;
    }
    forward(c, i);
}

/* both sides are upgraded: bytes flow each way */
static void join(chan_t *c)
{
    c->sock[0] = c->target;
    c->sock[1] = c->up;
    c->target = c->up = NULL;
    c->sock[0]->data = c->sock[1]->data = c;
    for (size_t i = 0; i != 2; ++i)
        h2o_buffer_init(&c->out[i], &h2o_socket_buffer_prototype);
    for (size_t i = 0; i != 2; ++i)
        h2o_socket_read_start(c->sock[i], pipe_on_read);
    for (size_t i = 0; i != 2; ++i)
        if (c->sock[i]->input->size != 0) /* bytes that came with an upgrade (a write, never an end: no chan_end here) */
            pipe_on_read(c->sock[i], NULL);
}

/* the target's side is upgraded (its 101 written) */
static void on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    chan_t *c = data;
    c->upgrading = 0;
    if (c->ended) { /* ended meanwhile (a cancel, or the source refused) */
        if (sock != NULL)
            h2o_socket_close(sock);
        free(c->upreq.base);
        free(c);
        return;
    }
    if (sock == NULL) { /* the target left */
        chan_end(c);
        return;
    }
    h2o_buffer_consume(&sock->input, reqsize);
    c->target = sock;
    sock->data = c;
    if (c->up != NULL)
        join(c);
}

static h2o_http1client_body_cb on_up_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                          h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    chan_t *c = client->data;
    (void)minor_version, (void)msg;
    c->client = NULL;
    int accepted = 0; /* the source answered the target's own key, as it would have answered the target */
    for (size_t i = 0; i != num_headers; ++i)
        if (h2o_lcstris(headers[i].name->base, headers[i].name->len, H2O_STRLIT("sec-websocket-accept")))
            accepted = h2o_memis(headers[i].value.base, headers[i].value.len, c->accept, strlen(c->accept));
    if (status != 101 || !accepted) {
        char code[16];
        snprintf(code, sizeof(code), "%d", status);
        gw_log(GW_LOG_WARN, "migration source refused a relay connection", "relay", c->relay->id, "status", code, "err",
               errstr != NULL  ? errstr
               : status != 101 ? "not upgraded"
                               : "wrong websocket accept",
               NULL);
        chan_end(c); /* the target's connection closes: its transfer fails, as it would have natively */
        return NULL;
    }
    c->up = h2o_http1client_steal_socket(client);
    h2o_buffer_consume(&c->up->input, rlen);
    c->up->data = c;
    if (c->target != NULL)
        join(c);
    return NULL;
}

static h2o_http1client_head_cb on_up_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                             size_t *reqbufcnt, int *method_is_head)
{
    chan_t *c = client->data;
    if (errstr != NULL) {
        c->client = NULL;
        gw_log(GW_LOG_WARN, "migration source unreachable for a relay connection", "relay", c->relay->id, "err", errstr, NULL);
        chan_end(c);
        return NULL;
    }
    *reqbufs = &c->upreq;
    *reqbufcnt = 1;
    *method_is_head = 0;
    return on_up_head;
}

static void dial(chan_t *c)
{
    h2o_http1client_connect(&c->client, c, (h2o_http1client_ctx_t *)&c->relay->who->client_ctx, c->src.host,
                            h2o_url_get_port(&c->src), 1, on_up_connect);
}

/* test hook: LXDGW_TEST_RELAY_DIAL_DELAY_MS=<ms> dials every source that much later (a slow member, on demand) */
static struct {
    int init;
    h2o_timeout_t timeout;
} Delay;

static void on_delayed(h2o_timeout_entry_t *entry)
{
    dial(H2O_STRUCT_FROM_MEMBER(chan_t, delay, entry));
}

/* RFC 6455 4.2.2: base64(SHA-1(key + GUID)); `out` has room for 29 bytes */
static void websocket_accept(h2o_iovec_t key, char *out)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[SHA_DIGEST_LENGTH];
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    if (sha == NULL || !EVP_DigestInit_ex(sha, EVP_sha1(), NULL) || !EVP_DigestUpdate(sha, key.base, key.len) ||
        !EVP_DigestUpdate(sha, guid, sizeof(guid) - 1) || !EVP_DigestFinal_ex(sha, md, NULL))
        abort();
    EVP_MD_CTX_free(sha);
    h2o_base64_encode(out, md, sizeof(md), 0);
}

/* the secret's name in `r` ("control", "fs"), or NULL */
static const char *secret_name(gw_relay_t *r, const char *secret)
{
    const char *name, *found = NULL;
    json_t *v;
    json_object_foreach(r->ours, name, v)
    {
        const char *s = json_string_value(v);
        if (strlen(s) == strlen(secret) && CRYPTO_memcmp(s, secret, strlen(s)) == 0)
            found = name;
    }
    return found;
}

int gw_relay_handle(h2o_req_t *req, const struct st_gw_caller_t *caller, const gw_path_t *path)
{
    (void)caller; /* the secret is the authority, as in LXD */
    if (h2o_linklist_is_empty(&R.relays) || path->id.len != 36)
        return 0;
    gw_relay_t *r = NULL;
    for (h2o_linklist_t *l = R.relays.next; l != &R.relays && r == NULL; l = l->next) {
        gw_relay_t *x = H2O_STRUCT_FROM_MEMBER(gw_relay_t, link, l);
        if (memcmp(x->id, path->id.base, 36) == 0)
            r = x;
    }
    if (r == NULL)
        return 0; /* a real operation of the cluster */
    const char *secret = gw_lxd_query(req, "secret"), *name = secret != NULL ? secret_name(r, secret) : NULL;
    ssize_t key = h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-websocket-key"), -1);
    size_t slot = 0;
    while (slot != MAX_CHANNELS && r->chans[slot] != NULL)
        ++slot;
    if (name == NULL || key == -1 || req->upgrade.base == NULL || slot == MAX_CHANNELS) {
        gw_lxd_send_error(req, 403, "not authorized");
        return 1;
    }
    h2o_iovec_t ws_key = req->headers.entries[key].value;
    chan_t *c = calloc(1, sizeof(*c));
    c->relay = r;
    r->chans[slot] = c;
    websocket_accept(ws_key, c->accept);
    char *src_path;
    if (asprintf(&src_path, "/1.0/operations/%s/websocket?secret=%s", r->op, json_string_value(json_object_get(r->secrets, name))) <
        0)
        abort();
    c->upreq = gw_wsclient_upgrade_request(src_path, r->src->authority, ws_key);
    free(src_path);
    h2o_url_parse(r->src->url, SIZE_MAX, &c->src);
    gw_member_note(req, r->src);
    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL, c->accept, strlen(c->accept));
    h2o_loop_t *loop = req->conn != NULL ? req->conn->ctx->loop : NULL; /* (for the test hook; no conn: fuzzing) */
    c->upgrading = 1; /* first: whatever ends the channel from here on leaves the freeing to on_upgraded */
    h2o_http1_upgrade(req, NULL, 0, on_upgraded, c);
    c->delay.cb = on_delayed;
    if (!Delay.init) {
        const char *ms = getenv("LXDGW_TEST_RELAY_DIAL_DELAY_MS");
        if (ms != NULL && strtoull(ms, NULL, 10) != 0)
            h2o_timeout_init(loop, &Delay.timeout, strtoull(ms, NULL, 10));
        Delay.init = 1;
    }
    if (Delay.timeout.timeout != 0)
        h2o_timeout_link(loop, &Delay.timeout, &c->delay);
    else
        dial(c);
    return 1;
}

void gw_relay_close(gw_relay_t *r)
{
    for (size_t i = 0; i != MAX_CHANNELS; ++i)
        if (r->chans[i] != NULL)
            chan_end(r->chans[i]);
    h2o_linklist_unlink(&r->link);
    free(r->op);
    free(r->url);
    json_decref(r->secrets);
    json_decref(r->ours);
    free(r);
}

uint64_t gw_relay_bytes(const gw_relay_t *r)
{
    return r->bytes;
}
