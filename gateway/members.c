/*
 * members.c: member list, discovery and health (see members.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include "log.h"
#include "members.h"

#define MAX_MEMBERS GW_IDENTITY_POOLS /* each identity has a socket pool per member slot */
#define DISCOVERY_EVERY 5             /* health rounds between two reads of /1.0/cluster/members */
/* keep-alive of pooled member connections: a new one costs a TLS handshake. LXD 5.0.2 never closes an idle one (its
 * http.Server has no IdleTimeout nor ReadTimeout); one a member closed (a restart) fails h2o's liveness peek when it is
 * taken from the pool, and another is opened */
#define POOL_IDLE_MS 60000
#define PROBE_TIMEOUTS 3  /* unanswered probes in a row before a member is skipped */
#define PROBE_MIN_MS 5000 /* a probe waits at least this long for its answer */
#define LACK_KEPT 32      /* extension names whose answer is kept at most (plugins ask about one each) */

static struct {
    h2o_context_t *ctx;
    gw_member_t *list[MAX_MEMBERS];
    size_t num;
    uint64_t interval_ms;
    h2o_timeout_t timeout;
    h2o_timeout_entry_t tick;
    unsigned rounds;
    gw_call_t *discovery;
    int discovered;      /* the member list was asked for once, and answered (a standalone server answers an error) */
    uint64_t generation; /* gw_members_generation */
    struct {
        char **names; /* extension names asked about since member data last changed */
        int *lacking; /* gw_members_lack_extension's answer for each */
        size_t num;   /* how many */
    } lack;           /* answers kept until a member's presence, health or extensions change (members_changed) */
} M;

/* gw_members_lack_extension's kept answers go */
static void lack_forget(void)
{
    for (size_t i = 0; i != M.lack.num; ++i)
        free(M.lack.names[i]);
    free(M.lack.names);
    free(M.lack.lacking);
    M.lack.names = NULL;
    M.lack.lacking = NULL;
    M.lack.num = 0;
}

/* a member was added, or its presence, name, online state, health or extension list changed: the kept answers are
 * stale, and whatever was chosen by the members' state (gw_members_generation) */
static void members_changed(void)
{
    ++M.generation;
    lack_forget();
}

uint64_t gw_members_generation(void)
{
    return M.generation;
}

static const char *resolve(gw_member_t *m)
{
    h2o_url_t url;
    if (h2o_url_parse(m->url, SIZE_MAX, &url) != 0 || url.scheme != &H2O_URL_SCHEME_HTTPS)
        return "not an https URL";
    m->authority = h2o_strdup(NULL, url.authority.base, url.authority.len);
    char *host = h2o_strdup(NULL, url.host.base, url.host.len).base, port[8]; /* a member's URL: any length */
    snprintf(port, sizeof(port), "%u", h2o_url_get_port(&url));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    /* a member address is normally an IP; a host name is resolved once, when the member is added */
    int rc = getaddrinfo(host, port, &hints, &res);
    free(host);
    if (rc != 0)
        return "cannot resolve the host";
    memcpy(&m->addr, res->ai_addr, res->ai_addrlen);
    m->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return NULL;
}

static gw_member_t *find_url(const char *url)
{
    for (size_t i = 0; i != M.num; ++i)
        if (strcmp(M.list[i]->url, url) == 0)
            return M.list[i];
    return NULL;
}

static gw_member_t *add(const char *url, const char *name)
{
    if (M.num == MAX_MEMBERS)
        return NULL;
    gw_member_t *m = calloc(1, sizeof(*m));
    m->url = strdup(url);
    size_t len = strlen(m->url);
    while (len > 0 && m->url[len - 1] == '/')
        m->url[--len] = '\0';
    const char *err;
    if ((err = resolve(m)) != NULL) {
        gw_log(GW_LOG_ERROR, "member address unusable", "url", url, "err", err, NULL);
        free(m->authority.base);
        free(m->url);
        free(m);
        return NULL;
    }
    m->name = strdup(name != NULL ? name : m->url);
    m->present = m->online = m->healthy = 1;
    m->slot = M.num;
    M.list[M.num++] = m;
    members_changed();
    gw_log(GW_LOG_INFO, "member added", "member", m->name, "url", m->url, NULL);
    return m;
}

static int usable(gw_member_t *m, int any_healthy)
{
    return m->present && (any_healthy ? m->online && m->healthy : 1);
}

gw_member_t *gw_members_next(size_t *cursor)
{
    /* with no healthy member left, a stale health view must not turn every request away: try them all */
    int any_healthy = 0;
    for (size_t i = 0; i != M.num && !any_healthy; ++i)
        any_healthy = M.list[i]->present && M.list[i]->online && M.list[i]->healthy;
    for (; *cursor < M.num; ++*cursor) {
        gw_member_t *m = M.list[*cursor];
        if (usable(m, any_healthy)) {
            ++*cursor;
            return m;
        }
    }
    return NULL;
}

void gw_members_foreach(void (*cb)(const gw_member_t *m, void *data), void *data)
{
    for (size_t i = 0; i != M.num; ++i)
        if (M.list[i]->present)
            cb(M.list[i], data);
}

gw_member_t *gw_members_find(const char *name)
{
    for (size_t i = 0; i != M.num; ++i)
        if (M.list[i]->present && strcmp(M.list[i]->name, name) == 0)
            return M.list[i];
    return NULL;
}

gw_member_t *gw_members_usable(const char *name)
{
    gw_member_t *m = name != NULL && *name != '\0' ? gw_members_find(name) : NULL;
    return m != NULL && m->online && m->healthy ? m : NULL;
}

h2o_socketpool_t *gw_member_pool(gw_member_t *m, const gw_identity_t *id)
{
    h2o_socketpool_t **slot = &((gw_identity_t *)id)->pools[m->slot]; /* the pool cache is the identity's own */
    if (*slot == NULL) {
        *slot = malloc(sizeof(**slot));
        h2o_socketpool_init_by_address(*slot, (struct sockaddr *)&m->addr, m->addrlen, 1, SIZE_MAX);
        h2o_socketpool_set_timeout(*slot, M.ctx->loop, POOL_IDLE_MS);
    }
    return *slot;
}

#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2
#error "members.c mirrors a private structure of h2o 2.2 (lib/common/socketpool.c); check it against this version"
#endif

/* lib/common/socketpool.c of h2o 2.2.5, as far as needed: what `_shared.sockets` links (its header says so, the
 * struct is private to that file) */
struct h2o_pool_entry_225 {
    h2o_socket_export_t sockinfo;
    h2o_linklist_t link;
    uint64_t added_at; /* h2o_now() when returned to the pool, ms */
};

int gw_member_pool_has_live(h2o_socketpool_t *pool)
{
    if (h2o_linklist_is_empty(&pool->_shared.sockets)) /* (one thread: the mutex guards nothing here) */
        return 0;
    struct h2o_pool_entry_225 *e = H2O_STRUCT_FROM_MEMBER(struct h2o_pool_entry_225, link, pool->_shared.sockets.next);
    if (pool->timeout != UINT64_MAX && e->added_at + pool->timeout <= h2o_now(M.ctx->loop))
        return 0; /* h2o drops it first, and may then connect anew */
    char c;
    return recv(e->sockinfo.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void set_healthy(gw_member_t *m, int healthy, const char *why)
{
    if (m->healthy != healthy)
        gw_log(healthy ? GW_LOG_INFO : GW_LOG_WARN, healthy ? "member reachable" : "member unreachable", "member", m->name,
               "reason", why, NULL);
    if (m->healthy != healthy)
        members_changed();
    m->healthy = healthy;
    if (healthy)
        m->last_ok_at = h2o_now(M.ctx->loop);
}

/* gw_members_lack_extension computed from the member list (each member's ~300 extension names: done once per change) */
static int lack_compute(const char *name)
{
    int lacking = 0;
    for (size_t i = 0; i != M.num; ++i) {
        gw_member_t *m = M.list[i];
        if (!m->present || (m->extensions == NULL && !m->healthy))
            continue; /* a dead member does not decide for the living */
        if (m->extensions == NULL)
            return 0; /* not known yet: claim nothing rather than do natively-supported work ourselves */
        int found = 0;
        size_t j;
        json_t *e;
        json_array_foreach(m->extensions, j, e) if (json_is_string(e) && strcmp(json_string_value(e), name) == 0) found = 1;
        if (!found)
            lacking = 1;
    }
    return lacking;
}

int gw_members_lack_extension(const char *name)
{
    for (size_t i = 0; i != M.lack.num; ++i)
        if (strcmp(M.lack.names[i], name) == 0)
            return M.lack.lacking[i];
    /* asked once per name and change: plugins name their one extension each (a bound all the same) */
    if (M.lack.num == LACK_KEPT)
        lack_forget();
    M.lack.names = realloc(M.lack.names, (M.lack.num + 1) * sizeof(*M.lack.names));
    M.lack.lacking = realloc(M.lack.lacking, (M.lack.num + 1) * sizeof(*M.lack.lacking));
    M.lack.names[M.lack.num] = strdup(name);
    return M.lack.lacking[M.lack.num++] = lack_compute(name);
}

static void on_probe(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    gw_member_t *m = data;
    m->probe = NULL;
    m->probed = 1;
    json_t *exts = json_object_get(json_object_get(json, "metadata"), "api_extensions");
    if (err == NULL && status == 200 && json_is_array(exts)) { /* the untrusted view lists them too */
        if (m->extensions == NULL || !json_equal(m->extensions, exts))
            members_changed();
        json_decref(m->extensions);
        m->extensions = json_incref(exts);
    }
    if (err != NULL && !gw_call_not_sent(call)) {
        if (++m->timeouts >= PROBE_TIMEOUTS)
            set_healthy(m, 0, err);
        return;
    }
    m->timeouts = 0;
    if (err != NULL)
        set_healthy(m, 0, err); /* refused: the member is down, no doubt */
    else
        set_healthy(m, status == 200, status == 200 ? "GET /1.0 answered" : "GET /1.0 did not answer 200");
}

static void probe(gw_member_t *m)
{
    if (m->probe == NULL)
        m->probe = gw_backend_call(m->url, &gw_identities[GW_IDENTITY_ANONYMOUS], "GET", "/1.0", NULL,
                                   M.interval_ms > PROBE_MIN_MS ? M.interval_ms : PROBE_MIN_MS, on_probe, m);
}

void gw_member_note(h2o_req_t *req, const gw_member_t *m)
{
    *h2o_req_getenv(req, H2O_STRLIT("gw.member"), 1) = h2o_strdup(&req->pool, m->name, SIZE_MAX);
}

void gw_member_failed(gw_member_t *m, const char *err)
{
    set_healthy(m, 0, err);
    probe(m);
}

void gw_member_probe(gw_member_t *m)
{
    probe(m);
}

/* applies the answer of GET /1.0/cluster/members?recursion=1 */
static void on_discovery(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    (void)data;
    M.discovery = NULL;
    M.discovered = 1;
    json_t *list = json_object_get(json, "metadata");
    if (err != NULL || status != 200 || !json_is_array(list)) {
        /* a standalone server answers an error here: its seeds are all there is */
        gw_debug("member list not read", "err", err != NULL ? err : json_string_value(json_object_get(json, "error")), NULL);
        return;
    }
    int was_present[MAX_MEMBERS];
    size_t was_num = M.num; /* members added below are new (add() says so) */
    for (size_t i = 0; i != M.num; ++i) {
        was_present[i] = M.list[i]->present;
        M.list[i]->present = 0;
    }
    size_t idx;
    json_t *e;
    json_array_foreach(list, idx, e)
    {
        const char *url = json_string_value(json_object_get(e, "url"));
        const char *name = json_string_value(json_object_get(e, "server_name"));
        const char *st = json_string_value(json_object_get(e, "status"));
        if (url == NULL || name == NULL)
            continue;
        gw_member_t *m = find_url(url);
        if (m == NULL) {
            if ((m = add(url, name)) == NULL)
                continue;
            probe(m); /* what it is and has, now rather than at the next round */
        }
        if (strcmp(m->name, name) != 0) {
            free(m->name);
            m->name = strdup(name);
            members_changed();
        }
        m->present = 1;
        int online = st != NULL && strcmp(st, "Online") == 0;
        if (online != m->online)
            gw_log(online ? GW_LOG_INFO : GW_LOG_WARN, "member status", "member", name, "status", st, NULL);
        if (online != m->online)
            members_changed();
        m->online = online;
    }
    for (size_t i = 0; i != was_num; ++i)
        if (M.list[i]->present != was_present[i])
            members_changed();
}

int gw_members_settled(void)
{
    if (!M.discovered)
        return 0;
    for (size_t i = 0; i != M.num; ++i)
        if (M.list[i]->present && !M.list[i]->probed)
            return 0;
    return 1;
}

static void discover(void)
{
    size_t cursor = 0;
    gw_member_t *m;
    if (M.discovery != NULL || (m = gw_members_next(&cursor)) == NULL)
        return;
    M.discovery = gw_backend_call(m->url, &gw_identities[GW_IDENTITY_GATEWAY], "GET", "/1.0/cluster/members?recursion=1", NULL,
                                  M.interval_ms * 2, on_discovery, NULL);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    for (size_t i = 0; i != M.num; ++i)
        if (M.list[i]->present)
            probe(M.list[i]);
    if (M.rounds++ % DISCOVERY_EVERY == 0)
        discover();
    h2o_timeout_link(M.ctx->loop, &M.timeout, &M.tick);
}

const char *gw_members_init(h2o_context_t *ctx, const gw_config_t *conf)
{
    M.ctx = ctx;
    M.interval_ms = conf->health_interval_ms;
    for (size_t i = 0; i != conf->num_members; ++i)
        if (add(conf->members[i], NULL) == NULL)
            return "a cluster.members entry is unusable";
    h2o_timeout_init(ctx->loop, &M.timeout, M.interval_ms);
    M.tick.cb = on_tick;
    on_tick(&M.tick);
    return NULL;
}

struct st_gw_mcall_t {
    const gw_identity_t *id;
    char *method, *path, *body;
    uint64_t timeout_ms;
    gw_call_cb cb;
    void *data;
    gw_member_t *first;  /* to try before the others (gw_members_usable), until tried; or NULL */
    size_t cursor;       /* next member to try after it */
    gw_member_t *member; /* the member being tried */
    gw_call_t *call;     /* in flight */
};

static void mcall_free(gw_mcall_t *c)
{
    free(c->method);
    free(c->path);
    free(c->body);
    free(c);
}

static void mcall_try(gw_mcall_t *c);

static void on_mcall(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    gw_mcall_t *c = data;
    c->call = NULL;
    if (err != NULL && gw_call_not_sent(call)) {
        gw_member_failed(c->member, err);
        mcall_try(c);
        return;
    }
    c->cb(c->data, err, status, json, call);
    mcall_free(c);
}

static void mcall_try(gw_mcall_t *c)
{
    if (c->first != NULL) {
        c->member = c->first;
        c->first = NULL;
    } else if ((c->member = gw_members_next(&c->cursor)) == NULL) {
        c->cb(c->data, "No cluster member is reachable through the gateway", 0, NULL, NULL);
        mcall_free(c);
        return;
    }
    c->call = gw_backend_call(c->member->url, c->id, c->method, c->path, c->body, c->timeout_ms, on_mcall, c);
}

gw_mcall_t *gw_members_call_first(gw_member_t *first, const gw_identity_t *id, const char *method, const char *path,
                                  const char *body, uint64_t timeout_ms, gw_call_cb cb, void *data)
{
    size_t cursor = 0;
    if (first == NULL && gw_members_next(&cursor) == NULL)
        return NULL; /* said at once, so that no callback runs before the caller holds the call */
    gw_mcall_t *c = calloc(1, sizeof(*c));
    *c = (gw_mcall_t){id, strdup(method), strdup(path), body != NULL ? strdup(body) : NULL, timeout_ms, cb, data, first};
    mcall_try(c);
    return c;
}

gw_mcall_t *gw_members_call(const gw_identity_t *id, const char *method, const char *path, const char *body, uint64_t timeout_ms,
                            gw_call_cb cb, void *data)
{
    return gw_members_call_first(NULL, id, method, path, body, timeout_ms, cb, data);
}

gw_member_t *gw_members_call_member(gw_mcall_t *c)
{
    return c->member;
}

void gw_members_call_cancel(gw_mcall_t *c)
{
    if (c->call != NULL)
        gw_backend_cancel(c->call);
    mcall_free(c);
}
