/*
 * api10.c: see api10.h.
 */
#include <string.h>
#include "api10.h"
#include "rewrite.h"

static gw_api10_rewrite_cb rewrites[8];
static size_t num_rewrites;

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

static void rewrite(h2o_req_t *req, json_t *answer, long status, const gw_caller_t *caller)
{
    (void)req;
    json_t *meta = json_object_get(answer, "metadata");
    if (status != 200 || !json_is_object(meta))
        return;
    own_fingerprint(meta, caller);
    for (size_t i = 0; i != num_rewrites; ++i)
        rewrites[i](meta, caller);
}

int gw_api10_handle(h2o_req_t *req, const gw_caller_t *caller)
{
    h2o_iovec_t p = req->path_normalized;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        !(h2o_memis(p.base, p.len, H2O_STRLIT("/1.0")) || h2o_memis(p.base, p.len, H2O_STRLIT("/1.0/"))))
        return 0;
    gw_rewrite_pass(req, caller, rewrite);
    return 1;
}
