/*
 * trust.h: who is calling. A mirror of the cluster's trust store, and the caller it makes of a client certificate.
 *
 * The mirror is read with GET /1.0/certificates?recursion=1 (as the gateway) every `identity.trust_refresh`.
 * Until the first read succeeds, every caller is untrusted: the gateway fails closed, never open.
 */
#ifndef GW_TRUST_H
#define GW_TRUST_H

#include <h2o.h>
#include "identity.h"
#include "tls.h"

typedef enum en_gw_trust_kind_t {
    GW_TRUST_NONE,       /* no certificate, or one the cluster does not trust */
    GW_TRUST_CLIENT,     /* type client, unrestricted */
    GW_TRUST_RESTRICTED, /* type client, restricted to projects */
    GW_TRUST_METRICS,    /* type metrics */
    GW_TRUST_SERVER,     /* type server (a cluster member's certificate) */
} gw_trust_kind_t;

typedef struct st_gw_caller_t {
    char fingerprint[GW_FINGERPRINT_LEN + 1]; /* of the client's certificate; "" when it sent none */
    gw_trust_kind_t kind;                     /* what the cluster's trust store says of it */
    const gw_identity_t *identity;            /* what the gateway presents to members on its behalf */
} gw_caller_t;

/* starts the periodic mirror refresh */
void gw_trust_init(h2o_context_t *ctx, uint64_t refresh_ms);
/* fills `caller` for this request's client certificate */
void gw_trust_identify(h2o_req_t *req, gw_caller_t *caller);
/* milliseconds since the mirror was last read successfully (UINT64_MAX: never) */
uint64_t gw_trust_age_ms(void);
/* name of a trust kind, for logs: "untrusted", "client", ... */
const char *gw_trust_kind_name(gw_trust_kind_t kind);

#endif
