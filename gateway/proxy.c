/*
 * proxy.c: see proxy.h.
 */
#include <string.h>
#include "forward.h"
#include "hold.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "proxy.h"

/* in the request's pool: it dies with the request */
typedef struct st_pass_t {
    gw_hold_t hold; /* the request, until it is handed to h2o's proxy or answered, or its client leaves (on_gone) */
    const gw_identity_t *id;
    gw_member_t *first;                        /* the member the request names in ?target=, tried first (or NULL) */
    size_t cursor;                             /* next member position to try */
    gw_member_t *member;                       /* the member being tried */
    h2o_socketpool_t *pool;                    /* its pool for `id` */
    h2o_socketpool_connect_request_t *connect; /* connect in flight, or NULL */
} pass_t;

static int header_is(const h2o_header_t *h, const char *prefix, size_t len)
{
    return h->name->len >= len && h2o_lcstris(h->name->base, len, prefix, len);
}

/* RFC 9110 7.6.1: a header named in Connection is hop-by-hop too. The values are copied first, as deleting
 * headers moves the Connection header itself. */
static void drop_connection_named(h2o_req_t *req)
{
    h2o_iovec_t all = {NULL};
    ssize_t ci = -1;
    while ((ci = h2o_find_header(&req->headers, H2O_TOKEN_CONNECTION, ci)) != -1)
        all = h2o_concat(&req->pool, all, h2o_iovec_init(H2O_STRLIT(",")), req->headers.entries[ci].value);
    const char *token;
    size_t len;
    while ((token = h2o_next_token(&all, ',', &len, NULL)) != NULL) {
        if (h2o_lcstris(token, len, H2O_STRLIT("upgrade")) || h2o_lcstris(token, len, H2O_STRLIT("close")) ||
            h2o_lcstris(token, len, H2O_STRLIT("keep-alive")))
            continue; /* h2o's own proxy handles these */
        ssize_t hi;
        while ((hi = h2o_find_header_by_str(&req->headers, token, len, -1)) != -1)
            h2o_delete_header(&req->headers, hi);
    }
}

const char *gw_proxy_sanitize(h2o_req_t *req)
{
    /* internal endpoints are for cluster members among themselves; check the normalized path, so that "/./internal"
     * or "%2finternal" tricks do not pass */
    h2o_iovec_t p = req->path_normalized;
    if (p.len >= 9 && memcmp(p.base, "/internal", 9) == 0 && (p.len == 9 || p.base[9] == '/' || p.base[9] == '?'))
        return "Internal endpoints are not served through the gateway";
    drop_connection_named(req);
    for (size_t i = 0; i < req->headers.size;) {
        h2o_header_t *h = req->headers.entries + i;
        int drop = header_is(h, H2O_STRLIT("x-lxd-forwarded")) || /* LXD believes these only from members */
                   (h->name == &H2O_TOKEN_USER_AGENT->buf &&
                    h2o_strstr(h->value.base, h->value.len, H2O_STRLIT("lxd-cluster-notifier")) != SIZE_MAX) ||
                   h->name == &H2O_TOKEN_TE->buf || h->name == &H2O_TOKEN_KEEP_ALIVE->buf ||
                   h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("proxy-connection")) ||
                   h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("trailer"));
        if (drop)
            h2o_delete_header(&req->headers, i);
        else
            ++i;
    }
    return NULL;
}

static void try_next(pass_t *p);

static void forward(pass_t *p)
{
    h2o_req_t *req = gw_hold_take(&p->hold); /* h2o's proxy answers it now (held: on_gone cancels a connect) */
    h2o_req_overrides_t *ov = h2o_mem_alloc_pool(&req->pool, sizeof(*ov));
    *ov = (h2o_req_overrides_t){NULL};
    ov->client_ctx = (h2o_http1client_ctx_t *)&p->id->client_ctx;
    ov->socketpool = p->pool;
    /* LXD's Location headers are paths: nothing to rewrite */
    gw_member_note(req, p->member);
    h2o_reprocess_request(req, req->method, &H2O_URL_SCHEME_HTTPS, p->member->authority, req->path, ov, 0);
}

static void on_connect(h2o_socket_t *sock, const char *err, void *data)
{
    pass_t *p = data;
    p->connect = NULL;
    if (err != NULL) {
        gw_member_failed(p->member, err);
        try_next(p);
        return;
    }
    /* the connection is alive (a pooled one passed h2o's liveness peek, or a new one just connected): hand it back
     * so that the proxy, which takes it from the same pool, sends the request over it */
    h2o_socketpool_return(p->pool, sock);
    forward(p);
}

static void try_next(pass_t *p)
{
    if (p->first != NULL) {
        p->member = p->first;
        p->first = NULL;
    } else if ((p->member = gw_members_next(&p->cursor)) == NULL) {
        gw_lxd_send_error(gw_hold_take(&p->hold), 503, "No cluster member is reachable through the gateway");
        return;
    }
    p->pool = gw_member_pool(p->member, p->id);
    if (gw_member_pool_has_live(p->pool)) { /* h2o's proxy takes that connection: nothing to try first */
        forward(p);
        return;
    }
    /* a new connection (or a dead one replaced): made here first, so that a member that cannot be reached is skipped
     * for the next one instead of answering 502 */
    h2o_context_t *ctx = gw_hold_req(&p->hold)->conn->ctx;
    h2o_socketpool_connect(&p->connect, p->pool, ctx->loop, &ctx->receivers.hostinfo_getaddr, on_connect, p);
}

static void on_gone(gw_hold_t *hold)
{
    pass_t *p = H2O_STRUCT_FROM_MEMBER(pass_t, hold, hold);
    if (p->connect != NULL) /* the client went away while we were connecting */
        h2o_socketpool_cancel_connect(p->connect);
}

void gw_proxy_pass(h2o_req_t *req, const gw_identity_t *id)
{
    if (gw_forward_streamed(req, id))
        return; /* on its way already, since its head (forward.h) */
    if (req->entity.len >= GW_FORWARD_MIN_BODY && req->upgrade.base == NULL) {
        gw_forward_pass(req, id); /* large uploads: see forward.h */
        return;
    }
    pass_t *p = h2o_mem_alloc_pool(&req->pool, sizeof(*p));
    *p = (pass_t){.id = id};
    p->first = gw_members_usable(gw_lxd_query(req, "target")); /* a request for one member goes there (members.h) */
    gw_hold_attach(&p->hold, req, on_gone);
    try_next(p);
}
