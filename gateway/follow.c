/*
 * follow.c: see follow.h. One gw_wsclient_t per member, kept up as events.c keeps the gateway's own stream.
 */
#include <stdlib.h>
#include <string.h>
#include "clock.h"
#include "follow.h"
#include "log.h"
#include "members.h"
#include "wsclient.h"

#define TICK_MS 1000  /* connects what is down at this pace */
#define PING_MS 15000 /* our ping, so that a dead member is noticed */
#define DEAD_MS 45000 /* nothing received for this long: the connection is dead */
#define PATH "/1.0/events?type=operation&all-projects=true"
#define MAX_KEPT 1024 /* ended task operations kept at once (the oldest go first) */

/* an ended task operation, kept GW_FOLLOW_KEEP_MS */
typedef struct st_kept_t {
    char id[37];
    char *project;
    json_t *operation;
    uint64_t ended_at; /* gw_clock_ms() when its member's stream said so */
} kept_t;

typedef struct st_follower_t {
    gw_member_t *member;
    gw_wsclient_t *ws; /* connecting or up, or NULL */
    int up;            /* upgraded */
    uint64_t last_ping;
} follower_t;

static struct {
    h2o_context_t *ctx;
    gw_follow_cb on_end;
    follower_t **list; /* one per member seen (members are never freed; nor are followers) */
    size_t num, cap;
    h2o_timeout_t timeout;
    h2o_timeout_entry_t tick;
    kept_t kept[MAX_KEPT]; /* a ring: `next_kept` is the oldest (or an empty slot) */
    size_t next_kept;
} F;

static void keep(const char *id, const char *project, json_t *op)
{
    kept_t *k = F.kept + F.next_kept;
    F.next_kept = (F.next_kept + 1) % MAX_KEPT;
    free(k->project);
    json_decref(k->operation);
    memcpy(k->id, id, 37);
    k->project = strdup(project);
    k->operation = json_incref(op);
    k->ended_at = gw_clock_ms();
}

int gw_follow_ended(const char *id, size_t len, gw_follow_ended_t *out)
{
    uint64_t now = gw_clock_ms();
    if (len != 36)
        return 0;
    for (size_t i = 0; i != MAX_KEPT; ++i) {
        const kept_t *k = F.kept + i;
        if (k->operation != NULL && memcmp(k->id, id, 36) == 0 && now - k->ended_at < GW_FOLLOW_KEEP_MS) {
            *out = (gw_follow_ended_t){k->project, k->operation, now - k->ended_at};
            return 1;
        }
    }
    return 0;
}

static void on_open(gw_wsclient_t *ws, void *data)
{
    follower_t *f = data;
    (void)ws;
    f->up = 1;
    f->last_ping = h2o_now(F.ctx->loop);
}

static void on_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    follower_t *f = data;
    (void)ws;
    /* every member's stream carries every member's events: only this member's own operations, and only their ends, are
     * worth parsing (a cheap look first) */
    static const char key[] = "\"status_code\":";
    const char *p = memmem(msg, len, key, sizeof(key) - 1);
    if (p == NULL || (const uint8_t *)p + sizeof(key) > msg + len || p[sizeof(key) - 1] < '2')
        return;
    json_t *event = json_loadb((const char *)msg, len, 0, NULL), *op = json_object_get(event, "metadata");
    const char *type = json_string_value(json_object_get(event, "type")),
               *location = json_string_value(json_object_get(event, "location")),
               *project = json_string_value(json_object_get(event, "project")), *id = json_string_value(json_object_get(op, "id"));
    json_int_t code = json_integer_value(json_object_get(op, "status_code"));
    if (type != NULL && strcmp(type, "operation") == 0 && location != NULL && strcmp(location, f->member->name) == 0 &&
        project != NULL && id != NULL && strlen(id) == 36 && code >= 200) {
        const char *class = json_string_value(json_object_get(op, "class"));
        if (class != NULL && strcmp(class, "task") == 0) /* (not tokens nor websockets: their metadata holds secrets) */
            keep(id, project, op);
        F.on_end(f->member->name, project, id, event);
    }
    json_decref(event);
}

static void on_close(gw_wsclient_t *ws, void *data, const char *err)
{
    follower_t *f = data;
    (void)ws;
    int was_up = f->up;
    if (f->up)
        gw_log(GW_LOG_WARN, "member's own event stream lost", "member", f->member->name, "reason", err, NULL);
    f->ws = NULL;
    f->up = 0;
    if (was_up)
        gw_member_probe(f->member); /* a member that died closed it: known down in a round trip, not at the next round */
}

static const gw_wsclient_cbs_t callbacks = {on_open, on_message, on_close, NULL};

static void add_member(const gw_member_t *m, void *data)
{
    (void)data;
    for (size_t i = 0; i != F.num; ++i)
        if (F.list[i]->member == m)
            return;
    if (F.num == F.cap) {
        F.cap = F.cap == 0 ? 8 : F.cap * 2;
        F.list = realloc(F.list, F.cap * sizeof(*F.list));
    }
    follower_t *f = calloc(1, sizeof(*f));
    f->member = (gw_member_t *)m;
    F.list[F.num++] = f;
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    uint64_t now = h2o_now(F.ctx->loop);
    gw_members_foreach(add_member, NULL);
    for (size_t i = 0; i != F.num; ++i) {
        follower_t *f = F.list[i];
        if (f->up && now - gw_wsclient_last_rx(f->ws) > DEAD_MS) {
            gw_log(GW_LOG_WARN, "member's own event stream lost", "member", f->member->name, "reason",
                   "no traffic (ping unanswered)", NULL);
            gw_wsclient_close(f->ws);
            f->ws = NULL;
            f->up = 0;
        }
        if (f->up && now - f->last_ping >= PING_MS) {
            gw_wsclient_ping(f->ws);
            f->last_ping = now;
        }
        if (f->ws == NULL && f->member->present && f->member->healthy)
            f->ws = gw_wsclient_open(f->member, &gw_identities[GW_IDENTITY_GATEWAY], PATH, &callbacks, f);
    }
    h2o_timeout_link(F.ctx->loop, &F.timeout, &F.tick);
}

void gw_follow_init(h2o_context_t *ctx, gw_follow_cb on_end)
{
    F.ctx = ctx;
    F.on_end = on_end;
    h2o_timeout_init(ctx->loop, &F.timeout, TICK_MS);
    F.tick.cb = on_tick;
    h2o_timeout_link(ctx->loop, &F.timeout, &F.tick);
}

size_t gw_follow_up(void)
{
    size_t n = 0;
    for (size_t i = 0; i != F.num; ++i)
        n += F.list[i]->up;
    return n;
}
