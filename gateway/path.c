/*
 * path.c: see path.h.
 */
#include <stdlib.h>
#include <string.h>
#include "lxd.h"
#include "path.h"

/* `p` is `name`, or `name` and a slash */
static int is(h2o_iovec_t p, const char *name, size_t len)
{
    return (p.len == len || (p.len == len + 1 && p.base[len] == '/')) && memcmp(p.base, name, len) == 0;
}

/* `p` starts with `prefix` (which ends with a slash) and has more after it */
static int under(h2o_iovec_t p, const char *prefix, size_t len)
{
    return p.len > len && memcmp(p.base, prefix, len) == 0;
}

void gw_path_parse(h2o_req_t *req, gw_path_t *out)
{
    static const char ops[] = "/1.0/operations/", certs[] = "/1.0/certificates/";
    h2o_iovec_t p = req->path_normalized;
    *out = (gw_path_t){GW_PATH_OTHER, {NULL, 0}, -1};
    if (is(p, H2O_STRLIT("/1.0"))) {
        out->kind = GW_PATH_SERVER;
    } else if (is(p, H2O_STRLIT("/1.0/events"))) {
        out->kind = GW_PATH_EVENTS;
    } else if (is(p, H2O_STRLIT("/1.0/certificates"))) {
        out->kind = GW_PATH_CERTIFICATES;
    } else if (under(p, certs, sizeof(certs) - 1)) {
        const char *id = p.base + sizeof(certs) - 1, *end = p.base + p.len, *slash = memchr(id, '/', end - id);
        out->kind = GW_PATH_CERTIFICATE;
        out->id = h2o_iovec_init(id, (slash != NULL ? slash : end) - id);
    } else if (is(p, H2O_STRLIT("/1.0/operations"))) {
        out->kind = GW_PATH_OPERATIONS;
    } else if (under(p, ops, sizeof(ops) - 1)) {
        const char *id = p.base + sizeof(ops) - 1, *end = p.base + p.len, *slash = memchr(id, '/', end - id);
        out->id = h2o_iovec_init(id, (slash != NULL ? slash : end) - id);
        if (slash == NULL) {
            out->kind = GW_PATH_OPERATION;
        } else if (h2o_memis(slash, end - slash, H2O_STRLIT("/wait"))) {
            const char *t = gw_lxd_query(req, "timeout");
            out->kind = GW_PATH_OPERATION_WAIT;
            out->timeout_s = t != NULL && *t != '\0' ? strtol(t, NULL, 10) : -1;
        } else if (h2o_memis(slash, end - slash, H2O_STRLIT("/websocket"))) {
            out->kind = GW_PATH_OPERATION_WEBSOCKET;
        } else {
            out->kind = GW_PATH_OPERATION_OTHER;
        }
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/lxd-gateway/peer"))) {
        out->kind = GW_PATH_PEER;
    } else if (h2o_memis(p.base, p.len, H2O_STRLIT("/lxd-gateway/events"))) {
        out->kind = GW_PATH_PEER_EVENTS;
    }
}

const char *gw_path_kind_name(gw_path_kind_t kind)
{
    static const char *const names[GW_PATH_NUM] = {
        "other",     "server",         "certificates",        "certificate",     "events", "operations",
        "operation", "operation-wait", "operation-websocket", "operation-other", "peer",   "peer-events"};
    return kind < GW_PATH_NUM ? names[kind] : "?";
}
