/*
 * volumes.h: what the custom-volume plugins (copy, move) share: reading the request, naming members, the checks made
 * before anything is changed (gw_vol_check), and calls to members as the caller.
 */
#ifndef GW_PLUGIN_VOLUMES_H
#define GW_PLUGIN_VOLUMES_H

#include <jansson.h>
#include <h2o.h>
#include "members.h"

#define GW_VOL_MAX_BODY 65536 /* a copy or move request is a small JSON object; larger bodies are not ours */
/* the config key a move puts on the volumes it started with or made, while it runs (volume_move.c); never copied */
#define GW_VOL_MOVE_MARK "user.lxd-gateway.move"

/* the request body as a JSON object (a new, read-only reference: it is shared), or NULL (none, too large, not a JSON
 * object). Parsed once per request: a plugin's `claims` and `handle` both read it */
json_t *gw_vol_body(h2o_req_t *req);
/* the pool of a request for "/1.0/storage-pools/<pool>/volumes/custom" (or with a trailing slash), in the request's
 * memory pool; NULL for any other path */
const char *gw_vol_pool_of(h2o_req_t *req);
/* what a copy creates, from its request `body`: name, type "custom", and the body's config, description, content_type
 * (those given), without the gateway's mark (a new reference) */
json_t *gw_vol_new_volume(json_t *body);
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
/* PATCH of volume `name` on member `m` as `id` with `body` (JSON text; LXD merges its `config` into the volume's,
 * and a key given as "" is removed) */
void gw_vol_patch(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project,
                  const char *body, gw_call_cb cb, void *data);
/* GET of snapshot `snapshot` of volume `name` on member `m` as `id` */
void gw_vol_snapshot_get(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *snapshot,
                         const char *project, gw_call_cb cb, void *data);
/* DELETE of volume `name` on member `m` as `id` */
void gw_vol_delete(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project, gw_call_cb cb,
                   void *data);

/* ---- the checks of a copy or a move, before anything is changed ---- */

/* what is checked, each with the caller's identity, so that every member applies its own access rules: the source
 * volume on its member, the target pool on the target member, no volume of the target's name there */
typedef struct st_gw_vol_check_spec_t {
    const gw_identity_t *id;                       /* the caller's */
    gw_member_t *src, *dst;                        /* the source volume's member; the member it goes to */
    const char *src_pool, *src_project, *src_name; /* the source volume */
    const char *dst_pool, *dst_project, *dst_name; /* the volume to be made */
    int may_exist;                                 /* 1: a volume of dst_name on dst is not a conflict (a refresh) */
    int not_moving;           /* 1: a source that a running move marked is refused (409), before the target is asked */
    const char *src_snapshot; /* non-NULL: the source is this snapshot of src_name, which must exist too */
} gw_vol_check_spec_t;

typedef enum {
    GW_VOL_CHECKED, /* every check holds: `source` is the source volume */
    GW_VOL_REMOTE,  /* the source is on a remote pool (ceph): every member sees it, LXD does it itself: pass through */
    GW_VOL_TAKEN,   /* a volume of dst_name exists on dst (and may_exist is 0) */
    GW_VOL_REFUSED, /* a member refused, or did not answer: the caller gets `status` and `answer` */
} gw_vol_verdict_t;

/* the outcome; everything is valid only during the callback */
typedef struct st_gw_vol_checked_t {
    gw_vol_verdict_t verdict;
    long status;      /* GW_VOL_REFUSED: the HTTP status to answer (the member's; 502 when it did not answer) */
    json_t *answer;   /* GW_VOL_REFUSED: the body to answer (the member's error, or LXD's envelope of ours) */
    json_t *source;   /* GW_VOL_CHECKED, GW_VOL_REMOTE: the source volume (the `metadata` of its member's answer) */
    json_t *snapshot; /* GW_VOL_CHECKED with src_snapshot: the snapshot (the `metadata` of its member's answer) */
} gw_vol_checked_t;

typedef void (*gw_vol_check_cb)(void *data, const gw_vol_checked_t *result);

/* runs the checks (everything in `spec` is copied); `cb` is called once, with the first check that failed or all held */
void gw_vol_check(const gw_vol_check_spec_t *spec, gw_vol_check_cb cb, void *data);

/* ---- a copy request: POST .../volumes/custom?target=<B> with source.type copy (volume_copy.c, volume_snapshot_copy.c) ---- */

typedef struct st_gw_vol_copy_req_t {
    char *pool, *project;      /* the path's pool, ?project= ("default" when absent) */
    char *src_pool, *src_proj; /* source.pool, source.project (default: the same as the target's) */
    char *src_name;            /* source.name */
    json_t *volume;            /* what the target creates (gw_vol_new_volume) */
    int volume_only, refresh;  /* source.volume_only, source.refresh */
    gw_member_t *src, *dst;    /* source.location, ?target= (gw_vol_copy_members) */
} gw_vol_copy_req_t;

/* reads the claimed copy `req` into `r` and makes the checks every copy makes, before any of its own: the text of the
 * path and query, a name without slashes, the type, a source name. NULL, or the error to answer with 400 (malloc'd) */
char *gw_vol_copy_parse(h2o_req_t *req, gw_vol_copy_req_t *r);
/* the members the copy names (source.location, ?target=), known and online: 0, or the status to answer with the
 * message *msg (malloc'd) */
int gw_vol_copy_members(h2o_req_t *req, gw_vol_copy_req_t *r, char **msg);
/* the checks of copy `r` for the caller `id` (gw_vol_check's spec; the caller adds what is its own) */
gw_vol_check_spec_t gw_vol_copy_spec(const gw_vol_copy_req_t *r, const gw_identity_t *id);
/* frees what `r` holds */
void gw_vol_copy_free(gw_vol_copy_req_t *r);

#endif
