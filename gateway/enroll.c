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
#include "hold.h"
#include "lxd.h"
#include "members.h"
#include "text.h"
#include "tokens.h"

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

/* the steps of an enrolment, in order; a plain add starts at EN_ADD */
typedef enum {
    EN_FIND_TOKEN,   /* GET /1.0/operations: the Running certificate add token whose secret the caller sent */
    EN_CANCEL_TOKEN, /* DELETE of that token operation (single use: LXD cancels a matching token first, expired or not) */
    EN_ADD,          /* POST /1.0/certificates: the caller's own certificate (with the token's request, or as asked) */
    EN_REFRESH,      /* the trust store re-read, so that the new entry is known at the caller's next request */
} enroll_state_t;

/* malloc'd, not in the request's pool: it outlives the request (the flow goes on to its end if the client leaves, the
 * trust refresh may end after the client has gone); freed in reply(), the flow's one end */
typedef struct st_enroll_t {
    enroll_state_t state;  /* the step whose call is in flight */
    gw_hold_t hold;        /* the client's request until reply() (nothing to cancel when the client goes: the flow finishes) */
    char *secret;          /* token redemption: the token's secret */
    char *cert_b64;        /* token redemption: the caller's certificate */
    json_t *token_request; /* token redemption: what the token was made for (name, type, restricted, projects) */
    int token_expired;     /* token redemption: its expiry has passed (told once it is cancelled, as LXD does) */
    char *call_path;       /* EN_CANCEL_TOKEN, EN_ADD: the path of the step's call */
    char *add_body;        /* EN_ADD: the body of the POST */
    const gw_identity_t *add_as; /* ... and the identity it is made with (the caller's; the gateway's for a token) */
    long status;                 /* the answer to give */
    json_t *answer;
    char *location;
} enroll_t;

/* the flow's one end: the answer (e->status, e->answer) to the client, if it is still there */
static void reply(enroll_t *e)
{
    h2o_req_t *req = gw_hold_take(&e->hold);
    if (req != NULL) {
        if (e->location != NULL)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, /* outlives e: in the pool */
                           h2o_strdup(&req->pool, e->location, SIZE_MAX).base, strlen(e->location));
        /* a connection whose caller was untrusted when it opened keeps the small body limit of untrusted callers
         * (server.h): after an enrolment the client reconnects, and its next connection is judged anew (HTTP/1) */
        if (e->status / 100 == 2)
            req->http1_is_persistent = 0;
        gw_lxd_send_json(req, (int)e->status, json_incref(e->answer));
    }
    json_decref(e->answer);
    json_decref(e->token_request);
    free(e->location), free(e->secret), free(e->cert_b64), free(e->call_path), free(e->add_body);
    free(e);
}

static void refuse(enroll_t *e, int status, const char *msg)
{
    e->status = status;
    e->answer = gw_lxd_error_json(status, msg);
    reply(e);
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

/* the Running token operation with the caller's secret, in LXD's answer to GET /1.0/operations?recursion=1, or NULL */
static json_t *find_token(enroll_t *e, json_t *answer)
{
    json_t *by_status = json_object_get(json_object_get(answer, "metadata"), "running"), *op, *found = NULL;
    size_t i;
    json_array_foreach(by_status, i, op)
    {
        const char *secret = json_string_value(json_object_get(json_object_get(op, "metadata"), "secret"));
        if (is_certificate_add_token(op) && json_is_string(json_object_get(op, "id")) && secret != NULL &&
            strlen(secret) == strlen(e->secret) && CRYPTO_memcmp(secret, e->secret, strlen(secret)) == 0)
            found = op;
    }
    return found;
}

/* the body of the token's certificate request, with the caller's certificate (malloc'd JSON text), or NULL */
static char *token_add_body(enroll_t *e)
{
    json_t *body = json_pack("{s:O?, s:O, s:b, s:O?, s:s}", "name", json_object_get(e->token_request, "name"), "type",
                             json_object_get(e->token_request, "type"), "restricted",
                             json_is_true(json_object_get(e->token_request, "restricted")), "projects",
                             json_object_get(e->token_request, "projects"), "certificate", e->cert_b64);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call);
static void on_refreshed(void *data);

/* makes the step's call; 0 if there is no member to make it to */
static int act(enroll_t *e)
{
    gw_mcall_t *c = NULL;
    switch (e->state) {
    case EN_FIND_TOKEN:
        c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "GET", "/1.0/operations?recursion=1&project=default", NULL, 30000,
                            on_answer, e);
        break;
    case EN_CANCEL_TOKEN:
        c = gw_members_call(&gw_identities[GW_IDENTITY_GATEWAY], "DELETE", e->call_path, NULL, 30000, on_answer, e);
        break;
    case EN_ADD:
        c = gw_members_call(e->add_as, "POST", e->call_path, e->add_body, 30000, on_answer, e);
        break;
    case EN_REFRESH:
        gw_trust_refresh_now(on_refreshed, e);
        return 1;
    }
    return c != NULL;
}

static void go(enroll_t *e, enroll_state_t next)
{
    e->state = next;
    if (!act(e))
        refuse(e, 503, "No cluster member is reachable through the gateway");
}

/* the one function every answer comes to (json: the member's answer; NULL with err == NULL: the refresh ended) */
static void advance(enroll_t *e, const char *err, long status, json_t *json, const gw_call_t *call)
{
    switch (e->state) {
    case EN_FIND_TOKEN: {
        if (err != NULL || status != 200)
            return refuse(e, 500, "Failed during search for certificate add token operation");
        json_t *found = find_token(e, json);
        if (found == NULL)
            return refuse(e, 403, "No matching certificate add operation found");
        json_t *meta = json_object_get(found, "metadata");
        e->token_request = json_incref(json_object_get(meta, "request"));
        e->token_expired = is_expired(meta); /* LXD cancels a matching token first, expired or not: single use */
        e->call_path = gw_text_dupf("/1.0/operations/%s", json_string_value(json_object_get(found, "id")));
        return go(e, EN_CANCEL_TOKEN);
    }
    case EN_CANCEL_TOKEN:
        if (err != NULL || status / 100 != 2) /* LXD too gives up when it cannot cancel the token */
            return refuse(e, 500, "Failed to cancel the certificate add token operation");
        if (e->token_expired)
            return refuse(e, 403, "Token has expired");
        free(e->call_path);
        e->call_path = strdup("/1.0/certificates");
        if ((e->add_body = token_add_body(e)) == NULL)
            return refuse(e, 500, "Bad certificate add operation data");
        e->add_as = &gw_identities[GW_IDENTITY_GATEWAY];
        return go(e, EN_ADD);
    case EN_ADD:
        if (err != NULL || json == NULL) {
            e->status = 502;
            e->answer = gw_lxd_error_json(502, err != NULL ? err : "the member's answer is not JSON");
            return reply(e);
        }
        e->status = status;
        e->answer = json_incref(json);
        gw_tokens_rewrite(e->answer); /* a token must lead to the gateway */
        if (gw_call_header(call, "Location") != NULL)
            e->location = strdup(gw_call_header(call, "Location"));
        if (status / 100 == 2)
            return go(e, EN_REFRESH);
        return reply(e);
    case EN_REFRESH:
        return reply(e);
    }
}

static void on_answer(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    advance(data, err, status, json, call);
}

static void on_refreshed(void *data)
{
    advance(data, NULL, 0, NULL, NULL);
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

int gw_enroll_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)path;
    if (req->entity.len > GW_UNTRUSTED_MAX_BODY) { /* a certificate add is a few KiB: nothing larger is parsed */
        gw_lxd_send_error(req, 413, "A certificate add request may not be larger than %d bytes", GW_UNTRUSTED_MAX_BODY);
        return 1;
    }
    const char *err;
    if ((err = fixup(req, caller)) != NULL) {
        gw_lxd_send_error(req, 400, "%s", err);
        return 1;
    }
    enroll_t *e = calloc(1, sizeof(*e));
    gw_hold_attach(&e->hold, req, NULL);
    if (caller->kind == GW_TRUST_NONE && caller->cert != NULL && (e->secret = token_secret(req)) != NULL) {
        e->cert_b64 = cert_base64(caller->cert);
        go(e, EN_FIND_TOKEN);
    } else { /* NUL-terminated copies (a request may have no body at all: base NULL) */
        e->call_path = h2o_strdup(NULL, req->path.base, req->path.len).base;
        e->add_body = h2o_strdup(NULL, req->entity.base != NULL ? req->entity.base : "", req->entity.len).base;
        e->add_as = caller->identity;
        go(e, EN_ADD);
    }
    return 1;
}
