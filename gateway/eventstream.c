/*
 * eventstream.c: see eventstream.h.
 */
#include <string.h>
#include <h2o/websocket.h>
#include "eventstream.h"
#include "log.h"
#include "lxd.h"
#include "members.h"
#include "operations.h"
#include "wsclient.h"

typedef struct st_stream_t {
    h2o_req_t *req;              /* the client's upgrade request, until it is answered */
    struct st_stream_t **holder; /* the request pool's pointer to us (NULL once the request is gone) */
    char key[25];                /* the client's Sec-WebSocket-Key */
    gw_wsclient_t *up;           /* the member's stream */
    h2o_websocket_conn_t *down;  /* the client's stream, once upgraded */
    char *types;                 /* "" = every type; else ","-joined */
    char *project;               /* the project asked for ("default" when none) */
    int all_projects;            /* ?all-projects=true */
    gw_trust_kind_t kind;        /* the caller's trust */
    gw_projects_t *projects;     /* GW_TRUST_RESTRICTED: its projects (a reference) */
    h2o_linklist_t link;         /* in streams, once upgraded */
} stream_t;

static h2o_linklist_t streams = {&streams, &streams};

static void stream_free(stream_t *s)
{
    if (s->holder != NULL)
        *s->holder = NULL;
    if (h2o_linklist_is_linked(&s->link))
        h2o_linklist_unlink(&s->link);
    free(s->types), free(s->project);
    gw_projects_unref(s->projects);
    free(s);
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

void gw_eventstream_init(void)
{
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

static void on_up_open(gw_wsclient_t *ws, void *data)
{
    stream_t *s = data;
    if (s->req == NULL) { /* the client left meanwhile */
        gw_wsclient_close(ws);
        stream_free(s);
        return;
    }
    h2o_req_t *req = s->req;
    s->req = NULL;
    s->down = h2o_upgrade_to_websocket(req, s->key, s, on_down);
    h2o_linklist_insert(&streams, &s->link);
}

static void on_up_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    stream_t *s = data;
    (void)ws;
    if (s->down != NULL)
        send_down(s, (const char *)msg, len);
}

static void on_up_close(gw_wsclient_t *ws, void *data, const char *err)
{
    stream_t *s = data;
    if (s->down != NULL) { /* the member's stream ended: so does the client's, as when a member stops */
        gw_log(GW_LOG_INFO, "client event stream ended by its member", "err", err, NULL);
        h2o_websocket_close(s->down);
    } else if (s->req != NULL) {
        int status = gw_wsclient_status(ws);
        if (status == 403) /* the member refused the caller: say what LXD says */
            gw_lxd_send_error(s->req, 403, "not authorized");
        else if (status >= 400 && status < 500)
            gw_lxd_send_error(s->req, status, "%s", err);
        else
            gw_lxd_send_error(s->req, 502, "Cluster member did not open the event stream: %s", err);
    }
    stream_free(s);
}

static const gw_wsclient_cbs_t up_callbacks = {on_up_open, on_up_message, on_up_close};

static void on_req_dispose(void *data)
{
    stream_t *s = *(stream_t **)data;
    if (s != NULL) {
        s->req = NULL;
        s->holder = NULL;
    }
}

int gw_eventstream_handle(h2o_req_t *req, const gw_caller_t *caller)
{
    const char *key;
    h2o_iovec_t p = req->path_normalized;
    if (!(h2o_memis(p.base, p.len, H2O_STRLIT("/1.0/events")) || h2o_memis(p.base, p.len, H2O_STRLIT("/1.0/events/"))) ||
        h2o_is_websocket_handshake(req, &key) != 0 || key == NULL || req->version >= 0x200 || !gw_trust_is_client(caller))
        return 0; /* LXD answers the others itself */
    size_t cursor = 0;
    gw_member_t *m = gw_members_next(&cursor);
    if (m == NULL) {
        gw_lxd_send_error(req, 503, "No cluster member is reachable through the gateway");
        return 1;
    }
    stream_t *s = calloc(1, sizeof(*s));
    const char *types = gw_lxd_query(req, "type"), *project = gw_lxd_query(req, "project"),
               *all = gw_lxd_query(req, "all-projects");
    s->req = req;
    s->holder = h2o_mem_alloc_shared(&req->pool, sizeof(*s->holder), on_req_dispose);
    *s->holder = s;
    memcpy(s->key, key, 24);
    s->types = strdup(types != NULL ? types : "");
    s->project = strdup(project != NULL && *project != '\0' ? project : "default");
    s->all_projects = all != NULL && strcmp(all, "true") == 0;
    s->kind = caller->kind;
    s->projects = gw_projects_ref(caller->projects);
    gw_member_note(req, m);
    char *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    s->up = gw_wsclient_open(m, caller->identity, path, &up_callbacks, s);
    return 1;
}
