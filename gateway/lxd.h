/*
 * lxd.h: answers in LXD's own envelopes, so clients print the gateway's errors the way they print LXD's.
 */
#ifndef GW_LXD_H
#define GW_LXD_H

#include <jansson.h>
#include <h2o.h>

/* LXD's error envelope {"type":"error","error_code":status,"error":msg,...} (a new reference) */
json_t *gw_lxd_error_json(int status, const char *msg);
/* sends gw_lxd_error_json(status, msg) with HTTP status `status` */
void gw_lxd_send_error(h2o_req_t *req, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* {"type":"sync","status":"Success","status_code":200,"metadata":metadata}; steals `metadata` */
void gw_lxd_send_sync(h2o_req_t *req, json_t *metadata);
/* sends `json` (stolen) as the whole body with HTTP status `status` */
void gw_lxd_send_json(h2o_req_t *req, int status, json_t *json);
/* the same for an answer already encoded (JSON text without the final newline, which is added); `body` must stay valid
 * until the request ends (in its pool) */
void gw_lxd_send_text(h2o_req_t *req, int status, h2o_iovec_t body);

/* "/1.0/storage-pools/<pool>/volumes/custom[/<name>]?project=<project>&target=<member>", every part percent-encoded
 * (malloc'd); name == NULL: the collection */
char *gw_lxd_volume_path(const char *pool, const char *name, const char *project, const char *member);
/* `item` is one of the entries of the ","-joined `list` (LXD's ?type=a,b); never for project sets (projects.h) */
int gw_lxd_list_has(const char *list, const char *item);
/* the value of query parameter `name` of `req`, percent-decoded, in the request's pool; NULL when absent */
const char *gw_lxd_query(h2o_req_t *req, const char *name);

/* seconds since the epoch of a time as LXD writes it (RFC 3339: "2026-12-02T04:52:13.123456789+01:00" or "...Z"),
 * the offset honoured; -1 when it is not one */
long long gw_lxd_time(const char *s);

#endif
