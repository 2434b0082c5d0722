/*
 * rewrite.c: see rewrite.h.
 */
#include <string.h>
#include "backend.h"
#include "hold.h"
#include "lxd.h"
#include "members.h"
#include "rewrite.h"

/* in the request's pool: it dies with the request */
typedef struct st_rewrite_t {
    gw_hold_t hold; /* the request, until the member answers (on_answer) or its client leaves (on_gone) */
    const gw_caller_t *caller;
    gw_rewrite_cb fn;
    gw_mcall_t *call; /* in flight, or NULL */
} rewrite_t;

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    rewrite_t *r = data;
    h2o_req_t *req = gw_hold_take(&r->hold); /* (held: on_gone cancels the call of a client that left) */
    gw_member_t *m = gw_members_call_member(r->call);
    r->call = NULL;
    if (m != NULL)
        gw_member_note(req, m);
    if (err != NULL || json == NULL) {
        gw_lxd_send_error(req, 502, "Cluster member did not answer: %s", err != NULL ? err : "not JSON");
        return;
    }
    r->fn(req, json, status, r->caller);
    const char *etag = gw_call_header(call, "ETag");
    if (etag != NULL) /* lxc sends it back as If-Match when it changes what it read */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, h2o_strdup(&req->pool, etag, SIZE_MAX).base,
                       strlen(etag));
    gw_lxd_send_json(req, (int)status, json_incref(json));
}

static void on_gone(gw_hold_t *hold)
{
    rewrite_t *r = H2O_STRUCT_FROM_MEMBER(rewrite_t, hold, hold);
    if (r->call != NULL)
        gw_members_call_cancel(r->call);
}

void gw_rewrite_pass(h2o_req_t *req, const gw_caller_t *caller, gw_rewrite_cb fn)
{
    rewrite_t *r = h2o_mem_alloc_pool(&req->pool, sizeof(*r));
    *r = (rewrite_t){.caller = caller, .fn = fn};
    gw_hold_attach(&r->hold, req, on_gone);
    char *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    gw_member_t *first = gw_members_usable(gw_lxd_query(req, "target")); /* a request for one member goes there (members.h) */
    if ((r->call = gw_members_call_first(first, caller->identity, "GET", path, NULL, 30000, on_answer, r)) == NULL)
        gw_lxd_send_error(gw_hold_take(&r->hold), 503, "No cluster member is reachable through the gateway");
}
