/*
 * volumes.c: see volumes.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lxd.h"
#include "operations.h"
#include "text.h"
#include "volumes.h"

/* the last request whose body was parsed, and its parse, until that request is gone (claims and handle run one after
 * the other, on one thread) */
static struct {
    h2o_req_t *req;
    json_t *body;
} parsed;

static void forget_parsed(void)
{
    json_decref(parsed.body);
    parsed.req = NULL, parsed.body = NULL;
}

static void on_parsed_req_dispose(void *data)
{
    if (*(h2o_req_t **)data == parsed.req)
        forget_parsed();
}

json_t *gw_vol_body(h2o_req_t *req)
{
    if (req->entity.base == NULL || req->entity.len > GW_VOL_MAX_BODY)
        return NULL;
    if (parsed.req == req)
        return json_incref(parsed.body);
    json_t *body = json_loadb(req->entity.base, req->entity.len, 0, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        body = NULL;
    }
    forget_parsed(); /* (another request's, not needed any more) */
    parsed.req = req, parsed.body = json_incref(body);
    *(h2o_req_t **)h2o_mem_alloc_shared(&req->pool, sizeof(h2o_req_t *), on_parsed_req_dispose) = req;
    return body;
}

const char *gw_vol_pool_of(h2o_req_t *req)
{
    static const char prefix[] = "/1.0/storage-pools/", suffix[] = "/volumes/custom";
    h2o_iovec_t p = req->path_normalized;
    if (memchr(p.base, '\0', p.len) != NULL)
        return NULL; /* a decoded %00 would cut the pool's name short: LXD judges such a path as it comes */
    if (p.len > 0 && p.base[p.len - 1] == '/')
        --p.len;
    if (p.len <= sizeof(prefix) - 1 + sizeof(suffix) - 1 || memcmp(p.base, prefix, sizeof(prefix) - 1) != 0 ||
        memcmp(p.base + p.len - (sizeof(suffix) - 1), suffix, sizeof(suffix) - 1) != 0)
        return NULL;
    h2o_iovec_t pool = h2o_iovec_init(p.base + sizeof(prefix) - 1, p.len - (sizeof(prefix) - 1) - (sizeof(suffix) - 1));
    if (memchr(pool.base, '/', pool.len) != NULL)
        return NULL;
    return h2o_strdup(&req->pool, pool.base, pool.len).base;
}

json_t *gw_vol_new_volume(json_t *body)
{
    json_t *v = json_pack("{s:s, s:s}", "name", gw_vol_str(body, "name"), "type", "custom");
    static const char *const kept[] = {"config", "description", "content_type"};
    for (size_t i = 0; i != sizeof(kept) / sizeof(kept[0]); ++i)
        if (json_object_get(body, kept[i]) != NULL && !json_is_null(json_object_get(body, kept[i])))
            json_object_set_new(v, kept[i], json_deep_copy(json_object_get(body, kept[i])));
    json_object_del(json_object_get(v, "config"), GW_VOL_MOVE_MARK); /* a running move's, never the new volume's */
    return v;
}

const char *gw_vol_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "";
}

gw_member_t *gw_vol_member(const char *name, const char *what, int *status, char **msg)
{
    gw_member_t *m = gw_members_find(name);
    if (m == NULL || !m->present) {
        *status = 404;
        *msg = gw_text_format("Cluster member not found: \"%s\" (%s)", name, what);
        return NULL;
    }
    if (!m->healthy) { /* (answering the gateway's probes; LXD's own status is not asked: it calls a member Offline for a
                        * late heartbeat round, and forwards to it all the same, as it does to an evacuated one) */
        *status = 503;
        *msg = gw_text_format("Cluster member \"%s\" (%s) is offline", name, what);
        return NULL;
    }
    return m;
}

const char *gw_vol_bad_text(const char *const *names, const char *const *values)
{
    for (size_t i = 0; names[i] != NULL; ++i)
        if (values[i] != NULL && !gw_text_is_utf8(values[i], strlen(values[i])))
            return names[i];
    return NULL;
}

void gw_vol_get(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project, gw_call_cb cb,
                void *data)
{
    char *path;
    if (name != NULL) {
        path = gw_lxd_volume_path(pool, name, project, m->name);
    } else {
        char *ep = curl_easy_escape(NULL, pool, 0), *em = curl_easy_escape(NULL, m->name, 0);
        if (asprintf(&path, "/1.0/storage-pools/%s?target=%s", ep, em) < 0)
            abort();
        curl_free(ep), curl_free(em);
    }
    gw_backend_call(m->url, id, "GET", path, NULL, 30000, cb, data);
    free(path);
}

void gw_vol_snapshot_get(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *snapshot,
                         const char *project, gw_call_cb cb, void *data)
{
    char *vol = gw_lxd_volume_path(pool, name, project, m->name), *query = strchr(vol, '?'),
         *snap = curl_easy_escape(NULL, snapshot, 0), *path;
    *query = '\0';
    if (asprintf(&path, "%s/snapshots/%s?%s", vol, snap, query + 1) < 0)
        abort();
    gw_backend_call(m->url, id, "GET", path, NULL, 30000, cb, data);
    curl_free(snap);
    free(vol), free(path);
}

void gw_vol_delete(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project, gw_call_cb cb,
                   void *data)
{
    char *path = gw_lxd_volume_path(pool, name, project, m->name);
    gw_backend_call(m->url, id, "DELETE", path, NULL, 60000, cb, data);
    free(path);
}

void gw_vol_patch(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project,
                  const char *body, gw_call_cb cb, void *data)
{
    char *path = gw_lxd_volume_path(pool, name, project, m->name);
    gw_backend_call(m->url, id, "PATCH", path, body, 30000, cb, data);
    free(path);
}

/* ---- gw_vol_check: three GETs, in this order ---- */

typedef enum {
    CHECK_SOURCE,   /* GET the source volume on its member */
    CHECK_SNAPSHOT, /* GET the source snapshot there (src_snapshot only) */
    CHECK_POOL,     /* GET the target pool on the target member */
    CHECK_NAME,     /* GET the target's name there: 404 "Storage volume not found" is the answer wanted */
} check_state_t;

typedef struct st_check_t {
    check_state_t state;
    gw_vol_check_spec_t spec; /* the strings are copies (below) */
    char *strings[7];         /* src_pool, src_project, src_name, dst_pool, dst_project, dst_name, src_snapshot */
    json_t *source;           /* the source volume, once read */
    json_t *snapshot;         /* the source snapshot, once read */
    gw_vol_check_cb cb;
    void *data;
} check_t;

static void check_end(check_t *c, gw_vol_checked_t *r)
{
    c->cb(c->data, r);
    for (size_t i = 0; i != 7; ++i)
        free(c->strings[i]);
    json_decref(c->source);
    json_decref(c->snapshot);
    free(c);
}

static void check_refused(check_t *c, long status, json_t *answer)
{
    gw_vol_checked_t r = {GW_VOL_REFUSED, status, answer, NULL, NULL};
    check_end(c, &r);
}

/* the one function every answer of a check comes to */
static void check_advance(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    check_t *c = data;
    const gw_vol_check_spec_t *s = &c->spec;
    if (err != NULL || !json_is_object(json)) { /* no answer (or not LXD's): the caller learns which member */
        char *msg = gw_text_format("Cluster member did not answer: %s", err != NULL ? err : "not JSON");
        json_t *answer = gw_lxd_error_json(502, msg);
        free(msg);
        check_refused(c, 502, answer);
        json_decref(answer);
        return;
    }
    switch (c->state) {
    case CHECK_SOURCE:
        if (status != 200)
            return check_refused(c, status, json); /* not found, not allowed, no such project... as LXD says it */
        c->source = json_incref(json_object_get(json, "metadata"));
        const char *mover = json_string_value(json_object_get(json_object_get(c->source, "config"), GW_VOL_MOVE_MARK));
        if (s->not_moving && mover != NULL && gw_ops_is_running(mover)) { /* one move of a volume at a time */
            char *msg = gw_text_format("The volume is being moved by operation %s", mover);
            json_t *answer = gw_lxd_error_json(409, msg);
            free(msg);
            check_refused(c, 409, answer);
            json_decref(answer);
            return;
        }
        if (*gw_vol_str(c->source, "location") == '\0') { /* a remote pool */
            gw_vol_checked_t r = {GW_VOL_REMOTE, 0, NULL, c->source, NULL};
            return check_end(c, &r);
        }
        if (s->src_snapshot != NULL) {
            c->state = CHECK_SNAPSHOT;
            gw_vol_snapshot_get(s->src, s->id, s->src_pool, s->src_name, s->src_snapshot, s->src_project, check_advance, c);
            return;
        }
        c->state = CHECK_POOL;
        gw_vol_get(s->dst, s->id, s->dst_pool, NULL, s->dst_project, check_advance, c);
        return;
    case CHECK_SNAPSHOT:
        if (status != 200)
            return check_refused(c, status, json); /* no such snapshot, as LXD says it */
        c->snapshot = json_incref(json_object_get(json, "metadata"));
        c->state = CHECK_POOL;
        gw_vol_get(s->dst, s->id, s->dst_pool, NULL, s->dst_project, check_advance, c);
        return;
    case CHECK_POOL:
        if (status != 200)
            return check_refused(c, status, json);
        c->state = CHECK_NAME;
        gw_vol_get(s->dst, s->id, s->dst_pool, s->dst_name, s->dst_project, check_advance, c);
        return;
    case CHECK_NAME:
        if (status == 200 && !s->may_exist) {
            gw_vol_checked_t r = {GW_VOL_TAKEN, 409, NULL, c->source, c->snapshot};
            return check_end(c, &r);
        }
        if (status == 200 || (status == 404 && strcmp(gw_vol_str(json, "error"), "Storage volume not found") == 0)) {
            gw_vol_checked_t r = {GW_VOL_CHECKED, 0, NULL, c->source, c->snapshot};
            return check_end(c, &r);
        }
        return check_refused(c, status, json); /* no such project, not allowed, ... */
    }
}

void gw_vol_check(const gw_vol_check_spec_t *spec, gw_vol_check_cb cb, void *data)
{
    check_t *c = calloc(1, sizeof(*c));
    c->spec = *spec;
    const char *const from[7] = {spec->src_pool,    spec->src_project, spec->src_name,    spec->dst_pool,
                                 spec->dst_project, spec->dst_name,    spec->src_snapshot};
    for (size_t i = 0; i != 7; ++i)
        c->strings[i] = from[i] != NULL ? strdup(from[i]) : NULL;
    c->spec.src_pool = c->strings[0], c->spec.src_project = c->strings[1], c->spec.src_name = c->strings[2];
    c->spec.dst_pool = c->strings[3], c->spec.dst_project = c->strings[4], c->spec.dst_name = c->strings[5];
    c->spec.src_snapshot = c->strings[6];
    c->cb = cb, c->data = data;
    c->state = CHECK_SOURCE;
    gw_vol_get(spec->src, spec->id, spec->src_pool, spec->src_name, spec->src_project, check_advance, c);
}

/* ---- a copy request ---- */

static char *dup_or(const char *s, const char *dflt)
{
    return strdup(s != NULL && *s != '\0' ? s : dflt);
}

char *gw_vol_copy_parse(h2o_req_t *req, gw_vol_copy_req_t *r)
{
    json_t *body = gw_vol_body(req), *source = json_object_get(body, "source");
    const char *name = gw_vol_str(body, "name"), *type = gw_vol_str(body, "type"), *project = gw_lxd_query(req, "project");
    r->pool = strdup(gw_vol_pool_of(req));
    r->project = dup_or(project, "default");
    r->src_pool = dup_or(gw_vol_str(source, "pool"), r->pool);
    r->src_proj = dup_or(gw_vol_str(source, "project"), r->project);
    r->src_name = strdup(gw_vol_str(source, "name"));
    r->volume_only = json_is_true(json_object_get(source, "volume_only"));
    r->refresh = json_is_true(json_object_get(source, "refresh"));
    r->volume = gw_vol_new_volume(body);
    json_decref(body);
    static const char *const names[] = {"pool", "project", "target", NULL};
    const char *values[] = {r->pool, r->project, gw_lxd_query(req, "target")}, *bad = gw_vol_bad_text(names, values);
    if (bad != NULL)
        return gw_text_format("The %s in the request is not valid UTF-8", bad);
    const char *err = *name == '\0'               ? "No name provided"
                      : strchr(name, '/') != NULL ? "Storage volume names may not contain slashes"
                      : *type != '\0' && strcmp(type, "custom") != 0
                          ? "Only custom storage volumes can be copied between cluster members"
                      : *r->src_name == '\0' ? "No source volume name supplied"
                                             : NULL;
    return err != NULL ? strdup(err) : NULL;
}

int gw_vol_copy_members(h2o_req_t *req, gw_vol_copy_req_t *r, char **msg)
{
    json_t *body = gw_vol_body(req);
    int status = 0;
    if ((r->src = gw_vol_member(gw_vol_str(json_object_get(body, "source"), "location"), "source.location", &status, msg)) !=
            NULL &&
        (r->dst = gw_vol_member(gw_lxd_query(req, "target"), "target", &status, msg)) != NULL) {
        gw_member_note(req, r->dst);
        status = 0;
    }
    json_decref(body);
    return status;
}

gw_vol_check_spec_t gw_vol_copy_spec(const gw_vol_copy_req_t *r, const gw_identity_t *id)
{
    return (gw_vol_check_spec_t){.id = id,
                                 .src = r->src,
                                 .dst = r->dst,
                                 .src_pool = r->src_pool,
                                 .src_project = r->src_proj,
                                 .src_name = r->src_name,
                                 .dst_pool = r->pool,
                                 .dst_project = r->project,
                                 .dst_name = gw_vol_str(r->volume, "name")};
}

void gw_vol_copy_free(gw_vol_copy_req_t *r)
{
    free(r->pool), free(r->project), free(r->src_pool), free(r->src_proj), free(r->src_name);
    json_decref(r->volume);
}
