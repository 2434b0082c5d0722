/*
 * migrate.h: one custom volume moved over the wire from one cluster member to another, the way LXD 5.0 clients do it.
 *
 * Step 1 asks the source member for a migration source (POST .../volumes/custom/<vol> with `migration: true`); it
 * answers a websocket operation whose secrets let one sink connect. Step 2, sent the moment step 1 answers (the
 * source waits only 10 seconds for its sink), asks the target member to create the volume by pulling from that
 * operation. The target's answer is a task operation that runs the transfer: it is the result of this module.
 *
 * Neither step deletes anything: the source volume is only read. When step 2 fails, the step-1 operation is
 * cancelled; LXD 5.0.2 refuses that (its migration source may not be cancelled and would wait 10 s for a sink), so
 * the gateway then connects to its websockets and hangs up, which ends it at once, having only read.
 * Both sub-calls are made with the caller's identity, so each member applies its own access rules.
 */
#ifndef GW_MIGRATE_H
#define GW_MIGRATE_H

#include <jansson.h>
#include "members.h"
#include "relay.h"

typedef struct st_gw_migrate_spec_t {
    const gw_identity_t *id; /* identity both sub-calls are made with (the caller's) */
    gw_member_t *src;        /* member holding the source volume */
    gw_member_t *dst;        /* member the volume is created on */
    const char *src_pool;    /* storage pool of the source volume */
    const char *src_project; /* its project ("default" if the caller named none) */
    const char *src_name;    /* its name (not a snapshot) */
    const char *dst_pool;    /* pool to create the volume in */
    const char *dst_project; /* project to create it in */
    json_t *dst_volume;      /* what the target creates: name, type, config, description, content_type (borrowed) */
    int volume_only;         /* 1: without the source's snapshots */
    int refresh;             /* 1: update an existing target volume (only the differences travel) */
    gw_relay_t **relay;      /* non-NULL: the data goes through a relay (relay.h) set here, which the caller closes
                              * when the transfer is over (closing it earlier cuts the transfer); NULL: member to member */
} gw_migrate_spec_t;

/*
 * called once. err != NULL: no HTTP answer (status 0). Otherwise `status` and `answer` are the member's answer
 * (step 2's 202 and its operation on success; the failing step's error otherwise), `location` the answer's Location
 * header (or NULL). Everything is valid only during the call.
 */
typedef void (*gw_migrate_cb)(void *data, const char *err, long status, json_t *answer, const char *location);

/* reads the cluster certificate (PEM) the target must expect from the source member; NULL or an error */
const char *gw_migrate_init(const char *cluster_certificate_file);
/* starts step 1 (everything in `spec` is copied); `cb` runs once, after step 2 answered or a step failed */
void gw_migrate_start(const gw_migrate_spec_t *spec, gw_migrate_cb cb, void *data);

#endif
