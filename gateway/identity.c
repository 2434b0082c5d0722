/*
 * identity.c: backend identities (see identity.h).
 */
#include "identity.h"
#include "tls.h"

gw_identity_t gw_identities[GW_IDENTITY_NUM_STATIC];

static h2o_timeout_t io_timeout;     /* idle limit of an ordinary proxied exchange */
static h2o_timeout_t stream_timeout; /* idle limit of a tunnelled websocket */
static h2o_context_t *ctx;           /* the loop every identity's upstream connections run on */
static X509 *cluster_cert;           /* pinned on every member connection */

const char *gw_identity_setup(gw_identity_t *id)
{
    return gw_identity_setup_pinned(id, cluster_cert);
}

const char *gw_identity_setup_pinned(gw_identity_t *id, X509 *server_cert)
{
    const char *err = NULL;
    if ((id->ssl_ctx = gw_tls_backend_ctx(server_cert, id->cert_file, id->key_file, &err)) == NULL)
        return err;
    id->client_ctx =
        (h2o_http1client_ctx_t){ctx->loop, &ctx->receivers.hostinfo_getaddr, &io_timeout, &stream_timeout, id->ssl_ctx};
    return NULL;
}

const char *gw_identity_init(h2o_context_t *_ctx, X509 *_cluster_cert, const char *cert_file, const char *key_file,
                             uint64_t io_timeout_ms, uint64_t stream_timeout_ms)
{
    const char *err;
    ctx = _ctx;
    cluster_cert = _cluster_cert;
    h2o_timeout_init(ctx->loop, &io_timeout, io_timeout_ms);
    h2o_timeout_init(ctx->loop, &stream_timeout, stream_timeout_ms);
    gw_identities[GW_IDENTITY_ANONYMOUS] = (gw_identity_t){"anonymous", NULL, NULL};
    gw_identities[GW_IDENTITY_GATEWAY] = (gw_identity_t){"gateway", cert_file, key_file};
    for (size_t i = 0; i != GW_IDENTITY_NUM_STATIC; ++i)
        if ((err = gw_identity_setup(gw_identities + i)) != NULL)
            return err;
    return NULL;
}
