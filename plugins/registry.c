/*
 * registry.c: the plugins this gateway has, and the dispatch in front of pass-through.
 */
#include "members.h"
#include "plugin.h"

/* single-call capabilities are added here as they are built (volume copy: issue 4, move: issue 5) */
const gw_plugin_t *const gw_plugins[] = {NULL};

int gw_plugins_dispatch(h2o_req_t *req, const gw_caller_t *caller)
{
    for (const gw_plugin_t *const *p = gw_plugins; *p != NULL; ++p) {
        if ((*p)->extension != NULL && gw_members_have_extension((*p)->extension))
            continue; /* the cluster does it natively: step aside */
        if ((*p)->claims(req, caller)) {
            (*p)->handle(req, caller);
            return 1;
        }
    }
    return 0;
}
