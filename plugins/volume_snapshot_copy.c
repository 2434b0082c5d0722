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
#include "volume_move.h"
#include "volumes.h"

/* a claimed request, until its checks end */
typedef struct st_snapcopy_t {
    gw_hold_t hold;          /* the client's request, until it is answered or its client goes (hold.h) */
    const gw_identity_t *id; /* the caller's identity (identities are never freed) */
    gw_vol_copy_req_t r;     /* the request (volumes.h); r.src_name: source.name up to its '/', the volume */
    char *snapshot;          /* source.name after its '/' */
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
    gw_vol_copy_free(&c->r);
    free(c->snapshot);
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
    if (req != NULL) {                                            /* (a client gone before anything was changed: nothing to do) */
        if (json_object_get(c->r.volume, "content_type") == NULL) /* LXD would assume filesystem: a block snapshot stays block */
            json_object_set(c->r.volume, "content_type", json_object_get(r->source, "content_type"));
        gw_move_spec_t spec = {.id = c->id,
                               .src = c->r.src,
                               .dst = c->r.dst,
                               .pool = c->r.src_pool,
                               .project = c->r.src_proj,
                               .name = c->r.src_name,
                               .snapshot = c->snapshot,
                               .dst_pool = c->r.pool,
                               .dst_project = c->r.project,
                               .dst_name = gw_vol_str(c->r.volume, "name"),
                               .volume = c->r.volume,
                               .temp_config = json_object_get(r->snapshot, "config")};
        gw_move_begin(req, &spec);
    }
    snapcopy_free(c);
}

/* the checks of its own, after the copy's: r.src_name cut at its '/' into the volume and the snapshot; NULL or the error
 * to answer (400) */
static const char *split(snapcopy_t *c)
{
    char *slash = strchr(c->r.src_name, '/'); /* (claims: there is one, not first) */
    c->snapshot = strdup(slash + 1);
    *slash = '\0';
    if (*c->snapshot == '\0' || strchr(c->snapshot, '/') != NULL)
        return "Invalid snapshot name: source.name must be <volume>/<snapshot>";
    if (c->r.refresh)
        return "A volume cannot be refreshed from a single snapshot";
    return NULL;
}

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    snapcopy_t *c = calloc(1, sizeof(*c));
    gw_hold_attach(&c->hold, req, NULL);
    c->id = caller->identity;
    char *err = gw_vol_copy_parse(req, &c->r), *msg = NULL;
    const char *own = err == NULL ? split(c) : NULL;
    int status;
    if (err != NULL || own != NULL) {
        refuse(c, 400, NULL, err != NULL ? err : own);
    } else if ((status = gw_vol_copy_members(req, &c->r, &msg)) != 0) {
        refuse(c, status, NULL, msg);
    } else {
        gw_vol_check_spec_t spec = gw_vol_copy_spec(&c->r, c->id);
        spec.src_snapshot = c->snapshot, spec.not_moving = 1;
        gw_vol_check(&spec, on_checked, c);
    }
    free(err), free(msg);
}

const gw_plugin_t gw_plugin_volume_snapshot_copy = {"volume_snapshot_copy", "storage_api_remote_volume_snapshot_copy", NULL, claims,
                                                    handle};
