/*
 * enroll.h: POST /1.0/certificates through a TLS-terminating gateway.
 *
 * When the body names no certificate (and asks for no token), LXD trusts the certificate of the TLS peer, which
 * behind the gateway is the gateway's, not the client's. The gateway therefore puts the caller's own certificate
 * (base64 DER) into the body. An untrusted caller is still forwarded anonymously, so LXD checks its trust password
 * or token itself. A successful enrolment is answered only after the gateway has read the trust store again, so the
 * client's very next request (lxc checks `auth: trusted` right away) is already recognised.
 */
#ifndef GW_ENROLL_H
#define GW_ENROLL_H

#include <h2o.h>
#include "trust.h"

/* takes POST /1.0/certificates (returns 1, and answers it); returns 0 for any other request */
int gw_enroll_handle(h2o_req_t *req, const gw_caller_t *caller);

#endif
