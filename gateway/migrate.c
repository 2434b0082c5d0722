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

/* the steps, in order; the caller is called back at the end of MG_TARGET (or of MG_SOURCE when it fails) */
typedef enum {
    MG_SOURCE,        /* step 1: POST to the source volume (`migration: true`): a websocket operation and its secrets */
    MG_TARGET,        /* step 2: POST to the target pool, pulling from step 1's operation: the transfer operation */
    MG_CANCEL_SOURCE, /* step 2 failed: DELETE of step 1's operation (LXD 5.0.2 refuses it) */
    MG_DONE,
} migrate_state_t;

typedef struct st_migrate_t {
    migrate_state_t state;  /* the step whose call is in flight */
    gw_migrate_spec_t spec; /* strings and dst_volume owned */
    char *src_op;           /* id of the step-1 operation */
    json_t *secrets;        /* its websocket secrets */
    gw_migrate_cb cb;       /* NULL once called */
    void *data;
} migrate_t;

const char *gw_migrate_init(const char *file)
{
    const char *err = NULL;
    free(cluster_pem);
    cluster_pem = gw_tls_cert_pem(file, &err);
    return cluster_pem != NULL ? NULL : err;
}

/* the caller learns the outcome (once) */
static void tell(migrate_t *mg, const char *err, long status, json_t *answer, const char *location)
{
    gw_migrate_cb cb = mg->cb;
    mg->cb = NULL;
    cb(mg->data, err, status, answer, location);
}

static void migrate_free(migrate_t *mg)
{
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

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call);

/* step 2's call: the target pulls from step 1's operation (through the gateway's relay when asked: it can cut it) */
static void post_target(migrate_t *mg)
{
    char *path = gw_lxd_volume_path(mg->spec.dst_pool, NULL, mg->spec.dst_project, mg->spec.dst->name), *opurl;
    if (asprintf(&opurl, "%s/1.0/operations/%s", mg->spec.src->url, mg->src_op) < 0)
        abort();
    const char *cert = cluster_pem;
    json_t *secrets = mg->secrets;
    if (mg->spec.relay != NULL && gw_relay_available()) {
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
    gw_backend_call(mg->spec.dst->url, mg->spec.id, "POST", path, text, STEP_TIMEOUT_MS, on_answer, mg);
    free(text);
    json_decref(body);
    free(opurl);
    free(path);
}

/* the one function every answer comes to */
static void advance(migrate_t *mg, const char *err, long status, json_t *json, const gw_call_t *call)
{
    switch (mg->state) {
    case MG_SOURCE: { /* a websocket operation with the secrets, or an error */
        json_t *op = json_object_get(json, "metadata"), *secrets = json_object_get(op, "metadata");
        const char *id = json_string_value(json_object_get(op, "id"));
        if (err != NULL || status != 202) {
            tell(mg, err, status, json, NULL);
            break;
        }
        if (id == NULL || !json_is_object(secrets) || json_object_get(secrets, "control") == NULL) {
            tell(mg, "the source member's migration operation has no secrets", 0, NULL, NULL);
            break;
        }
        mg->src_op = strdup(id);
        mg->secrets = json_incref(secrets);
        mg->state = MG_TARGET; /* at once: the source waits only 10 s for its sink */
        post_target(mg);
        return;
    }
    case MG_TARGET:
        if (err == NULL && status / 100 == 2) {
            tell(mg, NULL, status, json, gw_call_header(call, "Location"));
            break;
        }
        if (mg->spec.relay != NULL && *mg->spec.relay != NULL) {
            gw_relay_close(*mg->spec.relay);
            *mg->spec.relay = NULL;
        }
        gw_log(GW_LOG_WARN, "migration sink refused", "member", mg->spec.dst->name, "source_operation", mg->src_op, "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
        tell(mg, err, status, json, NULL);
        /* the step-1 operation must not wait for a sink that will never come */
        mg->state = MG_CANCEL_SOURCE;
        char *path = gw_text_dupf("/1.0/operations/%s", mg->src_op);
        gw_backend_call(mg->spec.src->url, mg->spec.id, "DELETE", path, NULL, STEP_TIMEOUT_MS, on_answer, mg);
        free(path);
        return;
    case MG_CANCEL_SOURCE:
        if (err == NULL && status / 100 == 2) {
            gw_log(GW_LOG_INFO, "migration source cancelled", "operation", mg->src_op, NULL);
        } else {
            const char *why = err != NULL ? err : json_string_value(json_object_get(json, "error"));
            gw_log(GW_LOG_INFO, "migration source not cancellable: hanging up its websockets", "operation", mg->src_op, "reason",
                   why != NULL ? why : "-", NULL);
            hang_up(&mg->spec, mg->src_op, mg->secrets);
        }
        break;
    case MG_DONE:
        abort();
    }
    mg->state = MG_DONE;
    migrate_free(mg);
}

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    advance(data, err, status, json, call);
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
    mg->state = MG_SOURCE;
    mg->cb = cb;
    mg->data = data;
    /* LXD 4.0/5.0 refuse it without `name`; `project` in the body would mean a move to another project */
    json_t *body = json_pack("{s:s, s:s, s:b, s:b}", "name", spec->src_name, "pool", spec->src_pool, "migration", 1, "volume_only",
                             spec->volume_only);
    char *text = json_dumps(body, JSON_COMPACT),
         *path = gw_lxd_volume_path(spec->src_pool, spec->src_name, spec->src_project, spec->src->name);
    gw_backend_call(spec->src->url, spec->id, "POST", path, text, STEP_TIMEOUT_MS, on_answer, mg);
    free(path);
    free(text);
    json_decref(body);
}
