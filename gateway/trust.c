/*
 * trust.c: trust-store mirror and caller identification (see trust.h).
 */
#include <string.h>
#include "backend.h"
#include "events.h"
#include "log.h"
#include "members.h"
#include "trust.h"

#define POLL_MS 1000         /* read interval while the event stream is down */
#define STALE_GRACE_MS 15000 /* beyond the refresh interval, a copy this much older grants nothing */

typedef struct st_entry_t {
    char fingerprint[GW_FINGERPRINT_LEN + 1];
    gw_trust_kind_t kind;
    char *projects; /* restricted: sorted, ","-joined; else NULL */
} entry_t;

static struct {
    h2o_context_t *ctx;
    entry_t *entries; /* sorted by fingerprint, for bsearch */
    size_t num;
    uint64_t loaded_at; /* h2o_now() of the last good read; 0 = never */
    h2o_timeout_t timeout;
    h2o_timeout_entry_t tick;
    uint64_t refresh_ms; /* full read at least this often, events or not */
    gw_call_t *call;
    void (*on_refresh)(void);
    struct {
        void (*cb)(void *data);
        void *data;
    } waiting[64]; /* gw_trust_refresh_now callers waiting for the read in flight to end */
    size_t num_waiting;
    int reread; /* a read was asked for while one was in flight (it may predate the change) */
} T;

static void start_read(void);

/* tells everyone waiting for a read that it ended */
static void read_ended(void)
{
    size_t n = T.num_waiting;
    T.num_waiting = 0;
    for (size_t i = 0; i != n; ++i)
        T.waiting[i].cb(T.waiting[i].data);
}

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

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* the project set as one comparable string: sorted, ","-joined (project names cannot hold a comma) */
static char *project_key(json_t *projects)
{
    size_t n = json_array_size(projects), len = 1, i;
    const char **names = calloc(n + 1, sizeof(*names));
    json_t *p;
    json_array_foreach(projects, i, p)
    {
        names[i] = json_string_value(p) != NULL ? json_string_value(p) : "";
        len += strlen(names[i]) + 1;
    }
    qsort(names, n, sizeof(*names), cmp_str);
    char *key = calloc(1, len);
    for (i = 0; i != n; ++i)
        strcat(strcat(key, i ? "," : ""), names[i]);
    free(names);
    return key;
}

static void free_entries(entry_t *entries, size_t num)
{
    for (size_t i = 0; i != num; ++i)
        free(entries[i].projects);
    free(entries);
}

static void on_certificates(void *data, const char *err, long status, json_t *json)
{
    (void)data;
    T.call = NULL;
    json_t *list = json_object_get(json, "metadata");
    if (T.reread) { /* this read may predate what its waiters need to see: read again */
        T.reread = 0;
        start_read();
        return;
    }
    if (err != NULL || status != 200 || !json_is_array(list)) {
        gw_log(GW_LOG_WARN, "trust store not read; keeping the last copy", "err",
               err != NULL ? err : json_string_value(json_object_get(json, "error")), "status", gw_log_num(status), NULL);
        read_ended();
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
        if (entries[num].kind == GW_TRUST_RESTRICTED)
            entries[num].projects = project_key(json_object_get(c, "projects"));
        ++num;
    }
    qsort(entries, num, sizeof(*entries), cmp_entry);
    if (num != T.num)
        gw_log(GW_LOG_INFO, "trust store read", "certificates", gw_log_num(num), NULL);
    free_entries(T.entries, T.num);
    T.entries = entries;
    T.num = num;
    T.loaded_at = h2o_now(T.ctx->loop);
    if (T.on_refresh != NULL)
        T.on_refresh();
    read_ended();
}

void gw_trust_foreach(gw_trust_visit_cb cb, void *data)
{
    for (size_t i = 0; i != T.num; ++i)
        cb(T.entries[i].fingerprint, T.entries[i].kind, T.entries[i].projects, data);
}

void gw_trust_on_refresh(void (*cb)(void))
{
    T.on_refresh = cb;
}

static void free_cert(void *data)
{
    X509_free(*(X509 **)data);
}

static void start_read(void)
{
    size_t cursor = 0;
    gw_member_t *m = gw_members_next(&cursor);
    if (m == NULL) {
        read_ended();
        return;
    }
    T.call = gw_backend_call(m->url, &gw_identities[GW_IDENTITY_GATEWAY], "GET", "/1.0/certificates?recursion=1", NULL,
                             T.timeout.timeout * 4 + 5000, on_certificates, NULL);
}

void gw_trust_refresh_now(void (*done)(void *data), void *data)
{
    if (T.num_waiting == sizeof(T.waiting) / sizeof(T.waiting[0])) {
        done(data); /* too many at once: the periodic read will catch up */
        return;
    }
    T.waiting[T.num_waiting].cb = done;
    T.waiting[T.num_waiting++].data = data;
    if (T.call != NULL)
        T.reread = 1;
    else
        start_read();
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    /* events say when the store changes; without them (stream down, or not yet up) poll */
    if (T.call == NULL && (!gw_events_connected() || gw_trust_age_ms() >= T.refresh_ms))
        start_read();
    h2o_timeout_link(T.ctx->loop, &T.timeout, &T.tick);
}

static void ignore(void *data)
{
    (void)data;
}

static void on_event(json_t *event)
{
    const char *action = json_string_value(json_object_get(json_object_get(event, "metadata"), "action"));
    if (action != NULL && strncmp(action, "certificate-", 12) == 0) {
        gw_debug("trust store changed", "action", action, NULL);
        gw_trust_refresh_now(ignore, NULL);
    }
}

static void on_stream_up(void)
{
    gw_trust_refresh_now(ignore, NULL); /* changes made while the stream was down were not seen */
}

void gw_trust_init(h2o_context_t *ctx, uint64_t refresh_ms)
{
    T.ctx = ctx;
    T.refresh_ms = refresh_ms;
    gw_events_init(ctx, "lifecycle", on_event);
    gw_events_on_up(on_stream_up);
    h2o_timeout_init(ctx->loop, &T.timeout, POLL_MS);
    T.tick.cb = on_tick;
    on_tick(&T.tick);
}

uint64_t gw_trust_age_ms(void)
{
    return T.loaded_at == 0 ? UINT64_MAX : h2o_now(T.ctx->loop) - T.loaded_at;
}

void gw_trust_identify(h2o_req_t *req, gw_caller_t *caller)
{
    *caller = (gw_caller_t){{0}};
    caller->kind = GW_TRUST_NONE;
    X509 *cert = gw_tls_peer_cert(req);
    if (cert == NULL)
        return;
    /* the certificate lives as long as the request: POST /1.0/certificates may need it */
    X509 **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), free_cert);
    *holder = cert;
    char fp[GW_FINGERPRINT_LEN + 1];
    gw_tls_fingerprint(cert, fp);
    gw_trust_lookup(req, fp, caller);
    caller->cert = cert;
}

int gw_trust_is_client(const gw_caller_t *caller)
{
    return caller->kind == GW_TRUST_CLIENT || caller->kind == GW_TRUST_RESTRICTED;
}

void gw_trust_lookup(h2o_req_t *req, const char *fingerprint, gw_caller_t *caller)
{
    *caller = (gw_caller_t){{0}};
    caller->kind = GW_TRUST_NONE;
    snprintf(caller->fingerprint, sizeof(caller->fingerprint), "%s", fingerprint);
    entry_t key, *found;
    memcpy(key.fingerprint, caller->fingerprint, sizeof(key.fingerprint));
    /* a copy too old to reflect revocations grants nothing: fail closed */
    if (strlen(fingerprint) == GW_FINGERPRINT_LEN && gw_trust_age_ms() <= T.refresh_ms + STALE_GRACE_MS &&
        (found = bsearch(&key, T.entries, T.num, sizeof(*T.entries), cmp_entry)) != NULL) {
        caller->kind = found->kind;
        if (found->projects != NULL)
            caller->projects = h2o_strdup(&req->pool, found->projects, SIZE_MAX).base;
    }
}
