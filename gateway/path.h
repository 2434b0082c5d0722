/*
 * path.h: what a request's path names, parsed once (server.c's route table picks the handler by it).
 *
 * Parsed from the percent-decoded path (h2o's path_normalized, as LXD's router decodes it; no query). Only the shapes
 * some handler of the gateway takes are told apart; everything else is GW_PATH_OTHER and passes through.
 */
#ifndef GW_PATH_H
#define GW_PATH_H

#include <h2o.h>

typedef enum {
    GW_PATH_OTHER,               /* anything else */
    GW_PATH_SERVER,              /* /1.0 */
    GW_PATH_CERTIFICATES,        /* /1.0/certificates */
    GW_PATH_CERTIFICATE,         /* /1.0/certificates/<fingerprint>[/...]: `id` is the fingerprint (may be "") */
    GW_PATH_EVENTS,              /* /1.0/events */
    GW_PATH_OPERATIONS,          /* /1.0/operations */
    GW_PATH_OPERATION,           /* /1.0/operations/<id> */
    GW_PATH_OPERATION_WAIT,      /* /1.0/operations/<id>/wait */
    GW_PATH_OPERATION_WEBSOCKET, /* /1.0/operations/<id>/websocket */
    GW_PATH_OPERATION_OTHER,     /* /1.0/operations/<id>/<anything else> */
    GW_PATH_PEER,                /* /lxd-gateway/peer: a replica's description of itself (peers.h) */
    GW_PATH_PEER_EVENTS,         /* /lxd-gateway/events: a replica's operation events (peers.h) */
    GW_PATH_NUM
} gw_path_kind_t;

/* a set of kinds: GW_PATHS(GW_PATH_OPERATION) | GW_PATHS(GW_PATH_OPERATION_WAIT) */
#define GW_PATHS(kind) (1u << (kind))
#define GW_PATHS_OPERATION_ID                                                                                                      \
    (GW_PATHS(GW_PATH_OPERATION) | GW_PATHS(GW_PATH_OPERATION_WAIT) | GW_PATHS(GW_PATH_OPERATION_WEBSOCKET) |                      \
     GW_PATHS(GW_PATH_OPERATION_OTHER))

typedef struct st_gw_path_t {
    gw_path_kind_t kind;
    h2o_iovec_t id; /* GW_PATH_OPERATION*: the operation id; GW_PATH_CERTIFICATE: the fingerprint (both point into the
                     * request's path_normalized, not NUL-terminated; any length: handlers check it) */
    long timeout_s; /* GW_PATH_OPERATION_WAIT: ?timeout= in seconds; -1 when not given (as long as LXD would wait) */
} gw_path_t;

/* parses `req`'s path into `out` */
void gw_path_parse(h2o_req_t *req, gw_path_t *out);
/* the name of a kind, for logs and tests ("operation-wait") */
const char *gw_path_kind_name(gw_path_kind_t kind);

#endif
