/*
 * shadow.c: identity choice and shadow identities (see shadow.h).
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/sha.h>
#include "backend.h"
#include "hold.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "shadow.h"
#include "text.h"

#define UNUSED_GRACE_MS 30000 /* a shadow no client needs is removed after this long (clients come and go) */
#define MIRROR_LAG_MS 10000   /* a mirror read may predate a shadow's creation by this much */

typedef enum en_state_t {
    S_ABSENT,   /* not in the cluster's trust store (made on next need) */
    S_CREATING, /* being added, or repaired: requests wait */
    S_READY,    /* trusted with exactly the settings below: requests use it */
} state_t;

typedef struct st_shadow_t {
    gw_identity_t super;                      /* what requests are sent with; never freed (requests may hold it) */
    gw_trust_kind_t kind;                     /* GW_TRUST_RESTRICTED or GW_TRUST_METRICS */
    gw_projects_t *projects;                  /* the projects it is restricted to; NULL: an unrestricted metrics shadow */
    char *name;                               /* its trust-store name: "lxd-gateway:<projects>" (for people only) */
    char fingerprint[GW_FINGERPRINT_LEN + 1]; /* of its certificate: how the gateway tells its entry apart */
    char *cert_b64;                           /* its certificate, base64 DER, as POST /1.0/certificates takes it */
    state_t state;
    h2o_linklist_t waiters;  /* requests waiting for S_READY */
    uint64_t unneeded_since; /* h2o_now() since when no client needs it; 0 = needed */
    uint64_t trusted_at;     /* h2o_now() when the cluster accepted it (a mirror read may lag) */
    int busy;                /* a trust-store call is in flight */
    const char *removal;     /* why its entry is being deleted (the log line once it is gone) */
} shadow_t;

/* a request that waits for its shadow identity; in the request's pool: it dies with the request */
typedef struct st_waiter_t {
    gw_hold_t hold;      /* the request, until it goes on (wake) or its client leaves (on_waiter_gone) */
    h2o_linklist_t link; /* in shadow_t.waiters until then */
    gw_caller_t *caller;
    gw_shadow_ready_cb ready;
} waiter_t;

/* a key pair of an older naming (12 hex digits) left in the directory: removed from the trust store, then from disk */
typedef struct st_stale_t {
    char fingerprint[GW_FINGERPRINT_LEN + 1];
    char *crt, *key; /* its files */
    int busy;        /* its DELETE is in flight */
} stale_t;

static struct {
    char *dir;       /* state_dir/shadows */
    shadow_t **list; /* every shadow made since start; grows, no fixed cap */
    size_t num, cap;
    stale_t **stale; /* pointers: an entry stays where a call in flight knows it */
    size_t num_stale;
    char identity[GW_FINGERPRINT_LEN + 1]; /* the gateway's own identity's fingerprint */
    h2o_loop_t *loop;
} S;

/* what a shadow stands for, as unambiguous text: "restricted:[...]", "metrics", "metrics:[...]" (its file name is the
 * hash of this) */
static char *describe(gw_trust_kind_t kind, const gw_projects_t *projects)
{
    if (projects == NULL)
        return strdup("metrics");
    char *set = gw_projects_key(projects), *d = gw_text_dupf("%s:%s", kind == GW_TRUST_METRICS ? "metrics" : "restricted", set);
    free(set);
    return d;
}

/* writes the SHA-256 of `s` in hex: a file name for any description, of any length */
static void hex64(const char *s, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), md);
    for (int i = 0; i != SHA256_DIGEST_LENGTH; ++i)
        sprintf(out + i * 2, "%02x", md[i]);
}

/* loads (or makes) the key pair of `sh` in S.dir; fills fingerprint and cert_b64 */
static const char *load_pair(shadow_t *sh)
{
    char base[65], *what = describe(sh->kind, sh->projects);
    const char *err = NULL;
    hex64(what, base);
    free(what);
    char *crt = gw_text_dupf("%s/%s.crt", S.dir, base), *key = gw_text_dupf("%s/%s.key", S.dir, base);
    sh->super.cert_file = crt;
    sh->super.key_file = key;
    if ((access(crt, R_OK) != 0 || access(key, R_OK) != 0) &&
        (err = gw_tls_write_pair(crt, key, "lxd-gateway shadow", NULL, 0)) != NULL)
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
    return gw_identity_setup(&sh->super);
}

static shadow_t *find(gw_trust_kind_t kind, const gw_projects_t *projects)
{
    for (size_t i = 0; i != S.num; ++i)
        if (S.list[i]->kind == kind && (S.list[i]->projects == NULL) == (projects == NULL) &&
            gw_projects_equal(S.list[i]->projects, projects))
            return S.list[i];
    return NULL;
}

/* `prefix` followed by the set joined with ","; for people to read (logs, the trust store's name column): the gateway
 * tells shadows apart by their project sets and their entries by fingerprint, never by this */
static char *label(const char *prefix, const gw_projects_t *projects)
{
    size_t len = strlen(prefix) + 1;
    for (size_t i = 0; projects != NULL && i != projects->num; ++i)
        len += strlen(projects->names[i]) + 1;
    char *s = malloc(len), *o = s;
    o += sprintf(o, "%s", prefix);
    for (size_t i = 0; projects != NULL && i != projects->num; ++i)
        o += sprintf(o, "%s%s", i != 0 ? "," : "", projects->names[i]);
    return s;
}

/* the name the trust store shows: "lxd-gateway:<projects>", "lxd-gateway:metrics[:<projects>]" */
static char *entry_name(const shadow_t *sh)
{
    return label(sh->kind != GW_TRUST_METRICS ? "lxd-gateway:"
                 : sh->projects != NULL       ? "lxd-gateway:metrics:"
                                              : "lxd-gateway:metrics",
                 sh->projects);
}

static shadow_t *get(gw_trust_kind_t kind, const gw_projects_t *projects)
{
    shadow_t *sh = find(kind, projects);
    if (sh != NULL)
        return sh;
    sh = calloc(1, sizeof(*sh));
    sh->kind = kind;
    sh->projects = gw_projects_ref(projects);
    sh->super.name = label(kind != GW_TRUST_METRICS ? "restricted:" : projects != NULL ? "metrics:" : "metrics", projects);
    sh->name = entry_name(sh);
    h2o_linklist_init_anchor(&sh->waiters);
    const char *err = load_pair(sh);
    if (err != NULL) {
        gw_log(GW_LOG_ERROR, "shadow identity unusable", "shadow", sh->super.name, "err", err, NULL);
        if (sh->super.ssl_ctx != NULL)
            SSL_CTX_free(sh->super.ssl_ctx);
        free((char *)sh->super.name), free((char *)sh->super.cert_file), free((char *)sh->super.key_file);
        free(sh->name), free(sh->cert_b64);
        gw_projects_unref(sh->projects);
        free(sh);
        return NULL; /* not kept: the next request tries again (a full disk may have been the cause) */
    }
    if (S.num == S.cap) {
        S.cap = S.cap != 0 ? S.cap * 2 : 8;
        S.list = realloc(S.list, S.cap * sizeof(*S.list));
    }
    S.list[S.num++] = sh;
    return sh;
}

static void wake(shadow_t *sh, int ok)
{
    while (!h2o_linklist_is_empty(&sh->waiters)) {
        waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, link, sh->waiters.next);
        h2o_linklist_unlink(&w->link);
        h2o_req_t *req = gw_hold_take(&w->hold); /* (held: on_waiter_gone unlinks a waiter whose client left) */
        w->caller->identity = ok ? &sh->super : NULL;
        w->ready(req, w->caller);
    }
}

/* the body that makes the cluster trust shadow `sh` exactly as the gateway means it */
static char *trust_body(shadow_t *sh, int with_cert)
{
    json_t *j = json_pack("{s:s, s:s, s:b, s:o}", "name", sh->name, "type", sh->kind == GW_TRUST_METRICS ? "metrics" : "client",
                          "restricted", sh->projects != NULL, "projects", gw_projects_to_json(sh->projects));
    if (with_cert)
        json_object_set_new(j, "certificate", json_string(sh->cert_b64));
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return body;
}

static char *entry_path(const char *fingerprint)
{
    return gw_text_dupf("/1.0/certificates/%s", fingerprint);
}

static void on_updated(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    shadow_t *sh = data;
    sh->busy = 0;
    int ok = err == NULL && status / 100 == 2;
    if (!ok)
        gw_log(GW_LOG_ERROR, "shadow identity not trusted by the cluster", "shadow", sh->super.name, "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
    else
        gw_log(GW_LOG_INFO, "shadow identity trusted", "shadow", sh->super.name, "fingerprint", sh->fingerprint, NULL);
    sh->state = ok ? S_READY : S_ABSENT;
    sh->trusted_at = h2o_now(S.loop);
    wake(sh, ok);
}

/* makes the entry what it must be (it exists, perhaps with other settings); `done` hears how it went */
static void put_entry(shadow_t *sh, gw_call_cb done)
{
    char *path = entry_path(sh->fingerprint), *body = trust_body(sh, 0);
    gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "PUT", path, body, 10000, done, sh);
    free(body);
    free(path);
    if (c == NULL)
        done(sh, "No cluster member is reachable", 0, NULL, NULL);
}

static void on_created(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    shadow_t *sh = data;
    const char *msg = json_string_value(json_object_get(json, "error"));
    if (err == NULL && status / 100 != 2 && msg != NULL && strstr(msg, "already in trust store") != NULL) {
        put_entry(sh, on_updated); /* left from an earlier run, perhaps with other settings */
        return;
    }
    on_updated(data, err, status, json, call);
}

static void create(shadow_t *sh)
{
    sh->state = S_CREATING;
    sh->busy = 1;
    char *body = trust_body(sh, 1);
    gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "POST", "/1.0/certificates", body, 10000, on_created, sh);
    free(body);
    if (c == NULL)
        on_updated(sh, "No cluster member is reachable", 0, NULL, NULL);
}

static void on_waiter_gone(gw_hold_t *hold)
{
    h2o_linklist_unlink(&H2O_STRUCT_FROM_MEMBER(waiter_t, hold, hold)->link);
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
    switch (caller->kind) {
    case GW_TRUST_CLIENT:
        caller->identity = &gw_identities[GW_IDENTITY_GATEWAY];
        break;
    case GW_TRUST_RESTRICTED:
        sh = get(GW_TRUST_RESTRICTED, caller->projects);
        break;
    case GW_TRUST_METRICS:
        if (is_metrics_path(req))
            sh = get(GW_TRUST_METRICS, caller->projects); /* restricted as the caller is, or not at all */
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
    waiter_t *w = h2o_mem_alloc_pool(&req->pool, sizeof(*w));
    *w = (waiter_t){.caller = caller, .ready = ready};
    gw_hold_attach(&w->hold, req, on_waiter_gone);
    h2o_linklist_insert(&sh->waiters, &w->link);
    if (sh->state == S_ABSENT)
        create(sh);
}

const gw_identity_t *gw_shadow_now(const gw_caller_t *caller)
{
    if (caller->kind == GW_TRUST_CLIENT)
        return &gw_identities[GW_IDENTITY_GATEWAY];
    shadow_t *sh = caller->kind == GW_TRUST_RESTRICTED ? get(GW_TRUST_RESTRICTED, caller->projects) : NULL;
    if (sh == NULL || sh->state != S_READY)
        return NULL;
    sh->unneeded_since = 0; /* needed, as by gw_shadow_choose */
    return &sh->super;
}

const gw_identity_t *gw_shadow_prepare(const gw_caller_t *caller)
{
    shadow_t *sh = caller->kind == GW_TRUST_RESTRICTED ? get(GW_TRUST_RESTRICTED, caller->projects) : NULL;
    if (sh != NULL && sh->state == S_ABSENT)
        create(sh);
    return gw_shadow_now(caller);
}

/* ---- the gateway's own entries are not the caller's ---- */

/* `prefix` (LXD looks certificates up by fingerprint prefix, with SQL's case-insensitive LIKE) could name
 * `fingerprint`; the caller has checked that it holds hex digits only, so no LIKE wildcard (`_`, `%`) is in it */
static int names(const char *prefix, const char *fingerprint)
{
    size_t len = strlen(prefix);
    return len <= GW_FINGERPRINT_LEN && strncasecmp(prefix, fingerprint, len) == 0;
}

typedef struct st_guard_t {
    h2o_req_t *req;
    const char *prefix;
    int ours;    /* another replica's shadow matches */
    size_t hits; /* entries the prefix names */
    char *name;  /* the first one's name, type and restriction (in the request's pool) */
    const char *type;
    int restricted;
} guard_t;

static void guard_visit(const gw_trust_entry_t *e, void *data)
{
    guard_t *g = data;
    if (!names(g->prefix, e->fingerprint))
        return;
    /* another replica's shadows carry the same name form: they are no more a caller's to change than this one's */
    if (strncmp(e->name, "lxd-gateway:", 12) == 0)
        g->ours = 1;
    if (g->hits++ == 0) {
        g->name = h2o_strdup(&g->req->pool, e->name, SIZE_MAX).base;
        g->type = e->kind == GW_TRUST_METRICS ? "metrics" : e->kind == GW_TRUST_SERVER ? "server" : "client";
        g->restricted = e->kind == GW_TRUST_RESTRICTED || (e->kind == GW_TRUST_METRICS && e->projects != NULL);
    }
}

/* LXD 5.0.2's (Debian's, as it answers a non-admin's write on an entry that is not its own) words for `req` on the
 * entry in `g`: what the caller would read directly. NULL where LXD would let the write through: the gateway refuses
 * that too, the entry being its own */
static const char *lxd_refusal(h2o_req_t *req, const guard_t *g, int *status)
{
    *status = 403;
    int put = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT"));
    if (g->hits != 1 || (!put && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PATCH"))))
        return NULL; /* DELETE and the rest need an admin: "not authorized" */
    json_t *body = json_loadb(req->entity.base != NULL ? req->entity.base : "", req->entity.len, 0, NULL);
    const char *msg = NULL;
    if (json_is_object(body)) {
        json_t *v;
#define FIELD(key) ((v = json_object_get(body, key)) != NULL || put)
        const char *type = FIELD("type") ? (json_string_value(v) != NULL ? json_string_value(v) : "") : g->type,
                   *name = FIELD("name") ? (json_string_value(v) != NULL ? json_string_value(v) : "") : g->name,
                   *cert = (v = json_object_get(body, "certificate")) != NULL && json_string_value(v) != NULL ? json_string_value(v)
                                                                                                              : "";
        int restricted = FIELD("restricted") ? json_is_true(v) : g->restricted;
#undef FIELD
        if (strcmp(type, "client") != 0 && strcmp(type, "metrics") != 0 && strcmp(type, "server") != 0)
            *status = 400, msg = "Invalid certificate type";
        else if (restricted != g->restricted || strcmp(name, g->name) != 0)
            msg = "Only the certificate can be changed";
        else if (strcmp(type, g->type) != 0)
            msg = "The certificate type cannot be changed";
        else if (*cert != '\0')
            msg = "Certificate cannot be changed"; /* the caller's TLS certificate is not this entry's */
    }
    json_decref(body);
    return msg;
}

int gw_shadow_guard(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    if (caller->kind == GW_TRUST_CLIENT || h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return 0;
    /* (the path is percent-decoded as LXD's router decodes it; a query is not part of it) */
    char *fp = h2o_strdup(&req->pool, path->id.base, path->id.len).base;
    /* anything but hex digits could be a LIKE pattern (LXD matches `a_c%` against every fingerprint): never forwarded */
    int ours = fp[strspn(fp, "0123456789abcdefABCDEF")] != '\0' || (*fp != '\0' && names(fp, S.identity));
    for (size_t i = 0; !ours && *fp != '\0' && i != S.num; ++i)
        ours = names(fp, S.list[i]->fingerprint);
    for (size_t i = 0; !ours && *fp != '\0' && i != S.num_stale; ++i)
        ours = names(fp, S.stale[i]->fingerprint);
    guard_t g = {req, fp};
    if (*fp != '\0' && !ours) {
        gw_trust_foreach(guard_visit, &g);
        ours = g.ours;
    }
    if (!ours)
        return 0; /* LXD judges it: the shadow's certificate is not the entry's, so LXD refuses what it would refuse the
                   * caller (a certificate change needs the entry's own certificate as the TLS peer) */
    if (g.hits == 0 && *fp != '\0' && fp[strspn(fp, "0123456789abcdefABCDEF")] == '\0')
        gw_trust_foreach(guard_visit, &g); /* one of this replica's own: its entry as the trust store has it */
    int status;
    /* LXD reads the body only for a trusted caller: the others (metrics certificates too, outside /1.0/metrics) are
     * refused as untrusted */
    const char *msg = caller->kind == GW_TRUST_RESTRICTED ? lxd_refusal(req, &g, &status) : NULL;
    gw_log(GW_LOG_WARN, "refused: a non-admin caller tried to change one of the gateway's own trust entries", "fingerprint",
           caller->fingerprint, "entry", fp, NULL);
    gw_lxd_send_error(req, msg != NULL ? status : 403, "%s", msg != NULL ? msg : "not authorized");
    return 1;
}

/* ---- on every trust-store read: clean-up of unneeded shadows, repair of drifted ones ---- */

typedef struct st_need_t {
    shadow_t *sh;
    int needed;  /* a client of the trust store maps to it */
    int trusted; /* its own certificate is in the trust store */
    int drifted; /* ... but not with the settings the gateway gave it */
} need_t;

static int is_shadow(const char *fingerprint)
{
    for (size_t i = 0; i != S.num; ++i)
        if (strcmp(fingerprint, S.list[i]->fingerprint) == 0)
            return 1;
    return 0;
}

static void visit(const gw_trust_entry_t *e, void *data)
{
    need_t *n = data;
    shadow_t *sh = n->sh;
    if (strcmp(e->fingerprint, sh->fingerprint) == 0) {
        n->trusted = 1;
        char *name = entry_name(sh);
        n->drifted = e->kind != sh->kind || (e->projects == NULL) != (sh->projects == NULL) ||
                     !gw_projects_equal(e->projects, sh->projects) || strcmp(e->name, name) != 0;
        free(name);
        return;
    }
    if (is_shadow(e->fingerprint)) /* shadows do not make each other needed */
        return;
    if (e->kind == sh->kind && (e->projects == NULL) == (sh->projects == NULL) && gw_projects_equal(e->projects, sh->projects))
        n->needed = 1;
}

static void on_deleted(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    shadow_t *sh = data;
    sh->busy = 0;
    if (err != NULL || (status / 100 != 2 && status != 404)) {
        gw_log(GW_LOG_WARN, "shadow identity not removed; will retry", "shadow", sh->super.name, "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
        return;
    }
    gw_log(GW_LOG_INFO, sh->removal, "shadow", sh->super.name, NULL);
}

/* `why`: the log line once it is gone */
static void delete_entry(shadow_t *sh, const char *why)
{
    sh->removal = why;
    char *path = entry_path(sh->fingerprint);
    if (gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "DELETE", path, NULL, 10000, on_deleted, sh) != NULL) {
        sh->state = S_ABSENT;
        sh->unneeded_since = 0;
        sh->busy = 1;
    }
    free(path);
}

/* a drifted entry could not be repaired: delete it, so that nobody borrows it with settings the gateway did not give */
static void on_repaired(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    shadow_t *sh = data;
    if (err == NULL && status / 100 == 2) {
        gw_log(GW_LOG_WARN, "shadow identity repaired", "shadow", sh->super.name, NULL);
        on_updated(sh, err, status, json, call);
        return;
    }
    gw_log(GW_LOG_ERROR, "shadow identity could not be repaired; deleting it", "shadow", sh->super.name, "err",
           err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
    sh->busy = 0;
    sh->state = S_ABSENT; /* made again on next need, whether the delete below can start or not */
    wake(sh, 0);
    delete_entry(sh, "shadow identity removed (it could not be repaired)");
}

static void repair(shadow_t *sh)
{
    gw_log(GW_LOG_ERROR,
           "SHADOW IDENTITY CHANGED OUTSIDE THE GATEWAY: its trust entry no longer has the settings the gateway "
           "gave it; not used until repaired",
           "shadow", sh->super.name, "fingerprint", sh->fingerprint, NULL);
    sh->state = S_CREATING; /* requests wait for the repair instead of using an entry of unknown rights */
    sh->busy = 1;
    put_entry(sh, on_repaired);
}

static void on_stale_deleted(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    stale_t *st = data;
    (void)json;
    st->busy = 0;
    if (err == NULL && (status / 100 == 2 || status == 404))
        gw_log(GW_LOG_INFO, "shadow identity of an older naming removed", "fingerprint", st->fingerprint, NULL);
}

static void stale_visit(const gw_trust_entry_t *e, void *data)
{
    stale_t *st = data;
    if (strcmp(e->fingerprint, st->fingerprint) == 0)
        st->busy = 2; /* still trusted */
}

/* pairs of an older naming: delete their entries; once the store no longer has them, their files */
static void sweep_stale(void)
{
    for (size_t i = 0; i != S.num_stale;) {
        stale_t *st = S.stale[i];
        if (st->busy == 1) { /* its DELETE is in flight */
            ++i;
            continue;
        }
        st->busy = 0;
        gw_trust_foreach(stale_visit, st);
        if (st->busy == 2) {
            char *path = entry_path(st->fingerprint);
            st->busy =
                gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "DELETE", path, NULL, 10000, on_stale_deleted, st) != NULL;
            free(path);
            ++i;
            continue;
        }
        unlink(st->crt), unlink(st->key);
        free(st->crt), free(st->key), free(st);
        S.stale[i] = S.stale[--S.num_stale];
    }
}

static void on_trust_refresh(void)
{
    uint64_t now = h2o_now(S.loop);
    sweep_stale();
    for (size_t i = 0; i != S.num; ++i) {
        shadow_t *sh = S.list[i];
        need_t n = {sh};
        gw_trust_foreach(visit, &n);
        /* a read sent before the gateway's own last change to the entry may show the entry as it was before it */
        if (sh->state == S_READY && n.trusted && n.drifted && !sh->busy && gw_trust_read_sent_at() > sh->trusted_at) {
            repair(sh);
            continue;
        }
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
        if (now - sh->unneeded_since >= UNUSED_GRACE_MS)
            delete_entry(sh, "shadow identity removed (no client needs it)");
    }
}

/* key pairs named by an older version (12 hex digits): the gateway made them, so it removes them */
static void find_stale(void)
{
    DIR *d = opendir(S.dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 16 || strspn(de->d_name, "0123456789abcdef") != 12 || strcmp(de->d_name + 12, ".crt") != 0)
            continue;
        stale_t *st = calloc(1, sizeof(*st));
        st->crt = gw_text_dupf("%s/%s", S.dir, de->d_name);
        st->key = gw_text_dupf("%s/%.12s.key", S.dir, de->d_name);
        if (gw_tls_file_fingerprint(st->crt, st->fingerprint) != NULL) {
            free(st->crt), free(st->key), free(st);
            continue;
        }
        S.stale = realloc(S.stale, (S.num_stale + 1) * sizeof(*S.stale));
        S.stale[S.num_stale++] = st;
    }
    if (d != NULL)
        closedir(d);
}

void gw_shadow_init(const char *state_dir, const char *identity_fingerprint)
{
    S.dir = gw_text_dupf("%s/shadows", state_dir);
    snprintf(S.identity, sizeof(S.identity), "%s", identity_fingerprint);
    if (mkdir(S.dir, 0700) != 0 && errno != EEXIST)
        gw_log(GW_LOG_ERROR, "cannot create the shadow directory", "dir", S.dir, "err", strerror(errno), NULL);
    S.loop = gw_identities[GW_IDENTITY_GATEWAY].client_ctx.loop;
    find_stale();
    gw_trust_on_refresh(on_trust_refresh);
}
