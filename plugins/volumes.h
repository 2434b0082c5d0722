/*
 * volumes.h: what the custom-volume plugins (copy, move) share: reading the request, naming members, and GETs of
 * members as the caller.
 */
#ifndef GW_PLUGIN_VOLUMES_H
#define GW_PLUGIN_VOLUMES_H

#include <jansson.h>
#include <h2o.h>
#include "members.h"

#define GW_VOL_MAX_BODY 65536 /* a copy or move request is a small JSON object; larger bodies are not ours */

/* the request body as a JSON object (a new reference), or NULL (none, too large, not a JSON object) */
json_t *gw_vol_body(h2o_req_t *req);
/* the string `key` of `obj`, or "" */
const char *gw_vol_str(json_t *obj, const char *key);
/* the member `name` the request names as `what` ("target", "source.location"), known and online; otherwise NULL,
 * with the status (404, 503) and the message to answer (*msg, malloc'd) */
gw_member_t *gw_vol_member(const char *name, const char *what, int *status, char **msg);
/* the first of `names` (NULL-terminated) whose value in `values` (same order; NULL = absent) is not valid UTF-8, or
 * NULL: names from the path and the query are raw bytes, and LXD's names are text */
const char *gw_vol_bad_text(const char *const *names, const char *const *values);
/* GET of "/1.0/storage-pools/<pool>[/volumes/custom/<name>]?project=<project>&target=<m>" on member `m` as `id`
 * (name == NULL: the pool itself, project ignored) */
void gw_vol_get(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project, gw_call_cb cb,
                void *data);
/* DELETE of volume `name` on member `m` as `id` */
void gw_vol_delete(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project, gw_call_cb cb,
                   void *data);

#endif
