/*
 * registry.c: the plugins this gateway has, and the dispatch in front of pass-through.
 */
#include "members.h"
#include "plugin.h"

extern const gw_plugin_t gw_plugin_volume_snapshot_copy, gw_plugin_volume_copy, gw_plugin_volume_move, gw_plugin_volumes_all,
    gw_plugin_volume_drain;

/* single-call capabilities, asked (and initialised) in this order: a snapshot copy before the copy, which would refuse
 * it; the drain after the move, whose init opens the journal */
const gw_plugin_t *const gw_plugins[] = {&gw_plugin_volume_snapshot_copy, &gw_plugin_volume_copy,  &gw_plugin_volume_move,
                                         &gw_plugin_volumes_all,          &gw_plugin_volume_drain, NULL};

int gw_plugins_dispatch(h2o_req_t *req, const gw_caller_t *caller)
{
    for (const gw_plugin_t *const *p = gw_plugins; *p != NULL; ++p) {
        if ((*p)->extension != NULL && !gw_members_lack_extension((*p)->extension))
            continue; /* the cluster does it natively (or is not known yet to lack it): step aside */
        if ((*p)->claims(req, caller)) {
            (*p)->handle(req, caller);
            return 1;
        }
    }
    return 0;
}
