/*
 * enroll.c: see enroll.h.
 */
#include <string.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "backend.h"
#include "enroll.h"
#include "lxd.h"
#include "members.h"

static int is_certificates_post(h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) && p.len >= 17 &&
           memcmp(p.base, "/1.0/certificates", 17) == 0 && (p.len == 17 || p.base[17] == '?' || (p.len == 18 && p.base[17] == '/'));
}

/* puts the caller's certificate into a body that names none (and asks for no token) */
static const char *fixup(h2o_req_t *req, const gw_caller_t *caller)
{
    if (caller->cert == NULL)
        return NULL;
    json_error_t jerr;
    json_t *body = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return "the request body is not a JSON object";
    }
    const char *cert = json_string_value(json_object_get(body, "certificate"));
    if ((cert == NULL || *cert == '\0') && !json_is_true(json_object_get(body, "token"))) {
        unsigned char *der = NULL;
        int len = i2d_X509(caller->cert, &der);
        char *b64 = malloc(4 * ((len + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)b64, der, len);
        OPENSSL_free(der);
        json_object_set_new(body, "certificate", json_string(b64));
        free(b64);
        char *text = json_dumps(body, JSON_COMPACT);
        req->entity = h2o_strdup(&req->pool, text, strlen(text));
        free(text);
    }
    json_decref(body);
    return NULL;
}

/* malloc'd, not in the request's pool: the trust refresh may end after the client has gone */
typedef struct st_enroll_t {
    h2o_req_t *req;              /* NULL once the client went away */
    struct st_enroll_t **holder; /* the request pool's pointer to us (cleared before we are freed) */
    long status;
    json_t *answer;
    char *location;
} enroll_t;

static void on_req_dispose(void *data)
{
    enroll_t *e = *(enroll_t **)data;
    if (e != NULL)
        e->req = NULL;
}

static void reply(void *data)
{
    enroll_t *e = data;
    if (e->req != NULL) {
        *e->holder = NULL; /* the request may end (and its pool go) as soon as the answer is sent */
        if (e->location != NULL)
            h2o_add_header(&e->req->pool, &e->req->res.headers, H2O_TOKEN_LOCATION, NULL, e->location, strlen(e->location));
        gw_lxd_send_json(e->req, (int)e->status, json_incref(e->answer));
    }
    json_decref(e->answer);
    free(e->location);
    free(e);
}

static void on_answer(void *data, const char *err, long status, json_t *json)
{
    enroll_t *e = data;
    if (err != NULL || json == NULL) {
        e->status = 502;
        e->answer = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:n}", "type", "error", "status", "", "status_code", 0, "operation",
                              "", "error_code", 502, "error", err != NULL ? err : "the member's answer is not JSON", "metadata");
        reply(e);
        return;
    }
    e->status = status;
    e->answer = json_incref(json);
    if (gw_backend_header("Location") != NULL)
        e->location = strdup(gw_backend_header("Location"));
    if (status / 100 == 2)
        gw_trust_refresh_now(reply, e);
    else
        reply(e);
}

int gw_enroll_handle(h2o_req_t *req, const gw_caller_t *caller)
{
    if (!is_certificates_post(req))
        return 0;
    const char *err;
    size_t cursor = 0;
    gw_member_t *m;
    if ((err = fixup(req, caller)) != NULL) {
        gw_lxd_send_error(req, 400, "%s", err);
        return 1;
    }
    if ((m = gw_members_next(&cursor)) == NULL) {
        gw_lxd_send_error(req, 503, "No cluster member is reachable through the gateway");
        return 1;
    }
    *h2o_req_getenv(req, H2O_STRLIT("gw.member"), 1) = h2o_iovec_init(m->name, strlen(m->name));
    enroll_t *e = calloc(1, sizeof(*e)), **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), on_req_dispose);
    *holder = e;
    e->holder = holder;
    e->req = req;
    char *path = h2o_mem_alloc_pool(&req->pool, req->path.len + 1), *body = h2o_mem_alloc_pool(&req->pool, req->entity.len + 1);
    memcpy(path, req->path.base, req->path.len);
    path[req->path.len] = '\0';
    memcpy(body, req->entity.base, req->entity.len);
    body[req->entity.len] = '\0';
    gw_backend_call(m->url, caller->identity, "POST", path, body, 30000, on_answer, e);
    return 1;
}
