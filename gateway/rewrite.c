/*
 * rewrite.c: see rewrite.h.
 */
#include <string.h>
#include "backend.h"
#include "lxd.h"
#include "members.h"
#include "rewrite.h"

typedef struct st_rewrite_t {
    h2o_req_t *req;
    const gw_caller_t *caller;
    gw_rewrite_cb fn;
    gw_mcall_t *call; /* in flight, or NULL */
} rewrite_t;

static void on_answer(void *data, const char *err, long status, json_t *json)
{
    rewrite_t *r = data;
    h2o_req_t *req = r->req;
    gw_member_t *m = gw_members_call_member(r->call);
    r->call = NULL;
    if (m != NULL)
        gw_member_note(req, m);
    if (err != NULL || json == NULL) {
        gw_lxd_send_error(req, 502, "Cluster member did not answer: %s", err != NULL ? err : "not JSON");
        return;
    }
    r->fn(req, json, status, r->caller);
    const char *etag = gw_backend_header("ETag");
    if (etag != NULL) /* lxc sends it back as If-Match when it changes what it read */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, h2o_strdup(&req->pool, etag, SIZE_MAX).base,
                       strlen(etag));
    gw_lxd_send_json(req, (int)status, json_incref(json));
}

static void on_dispose(void *data)
{
    rewrite_t *r = data;
    if (r->call != NULL)
        gw_members_call_cancel(r->call);
}

void gw_rewrite_pass(h2o_req_t *req, const gw_caller_t *caller, gw_rewrite_cb fn)
{
    rewrite_t *r = h2o_mem_alloc_shared(&req->pool, sizeof(*r), on_dispose);
    *r = (rewrite_t){req, caller, fn, NULL};
    char *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    if ((r->call = gw_members_call(caller->identity, "GET", path, NULL, 30000, on_answer, r)) == NULL)
        gw_lxd_send_error(req, 503, "No cluster member is reachable through the gateway");
}
