/*
 * trust.c: trust-store mirror and caller identification (see trust.h).
 */
#include <string.h>
#include "backend.h"
#include "log.h"
#include "members.h"
#include "trust.h"

#define STALE_AFTER_ROUNDS 15 /* refresh rounds without a good read before the copy stops granting trust */

typedef struct st_entry_t {
    char fingerprint[GW_FINGERPRINT_LEN + 1];
    gw_trust_kind_t kind;
} entry_t;

static struct {
    h2o_context_t *ctx;
    entry_t *entries; /* sorted by fingerprint, for bsearch */
    size_t num;
    uint64_t loaded_at; /* h2o_now() of the last good read; 0 = never */
    h2o_timeout_t timeout;
    h2o_timeout_entry_t tick;
    gw_call_t *call;
} T;

const char *gw_trust_kind_name(gw_trust_kind_t kind)
{
    static const char *names[] = {"untrusted", "client", "restricted", "metrics", "server"};
    return names[kind];
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->fingerprint, ((const entry_t *)b)->fingerprint);
}

static gw_trust_kind_t kind_of(json_t *cert)
{
    const char *type = json_string_value(json_object_get(cert, "type"));
    if (type == NULL)
        return GW_TRUST_NONE;
    if (strcmp(type, "client") == 0)
        return json_is_true(json_object_get(cert, "restricted")) ? GW_TRUST_RESTRICTED : GW_TRUST_CLIENT;
    if (strcmp(type, "metrics") == 0)
        return GW_TRUST_METRICS;
    if (strcmp(type, "server") == 0)
        return GW_TRUST_SERVER;
    return GW_TRUST_NONE; /* a type this gateway does not know grants nothing */
}

static void on_certificates(void *data, const char *err, long status, json_t *json)
{
    (void)data;
    T.call = NULL;
    json_t *list = json_object_get(json, "metadata");
    if (err != NULL || status != 200 || !json_is_array(list)) {
        gw_log(GW_LOG_WARN, "trust store not read; keeping the last copy", "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), "status", gw_log_num(status), NULL);
        return;
    }
    entry_t *entries = calloc(json_array_size(list) + 1, sizeof(*entries));
    size_t num = 0, i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *fp = json_string_value(json_object_get(c, "fingerprint"));
        if (fp == NULL || strlen(fp) != GW_FINGERPRINT_LEN)
            continue;
        memcpy(entries[num].fingerprint, fp, GW_FINGERPRINT_LEN + 1);
        entries[num].kind = kind_of(c);
        ++num;
    }
    qsort(entries, num, sizeof(*entries), cmp_entry);
    if (num != T.num)
        gw_log(GW_LOG_INFO, "trust store read", "certificates", gw_log_num(num), NULL);
    free(T.entries);
    T.entries = entries;
    T.num = num;
    T.loaded_at = h2o_now(T.ctx->loop);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    size_t cursor = 0;
    gw_member_t *m;
    if (T.call == NULL && (m = gw_members_next(&cursor)) != NULL)
        T.call = gw_backend_call(m->url, &gw_identities[GW_IDENTITY_GATEWAY], "GET", "/1.0/certificates?recursion=1", NULL,
                                 T.timeout.timeout * 4, on_certificates, NULL);
    h2o_timeout_link(T.ctx->loop, &T.timeout, &T.tick);
}

void gw_trust_init(h2o_context_t *ctx, uint64_t refresh_ms)
{
    T.ctx = ctx;
    h2o_timeout_init(ctx->loop, &T.timeout, refresh_ms);
    T.tick.cb = on_tick;
    on_tick(&T.tick);
}

uint64_t gw_trust_age_ms(void)
{
    return T.loaded_at == 0 ? UINT64_MAX : h2o_now(T.ctx->loop) - T.loaded_at;
}

void gw_trust_identify(h2o_req_t *req, gw_caller_t *caller)
{
    caller->fingerprint[0] = '\0';
    caller->kind = GW_TRUST_NONE;
    X509 *cert = gw_tls_peer_cert(req);
    if (cert != NULL) {
        gw_tls_fingerprint(cert, caller->fingerprint);
        X509_free(cert);
        entry_t key, *found;
        memcpy(key.fingerprint, caller->fingerprint, sizeof(key.fingerprint));
        /* a copy too old to reflect revocations grants nothing: fail closed */
        if (gw_trust_age_ms() <= T.timeout.timeout * STALE_AFTER_ROUNDS &&
            (found = bsearch(&key, T.entries, T.num, sizeof(*T.entries), cmp_entry)) != NULL)
            caller->kind = found->kind;
    }
    /* only an unrestricted client may act as the gateway; every other caller reaches LXD anonymously, so LXD's own
     * untrusted rules apply to it (restricted and metrics callers get shadow identities in the identity issue) */
    caller->identity = &gw_identities[caller->kind == GW_TRUST_CLIENT ? GW_IDENTITY_GATEWAY : GW_IDENTITY_ANONYMOUS];
}
