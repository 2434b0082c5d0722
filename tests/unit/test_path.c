/*
 * test_path.c: what gw_path_parse makes of paths (the route table in server.c picks handlers by it), and which row of
 * the table is asked first for the requests that matter.
 */
#include <string.h>
#include "path.h"
#include "server.h"
#include "unit.h"

/* a request for METHOD TARGET as h2o hands it to the handler (its pool to be cleared by the caller) */
static void fake_req(h2o_req_t *req, const char *method, const char *target)
{
    memset(req, 0, sizeof(*req));
    h2o_mem_init_pool(&req->pool);
    req->method = h2o_iovec_init(method, strlen(method));
    req->path = h2o_iovec_init(target, strlen(target));
    req->path_normalized = h2o_url_normalize_path(&req->pool, target, strlen(target), &req->query_at, &req->norm_indexes);
}

static gw_path_t parse(const char *method, const char *target)
{
    h2o_req_t req;
    fake_req(&req, method, target);
    gw_path_t p;
    gw_path_parse(&req, &p);
    h2o_mem_clear_pool(&req.pool); /* (p.id pointed into it: only kind and timeout are read below) */
    p.id = h2o_iovec_init(NULL, p.id.len);
    return p;
}

static int kind(const char *target)
{
    return (int)parse("GET", target).kind;
}

/* the rows the route table asks for METHOD TARGET, in order: their `takes` texts, "|"-joined into `out` */
static const char *rows(const char *method, const char *target, char *out, size_t size)
{
    h2o_req_t req;
    fake_req(&req, method, target);
    gw_path_t p;
    gw_path_parse(&req, &p);
    size_t len = 0;
    out[0] = '\0';
    for (const gw_route_t *r = gw_routes; r->handle != NULL; ++r)
        if (gw_route_matches(r, &req, &p) && strstr(r->takes, "plugins/") == NULL)
            len += snprintf(out + len, len < size ? size - len : 0, "%s%s", len != 0 ? "|" : "", r->takes);
    h2o_mem_clear_pool(&req.pool);
    return out;
}

void test_path(void)
{
    static const char id[] = "01234567-89ab-4cde-8f01-23456789abcd";
    char buf[256];
    CHECK(kind("/1.0") == GW_PATH_SERVER);
    CHECK(kind("/1.0/") == GW_PATH_SERVER);
    CHECK(kind("/1.0?recursion=1") == GW_PATH_SERVER);
    CHECK(kind("/1.0/events?type=operation") == GW_PATH_EVENTS);
    CHECK(kind("/1.0/certificates") == GW_PATH_CERTIFICATES);
    CHECK(kind("/1.0/certificates/") == GW_PATH_CERTIFICATES);
    CHECK(kind("/1.0/certificates/abcd") == GW_PATH_CERTIFICATE);
    CHECK(parse("PUT", "/1.0/certificates/abcd/x").id.len == 4);
    CHECK(kind("/1.0/operations") == GW_PATH_OPERATIONS);
    CHECK(kind("/1.0/operations/") == GW_PATH_OPERATIONS);
    snprintf(buf, sizeof(buf), "/1.0/operations/%s", id);
    CHECK(kind(buf) == GW_PATH_OPERATION && parse("GET", buf).id.len == 36);
    snprintf(buf, sizeof(buf), "/1.0/operations/%s/wait?timeout=30", id);
    CHECK(kind(buf) == GW_PATH_OPERATION_WAIT && parse("GET", buf).timeout_s == 30 && parse("GET", buf).id.len == 36);
    snprintf(buf, sizeof(buf), "/1.0/operations/%s/wait", id);
    CHECK(parse("GET", buf).timeout_s == -1);
    snprintf(buf, sizeof(buf), "/1.0/operations/%s/websocket?secret=s", id);
    CHECK(kind(buf) == GW_PATH_OPERATION_WEBSOCKET);
    snprintf(buf, sizeof(buf), "/1.0/operations/%s/", id);
    CHECK(kind(buf) == GW_PATH_OPERATION_OTHER);
    CHECK(kind("/1.0/operations//wait") == GW_PATH_OPERATION_WAIT && parse("GET", "/1.0/operations//wait").id.len == 0);
    CHECK(kind("/1.0/operationsx") == GW_PATH_OTHER);
    CHECK(kind("/1.0/eventsx") == GW_PATH_OTHER);
    CHECK(kind("/1.0/instances") == GW_PATH_OTHER);
    CHECK(kind("/1.0/storage-pools/p/volumes/custom") == GW_PATH_OTHER);
    CHECK(kind("/lxd-gateway/peer") == GW_PATH_PEER);
    CHECK(kind("/lxd-gateway/events") == GW_PATH_PEER_EVENTS);
    CHECK(kind("/lxd-gateway/peer/") == GW_PATH_OTHER);
    CHECK(kind("/1.0/%6fperations") == GW_PATH_OPERATIONS); /* decoded as LXD's router decodes it */
    CHECK(strcmp(gw_path_kind_name(GW_PATH_OPERATION_WAIT), "operation-wait") == 0);

    /* GET /1.0 comes from the cache; any other method on /1.0 drops it (and passes through); a write to a trust entry
     * waits for the trust mirror, after the guard of the gateway's own entries */
    char rbuf[1024];
    CHECK(strstr(rows("GET", "/1.0?project=p", rbuf, sizeof(rbuf)), "from a cache") != NULL &&
          strchr(rows("GET", "/1.0", rbuf, sizeof(rbuf)), '|') != NULL); /* then the write row, which declines GET */
    CHECK(strncmp(rows("PUT", "/1.0", rbuf, sizeof(rbuf)), "a change of the server's configuration", 38) == 0);
    CHECK(strncmp(rows("PATCH", "/1.0?target=node2", rbuf, sizeof(rbuf)), "a change of the server's configuration", 38) == 0);
    rows("PATCH", "/1.0/certificates/abcd", rbuf, sizeof(rbuf));
    CHECK(strncmp(rbuf, "a restricted caller's write to one of the gateway's own", 55) == 0 &&
          strstr(rbuf, "|any other write to a trust entry") != NULL);

    /* every kind but "other" is asked of some row; rows are asked in order, the plugins last */
    unsigned asked = 0;
    const gw_route_t *r = gw_routes;
    for (; r->handle != NULL; ++r)
        asked |= r->paths;
    CHECK((asked & ((GW_PATHS(GW_PATH_NUM) - 1) & ~GW_PATHS(GW_PATH_OTHER))) ==
          ((GW_PATHS(GW_PATH_NUM) - 1) & ~GW_PATHS(GW_PATH_OTHER)));
    CHECK(r > gw_routes && strstr(r[-1].takes, "plugins/") != NULL);
}
