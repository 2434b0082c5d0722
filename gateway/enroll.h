/*
 * enroll.h: POST /1.0/certificates through a TLS-terminating gateway.
 *
 * When the body names no certificate (and asks for no token), LXD trusts the certificate of the TLS peer, which
 * behind the gateway is the gateway's, not the client's. The gateway therefore puts the caller's own certificate
 * (base64 DER) into the body. An untrusted caller is still forwarded anonymously, so LXD checks its trust password
 * itself.
 *
 * Trust tokens are the exception: LXD 5.0.2 (lxd/certificates.go, certificatesPost) rebuilds a token enrolment from
 * the token's own data and then trusts the TLS peer certificate only, which behind any TLS-terminating hop is none.
 * So the gateway redeems the token itself, exactly as LXD does: it finds the Running token operation whose secret
 * matches (constant-time), cancels it first (single use), refuses an expired one, and adds the caller's certificate
 * with the name, type and projects the token was made for. A successful enrolment is answered only after the gateway has read the
 * trust store again, so the client's very next request (lxc checks `auth: trusted` right away) is already recognised.
 */
#ifndef GW_ENROLL_H
#define GW_ENROLL_H

#include <h2o.h>
#include "path.h"
#include "trust.h"

/* takes POST /1.0/certificates (returns 1, and answers it); returns 0 for any other request */
int gw_enroll_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
