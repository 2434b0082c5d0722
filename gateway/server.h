/*
 * server.h: the client-facing side: listeners, TLS, and the flow every request takes:
 *
 *     request -> who is calling (trust.h) -> a plugin claims it, or it passes through (proxy.h) -> members -> answer
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <h2o.h>
#include "config.h"
#include "path.h"
#include "trust.h"

typedef struct st_gw_server_t {
    h2o_globalconf_t h2o;                        /* h2o's configuration: one host, one path ("/"), our handler and logger */
    h2o_context_t ctx;                           /* h2o's per-loop context */
    h2o_accept_ctx_t accept;                     /* connections of trusted clients (TLS context, hosts) */
    h2o_globalconf_t h2o_untrusted;              /* the same handler and logger, GW_UNTRUSTED_MAX_BODY as body limit */
    h2o_context_t ctx_untrusted;                 /* its context, on the same loop */
    h2o_accept_ctx_t accept_untrusted;           /* connections whose certificate is not a trusted client's at handshake */
    h2o_hostconf_t *hosts_untrusted[2];          /* its host (NULL-terminated) */
    h2o_timeout_t handshake_timeout;             /* a TLS handshake must end within this */
    h2o_socket_t *listeners[GW_CONFIG_MAX_LIST]; /* one per `listen` address */
    size_t num_listeners;
    h2o_hostconf_t *hosts[2];         /* what clients reach: the gateway (NULL-terminated) */
    h2o_hostconf_t *metrics_hosts[2]; /* what the metrics listener reaches: /metrics only */
    h2o_accept_ctx_t metrics_accept;  /* plain HTTP, metrics_hosts */
    h2o_socket_t *metrics_listener;   /* `metrics.listen`, or NULL */
} gw_server_t;

/* one row of the route table (server.c): which handler is asked for which requests, in order */
typedef struct st_gw_route_t {
    unsigned paths;     /* GW_PATHS() of the path kinds (path.h) the row is asked for */
    const char *method; /* the method it is asked for; NULL: any */
    /* 1: it took the request (answers it, now or later); 0: not its own after all (an id it does not own, a caller it
     * leaves to LXD): the next row is asked */
    int (*handle)(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);
    const char *takes; /* what it takes of them, for the reader */
} gw_route_t;

/* the table, in order, ended by a row whose `handle` is NULL; what no row takes passes through unchanged */
extern const gw_route_t gw_routes[];
/* `route` is asked for `req`, whose path is `path` */
int gw_route_matches(const gw_route_t *route, h2o_req_t *req, const gw_path_t *path);

/* builds the h2o configuration; call before gw_server_listen. Each TLS connection is bound, once its handshake has
 * ended, to `accept` or `accept_untrusted` by what the trust store says of its client certificate then, so that
 * an untrusted caller cannot make the gateway read and store a large body */
const char *gw_server_init(gw_server_t *srv, const gw_config_t *conf, h2o_evloop_t *loop);
/* opens every `listen` address */
const char *gw_server_listen(gw_server_t *srv, const gw_config_t *conf);
/* stops accepting new connections (established ones go on) */
void gw_server_stop_listening(gw_server_t *srv);

#endif
