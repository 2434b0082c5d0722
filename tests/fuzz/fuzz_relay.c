/*
 * fuzz_relay.c: a relay's id and secret check and the upgrade request it sends to the migration source
 * (gateway/relay.c, included; h2o_http1client_connect is replaced so that nothing is sent). Input: op \n secret \n
 * websocket key \n extra path. The source operation's id and secret come from a member's answer, the key from
 * whoever connects with the relay's secret.
 * Contract: a matching request is taken and answered 101 at once, with the Sec-WebSocket-Accept RFC 6455 gives for its
 * key; its upgrade request to the source carries the whole operation id, secret and key; the extra path (any request
 * target) is taken only when it names the relay with its secret, and then answered.
 */
#include "fuzz_req.h"
#include <h2o/http1client.h>
#include <h2o/http1.h>

static void fuzz_http1client_connect(h2o_http1client_t **client, void *data, h2o_http1client_ctx_t *ctx, h2o_iovec_t host,
                                     uint16_t port, int is_ssl, h2o_http1client_connect_cb cb)
{
    (void)data, (void)ctx, (void)host, (void)port, (void)is_ssl, (void)cb;
    *client = NULL;
}
/* h2o_http1_upgrade is replaced too: the answer is kept as it is (status, headers); the harness completes it */
static struct {
    h2o_http1_upgrade_cb cb;
    void *data;
} upgrade[2]; /* the target's request, and the extra one when it names the relay too */
static size_t upgrades;
static void fuzz_http1_upgrade(h2o_req_t *req, h2o_iovec_t *inbufs, size_t inbufcnt, h2o_http1_upgrade_cb cb, void *data)
{
    (void)req, (void)inbufs, (void)inbufcnt;
    FUZZ_CHECK(upgrades != 2, "more upgrades than requests");
    upgrade[upgrades].cb = cb;
    upgrade[upgrades++].data = data;
}
#define h2o_http1client_connect fuzz_http1client_connect
#define h2o_http1_upgrade fuzz_http1_upgrade
#include "../../gateway/relay.c"
#undef h2o_http1client_connect
#undef h2o_http1_upgrade

/* the 101's accept value for `key`, as RFC 6455 4.2.2 computes it (the RFC's own example is checked once) */
static void expected_accept(const char *key, size_t len, char *out)
{
    websocket_accept(h2o_iovec_init(key, len), out);
}

/* the target's 101 was written, or the target left (sock NULL): what h2o does after h2o_http1_upgrade */
static void complete_upgrades(void)
{
    for (size_t i = 0; i != upgrades; ++i)
        upgrade[i].cb(upgrade[i].data, NULL, 0);
    upgrades = 0;
}

static char *next_field(const char **p, const char *end)
{
    const char *nl = memchr(*p, '\n', end - *p), *stop = nl != NULL ? nl : end;
    char *s = fuzz_strndup(*p, stop - *p);
    *p = nl != NULL ? nl + 1 : end;
    return s;
}

static int contains(h2o_iovec_t hay, const char *needle)
{
    return *needle == '\0' || h2o_strstr(hay.base, hay.len, needle, strlen(needle)) != SIZE_MAX;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    char *op = next_field(&p, end), *secret = next_field(&p, end), *key = next_field(&p, end), *extra = fuzz_strndup(p, end - p);
    if (R.base == NULL)
        R.base = strdup("https://10.0.0.100:8443");
    static gw_member_t src = {.name = "m1", .url = "https://10.0.0.1:8443"};
    src.authority = h2o_iovec_init(H2O_STRLIT("10.0.0.1:8443"));
    static gw_identity_t who;
    json_t *secrets = json_object(), *s = json_string(secret); /* NULL: not UTF-8, which a member's JSON cannot hold */
    if (s != NULL)
        json_object_set_new(secrets, "control", s);
    json_object_set_new(secrets, "fs", json_string("fs-secret"));
    const char *name = s != NULL ? "control" : "fs";
    gw_relay_t *r = gw_relay_open(&src, &who, op, secrets);
    json_decref(secrets);

    /* the target connects with the relay's own secret */
    char *path;
    if (asprintf(&path, "/1.0/operations/%s/websocket?secret=%s", r->id, json_string_value(json_object_get(r->ours, name))) < 0)
        abort();
    fuzz_req_t f;
    fuzz_req_init(&f, H2O_STRLIT("GET"), path, strlen(path));
    fuzz_req_header(&f, H2O_STRLIT("upgrade"), H2O_STRLIT("websocket"));
    fuzz_req_header(&f, H2O_STRLIT("sec-websocket-key"), key, strlen(key));
    gw_path_t fpath;
    gw_path_parse(&f.req, &fpath);
    FUZZ_CHECK(fpath.kind == GW_PATH_OPERATION_WEBSOCKET && gw_relay_handle(&f.req, NULL, &fpath) == 1,
               "the relay did not take its own request");
    static int rfc_checked;
    if (!rfc_checked) { /* RFC 6455 1.3's example */
        char a[32];
        expected_accept(H2O_STRLIT("dGhlIHNhbXBsZSBub25jZQ=="), a);
        FUZZ_CHECK(strcmp(a, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0, "websocket accept for the RFC's example: %s", a);
        rfc_checked = 1;
    }
    if (upgrades != 0) {
        chan_t *c = r->chans[0];
        ssize_t ai = h2o_find_header_by_str(&f.req.res.headers, H2O_STRLIT("sec-websocket-accept"), -1);
        char want[32];
        h2o_iovec_t kv = f.req.headers.entries[h2o_find_header_by_str(&f.req.headers, H2O_STRLIT("sec-websocket-key"), -1)].value;
        expected_accept(kv.base, kv.len, want);
        FUZZ_CHECK(
            f.req.res.status == 101 && ai != -1 &&
                h2o_memis(f.req.res.headers.entries[ai].value.base, f.req.res.headers.entries[ai].value.len, want, strlen(want)),
            "the target's upgrade was not answered 101 with its accept value");
        FUZZ_CHECK(c != NULL, "no channel");
        h2o_iovec_t k = f.req.headers.entries[h2o_find_header_by_str(&f.req.headers, H2O_STRLIT("sec-websocket-key"), -1)].value;
        char *kz = fuzz_strndup(k.base, k.len);
        FUZZ_CHECK(contains(c->upreq, op) && contains(c->upreq, json_string_value(json_object_get(r->secrets, name))) &&
                       contains(c->upreq, kz) && c->upreq.len >= 4 && memcmp(c->upreq.base + c->upreq.len - 4, "\r\n\r\n", 4) == 0,
                   "upgrade request (%zu bytes) lost the operation (%zu), the secret or the key (%zu)", c->upreq.len, strlen(op),
                   strlen(kz));
        free(kz);
    }
    /* any other request target */
    fuzz_req_t g;
    fuzz_req_init(&g, H2O_STRLIT("GET"), extra, strlen(extra));
    fuzz_req_header(&g, H2O_STRLIT("upgrade"), H2O_STRLIT("websocket"));
    fuzz_req_header(&g, H2O_STRLIT("sec-websocket-key"), H2O_STRLIT("dGhlIHNhbXBsZSBub25jZQ=="));
    gw_path_t gpath;
    gw_path_parse(&g.req, &gpath); /* (as the route table asks it: for operation websockets only) */
    if (size & 1)
        complete_upgrades(); /* half the inputs: the first target left before its 101 was written (on_upgraded) */
    if (gpath.kind == GW_PATH_OPERATION_WEBSOCKET && gw_relay_handle(&g.req, NULL, &gpath)) {
        FUZZ_CHECK(g.req.path_normalized.len == 16 + 36 + 10 && memcmp(g.req.path_normalized.base + 16, r->id, 36) == 0,
                   "the relay took %.*s", (int)g.req.path_normalized.len, g.req.path_normalized.base);
    } else {
        FUZZ_CHECK(g.sends == 0, "answered a request it did not take");
    }
    gw_relay_close(r); /* ends its channels: one still upgrading is freed when its upgrade completes */
    complete_upgrades();
    if (f.sends)
        fuzz_req_check_answered(&f, "relay");
    fuzz_req_dispose(&f);
    fuzz_req_dispose(&g);
    free(path), free(op), free(secret), free(key), free(extra);
    return 0;
}
