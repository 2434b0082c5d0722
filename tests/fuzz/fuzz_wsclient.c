/*
 * fuzz_wsclient.c: the websocket upgrade request the gateway sends to a member or a peer (gateway/wsclient.c,
 * included; h2o_http1client_connect is replaced so that nothing is sent). The path is a client's: GET /1.0/events
 * passes its whole request target (gw_eventstream_handle). Input: url \n path.
 * Contract: the request starts with "GET <the whole path> HTTP/1.1\r\n" and ends with the blank line.
 */
#include "fuzz_req.h"
#include <h2o/http1client.h>

static h2o_http1client_connect_cb fuzz_connect_cb;
static void fuzz_http1client_connect(h2o_http1client_t **client, void *data, h2o_http1client_ctx_t *ctx, h2o_iovec_t host,
                                     uint16_t port, int is_ssl, h2o_http1client_connect_cb cb)
{
    (void)data, (void)ctx, (void)host, (void)port, (void)is_ssl;
    *client = NULL; /* nothing in flight */
    fuzz_connect_cb = cb;
}
#define h2o_http1client_connect fuzz_http1client_connect
#include "../../gateway/wsclient.c"
#undef h2o_http1client_connect

static void on_open(gw_wsclient_t *ws, void *data)
{
    (void)ws, (void)data;
}
static void on_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    (void)ws, (void)data, (void)msg, (void)len;
}
static void on_close(gw_wsclient_t *ws, void *data, const char *err)
{
    (void)ws, (void)data, (void)err;
}
static const gw_wsclient_cbs_t cbs = {on_open, on_message, on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size, *nl = memchr(p, '\n', size);
    if (nl == NULL)
        return 0;
    char *url = fuzz_strndup(p, nl - p), *path = fuzz_strndup(nl + 1, end - nl - 1);
    for (char *c = path; *c; ++c) /* a request target as h2o's parser lets it through */
        *c = fuzz_target_byte((unsigned char)*c);
    for (char *c = url; *c; ++c)
        *c = fuzz_target_byte((unsigned char)*c);
    static gw_identity_t id;
    gw_wsclient_t *ws = gw_wsclient_open_url(url, &id, path, &cbs, NULL);
    if (ws != NULL) {
        size_t plen = strlen(path);
        h2o_iovec_t r = ws->req;
        FUZZ_CHECK(r.len >= plen + 4 + 11 + 4 && memcmp(r.base, "GET ", 4) == 0 && memcmp(r.base + 4, path, plen) == 0 &&
                       memcmp(r.base + 4 + plen, " HTTP/1.1\r\n", 11) == 0 && memcmp(r.base + r.len - 4, "\r\n\r\n", 4) == 0,
                   "upgrade request of %zu bytes does not carry the whole path of %zu bytes", r.len, plen);
        gw_wsclient_close(ws);
    }
    free(url);
    free(path);
    return 0;
}
