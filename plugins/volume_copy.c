/*
 * volume_copy.c: the single-call copy of a custom volume from one cluster member to another
 * (API extension `cluster_internal_custom_volume_copy`, LXD 5.20).
 *
 * Claims `POST /1.0/storage-pools/<pool>/volumes/custom?target=<dst>` whose body has `source.type: copy` and a
 * `source.location` naming another member. Everything else passes through: no `target`, no `location`, the same
 * member on both sides (LXD copies locally), and volumes on remote pools (ceph: every member sees them, LXD copies).
 *
 * request -> parse -> the members named -> gw_vol_check (volumes.h: source volume, target pool, name free on the
 * target) -> migrate.h (step 1 on the source, step 2 on the target) -> the target's operation, as natively. Nothing touches a
 * member before every check passed; the checks and both steps run with the caller's identity, so LXD refuses what it would refuse
 * natively.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hold.h"
#include "log.h"
#include "lxd.h"
#include "text.h"
#include "metrics.h"
#include "migrate.h"
#include "plugin.h"
#include "proxy.h"
#include "volumes.h"

/* a claimed request, malloc'd: the copy goes on when the client leaves after step 1 was sent */
typedef struct st_copy_t {
    gw_hold_t hold;          /* the client's request, until it is answered or its client goes (hold.h) */
    const gw_identity_t *id; /* the caller's identity (identities are never freed) */
    gw_vol_copy_req_t r;     /* the request (volumes.h) */
} copy_t;

static int claims(h2o_req_t *req, const gw_caller_t *caller)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) || gw_vol_pool_of(req) == NULL)
        return 0;
    if (!gw_trust_is_client(caller))
        return 0; /* LXD refuses them: let it say so */
    const char *target = gw_lxd_query(req, "target");
    json_t *body = gw_vol_body(req), *source = json_object_get(body, "source");
    int ours = target != NULL && *target != '\0' && strcmp(gw_vol_str(source, "type"), "copy") == 0 &&
               *gw_vol_str(source, "location") != '\0' && strcmp(gw_vol_str(source, "location"), target) != 0;
    json_decref(body);
    return ours;
}

static void copy_free(copy_t *c)
{
    gw_hold_take(&c->hold); /* (the request, if still held, is not ours to answer any more) */
    gw_vol_copy_free(&c->r);
    free(c);
}

/* answers the client (if still there) with `status` and `json` (borrowed), then ends the copy */
static void answer(copy_t *c, long status, json_t *json, const char *location)
{
    gw_metrics_single_call("volume_copy", status == 202 ? "started" : "refused");
    h2o_req_t *req = gw_hold_take(&c->hold);
    if (req != NULL) {
        if (location != NULL)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, h2o_strdup(&req->pool, location, SIZE_MAX).base,
                           strlen(location));
        gw_lxd_send_json(req, (int)status, json_incref(json));
    }
    copy_free(c);
}

static void refuse(copy_t *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(copy_t *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = gw_text_vformat(fmt, ap);
    va_end(ap);
    json_t *j = gw_lxd_error_json(status, msg);
    free(msg);
    answer(c, status, j, NULL);
    json_decref(j);
}

/* the caller gets a member's answer as it is (an error, or step 2's operation) */
static void relay(copy_t *c, const char *err, long status, json_t *json, const char *location)
{
    if (err != NULL || !json_is_object(json))
        refuse(c, 502, "Cluster member did not answer: %s", err != NULL ? err : "not JSON");
    else
        answer(c, status, json, location);
}

static void on_migrated(void *data, const char *err, long status, json_t *json, const char *location)
{
    copy_t *c = data;
    const char *op = json_string_value(json_object_get(json_object_get(json, "metadata"), "id"));
    if (err == NULL && status == 202)
        gw_log(GW_LOG_INFO, "volume copy started", "pool", c->r.pool, "volume", gw_vol_str(c->r.volume, "name"), "from",
               c->r.src->name, "to", c->r.dst->name, "operation", op != NULL ? op : "-", NULL);
    relay(c, err, status, json, location);
}

/* checks passed: steps 1 and 2 */
static void start(copy_t *c)
{
    if (gw_hold_req(&c->hold) == NULL) { /* the client left before anything was changed: nothing to do */
        copy_free(c);
        return;
    }
    gw_migrate_spec_t spec = {c->id,     c->r.src,     c->r.dst,    c->r.src_pool,    c->r.src_proj, c->r.src_name,
                              c->r.pool, c->r.project, c->r.volume, c->r.volume_only, c->r.refresh,  NULL};
    gw_migrate_start(&spec, on_migrated, c);
}

/* the checks' outcome: go on, pass through, or refuse */
static void on_checked(void *data, const gw_vol_checked_t *r)
{
    copy_t *c = data;
    switch (r->verdict) {
    case GW_VOL_REFUSED:
        answer(c, r->status, r->answer, NULL);
        return;
    case GW_VOL_TAKEN:
        refuse(c, 409, "Volume by that name already exists");
        return;
    case GW_VOL_REMOTE: { /* a remote pool (ceph): every member sees it and LXD copies it itself */
        h2o_req_t *req = gw_hold_take(&c->hold);
        const gw_identity_t *id = c->id;
        copy_free(c);
        if (req != NULL)
            gw_proxy_pass(req, id);
        return;
    }
    case GW_VOL_CHECKED:
        if (json_object_get(c->r.volume, "content_type") == NULL) /* LXD would assume filesystem: keep a block volume block */
            json_object_set(c->r.volume, "content_type", json_object_get(r->source, "content_type"));
        start(c);
        return;
    }
}

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    copy_t *c = calloc(1, sizeof(*c));
    gw_hold_attach(&c->hold, req, NULL); /* (the copy goes on if the client leaves after step 1 was sent) */
    c->id = caller->identity;
    char *err = gw_vol_copy_parse(req, &c->r), *msg = NULL;
    int status;
    if (err == NULL && strchr(c->r.src_name, '/') != NULL) /* (volume_snapshot_copy.c claims these while the cluster lacks it) */
        err =
            strdup("Copying a single snapshot to another cluster member needs LXD 5.0.3 or later "
                   "(storage_api_remote_volume_snapshot_copy), which this cluster lacks: copy the volume (its snapshots come with "
                   "it), or first copy the snapshot to a new volume on its own member");
    if (err != NULL) {
        refuse(c, 400, "%s", err);
    } else if ((status = gw_vol_copy_members(req, &c->r, &msg)) != 0) {
        refuse(c, status, "%s", msg);
    } else {
        gw_vol_check_spec_t spec = gw_vol_copy_spec(&c->r, c->id);
        spec.may_exist = c->r.refresh;
        gw_vol_check(&spec, on_checked, c);
    }
    free(err), free(msg);
}

static const char *init(const gw_config_t *conf, h2o_context_t *ctx)
{
    (void)ctx;
    return gw_migrate_init(conf->cluster_certificate);
}

const gw_plugin_t gw_plugin_volume_copy = {"volume_copy", "cluster_internal_custom_volume_copy", init, claims, handle};
