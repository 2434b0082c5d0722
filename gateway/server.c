/*
 * server.c: listeners and the request flow (see server.h).
 */
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include "api10.h"
#include "enroll.h"
#include "eventstream.h"
#include "log.h"
#include "plugin.h"
#include "lxd.h"
#include "metrics.h"
#include "operations.h"
#include "peers.h"
#include "proxy.h"
#include "relay.h"
#include "server.h"
#include <h2o/http1.h> /* after h2o.h: h2o_http1_accept, h2o_http2_accept */
#include <h2o/http2.h>
#include "shadow.h"
#include "tls.h"
#include "tokens.h"
#include "trust.h"

static void remember(h2o_req_t *req, const char *key, size_t key_len, const char *value)
{
    *h2o_req_getenv(req, key, key_len, 1) = h2o_strdup(&req->pool, value, strlen(value));
}

static void on_identity(h2o_req_t *req, gw_caller_t *caller);

/* the whole flow of a request; each step is one call */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    gw_caller_t *caller = h2o_mem_alloc_pool(&req->pool, sizeof(*caller));
    const char *refusal;

    /* who is calling: decided here, from the client certificate, against the cluster's trust store (a peer replica
     * forwarding for a client names that client's certificate) */
    gw_trust_identify(req, caller);
    if ((refusal = gw_peers_adopt_caller(req, caller)) != NULL) {
        gw_lxd_send_error(req, 403, "%s", refusal);
        return 0;
    }
    remember(req, H2O_STRLIT("gw.fingerprint"), caller->fingerprint[0] != '\0' ? caller->fingerprint : "-");

    /* a connection's body limit was chosen at its handshake; a caller no longer trusted since then gets the limit of
     * the untrusted here (its body is already read: it is at least not forwarded) */
    if (!gw_trust_is_client(caller) && req->entity.len > GW_UNTRUSTED_MAX_BODY) {
        gw_lxd_send_error(req, 413, "A request body from an untrusted caller may not be larger than %d bytes",
                          GW_UNTRUSTED_MAX_BODY);
        return 0;
    }
    /* what no caller may send to a member */
    if ((refusal = gw_proxy_sanitize(req)) != NULL) {
        gw_lxd_send_error(req, 403, "%s", refusal);
        return 0;
    }

    /* what the gateway presents to members for this caller (a shadow identity may have to be made first) */
    gw_shadow_choose(req, caller, on_identity);
    return 0;
}

static void on_identity(h2o_req_t *req, gw_caller_t *caller)
{
    if (caller->identity == NULL) {
        gw_lxd_send_error(req, 503, "The gateway cannot act for this certificate right now (its shadow identity is unavailable)");
        return;
    }
    remember(req, H2O_STRLIT("gw.identity"), caller->identity->name);

    /* the gateway's own trust entries are not a restricted caller's to change (LXD would see the shadow's certificate) */
    if (gw_shadow_guard(req, caller))
        return;
    /* a member pulling a migration through the gateway (the secret is its authority, as in LXD) */
    if (gw_relay_handle(req))
        return;
    /* enrolment needs the caller's own certificate in the body (the member only sees the gateway's) */
    if (gw_enroll_handle(req, caller))
        return;
    /* the gateway's own operations (and the cluster's list with them merged in), other replicas' (forwarded to their
     * owner), and event streams with their events */
    if (gw_ops_handle(req, caller) || gw_peers_handle(req, caller) || gw_eventstream_handle(req, caller))
        return;
    /* the server's description, and token operations, as the caller must see them */
    if (gw_api10_handle(req, caller) || gw_tokens_handle(req, caller))
        return;

    /* a plugin claims it (single-call copy/move), or it passes through unchanged */
    if (gw_plugins_dispatch(req, caller))
        return;
    gw_proxy_pass(req, caller->identity);
}

static h2o_iovec_t env_or_dash(h2o_req_t *req, const char *key, size_t len)
{
    h2o_iovec_t *v = h2o_req_getenv(req, key, len, 0);
    return v != NULL ? *v : h2o_iovec_init(H2O_STRLIT("-"));
}

/* the path as logged: the value of a `secret` query parameter (operation websockets) is a credential */
static char *redact(h2o_mem_pool_t *pool, h2o_iovec_t path)
{
    static const char hidden[] = "redacted";
    char *out = h2o_mem_alloc_pool(pool, path.len + sizeof(hidden)), *o = out;
    const char *p = path.base, *end = path.base + path.len, *q = memchr(p, '?', path.len);
    if (q == NULL)
        q = end;
    memcpy(o, p, q - p), o += q - p, p = q;
    int hid = 0;
    while (p < end) {
        const char *amp = memchr(p + 1, '&', end - p - 1), *stop = amp != NULL ? amp : end;
        if (!hid && stop - p > 7 && memcmp(p + 1, "secret=", 7) == 0) {
            memcpy(o, p, 8), o += 8;
            memcpy(o, hidden, sizeof(hidden) - 1), o += sizeof(hidden) - 1;
            hid = 1; /* one is all there is; the buffer has room for one */
        } else {
            memcpy(o, p, stop - p), o += stop - p;
        }
        p = stop;
    }
    *o = '\0';
    return out;
}

/* the id of the operation an async answer started ("Location: /1.0/operations/<id>"), or "" */
static const char *operation_of(h2o_req_t *req)
{
    static const char prefix[] = "/1.0/operations/";
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_LOCATION, -1);
    if (i == -1)
        return "";
    h2o_iovec_t v = req->res.headers.entries[i].value;
    if (v.len <= sizeof(prefix) - 1 || memcmp(v.base, prefix, sizeof(prefix) - 1) != 0)
        return "";
    const char *id = v.base + sizeof(prefix) - 1, *end = v.base + v.len, *q = memchr(id, '?', end - id);
    return h2o_strdup(&req->pool, id, (q != NULL ? q : end) - id).base; /* "<id>?project=p": just the id */
}

static const char *pool_str(h2o_req_t *req, h2o_iovec_t v)
{
    return h2o_strdup(&req->pool, v.base, v.len).base;
}

static void log_access(h2o_logger_t *self, h2o_req_t *req)
{
    (void)self;
    char remote[NI_MAXHOST + 8] = "-", status[8], bytes[24], dur[32];
    struct sockaddr_storage ss;
    socklen_t sslen = req->conn->callbacks->get_peername(req->conn, (void *)&ss);
    if (sslen != 0) {
        size_t l = h2o_socket_getnumerichost((void *)&ss, sslen, remote);
        if (l != SIZE_MAX)
            snprintf(remote + l, sizeof(remote) - l, ":%d", h2o_socket_getport((void *)&ss));
    }
    struct timeval now;
    gettimeofday(&now, NULL);
    double ms = (now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1e3 +
                (now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1e3;
    snprintf(status, sizeof(status), "%d", req->res.status);
    snprintf(bytes, sizeof(bytes), "%zu", req->bytes_sent);
    snprintf(dur, sizeof(dur), "%.3f", ms);
    /* NUL-terminated copies in the request's pool: nothing here is cut to a fixed size (log.c escapes the bytes) */
    const char *fps = pool_str(req, env_or_dash(req, H2O_STRLIT("gw.fingerprint"))),
               *ids = pool_str(req, env_or_dash(req, H2O_STRLIT("gw.identity"))),
               *ms_ = pool_str(req, env_or_dash(req, H2O_STRLIT("gw.member"))), *method = pool_str(req, req->input.method),
               *path = redact(&req->pool, req->input.path);
    gw_metrics_request(req->input.path, req->res.status);
    if (req->res.status == 200 && h2o_memis(req->input.path.base, req->input.path.len, H2O_STRLIT("/lxd-gateway/peer")))
        return; /* another replica's probe, every health interval: peer_up in /metrics tells the same */
    gw_log_access("remote", remote, "fingerprint", fps, "identity", ids, "method", method, "path", path, "status", status, "bytes",
                  bytes, "duration_ms", dur, "member", ms_, NULL);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        gw_log_audit(fps, ids, method, path, req->res.status, operation_of(req));
}

/* the metrics listener's only answer */
static int on_metrics(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/metrics"))) {
        h2o_send_error_404(req, "Not Found", "only /metrics here", 0);
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        h2o_send_error_generic(req, 405, "Method Not Allowed", "GET /metrics", 0);
        return 0;
    }
    char *text = gw_metrics_text();
    h2o_iovec_t body = h2o_strdup(&req->pool, text, SIZE_MAX);
    free(text);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain; version=0.0.4"));
    h2o_send_inline(req, body.base, body.len);
    return 0;
}

/* a configuration whose only host serves the gateway's flow on "/" */
static h2o_hostconf_t *gateway_config(h2o_globalconf_t *conf, size_t max_body)
{
    h2o_config_init(conf);
    conf->max_request_entity_size = max_body;
    conf->server_name = h2o_iovec_init(H2O_STRLIT("lxd-gateway"));
    h2o_hostconf_t *host = h2o_config_register_host(conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;
    h2o_create_logger(path, sizeof(h2o_logger_t))->log_access = log_access;
    return host;
}

const char *gw_server_init(gw_server_t *srv, const gw_config_t *conf, h2o_evloop_t *loop)
{
    const char *err = NULL;
    srv->hosts[0] = gateway_config(&srv->h2o, conf->max_request_body);
    srv->hosts_untrusted[0] = gateway_config(&srv->h2o_untrusted, GW_UNTRUSTED_MAX_BODY);
    if (conf->metrics_listen != NULL) { /* a host of its own, reachable only from the metrics listener */
        srv->metrics_hosts[0] = h2o_config_register_host(&srv->h2o, h2o_iovec_init(H2O_STRLIT("lxd-gateway-metrics")), 65535);
        h2o_create_handler(h2o_config_register_path(srv->metrics_hosts[0], "/", 0), sizeof(h2o_handler_t))->on_req = on_metrics;
    }
    h2o_context_init(&srv->ctx, loop, &srv->h2o);
    h2o_context_init(&srv->ctx_untrusted, loop, &srv->h2o_untrusted);
    h2o_timeout_init(loop, &srv->handshake_timeout, srv->h2o.handshake_timeout);
    srv->accept.ctx = &srv->ctx;
    srv->accept.hosts = srv->hosts;
    srv->accept_untrusted.ctx = &srv->ctx_untrusted;
    srv->accept_untrusted.hosts = srv->hosts_untrusted;
    srv->metrics_accept.ctx = &srv->ctx;
    srv->metrics_accept.hosts = srv->metrics_hosts;
    if ((srv->accept.ssl_ctx = gw_tls_server_ctx(conf->tls_certificate, conf->tls_key, &err)) == NULL)
        return err;
    return NULL;
}

/* a client connection whose TLS handshake is under way (h2o's h2o_accept, with the choice of context added) */
typedef struct st_handshake_t {
    gw_server_t *srv;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timeout; /* in srv->handshake_timeout */
    struct timeval connected_at;
} handshake_t;

static void on_handshake_timeout(h2o_timeout_entry_t *entry)
{
    handshake_t *h = H2O_STRUCT_FROM_MEMBER(handshake_t, timeout, entry);
    h2o_socket_t *sock = h->sock;
    free(h);
    h2o_socket_close(sock);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    handshake_t *h = sock->data;
    gw_server_t *srv = h->srv;
    struct timeval connected_at = h->connected_at;
    sock->data = NULL;
    h2o_timeout_unlink(&h->timeout);
    free(h);
    if (err != NULL) {
        h2o_socket_close(sock);
        return;
    }
    /* who is calling is known now, before any request is read: only a trusted client may send a large body */
    X509 *cert = gw_tls_socket_peer_cert(sock);
    gw_trust_kind_t kind = gw_trust_kind_of(cert);
    X509_free(cert);
    h2o_accept_ctx_t *ctx = kind == GW_TRUST_CLIENT || kind == GW_TRUST_RESTRICTED ? &srv->accept : &srv->accept_untrusted;
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    for (const h2o_iovec_t *ident = h2o_http2_alpn_protocols; ident->len != 0; ++ident) {
        if (proto.len == ident->len && memcmp(proto.base, ident->base, proto.len) == 0) {
            h2o_http2_accept(ctx, sock, connected_at);
            return;
        }
    }
    h2o_http1_accept(ctx, sock, connected_at);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    gw_server_t *srv = listener->data;
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    if (listener == srv->metrics_listener) {
        h2o_accept(&srv->metrics_accept, sock);
        return;
    }
    handshake_t *h = calloc(1, sizeof(*h));
    h->srv = srv;
    h->sock = sock;
    h->timeout.cb = on_handshake_timeout;
    h->connected_at = *h2o_get_timestamp(&srv->ctx, NULL, NULL);
    h2o_timeout_link(srv->ctx.loop, &srv->handshake_timeout, &h->timeout);
    sock->data = h;
    h2o_socket_ssl_handshake(sock, srv->accept.ssl_ctx, NULL, on_handshake);
}

static int open_listener(const char *hostport, const char **err)
{
    char host[256];
    const char *port;
    if (hostport[0] == '[') {
        const char *close = strstr(hostport, "]:");
        snprintf(host, sizeof(host), "%.*s", (int)(close - hostport - 1), hostport + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(hostport, ':');
        snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
        port = colon + 1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        *err = "cannot resolve the listen address";
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (res->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        *err = strerror(errno);
        if (fd != -1)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

const char *gw_server_listen(gw_server_t *srv, const gw_config_t *conf)
{
    for (size_t i = 0; i != conf->num_listen; ++i) {
        const char *err = NULL;
        int fd = open_listener(conf->listen[i], &err);
        if (fd == -1) {
            gw_log(GW_LOG_ERROR, "cannot listen", "listen", conf->listen[i], "err", err, NULL);
            return "cannot open a listen address";
        }
        h2o_socket_t *sock = h2o_evloop_socket_create(srv->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        sock->data = srv;
        h2o_socket_read_start(sock, on_accept);
        srv->listeners[srv->num_listeners++] = sock;
        gw_log(GW_LOG_INFO, "listening", "address", conf->listen[i], NULL);
    }
    if (conf->metrics_listen != NULL) {
        const char *err = NULL;
        int fd = open_listener(conf->metrics_listen, &err);
        if (fd == -1) {
            gw_log(GW_LOG_ERROR, "cannot listen", "listen", conf->metrics_listen, "err", err, NULL);
            return "cannot open the metrics address";
        }
        srv->metrics_listener = h2o_evloop_socket_create(srv->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        srv->metrics_listener->data = srv;
        h2o_socket_read_start(srv->metrics_listener, on_accept);
        gw_log(GW_LOG_INFO, "metrics listening", "address", conf->metrics_listen, NULL);
    }
    return NULL;
}

void gw_server_stop_listening(gw_server_t *srv)
{
    for (size_t i = 0; i != srv->num_listeners; ++i)
        h2o_socket_close(srv->listeners[i]);
    srv->num_listeners = 0;
    if (srv->metrics_listener != NULL) {
        h2o_socket_close(srv->metrics_listener);
        srv->metrics_listener = NULL;
    }
}
