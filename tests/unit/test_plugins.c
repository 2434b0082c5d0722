/*
 * test_plugins.c: which requests the volume_copy plugin claims (everything else must pass through untouched), and
 * the query parsing it relies on.
 */
#include <string.h>
#include "lxd.h"
#include "plugin.h"
#include "unit.h"

extern const gw_plugin_t gw_plugin_volume_copy;

static void make_req(h2o_req_t *req, const char *method, const char *path, const char *body)
{
    memset(req, 0, sizeof(*req));
    h2o_mem_init_pool(&req->pool);
    req->method = h2o_iovec_init(method, strlen(method));
    req->path = h2o_iovec_init(path, strlen(path));
    req->path_normalized = h2o_url_normalize_path(&req->pool, path, strlen(path), &req->query_at, &req->norm_indexes);
    if (body != NULL)
        req->entity = h2o_iovec_init(body, strlen(body));
}

static int claims(const char *method, const char *path, const char *body, gw_trust_kind_t kind)
{
    h2o_req_t req;
    make_req(&req, method, path, body);
    gw_caller_t caller = {.kind = kind};
    int r = gw_plugin_volume_copy.claims(&req, &caller);
    h2o_mem_clear_pool(&req.pool);
    return r;
}

static void test_query(void)
{
    h2o_req_t req;
    make_req(&req, "GET", "/1.0/x?project=p%201&target=node2&recursion&x=a+b", NULL);
    const char *v = gw_lxd_query(&req, "target");
    CHECK(v != NULL && strcmp(v, "node2") == 0);
    CHECK((v = gw_lxd_query(&req, "project")) != NULL && strcmp(v, "p 1") == 0);
    CHECK((v = gw_lxd_query(&req, "recursion")) != NULL && strcmp(v, "") == 0);
    CHECK((v = gw_lxd_query(&req, "x")) != NULL && strcmp(v, "a b") == 0);
    CHECK(gw_lxd_query(&req, "targe") == NULL);
    CHECK(gw_lxd_query(&req, "pool") == NULL);
    h2o_mem_clear_pool(&req.pool);
    make_req(&req, "GET", "/1.0/x", NULL);
    CHECK(gw_lxd_query(&req, "target") == NULL);
    h2o_mem_clear_pool(&req.pool);
}

void test_plugins(void)
{
    static const char copy[] =
        "{\"name\":\"v2\",\"type\":\"custom\",\"source\":{\"type\":\"copy\",\"name\":\"v1\",\"location\":\"node1\"}}";
    static const char path[] = "/1.0/storage-pools/pool1/volumes/custom?target=node2";
    test_query();
    /* the native single call */
    CHECK(claims("POST", path, copy, GW_TRUST_CLIENT));
    CHECK(claims("POST", path, copy, GW_TRUST_RESTRICTED));
    CHECK(claims("POST", "/1.0/storage-pools/pool1/volumes/custom/?project=p1&target=node2", copy, GW_TRUST_CLIENT));
    CHECK(claims("POST", "/1.0/storage-pools/pool%201/volumes/custom?target=node%32", copy, GW_TRUST_CLIENT));
    /* everything else passes through */
    CHECK(!claims("GET", path, copy, GW_TRUST_CLIENT));
    CHECK(!claims("POST", path, copy, GW_TRUST_NONE));                                                /* LXD refuses it itself */
    CHECK(!claims("POST", path, copy, GW_TRUST_METRICS));                                             /* idem */
    CHECK(!claims("POST", "/1.0/storage-pools/pool1/volumes/custom", copy, GW_TRUST_CLIENT));         /* no target */
    CHECK(!claims("POST", "/1.0/storage-pools/pool1/volumes/custom?target=", copy, GW_TRUST_CLIENT)); /* empty target */
    CHECK(!claims("POST", "/1.0/storage-pools/pool1/volumes/custom?target=node1", copy, GW_TRUST_CLIENT));    /* same member */
    CHECK(!claims("POST", "/1.0/storage-pools/pool1/volumes/custom/v1?target=node2", copy, GW_TRUST_CLIENT)); /* a volume */
    CHECK(!claims("POST", "/1.0/storage-pools/pool1/volumes?target=node2", copy, GW_TRUST_CLIENT));
    CHECK(!claims("POST", "/1.0/storage-pools/pool1/volumes/image?target=node2", copy, GW_TRUST_CLIENT));
    CHECK(!claims("POST", path, "{\"name\":\"v2\",\"source\":{\"type\":\"copy\",\"name\":\"v1\"}}",
                  GW_TRUST_CLIENT)); /* no location */
    CHECK(!claims("POST", path, "{\"name\":\"v2\",\"source\":{\"type\":\"migration\",\"location\":\"node1\"}}", GW_TRUST_CLIENT));
    CHECK(!claims("POST", path, "{\"name\":\"v2\"}", GW_TRUST_CLIENT)); /* a plain create */
    CHECK(!claims("POST", path, "{\"name\":", GW_TRUST_CLIENT));        /* not JSON: LXD says what is wrong */
    CHECK(!claims("POST", path, NULL, GW_TRUST_CLIENT));
}

extern const gw_plugin_t gw_plugin_volume_move;

static int claims_move(const char *path, const char *body, gw_trust_kind_t kind)
{
    h2o_req_t req;
    make_req(&req, "POST", path, body);
    gw_caller_t caller = {.kind = kind};
    int r = gw_plugin_volume_move.claims(&req, &caller);
    h2o_mem_clear_pool(&req.pool);
    return r;
}

void test_plugins_move(void)
{
    static const char move[] = "{\"name\":\"v1\",\"migration\":true,\"source\":{\"location\":\"node1\"}}";
    CHECK(claims_move("/1.0/storage-pools/pool1/volumes/custom/v1?target=node2", move, GW_TRUST_CLIENT));
    CHECK(claims_move("/1.0/storage-pools/pool1/volumes/custom/v1?project=p&target=node2", move, GW_TRUST_RESTRICTED));
    /* target == location is claimed, to be refused with a clear error */
    CHECK(claims_move("/1.0/storage-pools/pool1/volumes/custom/v1?target=node1", move, GW_TRUST_CLIENT));
    CHECK(!claims_move("/1.0/storage-pools/pool1/volumes/custom/v1", move, GW_TRUST_CLIENT)); /* a rename */
    CHECK(!claims_move("/1.0/storage-pools/pool1/volumes/custom/v1?target=node2", "{\"name\":\"v2\"}", GW_TRUST_CLIENT));
    CHECK(!claims_move("/1.0/storage-pools/pool1/volumes/custom/v1?target=node2", move, GW_TRUST_NONE));
    CHECK(!claims_move("/1.0/storage-pools/pool1/volumes/custom/v1/snapshots?target=node2", move, GW_TRUST_CLIENT));
    CHECK(!claims_move("/1.0/storage-pools/pool1/volumes/custom?target=node2", move, GW_TRUST_CLIENT)); /* a create */
    CHECK(!claims_move("/1.0/storage-pools/pool1/volumes/image/abc?target=node2", move, GW_TRUST_CLIENT));
}
