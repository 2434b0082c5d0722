/*
 * migrate.c: see migrate.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"
#include "text.h"
#include "log.h"
#include "lxd.h"
#include "migrate.h"
#include "tls.h"

#define STEP_TIMEOUT_MS 30000 /* each step's POST answers at once (the transfer runs in the target's operation) */

static char *cluster_pem; /* the cluster certificate, sent in step 2 */

typedef struct st_migrate_t {
    gw_migrate_spec_t spec; /* strings and dst_volume owned */
    char *src_op;           /* id of the step-1 operation */
    json_t *secrets;        /* its websocket secrets */
    gw_migrate_cb cb;
    void *data;
} migrate_t;

const char *gw_migrate_init(const char *file)
{
    const char *err = NULL;
    free(cluster_pem);
    cluster_pem = gw_tls_cert_pem(file, &err);
    return cluster_pem != NULL ? NULL : err;
}

static void finish(migrate_t *mg, const char *err, long status, json_t *answer, const char *location)
{
    mg->cb(mg->data, err, status, answer, location);
    free((char *)mg->spec.src_pool), free((char *)mg->spec.src_project), free((char *)mg->spec.src_name);
    free((char *)mg->spec.dst_pool), free((char *)mg->spec.dst_project);
    json_decref(mg->spec.dst_volume);
    free(mg->src_op);
    json_decref(mg->secrets);
    free(mg);
}

/* one websocket of an abandoned migration source, connected only to be closed */
typedef struct st_hangup_t {
    CURL *easy;
    struct curl_slist *headers;
    gw_backend_done_t done;
} hangup_t;

static void on_hangup_done(void *data, CURLcode result)
{
    hangup_t *h = data;
    (void)result; /* it ends by our timeout: the member answered 101 and waits for a peer that closes */
    gw_backend_stop(h->easy);
    curl_easy_cleanup(h->easy);
    curl_slist_free_all(h->headers);
    free(h);
}

/*
 * LXD 5.0.2 refuses to cancel a migration source ("This operation can't be cancelled") and waits 10 s for its
 * sink. Connecting to its websockets and hanging up makes it fail at once ("unexpected EOF"): it has only read.
 */
static void hang_up(const gw_migrate_spec_t *spec, const char *op, json_t *secrets)
{
    const char *name;
    json_t *secret;
    json_object_foreach(secrets, name, secret)
    {
        if (!json_is_string(secret))
            continue;
        hangup_t *h = calloc(1, sizeof(*h));
        char *url = gw_text_dupf("%s/1.0/operations/%s/websocket?secret=%s", spec->src->url, op, json_string_value(secret));
        h->easy = gw_backend_easy(spec->id);
        h->headers = curl_slist_append(h->headers, "Connection: Upgrade");
        h->headers = curl_slist_append(h->headers, "Upgrade: websocket");
        h->headers = curl_slist_append(h->headers, "Sec-WebSocket-Version: 13");
        h->headers = curl_slist_append(h->headers, "Sec-WebSocket-Key: bHhkLWdhdGV3YXktaGFuZw==");
        curl_easy_setopt(h->easy, CURLOPT_URL, url); /* libcurl copies it */
        free(url);
        curl_easy_setopt(h->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1); /* no websockets over h2 */
        curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->headers);
        curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, 1000L);
        h->done = (gw_backend_done_t){on_hangup_done, h};
        gw_backend_start(h->easy, &h->done);
    }
}

typedef struct st_cancel_t {
    gw_migrate_spec_t spec; /* id and src only */
    char *op;
    json_t *secrets;
} cancel_t;

static void on_source_cancelled(void *data, const char *err, long status, json_t *json)
{
    cancel_t *c = data;
    if (err == NULL && status / 100 == 2) {
        gw_log(GW_LOG_INFO, "migration source cancelled", "operation", c->op, NULL);
    } else {
        const char *why = err != NULL ? err : json_string_value(json_object_get(json, "error"));
        gw_log(GW_LOG_INFO, "migration source not cancellable: hanging up its websockets", "operation", c->op, "reason",
               why != NULL ? why : "-", NULL);
        hang_up(&c->spec, c->op, c->secrets);
    }
    json_decref(c->secrets);
    free(c->op);
    free(c);
}

/* step 2 failed: the step-1 operation must not wait for a sink that will never come */
static void cancel_source(migrate_t *mg)
{
    cancel_t *c = calloc(1, sizeof(*c));
    c->spec.id = mg->spec.id;
    c->spec.src = mg->spec.src;
    c->op = strdup(mg->src_op);
    c->secrets = json_incref(mg->secrets);
    char *path = gw_text_dupf("/1.0/operations/%s", mg->src_op);
    gw_backend_call(mg->spec.src->url, mg->spec.id, "DELETE", path, NULL, STEP_TIMEOUT_MS, on_source_cancelled, c);
    free(path);
}

/* step 2 answered */
static void on_target(void *data, const char *err, long status, json_t *json)
{
    migrate_t *mg = data;
    if (err != NULL || status / 100 != 2) {
        if (mg->spec.relay != NULL && *mg->spec.relay != NULL) {
            gw_relay_close(*mg->spec.relay);
            *mg->spec.relay = NULL;
        }
        gw_log(GW_LOG_WARN, "migration sink refused", "member", mg->spec.dst->name, "source_operation", mg->src_op, "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
        cancel_source(mg);
    }
    finish(mg, err, status, json, err == NULL ? gw_backend_header("Location") : NULL);
}

static void start_target(migrate_t *mg, json_t *secrets)
{
    char *path = gw_lxd_volume_path(mg->spec.dst_pool, NULL, mg->spec.dst_project, mg->spec.dst->name), *opurl;
    if (asprintf(&opurl, "%s/1.0/operations/%s", mg->spec.src->url, mg->src_op) < 0)
        abort();
    const char *cert = cluster_pem;
    if (mg->spec.relay != NULL && gw_relay_available()) { /* the target pulls through the gateway, which can cut it */
        *mg->spec.relay = gw_relay_open(mg->spec.src, mg->spec.id, mg->src_op, secrets);
        free(opurl);
        opurl = strdup(gw_relay_url(*mg->spec.relay));
        secrets = gw_relay_secrets(*mg->spec.relay);
        cert = gw_relay_certificate();
    }
    json_t *body = json_deep_copy(mg->spec.dst_volume);
    json_object_set_new(body, "source",
                        json_pack("{s:s, s:s, s:s, s:s, s:O, s:b, s:b}", "type", "migration", "mode", "pull", "operation", opurl,
                                  "certificate", cert, "secrets", secrets, "volume_only", mg->spec.volume_only, "refresh",
                                  mg->spec.refresh));
    char *text = json_dumps(body, JSON_COMPACT);
    gw_backend_call(mg->spec.dst->url, mg->spec.id, "POST", path, text, STEP_TIMEOUT_MS, on_target, mg);
    free(text);
    json_decref(body);
    free(opurl);
    free(path);
}

/* step 1 answered: a websocket operation with the secrets, or an error */
static void on_source(void *data, const char *err, long status, json_t *json)
{
    migrate_t *mg = data;
    json_t *op = json_object_get(json, "metadata"), *secrets = json_object_get(op, "metadata");
    const char *id = json_string_value(json_object_get(op, "id"));
    if (err != NULL || status != 202) {
        finish(mg, err, status, json, NULL);
        return;
    }
    if (id == NULL || !json_is_object(secrets) || json_object_get(secrets, "control") == NULL) {
        finish(mg, "the source member's migration operation has no secrets", 0, NULL, NULL);
        return;
    }
    mg->src_op = strdup(id);
    mg->secrets = json_incref(secrets);
    start_target(mg, secrets);
}

void gw_migrate_start(const gw_migrate_spec_t *spec, gw_migrate_cb cb, void *data)
{
    migrate_t *mg = calloc(1, sizeof(*mg));
    mg->spec = *spec;
    mg->spec.src_pool = strdup(spec->src_pool);
    mg->spec.src_project = strdup(spec->src_project);
    mg->spec.src_name = strdup(spec->src_name);
    mg->spec.dst_pool = strdup(spec->dst_pool);
    mg->spec.dst_project = strdup(spec->dst_project);
    mg->spec.dst_volume = json_deep_copy(spec->dst_volume);
    mg->cb = cb;
    mg->data = data;
    /* LXD 4.0/5.0 refuse it without `name`; `project` in the body would mean a move to another project */
    json_t *body = json_pack("{s:s, s:s, s:b, s:b}", "name", spec->src_name, "pool", spec->src_pool, "migration", 1, "volume_only",
                             spec->volume_only);
    char *text = json_dumps(body, JSON_COMPACT),
         *path = gw_lxd_volume_path(spec->src_pool, spec->src_name, spec->src_project, spec->src->name);
    gw_backend_call(spec->src->url, spec->id, "POST", path, text, STEP_TIMEOUT_MS, on_source, mg);
    free(path);
    free(text);
    json_decref(body);
}
