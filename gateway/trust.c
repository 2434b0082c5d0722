/*
 * trust.c: trust-store mirror and caller identification (see trust.h).
 */
#include <string.h>
#include <time.h>
#include "backend.h"
#include "events.h"
#include "hold.h"
#include "log.h"
#include "members.h"
#include "trust.h"

#define POLL_MS 1000         /* read interval while the event stream is down */
#define STALE_GRACE_MS 15000 /* beyond the refresh interval, a copy this much older grants nothing */

typedef struct st_entry_t {
    char fingerprint[GW_FINGERPRINT_LEN + 1];
    gw_trust_kind_t kind;
    gw_projects_t *projects; /* restricted: its projects; else NULL */
    char *name;              /* its name in the trust store */
} entry_t;

static struct {
    h2o_context_t *ctx;
    entry_t *entries; /* sorted by fingerprint, for bsearch */
    size_t num;
    uint64_t loaded_at;       /* h2o_now() of the last good read; 0 = never */
    uint64_t began_at;        /* h2o_now() when the read in flight was sent */
    uint64_t loaded_began_at; /* ... and when the last good read was sent: what it shows is at least that recent */
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

static void free_entries(entry_t *entries, size_t num)
{
    for (size_t i = 0; i != num; ++i) {
        gw_projects_unref(entries[i].projects);
        free(entries[i].name);
    }
    free(entries);
}

static void on_certificates(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
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
        /* LXD 5.0.2 applies a restriction to metrics certificates too (/1.0/metrics?project=) */
        if (entries[num].kind == GW_TRUST_RESTRICTED ||
            (entries[num].kind == GW_TRUST_METRICS && json_is_true(json_object_get(c, "restricted"))))
            entries[num].projects = gw_projects_from_json(json_object_get(c, "projects"));
        const char *name = json_string_value(json_object_get(c, "name"));
        entries[num].name = strdup(name != NULL ? name : "");
        ++num;
    }
    qsort(entries, num, sizeof(*entries), cmp_entry);
    if (num != T.num)
        gw_log(GW_LOG_INFO, "trust store read", "certificates", gw_log_num(num), NULL);
    free_entries(T.entries, T.num);
    T.entries = entries;
    T.num = num;
    T.loaded_at = h2o_now(T.ctx->loop);
    T.loaded_began_at = T.began_at;
    if (T.on_refresh != NULL)
        T.on_refresh();
    read_ended();
}

void gw_trust_foreach(gw_trust_visit_cb cb, void *data)
{
    for (size_t i = 0; i != T.num; ++i) {
        gw_trust_entry_t e = {T.entries[i].fingerprint, T.entries[i].name, T.entries[i].kind, T.entries[i].projects};
        cb(&e, data);
    }
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
    T.began_at = h2o_now(T.ctx->loop);
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

uint64_t gw_trust_read_sent_at(void)
{
    return T.loaded_began_at;
}

uint64_t gw_trust_age_ms(void)
{
    return T.loaded_at == 0 ? UINT64_MAX : h2o_now(T.ctx->loop) - T.loaded_at;
}

/* LXD (CheckTrustState): a certificate before its notBefore or after its notAfter is not trusted, whatever the trust
 * store holds (the bounds were read once for the connection; the clock is read for each request) */
static int in_validity_period(const gw_tls_peer_t *peer)
{
    int64_t now = (int64_t)time(NULL);
    return peer->not_before <= now && now < peer->not_after;
}

static const entry_t *lookup(const char *fingerprint)
{
    entry_t key;
    if (T.entries == NULL || strlen(fingerprint) != GW_FINGERPRINT_LEN || gw_trust_age_ms() > T.refresh_ms + STALE_GRACE_MS)
        return NULL; /* a copy too old to reflect revocations grants nothing: fail closed */
    memcpy(key.fingerprint, fingerprint, sizeof(key.fingerprint));
    return bsearch(&key, T.entries, T.num, sizeof(*T.entries), cmp_entry);
}

gw_trust_kind_t gw_trust_kind_of(const gw_tls_peer_t *peer)
{
    const entry_t *found;
    if (peer == NULL || !in_validity_period(peer))
        return GW_TRUST_NONE;
    return (found = lookup(peer->fingerprint)) != NULL ? found->kind : GW_TRUST_NONE;
}

void gw_trust_identify(h2o_req_t *req, gw_caller_t *caller)
{
    *caller = (gw_caller_t){{0}};
    caller->kind = GW_TRUST_NONE;
    const gw_tls_peer_t *peer = gw_tls_peer(req); /* the connection's: its fingerprint was computed once */
    if (peer == NULL)
        return;
    /* the certificate lives as long as the request (POST /1.0/certificates may need it), which may outlive the
     * connection: a reference of the request's own */
    X509 **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), free_cert);
    X509_up_ref(peer->cert);
    *holder = peer->cert;
    gw_trust_lookup(req, peer->fingerprint, caller);
    caller->cert = peer->cert;
    if (!in_validity_period(peer)) { /* still the caller's certificate: an enrolment of it is refused by LXD itself */
        caller->kind = GW_TRUST_NONE;
        caller->projects = NULL;
    }
}

int gw_trust_is_client(const gw_caller_t *caller)
{
    return caller->kind == GW_TRUST_CLIENT || caller->kind == GW_TRUST_RESTRICTED;
}

void gw_trust_lookup(h2o_req_t *req, const char *fingerprint, gw_caller_t *caller)
{
    gw_trust_lookup_in(&req->pool, fingerprint, caller);
}

void gw_trust_lookup_in(h2o_mem_pool_t *pool, const char *fingerprint, gw_caller_t *caller)
{
    *caller = (gw_caller_t){{0}};
    caller->kind = GW_TRUST_NONE;
    snprintf(caller->fingerprint, sizeof(caller->fingerprint), "%s", fingerprint);
    const entry_t *found = lookup(caller->fingerprint);
    if (found != NULL) {
        caller->kind = found->kind;
        caller->projects = gw_projects_ref_in_pool(pool, found->projects);
    }
}

/*
 * A write to the trust store that passes through (PUT, PATCH, DELETE of /1.0/certificates/<fp>): its answer is held
 * until a read of the store that began after the member answered has ended, as enroll.c does for additions. Then the
 * client's next request is judged by the store it just changed (a certificate it restricted maps to a shadow at once,
 * one it removed is untrusted at once), rather than by the copy from before, for the few milliseconds the event and
 * the read would otherwise take. A prefilter sees the answer start (status known, nothing sent yet); an output stream
 * keeps what the member's answer brings until the read ended, as h2o's throttle_resp keeps its buffers.
 */
typedef struct st_after_write_t after_write_t;

typedef struct st_held_answer_t {
    h2o_ostream_t super;
    after_write_t *wait; /* the read awaited, until it ended; NULL after */
    h2o_iovec_t *bufs;   /* what was sent meanwhile (the generator keeps it valid: it proceeds only when we send) */
    size_t bufcnt;
    h2o_send_state_t state;
    int kept; /* bufs holds a send */
} held_answer_t;

struct st_after_write_t {
    gw_hold_t hold; /* the request (its client may go while the read runs) */
    held_answer_t *os;
};

static void after_write_read(void *data)
{
    after_write_t *w = data;
    h2o_req_t *req = gw_hold_take(&w->hold);
    held_answer_t *os = w->os;
    free(w);
    if (req == NULL)
        return; /* the client went: the request and its streams are gone */
    os->wait = NULL;
    if (os->kept) {
        os->kept = 0;
        h2o_ostream_send_next(&os->super, req, os->bufs, os->bufcnt, os->state);
    }
}

static void held_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    held_answer_t *os = (held_answer_t *)self;
    if (os->wait == NULL) {
        h2o_ostream_send_next(self, req, bufs, bufcnt, state);
        return;
    }
    os->bufs = h2o_mem_alloc_pool(&req->pool, sizeof(*bufs) * (bufcnt + 1));
    memcpy(os->bufs, bufs, sizeof(*bufs) * bufcnt);
    os->bufcnt = bufcnt;
    os->state = state;
    os->kept = 1;
}

static void after_write_setup(h2o_req_prefilter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    if (req->res.status / 100 == 2) { /* a refused write changed nothing */
        held_answer_t *os = (held_answer_t *)h2o_add_ostream(req, sizeof(*os), slot);
        os->super.do_send = held_send;
        os->bufs = NULL;
        os->bufcnt = 0;
        os->kept = 0;
        after_write_t *w = calloc(1, sizeof(*w));
        w->os = os;
        os->wait = w;
        gw_hold_attach(&w->hold, req, NULL);
        slot = &os->super.next;
        gw_trust_refresh_now(after_write_read, w); /* (may end at once: then nothing is held) */
    }
    h2o_setup_next_prefilter(self, req, slot);
}

void gw_trust_reread_before_answer(h2o_req_t *req)
{
    h2o_add_prefilter(req, sizeof(h2o_req_prefilter_t))->on_setup_ostream = after_write_setup;
}
