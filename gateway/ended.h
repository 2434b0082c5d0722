/*
 * ended.h: GET of a task operation that ended a moment ago, after LXD forgot it.
 *
 * LXD keeps an operation 5 s after it ends, then answers "Operation not found". A client whose event listener was slow
 * to come up (lxc and incus give the upgrade 5 s; under load a member registers it seconds late) reads its operation
 * after that and fails although the operation succeeded. The gateway follows every member's own stream (follow.h) and
 * answers such a read from what the member said, for GW_FOLLOW_KEEP_MS, to a caller who could have read it from LXD.
 * While LXD still has it (LXD_KEEPS_MS), the read passes through.
 */
#ifndef GW_ENDED_H
#define GW_ENDED_H

#include <h2o.h>
#include "path.h"
#include "trust.h"

/* route (server.c): GET of GW_PATH_OPERATION and GW_PATH_OPERATION_WAIT; takes an id of a task operation that ended
 * more than LXD_KEEPS_MS ago and that the caller may see (returns 1 and answers); 0 for the others */
int gw_ended_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);

#endif
