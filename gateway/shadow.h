/*
 * shadow.h: which identity a caller is forwarded with, including shadow identities.
 *
 * LXD 5.0 cannot be told "this request is really from client X", so a restricted client cannot be forwarded as the
 * (unrestricted) gateway. Instead, for each distinct project set of restricted clients, the gateway owns a shadow
 * key pair whose certificate it has the cluster trust as `restricted: true, projects: P`, named `lxd-gateway:P`.
 * LXD then enforces the restriction itself on every call. A `metrics` client gets the metrics shadow, only for
 * /1.0/metrics. Shadows are created on first need, kept in state_dir/shadows, and removed from the trust store when
 * no client needs them any more.
 */
#ifndef GW_SHADOW_H
#define GW_SHADOW_H

#include <h2o.h>
#include "trust.h"

/* called once the identity of a request is known: caller->identity is set, or NULL when it could not be made */
typedef void (*gw_shadow_ready_cb)(h2o_req_t *req, gw_caller_t *caller);

/* sets up shadows kept in state_dir from earlier runs; hooks the trust refresh for clean-up */
void gw_shadow_init(const char *state_dir);
/* chooses caller->identity for `req`; calls `ready` now, or later when a shadow had to be created first */
void gw_shadow_choose(h2o_req_t *req, gw_caller_t *caller, gw_shadow_ready_cb ready);

#endif
