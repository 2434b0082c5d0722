/*
 * server.c: listeners and the request flow (see server.h).
 */
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include "api10.h"
#include "ended.h"
#include "enroll.h"
#include "eventstream.h"
#include "forward.h"
#include "log.h"
#include "plugin.h"
#include "lxd.h"
#include "metrics.h"
#include "metrics_page.h"
#include "operations.h"
#include "path.h"
#include "oplist.h"
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
#include "upload.h"

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

/* a single-call capability the cluster lacks (plugins/): each plugin's `claims` looks at the request itself */
static int plugins_dispatch(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)path;
    if (gw_upload_of(req) != NULL)
        return 0; /* streamed since its head (offer_upload): req->entity is only its last bytes, and passes through */
    return gw_plugins_dispatch(req, caller);
}

#define ANY_PATH (GW_PATHS(GW_PATH_NUM) - 1)

/* a write (not GET or HEAD) to /1.0/certificates/<fp>: its answer waits for the trust mirror (trust.h); passes through */
static int trust_write(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)caller, (void)path;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        gw_trust_reread_before_answer(req);
    return 0;
}

/* who answers what, in this order: the first row whose path kinds and method match, and whose handler takes the
 * request, answers it. What no row takes passes through unchanged. */
const gw_route_t gw_routes[] = {
    {GW_PATHS(GW_PATH_CERTIFICATE), NULL, gw_shadow_guard,
     "a restricted caller's write to one of the gateway's own trust entries: refused"},
    {GW_PATHS(GW_PATH_CERTIFICATE), NULL, trust_write,
     "any other write to a trust entry: passes through, answered once the trust mirror has read the store again"},
    {GW_PATHS(GW_PATH_OPERATION_WEBSOCKET), NULL, gw_relay_handle,
     "a member pulling a migration through the gateway's relay (a relay id; its secret is the authority, as in LXD)"},
    {GW_PATHS(GW_PATH_CERTIFICATES), "POST", gw_enroll_handle, "enrolment: the caller's own certificate put into the body"},
    {GW_PATHS_OPERATION_ID, NULL, gw_ops_handle, "the gateway's own operations: GET, /wait, DELETE"},
    {GW_PATHS(GW_PATH_OPERATIONS), "GET", gw_oplist_handle, "the cluster's operation list, with the gateway's own merged in"},
    {GW_PATHS(GW_PATH_PEER) | GW_PATHS(GW_PATH_PEER_EVENTS) | GW_PATHS_OPERATION_ID, NULL, gw_peers_handle,
     "other replicas: their description, their events, and their operations (forwarded to the owner)"},
    {GW_PATHS(GW_PATH_EVENTS), NULL, gw_eventstream_handle, "a trusted caller's event stream, with the gateway's events in it"},
    {GW_PATHS(GW_PATH_SERVER), "GET", gw_api10_handle,
     "the server's description as the caller must see it (extensions), from a cache"},
    {GW_PATHS(GW_PATH_SERVER), NULL, gw_api10_write, "a change of the server's configuration: drops that cache, passes through"},
    {GW_PATHS(GW_PATH_OPERATION) | GW_PATHS(GW_PATH_OPERATION_WAIT), "GET", gw_ended_handle,
     "a task operation that ended after LXD forgot it (the outcome its member's stream showed)"},
    {GW_PATHS(GW_PATH_OPERATIONS) | GW_PATHS(GW_PATH_OPERATION), "GET", gw_tokens_handle,
     "token operations as the caller must see them"},
    {ANY_PATH, NULL, plugins_dispatch, "a single-call copy or move the cluster lacks (plugins/)"},
    {0, NULL, NULL, NULL},
};

/* a request whose body h2o is still reading (upload.h): from its head alone, would the flow above pass it through
 * unchanged, for a trusted caller whose identity is ready? Then it is sent on as its body comes (forward.h). Anything
 * else (a JSON body, which a plugin may read; a route that may take it; a caller still to be decided; a body shorter
 * than GW_FORWARD_MIN_BODY) is read whole, as before */
static void offer_upload(h2o_req_t *req)
{
    /* what h2o sets before it calls the handler, the same way (request.c, setup_before_processing) */
    req->scheme = req->input.scheme;
    req->method = req->input.method;
    req->authority = req->input.authority;
    req->path = req->input.path;
    req->path_normalized =
        h2o_url_normalize_path(&req->pool, req->input.path.base, req->input.path.len, &req->query_at, &req->norm_indexes);
    if (req->upgrade.base != NULL || !(h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) ||
                                       h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT"))))
        return;
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if ((ct != -1 &&
         h2o_strstr(req->headers.entries[ct].value.base, req->headers.entries[ct].value.len, H2O_STRLIT("json")) != SIZE_MAX) ||
        h2o_find_header_by_str(&req->headers, H2O_STRLIT(GW_PEERS_CALLER_HEADER), -1) != -1)
        return;
    gw_caller_t *caller = h2o_mem_alloc_pool(&req->pool, sizeof(*caller));
    gw_trust_identify(req, caller);
    if (!gw_trust_is_client(caller) || gw_proxy_sanitize(req) != NULL)
        return;
    gw_path_t path;
    gw_path_parse(req, &path);
    for (const gw_route_t *r = gw_routes; r->handle != NULL; ++r)
        if (r->handle != plugins_dispatch && gw_route_matches(r, req, &path))
            return;
    const gw_identity_t *id = gw_shadow_now(caller);
    if (id != NULL)
        gw_forward_stream(req, id);
}

int gw_route_matches(const gw_route_t *route, h2o_req_t *req, const gw_path_t *path)
{
    return (route->paths & GW_PATHS(path->kind)) != 0 &&
           (route->method == NULL || h2o_memis(req->method.base, req->method.len, route->method, strlen(route->method)));
}

static void on_identity(h2o_req_t *req, gw_caller_t *caller)
{
    if (caller->identity == NULL) {
        gw_lxd_send_error(req, 503, "The gateway cannot act for this certificate right now (its shadow identity is unavailable)");
        return;
    }
    remember(req, H2O_STRLIT("gw.identity"), caller->identity->name);

    /* which handler takes it, by the route table; or it passes through unchanged */
    gw_path_t path;
    gw_path_parse(req, &path);
    for (const gw_route_t *r = gw_routes; r->handle != NULL; ++r)
        if (gw_route_matches(r, req, &path) && r->handle(req, caller, &path))
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

/* `us` microseconds as milliseconds with three decimals ("12.345") into `buf` (GW_LOG_NUM_SIZE + 4 bytes) */
static void ms_text(char *buf, long long us)
{
    char num[GW_LOG_NUM_SIZE];
    const char *whole = gw_log_fmt_num(num, us / 1000);
    size_t n = strlen(whole);
    memcpy(buf, whole, n);
    buf[n] = '.';
    long long frac = us % 1000;
    buf[n + 1] = (char)('0' + frac / 100), buf[n + 2] = (char)('0' + frac / 10 % 10), buf[n + 3] = (char)('0' + frac % 10);
    buf[n + 4] = '\0';
}

static void log_access(h2o_logger_t *self, h2o_req_t *req)
{
    (void)self;
    /* formatted by hand, not with printf: this runs once per request, and printf was most of its cost */
    char remote[NI_MAXHOST + GW_LOG_NUM_SIZE] = "-", status_buf[GW_LOG_NUM_SIZE], bytes_buf[GW_LOG_NUM_SIZE],
                             dur[GW_LOG_NUM_SIZE + 4], port_buf[GW_LOG_NUM_SIZE];
    struct sockaddr_storage ss;
    socklen_t sslen = req->conn->callbacks->get_peername(req->conn, (void *)&ss);
    if (sslen != 0) {
        size_t l = h2o_socket_getnumerichost((void *)&ss, sslen, remote);
        if (l != SIZE_MAX) {
            const char *port = gw_log_fmt_num(port_buf, h2o_socket_getport((void *)&ss));
            remote[l] = ':';
            memcpy(remote + l + 1, port, strlen(port) + 1);
        } else {
            strcpy(remote, "-");
        }
    }
    struct timeval now;
    gettimeofday(&now, NULL);
    long long us = (long long)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000000 +
                   (now.tv_usec - req->timestamps.request_begin_at.tv_usec);
    const char *status = gw_log_fmt_num(status_buf, req->res.status),
               *bytes = gw_log_fmt_num(bytes_buf, (long long)req->bytes_sent);
    ms_text(dur, us < 0 ? 0 : us);
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
    char *text = gw_metrics_page_text();
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
    /* trusted callers' connections only (the untrusted send small bodies; the metrics listener none) */
    gw_upload_init(&srv->ctx, srv->hosts, GW_FORWARD_MIN_BODY, offer_upload);
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
    gw_trust_kind_t kind = gw_trust_kind_of(gw_tls_socket_peer(sock)); /* (the fingerprint is kept for its requests) */
    h2o_accept_ctx_t *ctx = kind == GW_TRUST_CLIENT || kind == GW_TRUST_RESTRICTED ? &srv->accept : &srv->accept_untrusted;
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    for (const h2o_iovec_t *ident = h2o_http2_alpn_protocols; ident->len != 0; ++ident) {
        if (proto.len == ident->len && memcmp(proto.base, ident->base, proto.len) == 0) {
            h2o_http2_accept(ctx, sock, connected_at);
            return;
        }
    }
    gw_upload_accepted(sock);
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
