/*
 * fuzz_route.c: path and query parsing and every route predicate, on one fake request (fuzz_req.h format):
 * gw_lxd_query, gw_lxd_list_has, gw_lxd_volume_path, gw_proxy_sanitize (the /internal refusal, header stripping),
 * the plugins' `claims`, and every row of the route table (server.c: gw_path_parse, then each handler the row is asked
 * for: operation ids, the operation list, peers, token operations, event streams, relay ids, enrolment, GET /1.0, the
 * shadow guard). With no cluster member known, a handler that takes a request must still answer it, with LXD's
 * envelope when it is an error.
 */
#include "fuzz_req.h"
#include "api10.h"
#include "config.h"
#include "enroll.h"
#include "eventstream.h"
#include "lxd.h"
#include "operations.h"
#include "oplist.h"
#include "peers.h"
#include "plugin.h"
#include "proxy.h"
#include "relay.h"
#include "server.h"
#include "shadow.h"
#include "tokens.h"

extern const gw_plugin_t gw_plugin_volume_copy, gw_plugin_volume_move;

static h2o_context_t ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx.loop = h2o_evloop_create();
    gw_ops_init(&ctx, "0123abcd");
    static gw_config_t conf; /* no peers, no public addresses */
    conf.listen[0] = "127.0.0.1:8443";
    conf.num_listen = 1;
    gw_peers_init(&ctx, &conf, "");
    gw_tokens_init(&conf, "fp");
    /* one operation of this replica, so that ids are compared with a real one */
    gw_op_start("Fuzzing", "default", "m1", NULL, NULL, NULL);
    return 0;
}

/* gw_lxd_query's answer is present exactly when a `&`-separated parameter is `name` or starts with `name=` */
static void check_query(fuzz_req_t *f, const char *name)
{
    const char *v = gw_lxd_query(&f->req, name);
    int present = 0;
    if (f->req.query_at != SIZE_MAX) {
        const char *p = f->req.path.base + f->req.query_at + 1, *end = f->req.path.base + f->req.path.len;
        size_t nlen = strlen(name);
        while (p <= end && !present) {
            const char *amp = memchr(p, '&', end - p), *stop = amp != NULL ? amp : end;
            present = (size_t)(stop - p) >= nlen && memcmp(p, name, nlen) == 0 && (p + nlen == stop || p[nlen] == '=');
            p = stop + 1;
        }
    }
    FUZZ_CHECK((v != NULL) == present, "gw_lxd_query(%s) = %s on %.*s", name, v != NULL ? v : "NULL", (int)f->req.path.len,
               f->req.path.base);
}

static int list_has_ref(const char *list, const char *item)
{
    size_t len = strlen(item);
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (n == len && memcmp(p, item, len) == 0)
            return 1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

static int has_header(h2o_req_t *req, const char *name)
{
    for (size_t i = 0; i != req->headers.size; ++i)
        if (h2o_lcstris(req->headers.entries[i].name->base, req->headers.entries[i].name->len, name, strlen(name)))
            return 1;
    return 0;
}

static void check_sanitize(fuzz_req_t *f)
{
    h2o_iovec_t p = f->req.path_normalized;
    int internal = h2o_memis(p.base, p.len < 9 ? p.len : 9, H2O_STRLIT("/internal")) && (p.len == 9 || p.base[9] == '/');
    /* names the Connection header lists (h2o's proxy handles upgrade/close/keep-alive itself) */
    const char *named[16];
    size_t num_named = 0;
    for (size_t i = 0; i != f->req.headers.size && num_named < 16; ++i) {
        if (f->req.headers.entries[i].name != &H2O_TOKEN_CONNECTION->buf)
            continue;
        h2o_iovec_t v = f->req.headers.entries[i].value;
        const char *tok;
        size_t len;
        while ((tok = h2o_next_token(&v, ',', &len, NULL)) != NULL && num_named < 16)
            if (!h2o_lcstris(tok, len, H2O_STRLIT("upgrade")) && !h2o_lcstris(tok, len, H2O_STRLIT("close")) &&
                !h2o_lcstris(tok, len, H2O_STRLIT("keep-alive")) && len != 0)
                named[num_named++] = h2o_strdup(&f->req.pool, tok, len).base;
    }
    const char *why = gw_proxy_sanitize(&f->req);
    FUZZ_CHECK(internal == (why != NULL), "internal path %.*s: sanitize said %s", (int)p.len, p.base, why != NULL ? why : "NULL");
    if (why != NULL)
        return;
    for (size_t i = 0; i != f->req.headers.size; ++i) {
        h2o_header_t *h = f->req.headers.entries + i;
        FUZZ_CHECK(!(h->name->len >= 15 && h2o_lcstris(h->name->base, 15, H2O_STRLIT("x-lxd-forwarded"))), "x-lxd-forwarded kept");
        FUZZ_CHECK(h->name != &H2O_TOKEN_TE->buf && h->name != &H2O_TOKEN_KEEP_ALIVE->buf, "hop-by-hop header kept");
        FUZZ_CHECK(!(h->name == &H2O_TOKEN_USER_AGENT->buf &&
                     h2o_strstr(h->value.base, h->value.len, H2O_STRLIT("lxd-cluster-notifier")) != SIZE_MAX),
                   "notifier user agent kept");
    }
    FUZZ_CHECK(!has_header(&f->req, "proxy-connection") && !has_header(&f->req, "trailer"), "hop-by-hop header kept");
    for (size_t i = 0; i != num_named; ++i)
        FUZZ_CHECK(!has_header(&f->req, named[i]), "header %s named in Connection kept", named[i]);
}

/* every row of the route table (server.c) that is asked for this request, as the server asks it, on a fresh copy */
static void run_routes(const uint8_t *data, size_t size)
{
    for (const gw_route_t *r = gw_routes; r->handle != NULL; ++r) {
        fuzz_req_t f;
        fuzz_req_parse(&f, data, size);
        f.caller.identity = &gw_identities[GW_IDENTITY_GATEWAY];
        gw_path_t path;
        gw_path_parse(&f.req, &path);
        /* a websocket subscription of a peer needs a real connection to upgrade: not reachable here; the plugins'
         * handle calls members (fuzz_body); the shadow guard needs the trust store (its own tests) */
        if (path.kind == GW_PATH_PEER_EVENTS)
            f.caller.kind = GW_TRUST_NONE;
        if (gw_route_matches(r, &f.req, &path) && r->handle != gw_shadow_guard && strstr(r->takes, "plugins/") == NULL) {
            if (r->handle(&f.req, &f.caller, &path))
                fuzz_req_check_answered(&f, r->takes);
            else
                FUZZ_CHECK(f.sends == 0, "%s: answered a request it did not take", r->takes);
        }
        fuzz_req_dispose(&f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_req_t f;
    fuzz_req_parse(&f, data, size);
    static const char *const names[] = {"target", "project", "recursion", "timeout", "secret", "type", "all-projects"};
    for (size_t i = 0; i != sizeof(names) / sizeof(names[0]); ++i)
        check_query(&f, names[i]);

    /* the list and volume-path helpers, on parts of the query */
    const char *target = gw_lxd_query(&f.req, "target"), *project = gw_lxd_query(&f.req, "project");
    if (target != NULL && project != NULL && *target != 0) {
        FUZZ_CHECK(gw_lxd_list_has(project, target) == list_has_ref(project, target), "gw_lxd_list_has(%s, %s)", project, target);
        char *path = gw_lxd_volume_path(project, *target ? target : NULL, project, target);
        size_t slashes = 0, qm = 0, amps = 0;
        for (const char *c = path; *c; ++c)
            slashes += *c == '/', qm += *c == '?', amps += *c == '&';
        FUZZ_CHECK(strncmp(path, "/1.0/storage-pools/", 19) == 0 && slashes == (*target ? 6u : 5u) && qm == 1 && amps == 1,
                   "volume path not escaped: %s", path);
        free(path);
    }

    /* plugins' claims: only POSTs of trusted clients that name a target */
    for (const gw_plugin_t *const *p = (const gw_plugin_t *const[]){&gw_plugin_volume_copy, &gw_plugin_volume_move, NULL}; *p;
         ++p) {
        int claimed = (*p)->claims(&f.req, &f.caller);
        FUZZ_CHECK(!claimed || (h2o_memis(f.req.method.base, f.req.method.len, H2O_STRLIT("POST")) &&
                                gw_trust_is_client(&f.caller) && target != NULL && *target != '\0'),
                   "%s claims a request it must not", (*p)->name);
        FUZZ_CHECK(f.sends == 0, "%s: claims answered", (*p)->name);
    }
    check_sanitize(&f);
    fuzz_req_dispose(&f);

    run_routes(data, size);
    return 0;
}
