/*
 * lxd.c: LXD response envelopes (lxd/response/response.go in LXD's tree describes the shapes).
 */
#include <stdarg.h>
#include <stdio.h>
#include "lxd.h"

void gw_lxd_send_json(h2o_req_t *req, int status, json_t *json)
{
    char *text = json_dumps(json, JSON_COMPACT);
    json_decref(json);
    size_t len = strlen(text);
    h2o_iovec_t body = h2o_strdup(&req->pool, text, len);
    free(text);
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : status == 202 ? "Accepted" : "Error";
    req->res.content_length = body.len + 1;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    /* LXD ends its JSON bodies with a newline */
    h2o_iovec_t *bufs = h2o_mem_alloc_pool(&req->pool, sizeof(*bufs) * 2);
    bufs[0] = body;
    bufs[1] = h2o_iovec_init(H2O_STRLIT("\n"));
    static h2o_generator_t generator = {NULL, NULL};
    h2o_start_response(req, &generator);
    h2o_send(req, bufs, 2, H2O_SEND_STATE_FINAL);
}

json_t *gw_lxd_error_json(int status, const char *msg)
{
    return json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:n}", "type", "error", "status", "", "status_code", 0, "operation", "",
                     "error_code", status, "error", msg, "metadata");
}

void gw_lxd_send_error(h2o_req_t *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_lxd_send_json(req, status, gw_lxd_error_json(status, msg));
}

void gw_lxd_send_sync(h2o_req_t *req, json_t *metadata)
{
    json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:o}", "type", "sync", "status", "Success", "status_code", 200,
                          "operation", "", "error_code", 0, "error", "", "metadata", metadata != NULL ? metadata : json_null());
    gw_lxd_send_json(req, 200, j);
}
