/*
 * shadow.h: which identity a caller is forwarded with, including shadow identities.
 *
 * LXD 5.0 cannot be told "this request is really from client X", so a restricted client cannot be forwarded as the
 * (unrestricted) gateway. Instead, for each distinct project set of restricted clients, the gateway owns a shadow
 * key pair whose certificate it has the cluster trust as `restricted: true, projects: P`, named `lxd-gateway:P`.
 * LXD then enforces the restriction itself on every call. A `metrics` client gets a metrics shadow (restricted to
 * the same projects when its certificate is), only for /1.0/metrics. Shadows are keyed by the whole project set,
 * made on first need (key pair written atomically in state_dir/shadows), removed from the trust store when no client
 * needs them any more, and checked on every trust-store read: an entry that no longer has exactly the settings the
 * gateway gave it is repaired, or deleted when it cannot be.
 *
 * The gateway's own trust entries (its identity, its shadows) are not the caller's: a restricted or metrics caller
 * cannot change them through the gateway (LXD would judge such a write by the shadow's certificate, which is the
 * gateway's, not the caller's).
 */
#ifndef GW_SHADOW_H
#define GW_SHADOW_H

#include <h2o.h>
#include "path.h"
#include "trust.h"

/* called once the identity of a request is known: caller->identity is set, or NULL when it could not be made */
typedef void (*gw_shadow_ready_cb)(h2o_req_t *req, gw_caller_t *caller);

/* sets up the shadow directory (pairs of an older naming are removed from the cluster, then from the disk); hooks
 * the trust refresh for clean-up and drift checks. `identity_fingerprint`: the gateway's own identity's */
void gw_shadow_init(const char *state_dir, const char *identity_fingerprint);
/* chooses caller->identity for `req`; calls `ready` now, or later when a shadow had to be created first */
void gw_shadow_choose(h2o_req_t *req, gw_caller_t *caller, gw_shadow_ready_cb ready);
/* the identity gw_shadow_choose would choose for a trusted caller (client or restricted) when it needs nothing made
 * first; NULL otherwise (and for any other caller) */
const gw_identity_t *gw_shadow_now(const gw_caller_t *caller);
/* as gw_shadow_now, and a shadow that is not ready is made so (as gw_shadow_choose would, with no request waiting): a
 * caller outside any request (a flow resumed for it) asks again later */
const gw_identity_t *gw_shadow_prepare(const gw_caller_t *caller);
/* a write to /1.0/certificates/<fingerprint> by a caller that is not an unrestricted client, aimed at one of the
 * gateway's own trust entries: refused (403, as LXD refuses a non-admin); returns 1 when it answered */
int gw_shadow_guard(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
