/*
 * upload.c: see upload.h.
 */
#include <string.h>
#include <sys/socket.h>
#include <h2o.h>
#include <h2o/http1.h>
#include "linger.h"
#include "upload.h"

#define RCVBUF                                                                                                                     \
    (1u << 20) /* the kernel's receive buffer of a client's HTTP/1 connection (see gw_upload_accepted). h2o reads until a          \
                  read does not fill its buffer's free space, which doubles as it grows: one read_on_ready takes at most           \
                  ~3x what the kernel holds (2x this), a few MiB */

#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2
#error "upload.c mirrors private structures of h2o 2.2 (lib/http1.c); check them against this version"
#endif

/* lib/http1.c of h2o 2.2.5, as far as needed; checked per request in follow() and scan_one() */
struct h1_conn;
struct h1_reader { /* st_h2o_http1_req_entity_reader */
    void (*handle_incoming_entity)(struct h1_conn *conn);
};
struct h1_cl_reader { /* st_h2o_http1_content_length_entity_reader */
    struct h1_reader super;
    size_t content_length; /* body bytes still to come (h2o waits until sock->input holds _reqsize bytes) */
};
struct h1_chunked_decoder { /* picohttpparser's phr_chunked_decoder */
    size_t bytes_left_in_chunk;
    char consume_trailer, hex_count, state;
};
struct h1_chunked_reader { /* st_h2o_http1_chunked_entity_reader */
    struct h1_reader super;
    struct h1_chunked_decoder decoder;
    size_t prev_input_size; /* sock->input holds decoded body in [_reqsize, prev_input_size) */
};
struct h1_finalostream { /* st_h2o_http1_finalostream_t */
    h2o_ostream_t super;
    int sent_headers;
    struct {
        void *buf;
        h2o_ostream_pull_cb cb;
    } pull;
};
struct h1_conn { /* st_h2o_http1_conn_t */
    h2o_conn_t super;
    h2o_socket_t *sock;
    h2o_linklist_t conns;
    h2o_timeout_t *timeout; /* the request timeout while a request is read */
    h2o_timeout_entry_t timeout_entry;
    uint64_t req_index;
    size_t prevreqlen;
    size_t reqsize; /* head length, plus the content length of a Content-Length body */
    struct h1_reader *reader;
    struct h1_finalostream ostr_final;
    struct {
        void *data;
        h2o_http1_upgrade_cb cb;
    } upgrade;
    h2o_req_t req;
};

struct st_gw_upload_t {
    h2o_req_t *req;                           /* the request whose body is followed */
    struct h1_conn *conn;                     /* its connection (h2o's, private) */
    struct h1_reader *reader;                 /* h2o's entity reader of the request (its function is ours now) */
    void (*h2o_entity)(struct h1_conn *conn); /* h2o's own function of that reader */
    h2o_socket_cb h2o_read;                   /* h2o's read callback of the connection, to start reading again */
    int chunked;                              /* Transfer-Encoding: chunked (else Content-Length) */
    size_t head_len;                          /* bytes of the request head at the start of sock->input */
    int64_t length;                           /* Content-Length, or -1 (chunked) */
    char *ring;                               /* the window: GW_UPLOAD_WINDOW bytes, a ring */
    size_t ring_at, ring_len;                 /* where its bytes start, how many there are */
    h2o_iovec_t tail;                         /* the body's last bytes (req->entity, in h2o's buffer) once complete */
    uint64_t bytes;                           /* body bytes read from the client so far */
    uint64_t max_body;                        /* body bytes allowed in all */
    int complete;                             /* the handler has the request: ring, then tail, are the rest */
    int too_large;                            /* over max_body: bytes are dropped */
    int discard;                              /* the consumer gave up: bytes are dropped */
    int stopped;                              /* the gateway stopped reading the client (the window is full) */
    h2o_timeout_entry_t resume;               /* reading starts again from the loop, not from the consumer's call */
    h2o_timeout_entry_t end;                  /* the body is ended early (gw_upload_end), from the loop */
    gw_upload_cb cb;                          /* tells the consumer */
    void *data;
    h2o_linklist_t link; /* in `followed` */
};

static struct {
    h2o_context_t *ctx;
    h2o_hostconf_t **hosts; /* the connections scanned are those of these hosts (not the metrics listener's) */
    size_t min_body;        /* a request is offered once h2o holds this many bytes of it (head included) */
    gw_upload_offer_cb offer;
    h2o_timeout_t zero_timeout; /* 0 ms: "on the next turn of the loop" */
    h2o_linklist_t followed;    /* of gw_upload_t */
    gw_upload_t *in_h2o;        /* the follower whose request is in h2o's own reader now; NULL when it went meanwhile */
} U;

static gw_upload_t *of_conn(struct h1_conn *c)
{
    for (h2o_linklist_t *n = U.followed.next; n != &U.followed; n = n->next) {
        gw_upload_t *u = H2O_STRUCT_FROM_MEMBER(gw_upload_t, link, n);
        if (u->conn == c)
            return u;
    }
    return NULL;
}

gw_upload_t *gw_upload_of(h2o_req_t *req)
{
    if (U.ctx == NULL)
        return NULL;
    for (h2o_linklist_t *n = U.followed.next; n != &U.followed; n = n->next) {
        gw_upload_t *u = H2O_STRUCT_FROM_MEMBER(gw_upload_t, link, n);
        if (u->req == req)
            return u;
    }
    return NULL;
}

/* h2o's request timeout runs again from now (a byte came), or not at all while the gateway does not read */
static void rearm(gw_upload_t *u)
{
    struct h1_conn *c = u->conn;
    if (c->timeout == NULL)
        return;
    h2o_timeout_unlink(&c->timeout_entry);
    if (!u->stopped)
        h2o_timeout_link(U.ctx->loop, c->timeout, &c->timeout_entry);
}

/* up to `len` body bytes at `src` leave h2o's buffer, into the window (or dropped); returns how many left */
static size_t take(gw_upload_t *u, const char *src, size_t len)
{
    if (!u->too_large && u->bytes + len > u->max_body) {
        u->too_large = 1;
        u->ring_len = 0;
    }
    if (!u->too_large && !u->discard) {
        if (len > GW_UPLOAD_WINDOW - u->ring_len)
            len = GW_UPLOAD_WINDOW - u->ring_len;
        for (size_t done = 0; done != len;) {
            size_t at = (u->ring_at + u->ring_len) % GW_UPLOAD_WINDOW, n = len - done;
            if (n > GW_UPLOAD_WINDOW - at)
                n = GW_UPLOAD_WINDOW - at;
            memcpy(u->ring + at, src + done, n);
            u->ring_len += n;
            done += n;
        }
    }
    u->bytes += len;
    return len;
}

/* h2o still reads the body (it has not handed the request to the handler): only then may the follower act on it */
static int reading(const gw_upload_t *u)
{
    return !u->complete && u->conn->reader == u->reader;
}

/* runs h2o's own reader; returns 0 when the follower went meanwhile (the request ended inside) */
static int run_h2o(gw_upload_t *u)
{
    U.in_h2o = u;
    u->h2o_entity(u->conn);
    int alive = U.in_h2o == u;
    U.in_h2o = NULL;
    return alive;
}

/* moves what h2o holds of the body, short of its end, into the window, as far as it fits (for a Content-Length: the
 * caller saw that less than the rest is here) */
static void move(gw_upload_t *u)
{
    struct h1_conn *c = u->conn;
    h2o_buffer_t *in = c->sock->input;
    if (!u->chunked) {
        struct h1_cl_reader *r = (void *)u->reader;
        size_t n = take(u, in->bytes + u->head_len, in->size - u->head_len);
        memmove(in->bytes + u->head_len, in->bytes + u->head_len + n, in->size - u->head_len - n);
        in->size -= n;
        r->content_length -= n;
        c->reqsize -= n;
    } else {
        struct h1_chunked_reader *r = (void *)u->reader;
        size_t n = take(u, in->bytes + c->reqsize, r->prev_input_size - c->reqsize);
        memmove(in->bytes + c->reqsize, in->bytes + c->reqsize + n, in->size - c->reqsize - n);
        in->size -= n;
        r->prev_input_size -= n;
    }
}

/* moves what h2o holds of the body into the window, as far as it fits; returns 0 when the request went meanwhile or
 * the handler has it now */
static int drain(gw_upload_t *u)
{
    if (!u->chunked) {
        size_t avail = u->conn->sock->input->size - u->head_len;           /* may go past the body: a pipelined next request */
        if (avail >= ((struct h1_cl_reader *)u->reader)->content_length) { /* the rest is here: h2o hands it over */
            run_h2o(u);
            return 0; /* h2o has it now (even when the handler has not taken the body yet): nothing more to do */
        }
    }
    move(u);
    return 1;
}

/* the client is held while h2o still has bytes of the body the window could not take */
static void hold(gw_upload_t *u)
{
    struct h1_conn *c = u->conn;
    size_t left =
        u->chunked ? ((struct h1_chunked_reader *)u->reader)->prev_input_size - c->reqsize : c->sock->input->size - u->head_len;
    if (left != 0 && !u->stopped) {
        u->stopped = 1;
        h2o_socket_read_stop(c->sock);
    }
}

/* after bytes were taken: the client is held (see hold) or heard again (the timeout), and the consumer told */
static void progress(gw_upload_t *u)
{
    if (!reading(u))
        return;
    hold(u);
    rearm(u);
    u->cb(u->data);
}

/* h2o read bytes of a followed body (its reader's function, replaced) */
static void on_entity(struct h1_conn *c)
{
    gw_upload_t *u = of_conn(c);
    if (u->chunked && (!run_h2o(u) || u->complete || c->reader != u->reader))
        return; /* decoded: the body ended (the handler has it) or was broken (h2o answered 400) */
    if (drain(u))
        progress(u);
}

/* the window has room again: what h2o still holds goes in, then the client is read again */
static void on_resume(h2o_timeout_entry_t *entry)
{
    gw_upload_t *u = H2O_STRUCT_FROM_MEMBER(gw_upload_t, resume, entry);
    if (!u->stopped || !reading(u))
        return;
    u->stopped = 0;
    h2o_socket_read_start(u->conn->sock, u->h2o_read);
    if (drain(u))
        progress(u);
}

static void schedule_resume(gw_upload_t *u)
{
    if (u->stopped && reading(u) && !h2o_timeout_is_linked(&u->resume))
        h2o_timeout_link(U.ctx->loop, &U.zero_timeout, &u->resume);
}

/* where the head ends in sock->input (its first CRLFCRLF), or 0 */
static size_t head_length(h2o_buffer_t *in)
{
    size_t n = in->size < H2O_MAX_REQLEN ? in->size : H2O_MAX_REQLEN;
    for (size_t i = 0; i + 4 <= n; ++i)
        if (memcmp(in->bytes + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    return 0;
}

/* the body as h2o sees it ends here: the bytes h2o holds are dropped, and h2o is given an end of the body in the
 * form it reads (a Content-Length reached; a last chunk), so that it hands the request to the handler now */
static void on_end(h2o_timeout_entry_t *entry)
{
    gw_upload_t *u = H2O_STRUCT_FROM_MEMBER(gw_upload_t, end, entry);
    struct h1_conn *c = u->conn;
    h2o_buffer_t *in = c->sock->input;
    if (!reading(u))
        return;
    u->req->http1_is_persistent = 0;       /* what the client still sends is not a next request: the connection closes */
    gw_linger_close(U.ctx->loop, c->sock); /* after the answer, which the client must get even while it sends */
    if (u->stopped) {
        u->stopped = 0;
        h2o_socket_read_start(c->sock, u->h2o_read);
    }
    if (!u->chunked) {
        ((struct h1_cl_reader *)u->reader)->content_length = 0;
        c->reqsize = u->head_len;
        in->size = u->head_len;
    } else {
        static const char last[] = "0\r\n\r\n";
        struct h1_chunked_reader *r = (void *)u->reader;
        r->decoder = (struct h1_chunked_decoder){.consume_trailer = 1}; /* at a chunk's size line (state 0) */
        in->size = c->reqsize;
        r->prev_input_size = c->reqsize;
        h2o_buffer_reserve(&c->sock->input, sizeof(last));
        in = c->sock->input;
        memcpy(in->bytes + in->size, last, sizeof(last) - 1);
        in->size += sizeof(last) - 1;
    }
    run_h2o(u);
}

void gw_upload_end(gw_upload_t *u)
{
    u->discard = 1;
    u->ring_len = 0;
    if (reading(u) && !h2o_timeout_is_linked(&u->end))
        h2o_timeout_link(U.ctx->loop, &U.zero_timeout, &u->end);
}

static void on_dispose(void *data)
{
    gw_upload_t *u = data;
    if (U.in_h2o == u)
        U.in_h2o = NULL;
    h2o_timeout_unlink(&u->resume);
    h2o_timeout_unlink(&u->end);
    h2o_linklist_unlink(&u->link);
    free(u->ring);
    u->ring = NULL;
    u->ring_len = 0;
    u->tail.len = 0;
}

/* the h2o 2.2.5 HTTP/1 connection of req, when it is laid out as this file says and reads a body; else NULL */
static struct h1_conn *conn_of(h2o_req_t *req)
{
    struct h1_conn *c = (void *)req->conn;
    if (req->conn == NULL || &c->req != req || c->sock == NULL || req->conn->callbacks->get_socket(req->conn) != c->sock)
        return NULL;
    return c->reader != NULL && c->reader->handle_incoming_entity != on_entity && c->sock->_cb.read != NULL ? c : NULL;
}

gw_upload_t *gw_upload_follow(h2o_req_t *req, uint64_t min_body, uint64_t max_body, gw_upload_cb cb, void *data)
{
    struct h1_conn *c = conn_of(req);
    if (c == NULL)
        return NULL;
    h2o_buffer_t *in = c->sock->input;
    size_t head_len = head_length(in);
    if (head_len == 0 || c->reqsize < head_len)
        return NULL;
    int chunked = c->reqsize == head_len;
    if (!chunked && ((struct h1_cl_reader *)c->reader)->content_length != c->reqsize - head_len)
        return NULL; /* not the state h2o's Content-Length reader would be in */
    if (!chunked && c->reqsize - head_len < min_body)
        return NULL;
    if (!chunked && in->size >= c->reqsize)
        return NULL; /* the whole body is here (h2o is writing its 100 Continue): h2o hands it over, and it ends there */
    if (chunked) {
        struct h1_chunked_reader *r = (void *)c->reader;
        if (r->prev_input_size < c->reqsize || r->prev_input_size > in->size)
            return NULL; /* nor its chunked reader */
    }
    gw_upload_t *u = h2o_mem_alloc_shared(&req->pool, sizeof(*u), on_dispose);
    *u = (gw_upload_t){.req = req,
                       .conn = c,
                       .reader = c->reader,
                       .h2o_entity = c->reader->handle_incoming_entity,
                       .h2o_read = c->sock->_cb.read,
                       .chunked = chunked,
                       .head_len = head_len,
                       .length = chunked ? -1 : (int64_t)(c->reqsize - head_len),
                       .ring = h2o_mem_alloc(GW_UPLOAD_WINDOW),
                       .max_body = max_body,
                       .cb = cb,
                       .data = data};
    u->resume.cb = on_resume;
    u->end.cb = on_end;
    h2o_linklist_insert(&U.followed, &u->link);
    c->reader->handle_incoming_entity = on_entity; /* from the next bytes read on */
    /* what h2o holds already goes into the window now, not at the next read: h2o's buffer then never holds more than
     * one read's bytes of a followed body. (Not the end of a Content-Length body: h2o would have handed that over.)
     * The consumer is not called: it reads the window once it starts */
    move(u);
    hold(u);
    rearm(u);
    return u;
}

size_t gw_upload_read(gw_upload_t *u, char *buf, size_t len)
{
    size_t done = 0;
    while (done != len && u->ring_len != 0) {
        size_t n = len - done;
        if (n > u->ring_len)
            n = u->ring_len;
        if (n > GW_UPLOAD_WINDOW - u->ring_at)
            n = GW_UPLOAD_WINDOW - u->ring_at;
        memcpy(buf + done, u->ring + u->ring_at, n);
        u->ring_at = (u->ring_at + n) % GW_UPLOAD_WINDOW;
        u->ring_len -= n;
        done += n;
    }
    if (done != len && u->complete && u->tail.len != 0) { /* the window is empty: then the last bytes */
        size_t n = len - done < u->tail.len ? len - done : u->tail.len;
        memcpy(buf + done, u->tail.base, n);
        u->tail.base += n;
        u->tail.len -= n;
        done += n;
    }
    if (u->ring_len <= GW_UPLOAD_WINDOW / 2)
        schedule_resume(u);
    return done;
}

void gw_upload_complete(gw_upload_t *u)
{
    u->bytes += u->req->entity.len;
    if (!u->too_large && u->bytes > u->max_body) {
        u->too_large = 1;
        u->ring_len = 0;
    }
    if (!u->too_large && !u->discard)
        u->tail = u->req->entity; /* it stays in h2o's buffer until the request ends */
    u->complete = 1;
    u->stopped = 0;
    h2o_timeout_unlink(&u->resume);
}

int gw_upload_is_complete(const gw_upload_t *u)
{
    return u->complete;
}

int gw_upload_is_too_large(const gw_upload_t *u)
{
    return u->too_large;
}

int64_t gw_upload_length(const gw_upload_t *u)
{
    return u->length;
}

void *gw_upload_data(const gw_upload_t *u)
{
    return u->data;
}

/* one HTTP/1 request of the context: offered once it reads a body and h2o holds `min_body` bytes of it; a body read
 * whole (not followed) gets h2o's request timeout as an idle timeout, not one over the body */
static int scan_one(h2o_req_t *req, void *data)
{
    (void)data;
    struct h1_conn *c = (void *)req->conn;
    if (&c->req != req || c->reader == NULL || c->reader->handle_incoming_entity == on_entity)
        return 0; /* (quick) no body being read, or one followed already */
    if ((c = conn_of(req)) == NULL || req->conn->hosts != U.hosts)
        return 0;
    /* .base: the size of h2o's input buffer at the last look, in the request's pool; NULL until the request is offered */
    h2o_iovec_t *seen = h2o_req_getenv(req, H2O_STRLIT("gw.upload"), 1);
    if (seen->base == NULL) {
        if (c->sock->input->size < U.min_body)
            return 0; /* not yet: a short body h2o reads whole as always (the plugins read theirs) */
        *seen = h2o_iovec_init(h2o_mem_alloc_pool(&req->pool, sizeof(size_t)), sizeof(size_t));
        *(size_t *)seen->base = c->sock->input->size;
        U.offer(req);
    } else if (*(size_t *)seen->base != c->sock->input->size && c->timeout != NULL) {
        *(size_t *)seen->base = c->sock->input->size; /* grows until the body is whole (decoded in place when chunked) */
        h2o_timeout_unlink(&c->timeout_entry);
        h2o_timeout_link(U.ctx->loop, c->timeout, &c->timeout_entry);
    }
    return 0;
}

void gw_upload_after_turn(void)
{
    if (U.ctx != NULL)
        H2O_HTTP1_CALLBACKS.foreach_request(U.ctx, scan_one, NULL);
}

void gw_upload_accepted(h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock), rcvbuf = RCVBUF;
    if (fd != -1)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
}

void gw_upload_init(h2o_context_t *ctx, h2o_hostconf_t **hosts, size_t min_body, gw_upload_offer_cb offer)
{
    U.ctx = ctx;
    U.hosts = hosts;
    U.min_body = min_body;
    U.offer = offer;
    h2o_linklist_init_anchor(&U.followed);
    h2o_timeout_init(ctx->loop, &U.zero_timeout, 0);
}
