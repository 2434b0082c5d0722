/*
 * enroll.c: see enroll.h.
 */
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "backend.h"
#include "enroll.h"
#include "lxd.h"
#include "members.h"
#include "text.h"
#include "tokens.h"

static int is_certificates_post(h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) && p.len >= 17 &&
           memcmp(p.base, "/1.0/certificates", 17) == 0 && (p.len == 17 || p.base[17] == '?' || (p.len == 18 && p.base[17] == '/'));
}

static char *cert_base64(X509 *cert)
{
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, der, len);
    OPENSSL_free(der);
    return b64;
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
        /* LXD's first check, on the TLS peer, which with the caller's certificate in the body it could no longer make */
        if (gw_trust_is_client(caller)) {
            json_decref(body);
            return "Client is already trusted";
        }
        char *b64 = cert_base64(caller->cert);
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
    char *secret;                /* token redemption: the token's secret */
    char *cert_b64;              /* token redemption: the caller's certificate */
    json_t *token_request;       /* token redemption: what the token was made for (name, type, restricted, projects) */
    int token_expired;           /* token redemption: its expiry has passed (told once it is cancelled, as LXD does) */
    long status;                 /* the answer to give */
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
            h2o_add_header(&e->req->pool, &e->req->res.headers, H2O_TOKEN_LOCATION, NULL, /* outlives e: in the pool */
                           h2o_strdup(&e->req->pool, e->location, SIZE_MAX).base, strlen(e->location));
        /* a connection whose caller was untrusted when it opened keeps the small body limit of untrusted callers
         * (server.h): after an enrolment the client reconnects, and its next connection is judged anew (HTTP/1) */
        if (e->status / 100 == 2)
            e->req->http1_is_persistent = 0;
        gw_lxd_send_json(e->req, (int)e->status, json_incref(e->answer));
    }
    json_decref(e->answer);
    json_decref(e->token_request);
    free(e->location);
    free(e->secret);
    free(e->cert_b64);
    free(e);
}

static void on_answer(void *data, const char *err, long status, json_t *json)
{
    enroll_t *e = data;
    if (err != NULL || json == NULL) {
        e->status = 502;
        e->answer = gw_lxd_error_json(502, err != NULL ? err : "the member's answer is not JSON");
        reply(e);
        return;
    }
    e->status = status;
    e->answer = json_incref(json);
    gw_tokens_rewrite(e->answer); /* a token must lead to the gateway */
    if (gw_backend_header("Location") != NULL)
        e->location = strdup(gw_backend_header("Location"));
    if (status / 100 == 2)
        gw_trust_refresh_now(reply, e);
    else
        reply(e);
}

static void refuse(enroll_t *e, int status, const char *msg)
{
    e->status = status;
    e->answer = gw_lxd_error_json(status, msg);
    reply(e);
}

/* step 3: the token's certificate request, with the caller's certificate */
static void on_cancelled(void *data, const char *err, long status, json_t *json)
{
    enroll_t *e = data;
    (void)json;
    if (err != NULL || status / 100 != 2) { /* LXD too gives up when it cannot cancel the token */
        refuse(e, 500, "Failed to cancel the certificate add token operation");
        return;
    }
    if (e->token_expired) {
        refuse(e, 403, "Token has expired");
        return;
    }
    json_t *body = json_pack("{s:O?, s:O, s:b, s:O?, s:s}", "name", json_object_get(e->token_request, "name"), "type",
                             json_object_get(e->token_request, "type"), "restricted",
                             json_is_true(json_object_get(e->token_request, "restricted")), "projects",
                             json_object_get(e->token_request, "projects"), "certificate", e->cert_b64);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        refuse(e, 500, "Bad certificate add operation data");
        return;
    }
    gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "POST", "/1.0/certificates", text, 30000, on_answer, e);
    free(text);
    if (c == NULL)
        refuse(e, 503, "No cluster member is reachable through the gateway");
}

/* the token has an expiry (core.remote_token_expiry) and it has passed; an expiry that cannot be read counts as passed,
 * as in LXD (a zero time) */
static int is_expired(json_t *meta)
{
    json_t *at = json_object_get(meta, "expiresAt");
    if (at == NULL || json_is_null(at))
        return 0;
    long long t = json_is_string(at) ? gw_lxd_time(json_string_value(at)) : -1;
    return t < 0 || t < (long long)time(NULL);
}

/* a certificate add token (what `lxc config trust add` makes), not a cluster join token or an image token, which are
 * operations of class "token" too: LXD 5.0.2 redeems only operations of type CertificateAddToken, whose metadata
 * holds the certificate request */
static int is_certificate_add_token(json_t *op)
{
    json_t *meta = json_object_get(op, "metadata"), *request = json_object_get(meta, "request");
    const char *class = json_string_value(json_object_get(op, "class"));
    return class != NULL && strcmp(class, "token") == 0 && json_integer_value(json_object_get(op, "status_code")) == 103 &&
           json_is_object(request) && json_is_string(json_object_get(request, "type")) &&
           json_object_get(meta, "serverName") == NULL;
}

/* step 2: the Running token operation with this secret, if any */
static void on_operations(void *data, const char *err, long status, json_t *json)
{
    enroll_t *e = data;
    json_t *by_status = json_object_get(json_object_get(json, "metadata"), "running"), *op, *found = NULL;
    size_t i;
    if (err != NULL || status != 200) {
        refuse(e, 500, "Failed during search for certificate add token operation");
        return;
    }
    json_array_foreach(by_status, i, op)
    {
        const char *secret = json_string_value(json_object_get(json_object_get(op, "metadata"), "secret"));
        if (is_certificate_add_token(op) && json_is_string(json_object_get(op, "id")) && secret != NULL &&
            strlen(secret) == strlen(e->secret) && CRYPTO_memcmp(secret, e->secret, strlen(secret)) == 0)
            found = op;
    }
    if (found == NULL) {
        refuse(e, 403, "No matching certificate add operation found");
        return;
    }
    json_t *meta = json_object_get(found, "metadata");
    e->token_request = json_incref(json_object_get(meta, "request"));
    e->token_expired = is_expired(meta); /* LXD cancels a matching token first, expired or not: single use */
    char *path = gw_text_dupf("/1.0/operations/%s", json_string_value(json_object_get(found, "id")));
    gw_mcall_t *c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "DELETE", path, NULL, 30000, on_cancelled, e);
    free(path);
    if (c == NULL)
        refuse(e, 503, "No cluster member is reachable through the gateway");
}

/* the secret of a certificate add token given as `password` (base64 JSON with client_name and secret), or NULL */
static char *token_secret(h2o_req_t *req)
{
    json_t *body = json_loadb(req->entity.base, req->entity.len, 0, NULL), *token = NULL;
    const char *password = json_string_value(json_object_get(body, "password"));
    char *secret = NULL;
    if (password != NULL && *password != '\0') {
        size_t len = strlen(password);
        unsigned char *raw = malloc(len);
        int n = EVP_DecodeBlock(raw, (const unsigned char *)password, (int)len);
        while (n > 0 && password[len - 1] == '=' && raw[n - 1] == '\0') /* EVP_DecodeBlock counts the padding */
            --n, --len;
        if (n > 0 && (token = json_loadb((const char *)raw, n, 0, NULL)) != NULL &&
            json_string_value(json_object_get(token, "client_name")) != NULL &&
            json_string_value(json_object_get(token, "secret")) != NULL)
            secret = strdup(json_string_value(json_object_get(token, "secret")));
        free(raw);
    }
    json_decref(token);
    json_decref(body);
    return secret;
}

int gw_enroll_handle(h2o_req_t *req, const gw_caller_t *caller)
{
    if (!is_certificates_post(req))
        return 0;
    if (req->entity.len > GW_UNTRUSTED_MAX_BODY) { /* a certificate add is a few KiB: nothing larger is parsed */
        gw_lxd_send_error(req, 413, "A certificate add request may not be larger than %d bytes", GW_UNTRUSTED_MAX_BODY);
        return 1;
    }
    const char *err;
    if ((err = fixup(req, caller)) != NULL) {
        gw_lxd_send_error(req, 400, "%s", err);
        return 1;
    }
    enroll_t *e = calloc(1, sizeof(*e)), **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), on_req_dispose);
    *holder = e;
    e->holder = holder;
    e->req = req;
    gw_mcall_t *c;
    if (caller->kind == GW_TRUST_NONE && caller->cert != NULL && (e->secret = token_secret(req)) != NULL) {
        e->cert_b64 = cert_base64(caller->cert);
        c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "GET", "/1.0/operations?recursion=1&project=default", NULL, 30000,
                            on_operations, e);
    } else {
        /* NUL-terminated copies (a request may have no body at all: base NULL) */
        char *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base,
             *body = h2o_strdup(&req->pool, req->entity.base != NULL ? req->entity.base : "", req->entity.len).base;
        c = gw_members_call(caller->identity, "POST", path, body, 30000, on_answer, e);
    }
    if (c == NULL)
        refuse(e, 503, "No cluster member is reachable through the gateway");
    return 1;
}
