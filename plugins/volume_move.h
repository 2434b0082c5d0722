/*
 * volume_move.h: the journaled flow of volume_move.c, which the snapshot copy (volume_snapshot_copy.c) runs too.
 *
 * A move: the source volume is marked, transferred to the target member (the copy made there marked too), deleted
 * once the marked copy was seen there, and the target's mark taken off.
 *
 * A snapshot copy: a temporary volume is first made from the snapshot on the snapshot's own member (LXD 5.0.2 copies
 * a snapshot into a new volume on one member), carrying the flow's mark from its creation; it is then moved like a
 * source volume. Every end of a snapshot copy, whether it succeeded, failed, was cancelled or was recovered after a
 * crash, passes through the removal of that temporary volume (only while it carries the mark). The source volume and
 * its snapshots are only read.
 */
#ifndef GW_PLUGIN_VOLUME_MOVE_H
#define GW_PLUGIN_VOLUME_MOVE_H

#include <jansson.h>
#include <h2o.h>
#include "members.h"

typedef struct st_gw_move_spec_t {
    const gw_identity_t *id;                       /* the caller's: every member call of the flow is made as it */
    gw_member_t *src, *dst;                        /* the source volume's member; the member the volume goes to */
    const char *pool, *project, *name;             /* the source volume */
    const char *snapshot;                          /* NULL: move the volume; otherwise copy this snapshot of it */
    const char *dst_pool, *dst_project, *dst_name; /* the volume to be made */
    json_t *volume;                                /* what the target gets: config, description, content_type (borrowed, copied) */
    json_t *temp_config; /* a snapshot copy: the temporary volume's config, the snapshot's own (borrowed, copied) */
} gw_move_spec_t;

/* every check passed (volumes.h, gw_vol_check): answers `req` with the flow's operation (202) and runs it */
void gw_move_begin(h2o_req_t *req, const gw_move_spec_t *spec);

/* a flow started by the gateway itself (a drain), with an operation of its own that no request waits for */
typedef struct st_gw_move_t gw_move_t;
/* told once of the flow's outcome (`err`: why it failed, or NULL), when its operation ends; the flow's own steps may go
 * on after it (a roll-back that retries, left to the next start) */
typedef void (*gw_move_done_cb)(void *data, int status, const char *err);
/* like gw_move_begin; sets *id to the flow's operation id (valid until `cb` ran). Returns the flow, valid until `cb`
 * runs, or NULL if it ended already (then `cb` ran before this returned, and *id is NULL) */
gw_move_t *gw_move_run(const gw_move_spec_t *spec, gw_move_done_cb cb, void *data, const char **id);
/* asks a running flow to stop, as DELETE of its operation does */
void gw_move_cancel(gw_move_t *move);

/* test hook: LXDGW_TEST_PAUSE_AT=<step> freezes the whole gateway (after PAUSE_DELAY_MS, so that it sends what it owes)
 * right after <step> was journaled: returns 1 if it will (the flow must go no further), else 0 */
int gw_move_pause_at(const char *step);

#endif
