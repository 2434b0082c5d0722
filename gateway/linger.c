/*
 * linger.c: see linger.h.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include "linger.h"

typedef struct st_linger_t {
    h2o_loop_t *loop;
    int fd;                    /* a second descriptor of the client's socket: it stays open when h2o closes its own */
    h2o_socket_t *sock;        /* our socket on `fd` once h2o closed its own, or NULL */
    h2o_timeout_entry_t limit; /* GW_LINGER_MS after h2o's close */
    size_t dropped;            /* bytes read and dropped */
} linger_t;

static h2o_timeout_t limit_timeout;
static int limit_timeout_ready;
static size_t lingering;

static void finish(linger_t *l)
{
    h2o_timeout_unlink(&l->limit);
    if (l->sock != NULL)
        h2o_socket_close(l->sock); /* closes l->fd */
    else
        close(l->fd);
    --lingering;
    free(l);
}

static void on_limit(h2o_timeout_entry_t *entry)
{
    finish(H2O_STRUCT_FROM_MEMBER(linger_t, limit, entry));
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    linger_t *l = sock->data;
    if (err == NULL) {
        l->dropped += sock->input->size;
        h2o_buffer_consume(&sock->input, sock->input->size);
        if (l->dropped > GW_LINGER_BYTES)
            h2o_socket_read_stop(sock); /* sent too much: no more is read, but a close now would reset the connection
                                         * under the answer; the client, held by TCP, can still read it until the limit */
        return;
    }
    finish(l); /* the client closed (or failed) */
}

/* h2o closed its descriptor: the answer (and TLS's close_notify) went out before */
static void on_h2o_close(void *data)
{
    linger_t *l = data;
    if (shutdown(l->fd, SHUT_WR) != 0) {
        finish(l);
        return;
    }
    l->sock = h2o_evloop_socket_create(l->loop, l->fd, 0);
    l->sock->data = l;
    h2o_socket_read_start(l->sock, on_read);
    if (!limit_timeout_ready) {
        h2o_timeout_init(l->loop, &limit_timeout, GW_LINGER_MS);
        limit_timeout_ready = 1;
    }
    l->limit.cb = on_limit;
    h2o_timeout_link(l->loop, &limit_timeout, &l->limit);
}

int gw_linger_close(h2o_loop_t *loop, h2o_socket_t *sock)
{
    if (sock->on_close.cb != NULL)
        return sock->on_close.cb == on_h2o_close ? 0 : -1; /* (at most once; a socket someone else watches: as before) */
    int fd = fcntl(h2o_socket_get_fd(sock), F_DUPFD_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    linger_t *l = malloc(sizeof(*l));
    if (l == NULL) {
        close(fd);
        return -1;
    }
    *l = (linger_t){.loop = loop, .fd = fd};
    sock->on_close.cb = on_h2o_close;
    sock->on_close.data = l;
    ++lingering;
    return 0;
}

size_t gw_linger_count(void)
{
    return lingering;
}
