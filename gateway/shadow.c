/*
 * shadow.c: identity choice and shadow identities (see shadow.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/sha.h>
#include "backend.h"
#include "log.h"
#include "members.h"
#include "shadow.h"

#define MAX_SHADOWS (GW_IDENTITY_MAX - GW_IDENTITY_NUM_STATIC)
#define UNUSED_GRACE_MS 30000 /* a shadow no client needs is removed after this long (clients come and go) */
#define MIRROR_LAG_MS 10000   /* a mirror read may predate a shadow's creation by this much */

typedef enum en_state_t { S_ABSENT, S_CREATING, S_READY } state_t;

typedef struct st_shadow_t {
    gw_identity_t super;                      /* what requests are sent with; never freed (requests may hold it) */
    char *key;                                /* "restricted:<projects>" or "metrics" */
    char *projects;                           /* the project set (restricted); NULL for metrics */
    char fingerprint[GW_FINGERPRINT_LEN + 1]; /* of its certificate */
    char *cert_b64;                           /* its certificate, base64 DER, as POST /1.0/certificates takes it */
    state_t state;
    h2o_linklist_t waiters;  /* requests waiting for S_READY */
    uint64_t unneeded_since; /* h2o_now() since when no client needs it; 0 = needed */
    uint64_t trusted_at;     /* h2o_now() when the cluster accepted it (a mirror read may lag) */
    int busy;                /* a trust-store call is in flight */
} shadow_t;

typedef struct st_waiter_t {
    h2o_linklist_t link;
    h2o_req_t *req;
    gw_caller_t *caller;
    gw_shadow_ready_cb ready;
} waiter_t;

static struct {
    char *dir; /* state_dir/shadows */
    shadow_t *list[MAX_SHADOWS];
    size_t num;
    h2o_loop_t *loop;
} S;

static void hex12(const char *s, char out[13])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), md);
    for (int i = 0; i != 6; ++i)
        sprintf(out + i * 2, "%02x", md[i]);
}

/* loads (or makes) the key pair of `sh` in S.dir; fills fingerprint and cert_b64 */
static const char *load_pair(shadow_t *sh)
{
    char base[13], crt[4096], key[4096];
    const char *err = NULL;
    hex12(sh->key, base);
    snprintf(crt, sizeof(crt), "%s/%s.crt", S.dir, base);
    snprintf(key, sizeof(key), "%s/%s.key", S.dir, base);
    if ((access(crt, R_OK) != 0 || access(key, R_OK) != 0) && (err = gw_tls_write_pair(crt, key, sh->key, NULL, 0)) != NULL)
        return err;
    X509 *cert = gw_tls_read_cert(crt, &err);
    if (cert == NULL)
        return err;
    gw_tls_fingerprint(cert, sh->fingerprint);
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    sh->cert_b64 = malloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)sh->cert_b64, der, len);
    OPENSSL_free(der);
    X509_free(cert);
    sh->super.cert_file = strdup(crt);
    sh->super.key_file = strdup(key);
    return gw_identity_setup(&sh->super);
}

static shadow_t *find(const char *key)
{
    for (size_t i = 0; i != S.num; ++i)
        if (strcmp(S.list[i]->key, key) == 0)
            return S.list[i];
    return NULL;
}

static shadow_t *get(const char *key, const char *projects)
{
    shadow_t *sh = find(key);
    if (sh != NULL || S.num == MAX_SHADOWS)
        return sh;
    sh = calloc(1, sizeof(*sh));
    sh->key = strdup(key);
    sh->projects = projects != NULL ? strdup(projects) : NULL;
    sh->super.name = sh->key;
    sh->super.index = GW_IDENTITY_NUM_STATIC + S.num;
    h2o_linklist_init_anchor(&sh->waiters);
    const char *err = load_pair(sh);
    if (err != NULL) {
        gw_log(GW_LOG_ERROR, "shadow identity unusable", "shadow", key, "err", err, NULL);
        free(sh->key);
        free(sh->projects);
        free(sh);
        return NULL;
    }
    S.list[S.num++] = sh;
    return sh;
}

static void wake(shadow_t *sh, int ok)
{
    while (!h2o_linklist_is_empty(&sh->waiters)) {
        waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, link, sh->waiters.next);
        h2o_linklist_unlink(&w->link);
        w->caller->identity = ok ? &sh->super : NULL;
        w->ready(w->req, w->caller);
    }
}

/* the body that makes the cluster trust shadow `sh` */
static char *trust_body(shadow_t *sh, int with_cert)
{
    char name[512];
    snprintf(name, sizeof(name), "lxd-gateway:%s", sh->projects != NULL ? sh->projects : "metrics");
    json_t *projects = json_array();
    if (sh->projects != NULL) {
        char *copy = strdup(sh->projects), *save = NULL;
        for (char *p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save))
            json_array_append_new(projects, json_string(p));
        free(copy);
    }
    json_t *j = json_pack("{s:s, s:s, s:b, s:o}", "name", name, "type", sh->projects != NULL ? "client" : "metrics", "restricted",
                          sh->projects != NULL, "projects", projects);
    if (with_cert)
        json_object_set_new(j, "certificate", json_string(sh->cert_b64));
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return body;
}

static void on_updated(void *data, const char *err, long status, json_t *json)
{
    shadow_t *sh = data;
    sh->busy = 0;
    int ok = err == NULL && status / 100 == 2;
    if (!ok)
        gw_log(GW_LOG_ERROR, "shadow identity not trusted by the cluster", "shadow", sh->key, "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
    else
        gw_log(GW_LOG_INFO, "shadow identity trusted", "shadow", sh->key, "fingerprint", sh->fingerprint, NULL);
    sh->state = ok ? S_READY : S_ABSENT;
    sh->trusted_at = h2o_now(S.loop);
    wake(sh, ok);
}

static void on_created(void *data, const char *err, long status, json_t *json)
{
    shadow_t *sh = data;
    const char *msg = json_string_value(json_object_get(json, "error"));
    if (err == NULL && status / 100 != 2 && msg != NULL && strstr(msg, "already in trust store") != NULL) {
        /* left from an earlier run, perhaps with other settings: make it what it must be */
        char path[128], *body = trust_body(sh, 0);
        snprintf(path, sizeof(path), "/1.0/certificates/%s", sh->fingerprint);
        gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "PUT", path, body, 10000, on_updated, sh);
        free(body);
        if (c == NULL)
            on_updated(sh, "No cluster member is reachable", 0, NULL);
        return;
    }
    on_updated(data, err, status, json);
}

static void create(shadow_t *sh)
{
    sh->state = S_CREATING;
    sh->busy = 1;
    char *body = trust_body(sh, 1);
    gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "POST", "/1.0/certificates", body, 10000, on_created, sh);
    free(body);
    if (c == NULL)
        on_updated(sh, "No cluster member is reachable", 0, NULL);
}

static void on_waiter_dispose(void *data)
{
    waiter_t *w = data;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

static int is_metrics_path(h2o_req_t *req)
{
    static const char path[] = "/1.0/metrics";
    size_t len = sizeof(path) - 1;
    h2o_iovec_t p = req->path_normalized;
    return p.len >= len && memcmp(p.base, path, len) == 0 && (p.len == len || p.base[len] == '/');
}

void gw_shadow_choose(h2o_req_t *req, gw_caller_t *caller, gw_shadow_ready_cb ready)
{
    shadow_t *sh = NULL;
    char key[4096];
    switch (caller->kind) {
    case GW_TRUST_CLIENT:
        caller->identity = &gw_identities[GW_IDENTITY_GATEWAY];
        break;
    case GW_TRUST_RESTRICTED:
        snprintf(key, sizeof(key), "restricted:%s", caller->projects);
        sh = get(key, caller->projects);
        break;
    case GW_TRUST_METRICS:
        if (is_metrics_path(req))
            sh = get("metrics", NULL);
        else
            caller->identity = &gw_identities[GW_IDENTITY_ANONYMOUS]; /* LXD: metrics certificates reach nothing else */
        break;
    default:
        /* untrusted, and `server` certificates (which LXD would make admins): LXD's untrusted rules apply */
        caller->identity = &gw_identities[GW_IDENTITY_ANONYMOUS];
        break;
    }
    if (caller->identity != NULL || (caller->kind != GW_TRUST_RESTRICTED && caller->kind != GW_TRUST_METRICS)) {
        ready(req, caller);
        return;
    }
    if (sh == NULL) { /* never fall back to a wider identity */
        caller->identity = NULL;
        ready(req, caller);
        return;
    }
    sh->unneeded_since = 0;
    if (sh->state == S_READY) {
        caller->identity = &sh->super;
        ready(req, caller);
        return;
    }
    waiter_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), on_waiter_dispose);
    *w = (waiter_t){{NULL}, req, caller, ready};
    h2o_linklist_insert(&sh->waiters, &w->link);
    if (sh->state == S_ABSENT)
        create(sh);
}

/* ---- clean-up: drop shadows no client needs ---- */

typedef struct st_need_t {
    shadow_t *sh;
    int needed;  /* a client of the trust store maps to it */
    int trusted; /* its own certificate is in the trust store */
} need_t;

static void visit(const char *fingerprint, gw_trust_kind_t kind, const char *projects, void *data)
{
    need_t *n = data;
    if (strcmp(fingerprint, n->sh->fingerprint) == 0) {
        n->trusted = 1;
        return;
    }
    for (size_t i = 0; i != S.num; ++i) /* shadows do not make each other needed */
        if (strcmp(fingerprint, S.list[i]->fingerprint) == 0)
            return;
    if (n->sh->projects != NULL ? kind == GW_TRUST_RESTRICTED && strcmp(projects, n->sh->projects) == 0 : kind == GW_TRUST_METRICS)
        n->needed = 1;
}

static void on_deleted(void *data, const char *err, long status, json_t *json)
{
    shadow_t *sh = data;
    sh->busy = 0;
    if (err != NULL || (status / 100 != 2 && status != 404)) {
        gw_log(GW_LOG_WARN, "shadow identity not removed; will retry", "shadow", sh->key, "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
        return;
    }
    gw_log(GW_LOG_INFO, "shadow identity removed (no client needs it)", "shadow", sh->key, NULL);
}

static void on_trust_refresh(void)
{
    uint64_t now = h2o_now(S.loop);
    for (size_t i = 0; i != S.num; ++i) {
        shadow_t *sh = S.list[i];
        need_t n = {sh};
        gw_trust_foreach(visit, &n);
        if (sh->state == S_READY && !n.trusted && !sh->busy && now - sh->trusted_at > MIRROR_LAG_MS)
            sh->state = S_ABSENT; /* someone removed it: made again on next need */
        if (n.needed || !n.trusted || sh->busy || !h2o_linklist_is_empty(&sh->waiters)) {
            sh->unneeded_since = 0;
            continue;
        }
        if (sh->unneeded_since == 0) {
            sh->unneeded_since = now;
            continue;
        }
        if (now - sh->unneeded_since < UNUSED_GRACE_MS)
            continue;
        char path[128];
        snprintf(path, sizeof(path), "/1.0/certificates/%s", sh->fingerprint);
        if (gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "DELETE", path, NULL, 10000, on_deleted, sh) == NULL)
            continue;
        sh->state = S_ABSENT;
        sh->unneeded_since = 0;
        sh->busy = 1;
    }
}

void gw_shadow_init(const char *state_dir)
{
    if (asprintf(&S.dir, "%s/shadows", state_dir) < 0)
        abort();
    if (mkdir(S.dir, 0700) != 0 && errno != EEXIST)
        gw_log(GW_LOG_ERROR, "cannot create the shadow directory", "dir", S.dir, "err", strerror(errno), NULL);
    S.loop = gw_identities[GW_IDENTITY_GATEWAY].client_ctx.loop;
    gw_trust_on_refresh(on_trust_refresh);
}
