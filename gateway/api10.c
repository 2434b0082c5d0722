/*
 * api10.c: see api10.h.
 */
#include <string.h>
#include <openssl/rand.h>
#include "api10.h"
#include "clock.h"
#include "events.h"
#include "hold.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "rewrite.h"

#define SLOTS 32       /* answers kept; the least recently used one makes room */
#define MAX_FETCHES 16 /* fetches for the cache at once; past that a request is answered as if uncached */
#define MAX_TAIL 200   /* the longest query string (with its '?') that is cached */
#define MAX_VALUE 100  /* the longest value of project= or target= that is cached */

static gw_api10_rewrite_cb rewrites[8];
static size_t num_rewrites;

void gw_api10_add_rewrite(gw_api10_rewrite_cb cb)
{
    if (num_rewrites < sizeof(rewrites) / sizeof(rewrites[0]))
        rewrites[num_rewrites++] = cb;
}

static gw_api10_write_rewrite_cb write_rewrites[8];
static size_t num_write_rewrites;

void gw_api10_add_write_rewrite(gw_api10_write_rewrite_cb cb)
{
    if (num_write_rewrites < sizeof(write_rewrites) / sizeof(write_rewrites[0]))
        write_rewrites[num_write_rewrites++] = cb;
}

/* a PUT or PATCH body as the write rewrites make it (replaced in the request's pool when one changed it) */
static void rewrite_write_body(h2o_req_t *req)
{
    if (num_write_rewrites == 0 || req->entity.len == 0 || req->entity.len > GW_UNTRUSTED_MAX_BODY * 16 ||
        !(h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT")) ||
          h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PATCH"))))
        return;
    json_t *body = json_loadb(req->entity.base, req->entity.len, 0, NULL);
    int changed = 0;
    for (size_t i = 0; body != NULL && i != num_write_rewrites; ++i)
        changed |= write_rewrites[i](body);
    char *text = changed ? json_dumps(body, JSON_COMPACT) : NULL;
    if (text != NULL) {
        req->entity = h2o_strdup(&req->pool, text, strlen(text));
        free(text);
    }
    json_decref(body);
}

/* the member authenticated the gateway (or a shadow): the caller is who LXD would name */
static void own_fingerprint(json_t *meta, const char *fingerprint)
{
    const char *auth = json_string_value(json_object_get(meta, "auth"));
    if (auth != NULL && strcmp(auth, "trusted") == 0 && fingerprint[0] != '\0')
        json_object_set_new(meta, "auth_user_name", json_string(fingerprint));
}

/* GET /1.0 as `fingerprint` must see it, from the member's answer (changed in place) */
static void rewrite_answer(json_t *answer, long status, const char *fingerprint)
{
    json_t *meta = json_object_get(answer, "metadata");
    if (status != 200 || !json_is_object(meta))
        return;
    own_fingerprint(meta, fingerprint);
    for (size_t i = 0; i != num_rewrites; ++i)
        rewrites[i](meta);
}

/* the uncached way: one member call per request */
static void rewrite_cb(h2o_req_t *req, json_t *answer, long status, const gw_caller_t *caller)
{
    (void)req;
    rewrite_answer(answer, status, caller->fingerprint);
}

/*
 * The cache. What a member answers GET /1.0 depends on (LXD 5.0.2, lxd/api_1.0.go api10Get):
 *   - who LXD sees: untrusted (no `config`, no `environment`, no ETag), a restricted certificate (`config: null`),
 *     an admin (`config`). The gateway forwards a caller with a backend identity (anonymous, the gateway's, a shadow per
 *     project set), so the identity is part of the key: the view of one identity is the view of every caller mapped
 *     to it. Which identity a caller maps to comes from the trust mirror for each request: a certificate newly
 *     trusted or restricted maps to another identity, hence another entry, at once;
 *   - the member that answers (`environment` names it, its addresses and pid; `config` holds its own
 *     core.https_address, so the ETag differs per member too): the member is part of the key, chosen as an uncached
 *     request would choose it (the ?target= member when usable, else the first usable one);
 *   - the query (?project= is echoed in environment.project, ?target= forwards): the whole query string is part of
 *     the key; only no query, project=<v> and target=<v> (each once, plain values) are cached, the rest is fetched
 *     every time, so hostile query strings take no room.
 * The only per-caller part is auth_user_name (the caller's own fingerprint where LXD sees the gateway's or a
 * shadow's): the answer is kept encoded, with a random placeholder of the fingerprint's length where
 * auth_user_name's value is, and a hit copies it and writes the caller's fingerprint over the placeholder: no JSON
 * is parsed or encoded on a hit. The ETag kept is the member's for exactly that body's data (LXD hashes `config`):
 * a PUT with If-Match goes to the same member (proxy.c chooses as the cache does) and matches as long as the data
 * did not change, and when it changed the entry is gone (below). Errors (anything but 200) are never kept.
 *
 * An entry is dropped (invalidate) when what it shows may have changed:
 *   - any request other than GET or HEAD to /1.0 through the gateway (a config change), when it arrives and again
 *     when its answer starts, before the client can see it: the client's next GET /1.0 is fetched anew;
 *   - the cluster's lifecycle events (the gateway's own stream, events.h): config-updated (a change made on a
 *     member directly, or through another replica), certificate-* (a shadow's trust entry changed, so may its view),
 *     storage-pool-* (environment.storage lists the drivers in use), cluster-* (member names, the cluster
 *     certificate, roles), and any action not known to leave GET /1.0 alone (harmless_action);
 *   - the event stream coming back (events of the time it was down are lost); while it is down nothing is cached;
 *   - the members (gw_members_generation): health, the list, names, API extensions; api_extensions.c adds an
 *     extension by gw_members_lack_extension, and which member answers depends on health;
 *   - cluster.server_cache_ttl (3 s) after it was fetched, as a safety net for what no event says: member-to-member
 *     event links drop until LXD's next heartbeat (a change made on another member is then not relayed to the
 *     gateway's stream), a member restarted between two probes (new pid), host addresses or drivers that changed
 *     under a member.
 * The member in the key and the members' generation overlap: a ?target= member that dies changes both the member a
 * request would go to and the generation; each alone keeps its entry from being served.
 * A fetch carries the generation it began under: an answer that arrives after an invalidation is given to the
 * requests that waited for it (they came before the change) but not kept, and later requests do not join it.
 */
typedef struct st_entry_t {
    const gw_identity_t *id; /* NULL: the slot is free */
    gw_member_t *member;
    char *tail;       /* the path after "/1.0": "" or "?project=p&target=m" (malloc'd) */
    char *body;       /* the encoded answer (malloc'd), without the final newline */
    size_t len;       /* its length */
    size_t splice_at; /* where the placeholder of auth_user_name's value starts; SIZE_MAX: none */
    char *etag;       /* the member's ETag (malloc'd), or NULL */
    uint64_t expires; /* gw_clock_ms() after which it is not served */
    uint64_t used;    /* when it was last served (a counter): the least recently used one goes first */
    uint64_t members; /* gw_members_generation() it was fetched under */
} entry_t;

typedef struct st_waiter_t {
    gw_hold_t hold; /* the request, until the fetch answers or its client goes */
    h2o_linklist_t link;
    char fingerprint[GW_FINGERPRINT_LEN + 1];
} waiter_t;

typedef struct st_fetch_t {
    const gw_identity_t *id;
    gw_member_t *member;
    char *tail;
    uint64_t generation, members; /* what it began under */
    gw_mcall_t *call;
    h2o_linklist_t waiters; /* waiter_t, every request for this key that came while it ran */
} fetch_t;

static struct {
    entry_t slots[SLOTS];
    fetch_t *fetches[MAX_FETCHES];
    uint64_t generation; /* bumped by invalidate */
    uint64_t tick;       /* for entry_t.used */
    char placeholder[GW_FINGERPRINT_LEN + 1];
    char marker[sizeof("\"auth_user_name\":\"") + GW_FINGERPRINT_LEN + 1]; /* the placeholder as encoded */
    size_t hits, misses, uncached;
    uint64_t ttl_ms; /* cluster.server_cache_ttl; 0: nothing is cached */
} C;

static void entry_free(entry_t *e)
{
    free(e->tail);
    free(e->body);
    free(e->etag);
    *e = (entry_t){NULL};
}

static void invalidate(const char *why)
{
    ++C.generation;
    for (size_t i = 0; i != SLOTS; ++i)
        if (C.slots[i].id != NULL)
            entry_free(&C.slots[i]);
    gw_debug("GET /1.0 cache dropped", "why", why, NULL);
}

static int plain_value(const char *p, const char *end)
{
    if (p == end || end - p > MAX_VALUE)
        return 0;
    for (; p != end; ++p)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
              *p == '.' || *p == '%'))
            return 0;
    return 1;
}

int gw_api10_cacheable_tail(const char *tail, size_t len)
{
    if (len == 0)
        return 1;
    if (tail[0] != '?' || len > MAX_TAIL)
        return 0;
    int project = 0, target = 0;
    const char *p = tail + 1, *end = tail + len;
    for (;;) {
        const char *amp = memchr(p, '&', end - p), *stop = amp != NULL ? amp : end;
        if (stop - p > 8 && memcmp(p, "project=", 8) == 0 && !project++ && plain_value(p + 8, stop)) {
        } else if (stop - p > 7 && memcmp(p, "target=", 7) == 0 && !target++ && plain_value(p + 7, stop)) {
        } else {
            return 0;
        }
        if (amp == NULL)
            return 1;
        p = amp + 1;
    }
}

static int same_key(const gw_identity_t *id, const gw_member_t *m, const char *tail, size_t len, const gw_identity_t *id2,
                    const gw_member_t *m2, const char *tail2)
{
    return id == id2 && m == m2 && strlen(tail2) == len && memcmp(tail, tail2, len) == 0;
}

/* sends a kept answer (`body`, with the placeholder at splice_at) to a caller of `fingerprint` */
static void send_encoded(h2o_req_t *req, const gw_member_t *m, const char *body, size_t len, size_t splice_at, const char *etag,
                         const char *fingerprint)
{
    char *copy = h2o_mem_alloc_pool(&req->pool, len + 1);
    memcpy(copy, body, len);
    copy[len] = '\0';
    if (splice_at != SIZE_MAX)
        memcpy(copy + splice_at, fingerprint, GW_FINGERPRINT_LEN);
    gw_member_note(req, m);
    if (etag != NULL) /* lxc sends it back as If-Match when it changes what it read */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, h2o_strdup(&req->pool, etag, SIZE_MAX).base,
                       strlen(etag));
    gw_lxd_send_text(req, 200, h2o_iovec_init(copy, len));
}

static void store(fetch_t *f, const char *text, size_t len, size_t splice_at, const char *etag)
{
    entry_t *e = NULL;
    for (size_t i = 0; i != SLOTS && e == NULL; ++i)
        if (C.slots[i].id == NULL)
            e = &C.slots[i];
    for (size_t i = 0; i != SLOTS && e == NULL; ++i)
        if (same_key(f->id, f->member, f->tail, strlen(f->tail), C.slots[i].id, C.slots[i].member, C.slots[i].tail))
            e = &C.slots[i]; /* an older answer for the same key (outlived) */
    if (e == NULL) {
        e = &C.slots[0];
        for (size_t i = 1; i != SLOTS; ++i)
            if (C.slots[i].used < e->used)
                e = &C.slots[i];
    }
    if (e->id != NULL)
        entry_free(e);
    *e = (entry_t){f->id,
                   f->member,
                   strdup(f->tail),
                   malloc(len),
                   len,
                   splice_at,
                   etag != NULL ? strdup(etag) : NULL,
                   gw_clock_ms() + C.ttl_ms,
                   ++C.tick,
                   f->members};
    memcpy(e->body, text, len);
}

static void fetch_free(fetch_t *f)
{
    for (size_t i = 0; i != MAX_FETCHES; ++i)
        if (C.fetches[i] == f)
            C.fetches[i] = NULL;
    free(f->tail);
    free(f);
}

/* the member answered a fetch: every waiter gets the answer (as its own), and it is kept if it still holds */
static void on_fetched(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    fetch_t *f = data;
    gw_member_t *m = gw_members_call_member(f->call);
    f->call = NULL;
    if (err != NULL || json == NULL) {
        while (!h2o_linklist_is_empty(&f->waiters)) {
            waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, link, f->waiters.next);
            h2o_linklist_unlink(&w->link);
            h2o_req_t *req = gw_hold_take(&w->hold);
            if (req == NULL)
                continue; /* (cannot happen: a waiter whose client left was unlinked) */
            if (m != NULL)
                gw_member_note(req, m);
            gw_lxd_send_error(req, 502, "Cluster member did not answer: %s", err != NULL ? err : "not JSON");
        }
        fetch_free(f);
        return;
    }
    json_t *meta = json_object_get(json, "metadata");
    int ok = status == 200 && json_is_object(meta);
    const char *auth = json_string_value(json_object_get(meta, "auth"));
    int trusted = ok && auth != NULL && strcmp(auth, "trusted") == 0;
    rewrite_answer(json, status, C.placeholder); /* auth_user_name: the placeholder, where the caller's goes */
    char *text = json_dumps(json, JSON_COMPACT);
    size_t len = text != NULL ? strlen(text) : 0, splice_at = SIZE_MAX;
    if (trusted && text != NULL) {
        const char *at = strstr(text, C.marker);
        if (at != NULL && strstr(at + 1, C.marker) == NULL)
            splice_at = at - text + strlen(C.marker) - GW_FINGERPRINT_LEN - 1;
        else
            ok = 0; /* not exactly one: no answer to splice into (each waiter gets its own, below) */
    }
    const char *etag = gw_call_header(call, "ETag");
    while (!h2o_linklist_is_empty(&f->waiters)) {
        waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, link, f->waiters.next);
        h2o_linklist_unlink(&w->link);
        h2o_req_t *req = gw_hold_take(&w->hold);
        if (req == NULL)
            continue;
        if (text != NULL && ok && (!trusted || w->fingerprint[0] != '\0')) {
            send_encoded(req, m, text, len, splice_at, etag, w->fingerprint);
            continue;
        }
        /* an error (sent as the member sent it), or a caller the kept form does not fit: its own encoding */
        json_t *own = json_deep_copy(json);
        json_t *own_meta = json_object_get(own, "metadata");
        if (trusted) {
            if (w->fingerprint[0] != '\0')
                json_object_set_new(own_meta, "auth_user_name", json_string(w->fingerprint));
            else
                json_object_del(own_meta, "auth_user_name");
        }
        gw_member_note(req, m);
        if (etag != NULL)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, h2o_strdup(&req->pool, etag, SIZE_MAX).base,
                           strlen(etag));
        gw_lxd_send_json(req, (int)status, own);
    }
    /* kept only if nothing changed since the fetch began, and the member asked is the one that answered (a member
     * that refused changes the members' generation anyway) */
    if (text != NULL && ok && f->generation == C.generation && f->members == gw_members_generation() && m == f->member &&
        gw_events_connected())
        store(f, text, len, splice_at, etag);
    free(text);
    fetch_free(f);
}

static void on_waiter_gone(gw_hold_t *hold)
{
    waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, hold, hold);
    h2o_linklist_unlink(&w->link); /* the fetch goes on: its answer may serve the next caller */
}

static void wait_for(fetch_t *f, h2o_req_t *req, const gw_caller_t *caller)
{
    waiter_t *w = h2o_mem_alloc_pool(&req->pool, sizeof(*w));
    *w = (waiter_t){{NULL}};
    memcpy(w->fingerprint, caller->fingerprint, sizeof(w->fingerprint));
    h2o_linklist_insert(&f->waiters, &w->link);
    gw_hold_attach(&w->hold, req, on_waiter_gone);
}

/* a new fetch for the key, or NULL when MAX_FETCHES are under way */
static fetch_t *fetch_start(const gw_identity_t *id, gw_member_t *member, const char *tail, size_t len, const char *path)
{
    size_t i = 0;
    while (i != MAX_FETCHES && C.fetches[i] != NULL)
        ++i;
    if (i == MAX_FETCHES)
        return NULL;
    fetch_t *f = calloc(1, sizeof(*f));
    *f = (fetch_t){id, member, h2o_strdup(NULL, tail, len).base, C.generation, gw_members_generation()};
    h2o_linklist_init_anchor(&f->waiters);
    if ((f->call = gw_members_call_first(member, id, "GET", path, NULL, 30000, on_fetched, f)) == NULL) {
        free(f->tail);
        free(f);
        return NULL;
    }
    C.fetches[i] = f;
    return f;
}

int gw_api10_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)path;
    /* the path as sent (h2o keeps it whole in req->path): exactly "/1.0", then the query string if any */
    size_t qlen = req->query_at != SIZE_MAX ? req->path.len - req->query_at : 0;
    const char *tail = req->path.base + req->path.len - qlen;
    gw_member_t *member = NULL;
    if (req->path.len - qlen == 4 && memcmp(req->path.base, "/1.0", 4) == 0 && gw_api10_cacheable_tail(tail, qlen) &&
        gw_events_connected() && C.ttl_ms != 0) {
        size_t cursor = 0;
        if ((member = gw_members_usable(gw_lxd_query(req, "target"))) == NULL) /* as gw_rewrite_pass chooses */
            member = gw_members_next(&cursor);
    }
    if (member == NULL) {
        ++C.uncached;
        gw_rewrite_pass(req, caller, rewrite_cb);
        return 1;
    }
    uint64_t members = gw_members_generation(), now = gw_clock_ms();
    for (size_t i = 0; i != SLOTS; ++i) {
        entry_t *e = &C.slots[i];
        if (e->id == NULL || !same_key(caller->identity, member, tail, qlen, e->id, e->member, e->tail))
            continue;
        if (e->members != members || now >= e->expires) {
            entry_free(e);
            break;
        }
        if (e->splice_at != SIZE_MAX && caller->fingerprint[0] == '\0')
            break; /* LXD's view of a trusted identity for a caller without a certificate: not kept, fetched */
        ++C.hits;
        e->used = ++C.tick;
        send_encoded(req, member, e->body, e->len, e->splice_at, e->etag, caller->fingerprint);
        return 1;
    }
    ++C.misses;
    for (size_t i = 0; i != MAX_FETCHES; ++i) {
        fetch_t *f = C.fetches[i];
        if (f != NULL && f->generation == C.generation && f->members == members &&
            same_key(caller->identity, member, tail, qlen, f->id, f->member, f->tail)) {
            wait_for(f, req, caller); /* many callers at once: one fetch */
            return 1;
        }
    }
    char *path_s = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    fetch_t *f = fetch_start(caller->identity, member, tail, qlen, path_s);
    if (f == NULL) {
        ++C.uncached;
        gw_rewrite_pass(req, caller, rewrite_cb);
        return 1;
    }
    wait_for(f, req, caller);
    return 1;
}

/* a write to /1.0: its answer starts (prefilter: status known, nothing sent yet) */
static void write_answer_starts(h2o_req_prefilter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    invalidate("a write to /1.0 was answered");
    h2o_setup_next_prefilter(self, req, slot);
}

int gw_api10_write(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)caller, (void)path;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return 0;
    invalidate("a write to /1.0 came");
    rewrite_write_body(req);
    h2o_add_prefilter(req, sizeof(h2o_req_prefilter_t))->on_setup_ostream = write_answer_starts;
    return 0; /* it passes through */
}

/* lifecycle actions that cannot change what GET /1.0 shows (api10Get reads none of it); any other drops the cache */
static int harmless_action(const char *action)
{
    static const char *const prefixes[] = {"instance-", "image-",   "storage-volume-", "storage-bucket-", "network-",
                                           "profile-",  "project-", "warning-",        "operation-",      "cluster-token-"};
    for (size_t i = 0; i != sizeof(prefixes) / sizeof(prefixes[0]); ++i)
        if (strncmp(action, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

static void on_event(json_t *event)
{
    const char *type = json_string_value(json_object_get(event, "type"));
    const char *action = json_string_value(json_object_get(json_object_get(event, "metadata"), "action"));
    if (type != NULL && strcmp(type, "lifecycle") == 0 && (action == NULL || !harmless_action(action)))
        invalidate(action != NULL ? action : "a lifecycle event");
}

static void on_stream_up(void)
{
    invalidate("the event stream is up again"); /* what happened while it was down was not seen */
}

void gw_api10_init(uint64_t ttl_ms)
{
    C.ttl_ms = ttl_ms;
    unsigned char raw[GW_FINGERPRINT_LEN / 2];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        for (size_t i = 0; i != sizeof(raw); ++i)
            raw[i] = (unsigned char)(gw_clock_ms() * 31 + i * 7); /* cannot happen; still a placeholder of the right form */
    for (size_t i = 0; i != sizeof(raw); ++i)
        snprintf(C.placeholder + 2 * i, 3, "%02x", raw[i]);
    snprintf(C.marker, sizeof(C.marker), "\"auth_user_name\":\"%s\"", C.placeholder);
    gw_events_listen(on_event, on_stream_up);
}

void gw_api10_stats(size_t *hits, size_t *misses, size_t *uncached)
{
    *hits = C.hits;
    *misses = C.misses;
    *uncached = C.uncached;
}
