/*
 * eventstream.c: see eventstream.h.
 */
#include <stdlib.h>
#include <string.h>
#include <h2o/websocket.h>
#include "clock.h"
#include "eventstream.h"
#include "follow.h"
#include "hold.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "operations.h"
#include "wsclient.h"

/* malloc'd: it outlives the client's upgrade request (it becomes the client's stream); freed by stream_free, when
 * either side's stream ends, or when the client goes before it was answered (on_client_gone) */
typedef struct st_stream_t {
    gw_hold_t hold;             /* the client's upgrade request, until it is answered */
    char key[25];               /* the client's Sec-WebSocket-Key */
    gw_wsclient_t *up;          /* the member's stream */
    h2o_websocket_conn_t *down; /* the client's stream, once upgraded */
    char *types;                /* "" = every type; else ","-joined */
    char *project;              /* the project asked for ("default" when none) */
    int all_projects;           /* ?all-projects=true */
    gw_trust_kind_t kind;       /* the caller's trust */
    gw_projects_t *projects;    /* GW_TRUST_RESTRICTED: its projects (a reference) */
    h2o_linklist_t link;        /* in streams, once upgraded */
    h2o_timeout_entry_t ready;  /* linked from the client's upgrade until it is answered (see on_up_open) */
    int up_open;                /* the member answered 101 */
    int late;                   /* READY_MS passed before the member's 101: the client is answered at that 101 */
    uint64_t asked_at;          /* gw_clock_ms() when the client asked */
    char *member;               /* the name of the member the stream comes from */
    uint64_t since;             /* gw_clock_ms() when the client was answered */
    char (*ends)[37];           /* the ids of the last ENDS_KEPT operation ends it was sent (a ring; NULL until one) */
    size_t next_end;            /* where the next one goes in `ends` */
} stream_t;

/* An operation end that a member's own stream carried (follow.h), held for HUB_GRACE_MS: a client stream that came
 * from another member and has not had it by then gets it from here (the cluster's own relay lost it). */
typedef struct st_end_t {
    char id[37];
    char *member, *project;
    char *text;       /* the event, as sent */
    uint64_t seen_at; /* gw_clock_ms() when the member said so */
    h2o_linklist_t link;
} end_t;

#define ENDS_KEPT 128     /* operation ends remembered per stream (more in HUB_GRACE_MS only costs a duplicate) */
#define HUB_GRACE_MS 5000 /* a member's event reaches the others well within this, unless the hub lost it */
#define MAX_ENDS 4096     /* ends held at once (more: the oldest are let go, logged) */

/* how long the client's upgrade waits for the member's first frame at most. lxc and incus give the whole upgrade 5 s
 * (gorilla/websocket's HandshakeTimeout in client/lxd.go): a later 101 fails their event listener, and lxc then reads
 * its operation seconds later, possibly after LXD has forgotten it ("Operation not found"). */
#define READY_MS 2500

/* test hook: LXDGW_TEST_EVENTS_DEAF_MS=<ms> plays a member that registers a stream's listener <ms> after the client
 * asked: the member's frames before then are dropped, and its first frame does not count as "registered" */
static uint64_t deaf_ms;

static h2o_linklist_t streams = {&streams, &streams};
static h2o_timeout_t ready_timeout; /* READY_MS */
static struct {
    h2o_loop_t *loop;
    h2o_linklist_t list; /* end_t.link, oldest first */
    size_t num;
    h2o_timeout_t grace; /* HUB_GRACE_MS */
    h2o_timeout_entry_t due;
} Ends;

static void stream_free(stream_t *s)
{
    (void)gw_hold_take(&s->hold); /* (answered, or the client gone, on every path that comes here) */
    if (h2o_linklist_is_linked(&s->link))
        h2o_linklist_unlink(&s->link);
    if (h2o_timeout_is_linked(&s->ready))
        h2o_timeout_unlink(&s->ready);
    free(s->types), free(s->project), free(s->member), free(s->ends);
    gw_projects_unref(s->projects);
    free(s);
}

static void remember_end(stream_t *s, const char *id)
{
    if (s->ends == NULL)
        s->ends = calloc(ENDS_KEPT, sizeof(*s->ends));
    memcpy(s->ends[s->next_end], id, 37);
    s->next_end = (s->next_end + 1) % ENDS_KEPT;
}

static int had_end(const stream_t *s, const char *id)
{
    for (size_t i = 0; s->ends != NULL && i != ENDS_KEPT; ++i)
        if (strcmp(s->ends[i], id) == 0)
            return 1;
    return 0;
}

/* a message from the member: if it is an operation's end, the stream has had it */
static void note_end(stream_t *s, const char *msg, size_t len)
{
    static const char key[] = "\"status_code\":";
    const char *p = memmem(msg, len, key, sizeof(key) - 1);
    if (p == NULL || p + sizeof(key) > msg + len || p[sizeof(key) - 1] < '2')
        return;
    json_t *event = json_loadb(msg, len, 0, NULL);
    const char *id = json_string_value(json_object_get(json_object_get(event, "metadata"), "id"));
    if (id != NULL && strlen(id) == 36)
        remember_end(s, id);
    json_decref(event);
}

int gw_eventstream_send(h2o_websocket_conn_t *conn, const char *text, size_t len)
{
    /* (while the 101 is still being written, h2o owns the connection: it is not closed from here then) */
    if (conn->sock != NULL && wslay_event_get_queued_msg_length(conn->ws_ctx) + len > GW_EVENTSTREAM_MAX_QUEUED)
        return -1;
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    wslay_event_queue_msg(conn->ws_ctx, &msg);
    if (conn->sock != NULL) /* still writing the 101: h2o proceeds by itself once it is out */
        h2o_websocket_proceed(conn);
    return 0;
}

static void on_down(h2o_websocket_conn_t *conn, const struct wslay_event_on_msg_recv_arg *arg);

static void send_down(stream_t *s, const char *text, size_t len)
{
    if (gw_eventstream_send(s->down, text, len) != 0) {
        gw_log(GW_LOG_WARN, "client event stream closed: the client does not read its events", "unread_bytes",
               gw_log_num((long long)wslay_event_get_queued_msg_length(s->down->ws_ctx)), NULL);
        on_down(s->down, NULL); /* as if the client had gone: frees `s` */
    }
}

static int wants_type(const stream_t *s, const char *type)
{
    return *s->types == '\0' || gw_lxd_list_has(s->types, type);
}

void gw_eventstream_publish(const char *project, json_t *event)
{
    char *text = NULL;
    for (h2o_linklist_t *l = streams.next, *next; l != &streams; l = next) {
        next = l->next; /* sending may end this stream (its client gone) */
        stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, link, l);
        if (!wants_type(s, "operation") || !(s->all_projects || strcmp(s->project, project) == 0) ||
            !gw_ops_may_see(s->kind, s->projects, project))
            continue;
        if (text == NULL && (text = json_dumps(event, JSON_COMPACT)) == NULL)
            return; /* nothing to send (an event that cannot be encoded) */
        send_down(s, text, strlen(text));
    }
    free(text);
}

/* a gateway operation changed: to every stream that asked for it and may see it */
static void on_op_event(const gw_op_t *op, json_t *event)
{
    gw_eventstream_publish(gw_op_project(op), event);
}

static void end_free(end_t *e)
{
    h2o_linklist_unlink(&e->link);
    --Ends.num;
    free(e->member), free(e->project), free(e->text);
    free(e);
}

/* the ends held for HUB_GRACE_MS: to every stream that should have had one and has not */
static void on_ends_due(h2o_timeout_entry_t *entry)
{
    (void)entry;
    uint64_t now = gw_clock_ms();
    while (!h2o_linklist_is_empty(&Ends.list)) {
        end_t *e = H2O_STRUCT_FROM_MEMBER(end_t, link, Ends.list.next);
        if (now - e->seen_at < HUB_GRACE_MS)
            break;
        for (h2o_linklist_t *l = streams.next, *next; l != &streams; l = next) {
            next = l->next; /* sending may end this stream */
            stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, link, l);
            /* (the stream's own member too: an end in the gap between its 101 and its listener is lost there) */
            if (s->since > e->seen_at || !wants_type(s, "operation") || !(s->all_projects || strcmp(s->project, e->project) == 0) ||
                !gw_ops_may_see(s->kind, s->projects, e->project) || had_end(s, e->id))
                continue;
            gw_log(GW_LOG_INFO, "operation end sent from its member's own stream: the client's stream lost it", "operation", e->id,
                   "member", e->member, "stream_member", s->member, NULL);
            remember_end(s, e->id);
            send_down(s, e->text, strlen(e->text));
        }
        end_free(e);
    }
    if (!h2o_linklist_is_empty(&Ends.list))
        h2o_timeout_link(Ends.loop, &Ends.grace, &Ends.due);
}

/* a member's own stream says one of its operations ended */
static void on_member_end(const char *member, const char *project, const char *id, json_t *event)
{
    if (h2o_linklist_is_empty(&streams))
        return; /* nobody to tell */
    if (Ends.num == MAX_ENDS) {
        gw_log(GW_LOG_WARN, "too many operation ends at once to check them all", "held", gw_log_num(MAX_ENDS), NULL);
        end_free(H2O_STRUCT_FROM_MEMBER(end_t, link, Ends.list.next));
    }
    char *text = json_dumps(event, JSON_COMPACT);
    if (text == NULL)
        return;
    end_t *e = calloc(1, sizeof(*e));
    memcpy(e->id, id, 37);
    e->member = strdup(member);
    e->project = strdup(project);
    e->text = text;
    e->seen_at = gw_clock_ms();
    h2o_linklist_insert(&Ends.list, &e->link);
    ++Ends.num;
    if (!h2o_timeout_is_linked(&Ends.due))
        h2o_timeout_link(Ends.loop, &Ends.grace, &Ends.due);
}

void gw_eventstream_init(h2o_context_t *ctx)
{
    h2o_timeout_init(ctx->loop, &ready_timeout, READY_MS);
    const char *deaf = getenv("LXDGW_TEST_EVENTS_DEAF_MS");
    deaf_ms = deaf != NULL ? strtoull(deaf, NULL, 10) : 0;
    Ends.loop = ctx->loop;
    h2o_linklist_init_anchor(&Ends.list);
    h2o_timeout_init(ctx->loop, &Ends.grace, HUB_GRACE_MS);
    Ends.due.cb = on_ends_due;
    gw_follow_init(ctx, on_member_end);
    gw_ops_on_event(on_op_event);
}

/* the client's side closed (or failed) */
static void on_down(h2o_websocket_conn_t *conn, const struct wslay_event_on_msg_recv_arg *arg)
{
    stream_t *s = conn->data;
    if (arg != NULL)
        return; /* LXD ignores what clients send on an event stream */
    h2o_websocket_close(conn);
    s->down = NULL;
    gw_wsclient_close(s->up);
    stream_free(s);
}

/* the member's listener is registered (or taken to be): the client's upgrade is answered */
static void answer_client(stream_t *s)
{
    if (s->down != NULL)
        return; /* answered already (by the timeout, and now the member's first frame came) */
    if (h2o_timeout_is_linked(&s->ready))
        h2o_timeout_unlink(&s->ready);
    h2o_req_t *req = gw_hold_take(&s->hold);
    if (req == NULL) { /* (not reached: on_client_gone frees the stream when the client goes) */
        gw_wsclient_close(s->up);
        stream_free(s);
        return;
    }
    s->since = gw_clock_ms();
    s->down = h2o_upgrade_to_websocket(req, s->key, s, on_down);
    h2o_linklist_insert(&streams, &s->link);
}

/* the member answered 101. LXD 5.0.2 upgrades first and registers the listener afterwards (a cluster database
 * transaction later, seconds on a loaded member); a client answered now could read an operation (lxc's "manual
 * refresh") before its stream hears of it, and the operation's end, if it comes in that gap, never reaches the stream.
 * LXD pings the moment the listener is registered: the client is answered at that first frame (on_up_ready), or
 * READY_MS after it asked, whichever comes first. An end lost in a gap that remains still reaches the stream, from
 * the member's own stream that the gateway follows (on_ends_due), HUB_GRACE_MS later. */
static void on_up_open(gw_wsclient_t *ws, void *data)
{
    stream_t *s = data;
    (void)ws;
    s->up_open = 1;
    if (s->late)
        answer_client(s);
}

static void on_up_ready(gw_wsclient_t *ws, void *data)
{
    stream_t *s = data;
    (void)ws;
    if (deaf_ms == 0)
        answer_client(s);
}

static void on_ready_timeout(h2o_timeout_entry_t *entry)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, ready, entry);
    if (!s->up_open) {
        s->late = 1;
        return;
    }
    gw_log(GW_LOG_INFO, "member's event stream not registered yet; answering the client", "waited_ms", gw_log_num(READY_MS),
           "member", s->member, NULL);
    answer_client(s);
}

static void on_up_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    stream_t *s = data;
    (void)ws;
    if (deaf_ms != 0 && gw_clock_ms() - s->asked_at < deaf_ms)
        return; /* (test hook) not registered yet */
    if (s->down != NULL) {
        note_end(s, (const char *)msg, len);
        send_down(s, (const char *)msg, len);
    }
}

static void on_up_close(gw_wsclient_t *ws, void *data, const char *err)
{
    stream_t *s = data;
    h2o_req_t *req;
    if (s->down != NULL) { /* the member's stream ended: so does the client's, as when a member stops */
        gw_log(GW_LOG_INFO, "client event stream ended by its member", "err", err, NULL);
        h2o_websocket_close(s->down);
    } else if ((req = gw_hold_take(&s->hold)) != NULL) {
        int status = gw_wsclient_status(ws);
        if (status == 403) /* the member refused the caller: say what LXD says */
            gw_lxd_send_error(req, 403, "not authorized");
        else if (status >= 400 && status < 500)
            gw_lxd_send_error(req, status, "%s", err);
        else
            gw_lxd_send_error(req, 502, "Cluster member did not open the event stream: %s", err);
    }
    stream_free(s);
}

static const gw_wsclient_cbs_t up_callbacks = {on_up_open, on_up_message, on_up_close, on_up_ready};

/* the client left before its upgrade was answered: the member's stream is not needed any more */
static void on_client_gone(gw_hold_t *hold)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, hold, hold);
    gw_wsclient_close(s->up);
    stream_free(s);
}

int gw_eventstream_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    const char *key;
    (void)path;
    if (h2o_is_websocket_handshake(req, &key) != 0 || key == NULL || req->version >= 0x200 || !gw_trust_is_client(caller))
        return 0; /* LXD answers the others itself */
    size_t cursor = 0;
    gw_member_t *m = gw_members_next(&cursor);
    if (m == NULL) {
        gw_lxd_send_error(req, 503, "No cluster member is reachable through the gateway");
        return 1;
    }
    stream_t *s = calloc(1, sizeof(*s));
    s->ready.cb = on_ready_timeout;
    const char *types = gw_lxd_query(req, "type"), *project = gw_lxd_query(req, "project"),
               *all = gw_lxd_query(req, "all-projects");
    gw_hold_attach(&s->hold, req, on_client_gone);
    memcpy(s->key, key, 24);
    s->types = strdup(types != NULL ? types : "");
    s->project = strdup(project != NULL && *project != '\0' ? project : "default");
    s->all_projects = all != NULL && strcmp(all, "true") == 0;
    s->kind = caller->kind;
    s->projects = gw_projects_ref(caller->projects);
    s->member = strdup(m->name);
    gw_member_note(req, m);
    s->asked_at = gw_clock_ms();
    h2o_timeout_link(req->conn->ctx->loop, &ready_timeout, &s->ready);
    char *target = h2o_strdup(&req->pool, req->path.base, req->path.len).base; /* (with the client's query) */
    s->up = gw_wsclient_open(m, caller->identity, target, &up_callbacks, s);
    return 1;
}
