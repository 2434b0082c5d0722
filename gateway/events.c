/*
 * events.c: see events.h. The stream is a gw_wsclient_t (wsclient.h).
 */
#include <stdio.h>
#include <string.h>
#include "events.h"
#include "identity.h"
#include "log.h"
#include "members.h"
#include "wsclient.h"

#define RETRY_MS 1000  /* wait before connecting again */
#define PING_MS 15000  /* our ping, so that a dead peer is noticed */
#define DEAD_MS 45000  /* nothing received for this long: the connection is dead */
#define READY_MS 10000 /* the member's first frame (its listener is registered) is awaited this long at most */
#define MAX_USERS 8    /* callbacks on the stream (the trust mirror's two, the GET /1.0 cache's two) */

static struct {
    h2o_context_t *ctx;
    char *types;
    struct {
        gw_events_cb cb;     /* NULL: on_up only */
        void (*on_up)(void); /* NULL: events only */
    } users[MAX_USERS];      /* in the order added */
    size_t num_users;
    gw_wsclient_t *ws;   /* the stream (connecting or up), or NULL */
    int up;              /* upgraded: events are flowing */
    int ready;           /* the member's first frame came: no event is missed from here on (wsclient.h) */
    uint64_t opened_at;  /* h2o_now() of the upgrade */
    gw_member_t *member; /* the member the stream comes from */
    size_t cursor;       /* next member to try */
    uint64_t last_ping;
    h2o_timeout_t timeout;
    h2o_timeout_entry_t tick;
} E;

int gw_events_connected(void)
{
    return E.up && E.ready;
}

void gw_events_listen(gw_events_cb cb, void (*on_up)(void))
{
    if (E.num_users < MAX_USERS) {
        E.users[E.num_users].cb = cb;
        E.users[E.num_users++].on_up = on_up;
    }
}

void gw_events_on_up(void (*on_up)(void))
{
    gw_events_listen(NULL, on_up);
}

static void on_open(gw_wsclient_t *ws, void *data)
{
    (void)ws, (void)data;
    E.up = 1;
    E.ready = 0;
    E.last_ping = E.opened_at = h2o_now(E.ctx->loop);
}

/* the listener is registered: from now on nothing is missed, so users catch up on what came before */
static void on_ready(gw_wsclient_t *ws, void *data)
{
    (void)ws, (void)data;
    if (E.ready)
        return; /* taken as registered at READY_MS already */
    E.ready = 1;
    gw_log(GW_LOG_INFO, "event stream up", "member", E.member->name, "types", E.types, NULL);
    for (size_t i = 0; i != E.num_users; ++i)
        if (E.users[i].on_up != NULL)
            E.users[i].on_up();
}

static void on_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    (void)ws, (void)data;
    json_t *event = json_loadb((const char *)msg, len, 0, NULL);
    for (size_t i = 0; event != NULL && i != E.num_users; ++i)
        if (E.users[i].cb != NULL)
            E.users[i].cb(event);
    json_decref(event);
}

static void on_close(gw_wsclient_t *ws, void *data, const char *err)
{
    (void)ws, (void)data;
    if (E.up)
        gw_log(GW_LOG_WARN, "event stream lost", "member", E.member != NULL ? E.member->name : "-", "reason", err, NULL);
    else
        gw_log(GW_LOG_WARN, "event stream refused", "member", E.member != NULL ? E.member->name : "-", "err", err, NULL);
    if (E.up && E.member != NULL)
        gw_member_probe(E.member); /* a member that died closed it: known down in a round trip */
    E.ws = NULL;
    E.up = E.ready = 0;
}

static const gw_wsclient_cbs_t callbacks = {on_open, on_message, on_close, on_ready};

static void connect_next(void)
{
    if ((E.member = gw_members_next(&E.cursor)) == NULL) {
        E.cursor = 0;
        return; /* tried them all: the next tick starts over */
    }
    char path[256];
    snprintf(path, sizeof(path), "/1.0/events?type=%s", E.types);
    E.ws = gw_wsclient_open(E.member, &gw_identities[GW_IDENTITY_GATEWAY], path, &callbacks, NULL);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    uint64_t now = h2o_now(E.ctx->loop);
    if (E.up && now - gw_wsclient_last_rx(E.ws) > DEAD_MS) {
        gw_log(GW_LOG_WARN, "event stream lost", "member", E.member->name, "reason", "no traffic (ping unanswered)", NULL);
        gw_wsclient_close(E.ws);
        E.ws = NULL;
        E.up = E.ready = 0;
    }
    if (E.up && !E.ready && now - E.opened_at >= READY_MS)
        on_ready(E.ws, NULL); /* a member that does not ping first: taken as registered */
    if (E.up && now - E.last_ping >= PING_MS) {
        gw_wsclient_ping(E.ws);
        E.last_ping = now;
    }
    if (E.ws == NULL)
        connect_next();
    h2o_timeout_link(E.ctx->loop, &E.timeout, &E.tick);
}

void gw_events_init(h2o_context_t *ctx, const char *types, gw_events_cb cb)
{
    E.ctx = ctx;
    E.types = strdup(types);
    gw_events_listen(cb, NULL);
    h2o_timeout_init(ctx->loop, &E.timeout, RETRY_MS);
    E.tick.cb = on_tick;
    on_tick(&E.tick);
}
