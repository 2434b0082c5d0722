/*
 * backend.c: libcurl multi on h2o's evloop (see backend.h).
 *
 * libcurl's sockets live in a private epoll set: its socket callback adds, changes and removes them there, and the
 * epoll fd itself is the one thing h2o's loop watches (readable = some libcurl socket is ready). Level-triggered,
 * with no dup()ed descriptors and no one-shot write notifications to re-arm, so no readiness can be lost, and a
 * socket libcurl closes leaves the set with it. (An earlier design wrapped a dup() of every libcurl fd in an h2o
 * socket; it stalled uploads intermittently under concurrent calls.) Finished transfers are collected after each
 * curl_multi_socket_action, outside libcurl's callbacks, so a completion callback may start new calls.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <curl/curl.h>
#include "backend.h"
#include "text.h"
#include "metrics.h"
#include "log.h"
#include "tls.h"

#define MAX_BODY (64u << 20) /* a member's JSON answer larger than this is refused, not buffered */
/* idle connections libcurl keeps for reuse (its default, 4 per call in flight, closed connections that the next probe
 * round or trust refresh needed again: one per member per identity in use, plus other replicas); one idle for 118 s
 * (CURLOPT_MAXAGE_CONN) is closed anyway */
#define MAX_IDLE_CONNECTIONS 256

struct st_gw_call_t {
    gw_backend_done_t done; /* CURLOPT_PRIVATE points here */
    CURL *easy;
    struct curl_slist *headers;
    char *body;       /* request body (owned) */
    h2o_buffer_t *in; /* response body */
    gw_call_cb cb;
    void *data;
    struct curl_slist *answer_headers; /* the answer's header lines, trimmed */
    CURLcode result;                   /* libcurl's result, once it ended */
    char errbuf[CURL_ERROR_SIZE];
};

int gw_call_not_sent(const gw_call_t *call)
{
    return call == NULL || call->result == CURLE_COULDNT_CONNECT;
}

int gw_call_request_sent(const gw_call_t *call)
{
    long size = 0;
    if (call != NULL)
        curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &size);
    return size > 0;
}

const char *gw_call_header(const gw_call_t *call, const char *name)
{
    size_t len = strlen(name);
    for (struct curl_slist *h = call != NULL ? call->answer_headers : NULL; h != NULL; h = h->next) {
        if (strncasecmp(h->data, name, len) == 0 && h->data[len] == ':') {
            const char *v = h->data + len + 1;
            while (*v == ' ' || *v == '\t')
                ++v;
            return v;
        }
    }
    return NULL;
}

static size_t on_call_header(char *line, size_t size, size_t nmemb, void *userp)
{
    gw_call_t *call = userp;
    size_t len = size * nmemb, n = len;
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        --n;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new head (after a 100 Continue): forget the old one */
        curl_slist_free_all(call->answer_headers);
        call->answer_headers = NULL;
    } else if (n > 0) {
        char *copy = strndup(line, n);
        call->answer_headers = curl_slist_append(call->answer_headers, copy);
        free(copy);
    }
    return len;
}

/* one per fd libcurl watches */
typedef struct st_watch_t {
    h2o_socket_t *sock;
    curl_socket_t fd;
    int what;    /* CURL_POLL_IN / OUT / INOUT */
    int busy;    /* inside our readiness callback: libcurl may remove the fd meanwhile */
    int removed; /* libcurl removed it while busy: free after the callback */
} watch_t;

static struct {
    CURLM *multi;
    h2o_evloop_t *loop;
    int epfd;            /* libcurl's sockets */
    h2o_socket_t *watch; /* epfd, in h2o's loop */
    uint64_t timer_at;   /* h2o_now() value when libcurl's timer is due; UINT64_MAX = none */
    char *pin;
} B = {NULL, NULL, -1, NULL, UINT64_MAX, NULL};

static void collect_finished(void);

static void action(curl_socket_t fd, int ev)
{
    int running;
    curl_multi_socket_action(B.multi, fd, ev, &running);
    collect_finished();
}

/* some libcurl socket is ready: hand every ready one to libcurl */
static void on_ready(h2o_socket_t *sock, const char *err)
{
    (void)sock, (void)err;
    struct epoll_event evs[64];
    int n = epoll_wait(B.epfd, evs, sizeof(evs) / sizeof(evs[0]), 0);
    for (int i = 0; i < n; ++i) {
        int ev = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP))
            ev |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT)
            ev |= CURL_CSELECT_OUT;
        if (evs[i].events & EPOLLERR)
            ev |= CURL_CSELECT_ERR;
        action(evs[i].data.fd, ev);
    }
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy, (void)userp, (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(B.epfd, EPOLL_CTL_DEL, fd, NULL); /* may already be gone with a closed fd */
        return 0;
    }
    struct epoll_event ev = {.data.fd = fd};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(B.epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        epoll_ctl(B.epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi, (void)userp;
    B.timer_at = timeout_ms < 0 ? UINT64_MAX : h2o_now(B.loop) + (uint64_t)timeout_ms;
    return 0;
}

int32_t gw_backend_wait_ms(void)
{
    if (B.timer_at == UINT64_MAX)
        return INT32_MAX;
    uint64_t now = h2o_now(B.loop);
    return B.timer_at <= now ? 0 : (int32_t)(B.timer_at - now > INT32_MAX ? INT32_MAX : B.timer_at - now);
}

void gw_backend_run_timers(void)
{
    if (B.timer_at != UINT64_MAX && B.timer_at <= h2o_now(B.loop)) {
        B.timer_at = UINT64_MAX;
        action(CURL_SOCKET_TIMEOUT, 0);
    }
}

void gw_backend_init(h2o_evloop_t *loop, const char *pin)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    B.loop = loop;
    B.pin = strdup(pin);
    B.multi = curl_multi_init();
    B.epfd = epoll_create1(EPOLL_CLOEXEC);
    B.watch = h2o_evloop_socket_create(loop, B.epfd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(B.watch, on_ready);
    curl_multi_setopt(B.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(B.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(B.multi, CURLMOPT_MAXCONNECTS, (long)MAX_IDLE_CONNECTIONS);
}

/* the TLS sessions of `id`'s calls, resumed by its next connections (a full handshake costs the gateway a few ms of
 * CPU, a resumed one a fraction). One share per identity: a resumed session carries the client certificate the member
 * authenticated, so one identity's session must never serve another (libcurl 7.88 also tells them apart by
 * CURLOPT_SSLCERT in its session match; this does not depend on it). */
static CURLSH *share_of(const gw_identity_t *id)
{
    void **share = &((gw_identity_t *)id)->backend_share; /* the identity's own, as its socket pools */
    if (*share == NULL) {
        *share = curl_share_init();
        curl_share_setopt(*share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION); /* one thread: no lock functions */
    }
    return *share;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userp)
{
    gw_call_t *call = userp;
    size_t len = size * nmemb;
    if (call->in->size + len > MAX_BODY)
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    h2o_buffer_reserve(&call->in, len);
    memcpy(call->in->bytes + call->in->size, ptr, len);
    call->in->size += len;
    return len;
}

/* libcurl makes an OpenSSL context per connection: its handshakes are counted as h2o's are */
static CURLcode on_ssl_ctx(CURL *easy, void *ssl_ctx, void *data)
{
    (void)easy, (void)data;
    gw_tls_count_handshakes(ssl_ctx);
    return CURLE_OK;
}

CURL *gw_backend_easy(const gw_identity_t *id)
{
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "lxd-gateway");
    /* members are addressed by IP and serve the self-signed cluster certificate: trust exactly that key */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(e, CURLOPT_PINNEDPUBLICKEY, B.pin);
    /* one call, one connection: libcurl 7.88's HTTP/2 multiplexing of concurrent calls to one member handed a call
     * another one's answer under load (the soak: a move took another transfer's Success and deleted its source) */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 0L);
    if (id->cert_file != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, id->cert_file);
        curl_easy_setopt(e, CURLOPT_SSLKEY, id->key_file);
    }
    curl_easy_setopt(e, CURLOPT_SHARE, share_of(id));
    curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    return e;
}

void gw_backend_start(CURL *easy, gw_backend_done_t *done)
{
    curl_easy_setopt(easy, CURLOPT_PRIVATE, done);
    curl_multi_add_handle(B.multi, easy);
}

void gw_backend_stop(CURL *easy)
{
    curl_multi_remove_handle(B.multi, easy);
}

static void destroy(gw_call_t *call)
{
    gw_backend_stop(call->easy);
    curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->headers);
    free(call->body);
    curl_slist_free_all(call->answer_headers);
    h2o_buffer_dispose(&call->in);
    free(call);
}

static void on_call_done(void *data, CURLcode result)
{
    gw_call_t *call = data;
    long status = 0;
    const char *err = NULL;
    json_t *json = NULL;
    if (result != CURLE_OK) {
        err = call->errbuf[0] != '\0' ? call->errbuf : curl_easy_strerror(result);
    } else {
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
        json = json_loadb(call->in->bytes, call->in->size, 0, NULL);
    }
    double seconds = 0;
    curl_easy_getinfo(call->easy, CURLINFO_TOTAL_TIME, &seconds);
    gw_metrics_backend_call(seconds);
    if (gw_log_level <= GW_LOG_DEBUG) {
        char *url = NULL, ms[32];
        curl_easy_getinfo(call->easy, CURLINFO_EFFECTIVE_URL, &url);
        snprintf(ms, sizeof(ms), "%.3f", seconds * 1e3);
        gw_debug("backend call", "url", url != NULL ? url : "-", "status", gw_log_num(status), "duration_ms", ms, "err",
                 err != NULL ? err : "-", NULL);
    }
    call->result = result;
    call->cb(call->data, err, status, json, call);
    json_decref(json);
    destroy(call);
}

gw_call_t *gw_backend_call(const char *base_url, const gw_identity_t *id, const char *method, const char *path, const char *body,
                           uint64_t timeout_ms, gw_call_cb cb, void *data)
{
    static const gw_call_opts_t none = {NULL, NULL, 0};
    return gw_backend_call_opts(&none, base_url, id, method, path, body, timeout_ms, cb, data);
}

gw_call_t *gw_backend_call_opts(const gw_call_opts_t *opts, const char *base_url, const gw_identity_t *id, const char *method,
                                const char *path, const char *body, uint64_t timeout_ms, gw_call_cb cb, void *data)
{
    gw_call_t *call = calloc(1, sizeof(*call));
    char *url = gw_text_dupf("%s%s", base_url, path); /* a path of any length: never cut (a cut query changes its meaning) */
    call->easy = gw_backend_easy(id);
    call->cb = cb;
    call->data = data;
    h2o_buffer_init(&call->in, &h2o_socket_buffer_prototype);
    CURL *e = call->easy;
    curl_easy_setopt(e, CURLOPT_URL, url); /* libcurl copies it */
    free(url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_call_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (opts->pin != NULL)
        curl_easy_setopt(e, CURLOPT_PINNEDPUBLICKEY, opts->pin);
    if (opts->connect_timeout_ms != 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)opts->connect_timeout_ms);
    if (opts->header != NULL)
        call->headers = curl_slist_append(call->headers, opts->header);
    if (timeout_ms == 0) { /* a long-poll: a peer that vanished without closing is found by keepalive probes */
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 10L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 5L);
    }
    if (body != NULL) {
        call->body = strdup(body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(call->body));
        call->headers = curl_slist_append(call->headers, "Content-Type: application/json");
    }
    call->headers = curl_slist_append(call->headers, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->headers);
    call->done = (gw_backend_done_t){on_call_done, call};
    gw_backend_start(e, &call->done);
    return call;
}

void gw_backend_cancel(gw_call_t *call)
{
    destroy(call);
}

static void collect_finished(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(B.multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        gw_backend_done_t *done;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&done);
        done->cb(done->data, msg->data.result);
    }
}
