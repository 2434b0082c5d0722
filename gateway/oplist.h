/*
 * oplist.h: GET /1.0/operations as clients must see it: the cluster's list, token operations rewritten (tokens.h),
 * with the gateway's own operations and those it mirrors from other replicas (operations.h) added to the groups of
 * their status, as far as the caller may see them. Sits above operations, tokens and rewrite, which it reads.
 */
#ifndef GW_OPLIST_H
#define GW_OPLIST_H

#include <h2o.h>
#include "path.h"
#include "trust.h"

/* takes GET /1.0/operations[/] when the registry holds an operation (returns 1 and answers); returns 0 for anything
 * else (an empty registry: tokens.h rewrites the list alone) */
int gw_oplist_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
