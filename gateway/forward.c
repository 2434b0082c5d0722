/*
 * forward.c: see forward.h.
 *
 * The member's answer is relayed as it comes: head first, then the body through h2o's generator (one h2o_send in
 * flight at a time; libcurl is paused when more than PENDING_MAX bytes wait for the client).
 *
 * A streamed request (gw_forward_stream) starts before the gateway's handler has it: its body comes from upload.h's
 * window as the client sends it (libcurl's read callback pauses when the window is empty), and whatever the member
 * answers meanwhile (an early error) is kept until the handler has the request (`handled`): h2o cannot answer a
 * request before that.
 */
#include <string.h>
#include "backend.h"
#include "forward.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "upload.h"

#define CONNECT_TIMEOUT_MS 10000 /* connecting to the member (TCP and TLS) */
#define STALL_S 300              /* no byte either way for this long: the forward is given up */
#define UPLOAD_BUFFER (1L << 20) /* libcurl's upload buffer for a large body (its default: 64 KiB; its most: 2 MiB) */

#define PENDING_MAX (4u << 20)

typedef struct st_fwd_t {
    gw_backend_done_t done;    /* libcurl tells us here when the transfer ends */
    h2o_generator_t generator; /* how h2o asks for more of the answer */
    h2o_req_t *req;            /* NULL once the client went away */
    const gw_identity_t *id;
    size_t cursor;       /* next member position to try */
    gw_member_t *member; /* the member being tried */
    CURL *easy;          /* the transfer, or NULL when none runs */
    struct curl_slist *headers;
    int status;                /* the member's HTTP status (final, not 100) */
    int started;               /* the answer's head was given to h2o */
    int finished;              /* the transfer ended (ok or not) */
    int failed;                /* it ended in an error after the head was sent */
    int paused;                /* libcurl's receiving is paused until the client takes more */
    gw_upload_t *upload;       /* a streamed body (upload.h), or NULL: the body is req->entity */
    int handled;               /* the gateway's handler has the request: the answer may start (always, unless streamed) */
    int read_paused;           /* libcurl's sending is paused until the client sends more of a streamed body */
    int head_done;             /* the member's head was read whole (kept in res_headers until `handled`) */
    size_t content_length;     /* of the member's answer (SIZE_MAX: none said) */
    h2o_headers_t res_headers; /* the member's answer headers to relay */
    uint64_t sent;             /* body bytes given to libcurl */
    int error_status;          /* an answer of the gateway's own to give when handled (0: none) */
    const char *error_msg;     /* its message (in the request's pool) */
    int overflow;              /* the member sent more than PENDING_MAX of its answer before the request was handled */
    gw_member_t *home;         /* the member hosting the instance the request is about (tried first), or NULL */
    int tried_home;            /* the home member was tried already */
    gw_mcall_t *lookup;        /* GET of the instance, to find its member; in flight or NULL */
    h2o_buffer_t *pending;     /* answer bytes not yet given to h2o */
    h2o_buffer_t *sending;     /* the bytes of the h2o_send in flight (NULL: none) */
    char errbuf[CURL_ERROR_SIZE];
} fwd_t;

static void try_next(fwd_t *f);

static void end_transfer(fwd_t *f)
{
    if (f->easy == NULL)
        return;
    gw_backend_stop(f->easy);
    curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->headers);
    f->easy = NULL;
    f->headers = NULL;
}

/* gives h2o what is pending, if h2o is ready for it */
static void flush(fwd_t *f)
{
    if (f->req == NULL || !f->started || f->sending != NULL)
        return;
    if (f->pending->size == 0 && !f->finished)
        return;
    h2o_send_state_t state = !f->finished ? H2O_SEND_STATE_IN_PROGRESS : f->failed ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
    f->sending = f->pending;
    h2o_buffer_init(&f->pending, &h2o_socket_buffer_prototype);
    h2o_iovec_t buf = h2o_iovec_init(f->sending->bytes, f->sending->size);
    h2o_send(f->req, &buf, buf.len != 0, state);
}

/* tells libcurl which directions are paused now */
static void set_pause(fwd_t *f)
{
    if (f->easy != NULL)
        curl_easy_pause(f->easy, (f->paused ? CURLPAUSE_RECV : 0) | (f->read_paused ? CURLPAUSE_SEND : 0));
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    fwd_t *f = H2O_STRUCT_FROM_MEMBER(fwd_t, generator, gen);
    h2o_buffer_dispose(&f->sending);
    f->sending = NULL;
    if (f->paused) {
        f->paused = 0;
        set_pause(f);
    }
    flush(f);
}

/* the answer's head goes to h2o once the member sent it whole and the handler has the request */
static void start(fwd_t *f)
{
    h2o_req_t *req = f->req;
    if (req == NULL || !f->handled || !f->head_done || f->started)
        return;
    req->res.status = f->status;
    req->res.reason = "";
    req->res.content_length = f->content_length;
    for (size_t i = 0; i != f->res_headers.size; ++i) {
        h2o_header_t *h = f->res_headers.entries + i;
        h2o_add_header_by_str(&req->pool, &req->res.headers, h->name->base, h->name->len, 1, NULL, h->value.base, h->value.len);
    }
    f->generator = (h2o_generator_t){on_proceed, NULL};
    f->started = 1;
    h2o_start_response(req, &f->generator);
    flush(f);
}

/* the gateway answers itself (nothing of the member's answer was relayed): now, or when the handler has the request */
static void fail(fwd_t *f, int status, const char *msg)
{
    end_transfer(f);
    if (f->req == NULL)
        return;
    if (!f->handled) { /* the answer waits for the handler, which comes at once: the body is ended here */
        f->error_status = status;
        f->error_msg = h2o_strdup(&f->req->pool, msg, SIZE_MAX).base;
        gw_upload_end(f->upload);
        return;
    }
    gw_lxd_send_error(f->req, status, "%s", msg);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userp)
{
    fwd_t *f = userp;
    size_t len = size * nmemb;
    if (f->pending->size >= PENDING_MAX && !f->handled) {
        f->overflow = 1; /* more answer than an early error before the request was even read: nobody would take it */
        return 0;        /* (libcurl ends the transfer: CURLE_WRITE_ERROR) */
    }
    if (f->pending->size >= PENDING_MAX) {
        f->paused = 1;
        return CURL_WRITEFUNC_PAUSE; /* libcurl delivers the same bytes again after CURLPAUSE_CONT */
    }
    h2o_buffer_reserve(&f->pending, len);
    memcpy(f->pending->bytes + f->pending->size, ptr, len);
    f->pending->size += len;
    flush(f);
    return len;
}

static int is_hop_by_hop(const char *name, size_t len)
{
    static const char *hop[] = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"};
    for (size_t i = 0; i != sizeof(hop) / sizeof(hop[0]); ++i)
        if (h2o_lcstris(name, len, hop[i], strlen(hop[i])))
            return 1;
    return 0;
}

/* one header line of the member's answer; the empty line ends the head */
static size_t on_header(char *line, size_t size, size_t nmemb, void *userp)
{
    fwd_t *f = userp;
    size_t len = size * nmemb, n = len;
    h2o_req_t *req = f->req;
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        --n;
    if (req == NULL)
        return len;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        const char *sp = memchr(line, ' ', n);
        f->status = sp != NULL ? atoi(sp + 1) : 502;
        return len;
    }
    if (f->status < 200) /* an interim answer (100 Continue): its headers are not relayed */
        return len;
    if (n == 0) {
        f->head_done = 1;
        start(f);
        return len;
    }
    const char *colon = memchr(line, ':', n);
    if (colon == NULL)
        return len;
    size_t nlen = colon - line;
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        ++v;
    if (h2o_lcstris(line, nlen, H2O_STRLIT("content-length"))) {
        f->content_length = strtoull(v, NULL, 10);
    } else if (!is_hop_by_hop(line, nlen) && !h2o_lcstris(line, nlen, H2O_STRLIT("date"))) {
        /* HTTP/2 clients need lower-case names; h2o sets its own Date */
        h2o_iovec_t name = h2o_strdup(&req->pool, line, nlen);
        h2o_strtolower(name.base, name.len);
        h2o_add_header_by_str(&req->pool, &f->res_headers, name.base, name.len, 1, NULL, h2o_strdup(&req->pool, v, end - v).base,
                              end - v);
    }
    return len;
}

static void on_done(void *data, CURLcode result)
{
    fwd_t *f = data;
    end_transfer(f);
    if (f->req == NULL)
        return;
    if (result == CURLE_COULDNT_CONNECT && !f->head_done && f->sent == 0) {
        /* nothing of the request reached this member: another may take it */
        gw_member_failed(f->member, f->errbuf);
        try_next(f);
        return;
    }
    if (f->overflow) {
        fail(f, 502, "Cluster member answered more than the gateway holds before the request was read");
        return;
    }
    if (result != CURLE_OK && !f->head_done) {
        gw_log(GW_LOG_WARN, "forward failed", "member", f->member->name, "err", f->errbuf, NULL);
        char msg[CURL_ERROR_SIZE + 128];
        snprintf(msg, sizeof(msg), "Cluster member %s failed: %s", f->member->name, f->errbuf);
        fail(f, 502, msg);
        return;
    }
    if (f->upload != NULL && !gw_upload_is_complete(f->upload))
        gw_upload_end(f->upload); /* the member answered before it had the whole body (an error), as LXD does itself */
    f->finished = 1;
    f->failed = result != CURLE_OK;
    start(f);
    flush(f);
}

static void add_request_headers(fwd_t *f)
{
    h2o_req_t *req = f->req;
    for (size_t i = 0; i != req->headers.size; ++i) {
        h2o_header_t *h = req->headers.entries + i;
        if (is_hop_by_hop(h->name->base, h->name->len) || h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("host")) ||
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("content-length")) ||
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT("expect")))
            continue;
        char *line = h2o_mem_alloc_pool(&req->pool, h->name->len + h->value.len + 3);
        sprintf(line, "%.*s: %.*s", (int)h->name->len, h->name->base, (int)h->value.len, h->value.base);
        f->headers = curl_slist_append(f->headers, line);
    }
    f->headers = curl_slist_append(f->headers, "Expect:"); /* the body is here already: no 100-continue wait */
    /* add nothing the client did not send: libcurl's default Content-Type for a POST body is form-urlencoded, and
     * LXD 5.0's file handler then lets Go's ParseForm eat the first 10 MiB + 1 of a pushed file (seen) */
    if (h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1) == -1)
        f->headers = curl_slist_append(f->headers, "Content-Type:");
}

/* libcurl asks for more of a streamed body */
static size_t on_read(char *buf, size_t size, size_t nitems, void *userp)
{
    fwd_t *f = userp;
    if (f->upload == NULL)
        return CURL_READFUNC_ABORT; /* the request went (its follower first): nothing more is sent */
    size_t n = gw_upload_read(f->upload, buf, size * nitems);
    f->sent += n;
    if (n != 0 || gw_upload_is_complete(f->upload))
        return n; /* 0 once complete: the end of the body */
    f->read_paused = 1;
    return CURL_READFUNC_PAUSE;
}

/* the client sent more of a streamed body */
static void on_upload(void *data)
{
    fwd_t *f = data;
    if (gw_upload_is_too_large(f->upload) && !f->handled && f->error_status == 0) {
        fail(f, 413, "Request body too large"); /* as h2o says it of a buffered body; the member saw an incomplete one */
        return;
    }
    if (f->read_paused) {
        f->read_paused = 0;
        set_pause(f);
    }
}

static void try_next(fwd_t *f)
{
    h2o_req_t *req = f->req;
    if (f->home != NULL && !f->tried_home) {
        f->member = f->home;
    } else if ((f->member = gw_members_next(&f->cursor)) == f->home && f->home != NULL) {
        f->member = gw_members_next(&f->cursor); /* the home member was tried first already */
    }
    if (f->member == NULL) {
        fail(f, 503, "No cluster member is reachable through the gateway");
        return;
    }
    gw_member_note(req, f->member);
    char *url = h2o_mem_alloc_pool(&req->pool, strlen(f->member->url) + req->path.len + 1);
    sprintf(url, "%s%.*s", f->member->url, (int)req->path.len, req->path.base);
    char *method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    f->tried_home = 1;
    CURL *e = f->easy = gw_backend_easy(f->id);
    f->errbuf[0] = '\0';
    f->status = 0;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (f->upload != NULL) { /* the body as the client sends it (upload.h); chunked when its length is not known */
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, f);
        if (gw_upload_length(f->upload) >= 0)
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)gw_upload_length(f->upload));
    } else { /* the body stays where h2o buffered it (memory or its spill file under state_dir): no copy */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->entity.base);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->entity.len);
    }
    /* libcurl sends an upload one buffer per turn of the loop, 64 KiB by default: 32,900 turns for a 1 GiB upload (measured), each
     * a wake-up and its share of TLS records and syscalls. A large body gets a larger buffer */
    if (f->upload != NULL || req->entity.len > UPLOAD_BUFFER)
        curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, (long)UPLOAD_BUFFER);
    add_request_headers(f);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_SSL_ENABLE_ALPN, 0L);
    /* never wait for ever: a member that takes no byte and sends none for STALL_S (frozen, or a connection that died
     * without a word) ends the forward with an error; LXD answers an upload at once when it has it whole */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)STALL_S);
    gw_backend_start(e, &f->done);
}

static void on_dispose(void *data)
{
    fwd_t *f = data;
    f->req = NULL;
    f->upload = NULL; /* the follower lives in the same pool, and went before (allocated after this) */
    if (f->lookup != NULL)
        gw_members_call_cancel(f->lookup);
    end_transfer(f);
    h2o_buffer_dispose(&f->pending);
    if (f->sending != NULL)
        h2o_buffer_dispose(&f->sending);
}

static void on_location(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    fwd_t *f = data;
    f->lookup = NULL;
    const char *location = json_string_value(json_object_get(json_object_get(json, "metadata"), "location"));
    gw_member_t *m;
    if (err == NULL && status == 200 && location != NULL && (m = gw_members_find(location)) != NULL && m->healthy)
        f->home = m;
    try_next(f);
}

/* "/1.0/instances/<name>/..." (a file push, say): the GET path of that instance, keeping ?project=; else NULL */
static char *instance_path(h2o_req_t *req)
{
    static const char prefix[] = "/1.0/instances/";
    h2o_iovec_t p = req->path_normalized;
    size_t plen = sizeof(prefix) - 1;
    if (p.len <= plen || memcmp(p.base, prefix, plen) != 0)
        return NULL;
    const char *name = p.base + plen, *end = memchr(name, '/', p.len - plen);
    if (end == NULL || end == name)
        return NULL;
    h2o_iovec_t project = {NULL};
    if (req->query_at != SIZE_MAX) {
        h2o_iovec_t q = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
        const char *v = h2o_strstr(q.base, q.len, H2O_STRLIT("project=")) != SIZE_MAX
                            ? q.base + h2o_strstr(q.base, q.len, H2O_STRLIT("project=")) + 8
                            : NULL;
        if (v != NULL)
            project =
                h2o_iovec_init(v, strcspn(v, "&") < (size_t)(q.base + q.len - v) ? strcspn(v, "&") : (size_t)(q.base + q.len - v));
    }
    char *path = h2o_mem_alloc_pool(&req->pool, p.len + project.len + 16);
    sprintf(path, "%.*s%s%.*s", (int)(end - p.base), p.base, project.base != NULL ? "?project=" : "", (int)project.len,
            project.base != NULL ? project.base : "");
    return path;
}

static fwd_t *fwd_new(h2o_req_t *req, const gw_identity_t *id, int handled)
{
    fwd_t *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), on_dispose);
    *f = (fwd_t){.req = req, .id = id, .handled = handled, .content_length = SIZE_MAX};
    f->done = (gw_backend_done_t){on_done, f};
    h2o_buffer_init(&f->pending, &h2o_socket_buffer_prototype);
    return f;
}

/* the member to send it to: the one named in ?target=, else the instance's (asked first), else any */
static void route(fwd_t *f)
{
    h2o_req_t *req = f->req;
    /* an upload into an instance goes straight to the member that hosts it: the body crosses the cluster once, and
     * LXD 5.0.2's own member-to-member forwarding of it is avoided (seen stalling on 2 GiB pushes) */
    if ((f->home = gw_members_usable(gw_lxd_query(req, "target"))) != NULL) { /* a request for one member (members.h) */
        try_next(f);
        return;
    }
    char *path = instance_path(req);
    if (path != NULL && (f->lookup = gw_members_call(f->id, "GET", path, NULL, 10000, on_location, f)) != NULL)
        return;
    try_next(f);
}

void gw_forward_pass(h2o_req_t *req, const gw_identity_t *id)
{
    route(fwd_new(req, id, 1));
}

void gw_forward_stream(h2o_req_t *req, const gw_identity_t *id)
{
    fwd_t *f = fwd_new(req, id, 0);
    if ((f->upload =
             gw_upload_follow(req, GW_FORWARD_MIN_BODY, req->conn->ctx->globalconf->max_request_entity_size, on_upload, f)) == NULL)
        return; /* h2o reads it whole, as any other; this forward stays unused */
    gw_log(GW_LOG_DEBUG, "upload streamed", "path", h2o_strdup(&req->pool, req->path.base, req->path.len).base, "length",
           gw_log_num(gw_upload_length(f->upload)), NULL);
    route(f);
}

int gw_forward_streamed(h2o_req_t *req, const gw_identity_t *id)
{
    gw_upload_t *u = gw_upload_of(req);
    if (u == NULL)
        return 0;
    fwd_t *f = gw_upload_data(u);
    f->handled = 1;
    gw_upload_complete(u);
    if (gw_upload_is_too_large(u)) {
        fail(f, 413, "Request body too large");
        return 1;
    }
    if (id != f->id) { /* the flow chose another identity than at the head (a trust change meanwhile): not forwarded */
        fail(f, 503, "The caller's identity changed while the request was read; try again");
        return 1;
    }
    if (f->error_status != 0) {
        gw_lxd_send_error(req, f->error_status, "%s", f->error_msg);
        return 1;
    }
    on_upload(f); /* libcurl takes the last bytes */
    start(f);
    return 1;
}
