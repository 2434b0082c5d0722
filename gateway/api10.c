/*
 * api10.c: see api10.h.
 */
#include <string.h>
#include "api10.h"
#include "backend.h"
#include "lxd.h"
#include "members.h"

static gw_api10_rewrite_cb rewrites[8];
static size_t num_rewrites;

typedef struct st_api10_t {
    h2o_req_t *req;
    const gw_caller_t *caller;
    gw_call_t *call; /* in flight, or NULL */
} api10_t;

void gw_api10_add_rewrite(gw_api10_rewrite_cb cb)
{
    if (num_rewrites < sizeof(rewrites) / sizeof(rewrites[0]))
        rewrites[num_rewrites++] = cb;
}

/* the member authenticated the gateway (or a shadow): the caller is who LXD would name */
static void own_fingerprint(json_t *meta, const gw_caller_t *caller)
{
    const char *auth = json_string_value(json_object_get(meta, "auth"));
    if (auth != NULL && strcmp(auth, "trusted") == 0 && caller->fingerprint[0] != '\0')
        json_object_set_new(meta, "auth_user_name", json_string(caller->fingerprint));
}

static void on_answer(void *data, const char *err, long status, json_t *json)
{
    api10_t *a = data;
    h2o_req_t *req = a->req;
    a->call = NULL;
    if (err != NULL || json == NULL) {
        gw_lxd_send_error(req, 502, "Cluster member did not answer GET /1.0: %s", err != NULL ? err : "not JSON");
        return;
    }
    json_t *meta = json_object_get(json, "metadata");
    if (status == 200 && json_is_object(meta)) {
        own_fingerprint(meta, a->caller);
        for (size_t i = 0; i != num_rewrites; ++i)
            rewrites[i](meta, a->caller);
    }
    const char *etag = gw_backend_header("ETag");
    if (etag != NULL) /* lxc sends it back as If-Match when it changes the server's config */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, h2o_strdup(&req->pool, etag, SIZE_MAX).base,
                       strlen(etag));
    gw_lxd_send_json(req, (int)status, json_incref(json));
}

static void on_dispose(void *data)
{
    api10_t *a = data;
    if (a->call != NULL)
        gw_backend_cancel(a->call);
}

int gw_api10_handle(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t p = req->path_normalized;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        !(h2o_memis(p.base, p.len, H2O_STRLIT("/1.0")) || h2o_memis(p.base, p.len, H2O_STRLIT("/1.0/"))))
        return 0;
    size_t cursor = 0;
    gw_member_t *m = gw_members_next(&cursor);
    if (m == NULL) {
        gw_lxd_send_error(req, 503, "No cluster member is reachable through the gateway");
        return 1;
    }
    *h2o_req_getenv(req, H2O_STRLIT("gw.member"), 1) = h2o_iovec_init(m->name, strlen(m->name));
    api10_t *a = h2o_mem_alloc_shared(&req->pool, sizeof(*a), on_dispose);
    *a = (api10_t){req, caller, NULL};
    char *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    a->call = gw_backend_call(m->url, caller->identity, "GET", path, NULL, 30000, on_answer, a);
    return 1;
}
