/*
 * ended.c: see ended.h.
 */
#include "ended.h"
#include "follow.h"
#include "lxd.h"
#include "operations.h"

#define LXD_KEEPS_MS                                                                                                               \
    4000 /* LXD forgets an operation 5 s after it ends (lxd/operations/operations.go); its end reaches                             \
          * the gateway's stream a moment after: until then, LXD answers itself */

int gw_ended_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    gw_follow_ended_t e;
    if (!gw_follow_ended(path->id.base, path->id.len, &e) || e.ago_ms < LXD_KEEPS_MS ||
        !gw_ops_may_see(caller->kind, caller->projects, e.project))
        return 0; /* LXD answers: it still has it, or says what it says to this caller */
    gw_lxd_send_sync(req, json_incref(e.operation));
    return 1;
}
