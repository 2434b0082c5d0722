/*
 * volumes.c: see volumes.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lxd.h"
#include "text.h"
#include "volumes.h"

json_t *gw_vol_body(h2o_req_t *req)
{
    if (req->entity.base == NULL || req->entity.len > GW_VOL_MAX_BODY)
        return NULL;
    json_t *body = json_loadb(req->entity.base, req->entity.len, 0, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return NULL;
    }
    return body;
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
    if (!m->online || !m->healthy) {
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

void gw_vol_delete(gw_member_t *m, const gw_identity_t *id, const char *pool, const char *name, const char *project, gw_call_cb cb,
                   void *data)
{
    char *path = gw_lxd_volume_path(pool, name, project, m->name);
    gw_backend_call(m->url, id, "DELETE", path, NULL, 60000, cb, data);
    free(path);
}
