/*
 * volume_snapshot_copy.c: the single-call copy of one snapshot of a custom volume to another cluster member
 * (API extension `storage_api_remote_volume_snapshot_copy`, LXD 5.17 and 5.0.3).
 *
 * Claims `POST /1.0/storage-pools/<pool>/volumes/custom?target=<dst>` whose body has `source.type: copy`, a
 * `source.location` naming another member and a `source.name` of the form `<volume>/<snapshot>`. The new volume has
 * the snapshot's content and no snapshots; its config, description and content type are the request's (clients
 * send the snapshot's), the content type the source volume's when the request has none.
 *
 * request -> parse -> the members named -> gw_vol_check (volumes.h: the source volume and its snapshot, the target
 * pool, the name free on the target) -> volume_move.h: one operation "Copying storage volume" that makes a temporary
 * volume from the snapshot on its own member (LXD 5.0.2 can do that), moves it to the target as the new volume, and
 * removes it whatever the outcome, journaled step by step as a move is. Nothing touches a member before every check
 * passed; every call is made with the caller's identity, so LXD refuses what it would refuse natively.
 */
#include <stdlib.h>
#include <string.h>
#include "hold.h"
#include "lxd.h"
#include "metrics.h"
#include "plugin.h"
#include "proxy.h"
#include "text.h"
#include "volume_move.h"
#include "volumes.h"

/* a claimed request, until its checks end */
typedef struct st_snapcopy_t {
    gw_hold_t hold;            /* the client's request, until it is answered or its client goes (hold.h) */
    const gw_identity_t *id;   /* the caller's identity (identities are never freed) */
    gw_member_t *src, *dst;    /* source.location, ?target= */
    char *pool, *project;      /* the path's pool, ?project= ("default" when absent) */
    char *src_pool, *src_proj; /* source.pool, source.project (default: the same as the target's) */
    char *src_name, *snapshot; /* source.name, cut at its '/': the volume, the snapshot */
    json_t *volume;            /* what the target creates: name, type, config, description, content_type */
} snapcopy_t;

/* the request's `source.name` names a snapshot: "<volume>/<snapshot>" */
static int is_snapshot_name(const char *name)
{
    const char *slash = strchr(name, '/');
    return slash != NULL && slash != name;
}

static int claims(h2o_req_t *req, const gw_caller_t *caller)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) || gw_vol_pool_of(req) == NULL ||
        !gw_trust_is_client(caller))
        return 0;
    const char *target = gw_lxd_query(req, "target");
    json_t *body = gw_vol_body(req), *source = json_object_get(body, "source");
    int ours = target != NULL && *target != '\0' && strcmp(gw_vol_str(source, "type"), "copy") == 0 &&
               *gw_vol_str(source, "location") != '\0' && strcmp(gw_vol_str(source, "location"), target) != 0 &&
               is_snapshot_name(gw_vol_str(source, "name"));
    json_decref(body);
    return ours;
}

static void snapcopy_free(snapcopy_t *c)
{
    gw_hold_take(&c->hold); /* (the request, if still held, is not ours to answer any more) */
    free(c->pool), free(c->project), free(c->src_pool), free(c->src_proj), free(c->src_name), free(c->snapshot);
    json_decref(c->volume);
    free(c);
}

/* the caller gets `status` and `json` (borrowed), or LXD's error envelope of `msg` (json == NULL) */
static void refuse(snapcopy_t *c, long status, json_t *json, const char *msg)
{
    gw_metrics_single_call("volume_snapshot_copy", "refused");
    h2o_req_t *req = gw_hold_take(&c->hold);
    if (req != NULL) {
        if (json != NULL)
            gw_lxd_send_json(req, (int)status, json_incref(json));
        else
            gw_lxd_send_error(req, (int)status, "%s", msg != NULL ? msg : "Refused");
    }
    snapcopy_free(c);
}

/* the checks' outcome: begin, pass through, or refuse */
static void on_checked(void *data, const gw_vol_checked_t *r)
{
    snapcopy_t *c = data;
    switch (r->verdict) {
    case GW_VOL_REFUSED:
        return refuse(c, r->status, r->answer, NULL);
    case GW_VOL_TAKEN:
        return refuse(c, 409, NULL, "Volume by that name already exists");
    case GW_VOL_REMOTE: { /* a remote pool (ceph): every member sees it and LXD copies it itself */
        h2o_req_t *req = gw_hold_take(&c->hold);
        const gw_identity_t *id = c->id;
        snapcopy_free(c);
        if (req != NULL)
            gw_proxy_pass(req, id);
        return;
    }
    case GW_VOL_CHECKED:
        break;
    }
    h2o_req_t *req = gw_hold_take(&c->hold);
    if (req != NULL) {                                          /* (a client gone before anything was changed: nothing to do) */
        if (json_object_get(c->volume, "content_type") == NULL) /* LXD would assume filesystem: a block snapshot stays block */
            json_object_set(c->volume, "content_type", json_object_get(r->source, "content_type"));
        gw_move_spec_t spec = {.id = c->id,
                               .src = c->src,
                               .dst = c->dst,
                               .pool = c->src_pool,
                               .project = c->src_proj,
                               .name = c->src_name,
                               .snapshot = c->snapshot,
                               .dst_pool = c->pool,
                               .dst_project = c->project,
                               .dst_name = gw_vol_str(c->volume, "name"),
                               .volume = c->volume,
                               .temp_config = json_object_get(r->snapshot, "config")};
        gw_move_begin(req, &spec);
    }
    snapcopy_free(c);
}

static char *dup_or(const char *s, const char *dflt)
{
    return strdup(s != NULL && *s != '\0' ? s : dflt);
}

/* the checks that need no member; NULL or the error to answer (400) */
static const char *parse(snapcopy_t *c, h2o_req_t *req, json_t *body)
{
    json_t *source = json_object_get(body, "source");
    const char *name = gw_vol_str(body, "name"), *type = gw_vol_str(body, "type"), *project = gw_lxd_query(req, "project"),
               *from = gw_vol_str(source, "name"), *slash = strchr(from, '/');
    c->pool = strdup(gw_vol_pool_of(req));
    c->project = dup_or(project, "default");
    c->src_pool = dup_or(gw_vol_str(source, "pool"), c->pool);
    c->src_proj = dup_or(gw_vol_str(source, "project"), c->project);
    c->src_name = strndup(from, slash - from);
    c->snapshot = strdup(slash + 1);
    c->volume = gw_vol_new_volume(body);
    if (*name == '\0')
        return "No name provided";
    if (strchr(name, '/') != NULL)
        return "Storage volume names may not contain slashes";
    if (*type != '\0' && strcmp(type, "custom") != 0)
        return "Only custom storage volumes can be copied between cluster members";
    if (*c->snapshot == '\0' || strchr(c->snapshot, '/') != NULL)
        return "Invalid snapshot name: source.name must be <volume>/<snapshot>";
    if (json_is_true(json_object_get(source, "refresh")))
        return "A volume cannot be refreshed from a single snapshot";
    return NULL;
}

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    snapcopy_t *c = calloc(1, sizeof(*c));
    gw_hold_attach(&c->hold, req, NULL);
    c->id = caller->identity;
    json_t *body = gw_vol_body(req);
    const char *err = parse(c, req, body), *location = gw_vol_str(json_object_get(body, "source"), "location"),
               *target = gw_lxd_query(req, "target");
    int status = 400;
    char *msg = NULL;
    static const char *const names[] = {"pool", "project", "target", NULL};
    const char *values[] = {c->pool, c->project, target}, *bad = gw_vol_bad_text(names, values);
    if (bad != NULL) {
        msg = gw_text_format("The %s in the request is not valid UTF-8", bad);
        refuse(c, 400, NULL, msg);
    } else if (err != NULL) {
        refuse(c, 400, NULL, err);
    } else if ((c->src = gw_vol_member(location, "source.location", &status, &msg)) == NULL ||
               (c->dst = gw_vol_member(target, "target", &status, &msg)) == NULL) {
        refuse(c, status, NULL, msg);
    } else {
        gw_member_note(req, c->dst);
        gw_vol_check_spec_t spec = {.id = c->id,
                                    .src = c->src,
                                    .dst = c->dst,
                                    .src_pool = c->src_pool,
                                    .src_project = c->src_proj,
                                    .src_name = c->src_name,
                                    .src_snapshot = c->snapshot,
                                    .dst_pool = c->pool,
                                    .dst_project = c->project,
                                    .dst_name = gw_vol_str(c->volume, "name"),
                                    .not_moving = 1};
        gw_vol_check(&spec, on_checked, c);
    }
    free(msg);
    json_decref(body);
}

const gw_plugin_t gw_plugin_volume_snapshot_copy = {"volume_snapshot_copy", "storage_api_remote_volume_snapshot_copy", NULL, claims,
                                                    handle};
