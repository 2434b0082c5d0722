/*
 * identity.h: the identities the gateway can present to cluster members.
 *
 * The gateway terminates the client's TLS, so LXD sees whatever certificate the gateway presents. Each request is
 * sent with exactly one of these: `anonymous` (no certificate: LXD applies its untrusted rules) or `gateway` (the
 * gateway's own client certificate, trusted and unrestricted). Restricted and metrics callers get shadow identities
 * (identity issue). Pooled upstream connections keep the identity they were opened with, so each identity owns its
 * socket pools, one per member. Identities are never freed (requests and moves keep pointers to them).
 */
#ifndef GW_IDENTITY_H
#define GW_IDENTITY_H

#include <h2o.h>

#define GW_IDENTITY_POOLS 64 /* socket pools per identity: one per member slot (members.c checks it has no more) */

typedef struct st_gw_identity_t {
    const char *name;                           /* "anonymous", "gateway": written to the access log */
    const char *cert_file;                      /* PEM certificate presented to members, for libcurl calls; NULL = none */
    const char *key_file;                       /* its key; NULL = none */
    SSL_CTX *ssl_ctx;                           /* the same pair + the cluster pin, for h2o's proxy connections */
    h2o_http1client_ctx_t client_ctx;           /* h2o's upstream context: ssl_ctx, io and websocket timeouts */
    h2o_socketpool_t *pools[GW_IDENTITY_POOLS]; /* keep-alive TLS connections opened with this identity, by member slot
                                                 * (made on first use): a connection never serves another identity */
    void *backend_share;                        /* backend.c's libcurl share holding this identity's TLS sessions (made
                                                 * on first call): a session is never resumed for another identity */
} gw_identity_t;

enum { GW_IDENTITY_ANONYMOUS, GW_IDENTITY_GATEWAY, GW_IDENTITY_NUM_STATIC };

/* the two static identities, set up by gw_identity_init */
extern gw_identity_t gw_identities[GW_IDENTITY_NUM_STATIC];

/* sets up `id` (its cert_file/key_file set, index free) like the static ones; returns NULL or an error */
const char *gw_identity_setup(gw_identity_t *id);
/* the same, but the server must show `server_cert` instead of the cluster certificate (another gateway replica) */
const char *gw_identity_setup_pinned(gw_identity_t *id, X509 *server_cert);
/* builds the static identities; returns NULL or an error */
const char *gw_identity_init(h2o_context_t *ctx, X509 *cluster_cert, const char *cert_file, const char *key_file,
                             uint64_t io_timeout_ms, uint64_t stream_timeout_ms);

#endif
