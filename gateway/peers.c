/*
 * peers.c: see peers.h.
 */
#include <stdlib.h>
#include <string.h>
#include <h2o/websocket.h>
#include <openssl/rand.h>
#include "backend.h"
#include "clock.h"
#include "eventstream.h"
#include "flows.h"
#include "hold.h"
#include "log.h"
#include "lxd.h"
#include "operations.h"
#include "peers.h"
#include "relay.h"
#include "replica.h"
#include "text.h"
#include "tls.h"
#include "wsclient.h"

/*
 * A busy peer is not a dead peer. A peer is down only on evidence: its port refuses connections (nothing listens: the
 * process is gone), it answers as something that is not a gateway replica, or it has given no sign of life at all (no
 * probe answered, no frame on its feed) for SILENT_DOWN_MS. A timed-out probe, a slow TLS handshake, a feed that broke:
 * each only makes the peer "slow" and is checked at once with a probe. While a peer is only slow, forwarded requests are
 * retried (within the client's own bound); once it is down, they are answered at once, naming it.
 */
#define PROBE_TIMEOUT_MS 5000   /* a probe unanswered this long is a miss (a sign of nothing, not of death) */
#define CONNECT_TIMEOUT_MS 5000 /* connecting (TCP and TLS) to a peer may take this long per attempt */
#define SILENT_DOWN_MS 60000    /* no sign of life for this long, though nothing refused us: down */
#define CALL_TIMEOUT_MS 15000   /* one attempt of a forwarded GET or DELETE */
#define CALL_BUDGET_MS 60000    /* all attempts of a forwarded GET or DELETE */
#define WAIT_SLACK_MS 30000     /* a forwarded wait may take its timeout and this much more */
#define RETRY_MS 1000           /* pause before a forwarded request is tried again */
#define STARTUP_MS 10000        /* after listening, the longest this process counts as starting (see on_probe) */

typedef struct st_peer_t {
    char *name;                            /* from `peers` */
    char *url;                             /* "https://host:port" */
    char *pin;                             /* curl's pin of its server certificate */
    gw_identity_t id;                      /* this replica's identity, its server certificate pinned (the feed) */
    char tag[9];                           /* its operations' tag (its replica id); "" until it answered once */
    char identity[GW_FINGERPRINT_LEN + 1]; /* its identity's fingerprint (may be this replica's); "" until it answered */
    int self;                              /* this entry is this replica */
    int same_id;                           /* it answered with this replica's id (another process): logged once */
    int probed;                            /* a probe has ended at least once */
    int up;                                /* its feed is open */
    int down;                              /* evidence says it is not running (see above); cleared when it answers */
    int slow;                              /* something of it timed out since it last answered (logged once) */
    uint64_t last_contact;                 /* gw_clock_ms() of its last sign of life (an answered probe, a frame on its feed) */
    gw_call_t *probe;                      /* in flight, or NULL */
    gw_wsclient_t *feed;                   /* its operation events, or NULL */
    h2o_linklist_t forwards;               /* forward_t.link: requests forwarded to it, in flight or waiting to retry */
} peer_t;

/* a peer following this replica's operations */
typedef struct st_subscriber_t {
    h2o_websocket_conn_t *conn;
    h2o_linklist_t link; /* in P.subscribers */
} subscriber_t;

/* a request forwarded to the operation's owner; in the request's pool: it dies with the request */
typedef struct st_forward_t {
    gw_hold_t hold;  /* the request, until it is answered (forward_take) or its client leaves (on_forward_gone) */
    gw_call_t *call; /* in flight, or NULL */
    peer_t *peer;
    const char *method, *path; /* what is forwarded (in the request's pool) */
    const char *header;        /* the caller header line */
    int is_wait;               /* GET .../wait: a long poll */
    uint64_t deadline;         /* gw_clock_ms() after which it is not tried again; UINT64_MAX: none (a wait without timeout) */
    unsigned attempts;         /* calls made */
    h2o_timeout_entry_t retry; /* linked while it waits to be tried again */
    h2o_linklist_t link;       /* in peer->forwards until it is answered or the client leaves */
} forward_t;

static struct {
    h2o_context_t *ctx;
    peer_t *peers;
    size_t num;
    char instance[33];                     /* random, per process: tells this replica's own entry apart */
    char identity[GW_FINGERPRINT_LEN + 1]; /* this replica's identity fingerprint (replicas may share one) */
    uint64_t started_at;                   /* gw_clock_ms() when gw_peers_start was called; 0 before */
    int settled;                           /* every listed peer has been probed once, or STARTUP_MS have passed */
    int must_stop;                         /* another replica has this replica's id and this one is the newcomer */
    char *tags_file;                       /* state_dir/peers.tags: the tags learned, for a restart while a peer is down */
    h2o_timeout_t interval;                /* cluster.health_interval */
    h2o_timeout_t retry;                   /* RETRY_MS */
    h2o_timeout_entry_t tick;
    h2o_linklist_t subscribers; /* subscriber_t.link */
} P;

static void probe(peer_t *p);
static void forward_answer_down(forward_t *f);

/* evidence says the peer is not running: forget its feed; its running operations end for the clients that follow them
 * here, and the requests forwarded to it are answered */
static void peer_down(peer_t *p, const char *why)
{
    if (p->feed != NULL) {
        gw_wsclient_close(p->feed);
        p->feed = NULL;
    }
    int was_down = p->down;
    p->down = 1;
    while (!h2o_linklist_is_empty(&p->forwards))
        forward_answer_down(H2O_STRUCT_FROM_MEMBER(forward_t, link, p->forwards.next));
    if (was_down)
        return;
    int was_up = p->up;
    p->up = 0;
    gw_log(GW_LOG_WARN, "gateway replica down", "peer", p->name, "url", p->url, "err", why, NULL);
    if (!was_up)
        return;
    char *err = gw_text_dupf("Gateway replica %s (%s), which runs this operation, is down (%s): its outcome is not known here",
                             p->name, p->url, why);
    gw_ops_mirror_fail(p->tag, err, gw_eventstream_publish);
    free(err);
}

/* a sign of life */
static void peer_alive(peer_t *p)
{
    p->last_contact = gw_clock_ms();
    p->slow = 0;
    p->down = 0;
}

/* something timed out: only slow, unless it has been silent for too long; `ask`: probe it now */
static void peer_slow(peer_t *p, const char *why, int ask)
{
    if (p->down)
        return;
    uint64_t now = gw_clock_ms(), silent = now > p->last_contact ? now - p->last_contact : 0;
    if (silent >= SILENT_DOWN_MS) {
        char *msg = gw_text_dupf("no sign of life for %llu s; last: %s", (unsigned long long)(silent / 1000), why);
        peer_down(p, msg);
        free(msg);
        return;
    }
    if (!p->slow)
        gw_log(GW_LOG_WARN, "gateway replica slow (not taken for down)", "peer", p->name, "url", p->url, "err", why, NULL);
    p->slow = 1;
    if (ask)
        probe(p); /* a refused connection is the evidence that it is down */
}

static void on_feed_open(gw_wsclient_t *ws, void *data)
{
    peer_t *p = data;
    (void)ws;
    p->up = 1;
    p->down = 0;
    peer_alive(p);
    gw_log(GW_LOG_INFO, "gateway replica up", "peer", p->name, "url", p->url, "tag", p->tag, NULL);
}

/* operation `id` is of a flow peer `p` adopted from another replica (flows.h: the cluster says who owns it now) */
static int runs_adopted(const peer_t *p, const char *id)
{
    const char *owner = gw_flows_owner(id);
    return owner != NULL && p->tag[0] != '\0' && strcmp(owner, p->tag) == 0;
}

static void on_feed_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    peer_t *p = data;
    (void)ws;
    json_t *event = json_loadb((const char *)msg, len, 0, NULL), *op = json_object_get(event, "metadata");
    const char *project = json_string_value(json_object_get(event, "project")), *id = json_string_value(json_object_get(op, "id"));
    peer_alive(p);
    /* only the peer's own operations: a peer cannot speak for another replica's, nor for the cluster's; and only news
     * (a feed opens with the state of all the peer's operations, most of which this replica has seen) */
    if (project != NULL && id != NULL && strlen(id) == 36 && (memcmp(id, p->tag, 8) == 0 || runs_adopted(p, id)) &&
        gw_ops_mirror(project, op))
        gw_eventstream_publish(project, event);
    json_decref(event);
}

/* the feed broke: a process that died, or one too busy to keep up; a probe tells which (its answer reopens the feed) */
static void on_feed_close(gw_wsclient_t *ws, void *data, const char *err)
{
    peer_t *p = data;
    (void)ws;
    p->feed = NULL;
    if (p->down)
        return;
    gw_log(GW_LOG_WARN, "gateway replica's feed ended; asking it whether it runs", "peer", p->name, "url", p->url, "err",
           err != NULL ? err : "-", NULL);
    probe(p);
}

static const gw_wsclient_cbs_t feed_callbacks = {on_feed_open, on_feed_message, on_feed_close};

/* remembers every peer's tag ("name tag" lines, replaced whole), so that after a restart this replica still knows
 * whose operations it cannot answer for while that peer is down */
static void save_tags(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", P.tags_file);
    FILE *fp = fopen(tmp, "w");
    if (fp == NULL)
        return;
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self && P.peers[i].tag[0] != '\0')
            fprintf(fp, "%s %s\n", P.peers[i].name, P.peers[i].tag);
    if (fclose(fp) != 0 || rename(tmp, P.tags_file) != 0)
        gw_log(GW_LOG_WARN, "cannot save the peers' tags", "file", P.tags_file, NULL);
}

static void load_tags(void)
{
    FILE *fp = fopen(P.tags_file, "r");
    char name[256], tag[16];
    if (fp == NULL)
        return;
    while (fscanf(fp, "%255s %15s", name, tag) == 2)
        for (size_t i = 0; i != P.num; ++i)
            if (strcmp(P.peers[i].name, name) == 0 && strlen(tag) == 8 && strcmp(tag, gw_replica_id()) != 0)
                memcpy(P.peers[i].tag, tag, 9);
    fclose(fp);
}

/* the start-up window ends once every listed peer (but this replica) has been probed once */
static void settle(void)
{
    if (P.settled)
        return;
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self && !P.peers[i].probed)
            return;
    P.settled = 1;
}

/* a peer answered with this replica's id from another process (a state_dir copied to another host): neither can tell
 * its operations from the other's. While this process starts, it is the newcomer: it stops (main asks
 * gw_peers_must_stop). Later, the other one is the newcomer and stops; until then that peer is never taken for this
 * replica: no tag (operation ids with this id are this replica's own), no feed */
static void same_id(peer_t *p, int starting)
{
    char *msg = gw_text_dupf("another replica (peer %s, %s) has this replica's id %s (state_dir/replica-id): each replica "
                             "needs its own state_dir; %s",
                             p->name, p->url, gw_replica_id(), starting ? "stopping" : "the one that started last stops");
    if (starting || !p->same_id)
        gw_log(GW_LOG_ERROR, msg, "peer", p->name, "url", p->url, "replica_id", gw_replica_id(), NULL);
    free(msg);
    p->same_id = 1;
    p->tag[0] = '\0';
    if (p->feed != NULL) {
        gw_wsclient_close(p->feed);
        p->feed = NULL;
        p->up = 0;
    }
    if (starting)
        P.must_stop = 1;
}

/* members pull this replica's relays from its own URL: through the load balancer they could reach the other one */
static void found_self(peer_t *p)
{
    p->self = 1;
    gw_relay_set_base(p->url);
    gw_log(GW_LOG_INFO, "this replica is a listed peer", "peer", p->name, "url", p->url, NULL);
}

static void on_probe(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    peer_t *p = data;
    json_t *meta = json_object_get(json, "metadata");
    const char *tag = json_string_value(json_object_get(meta, "tag")),
               *identity = json_string_value(json_object_get(meta, "identity")),
               *instance = json_string_value(json_object_get(meta, "instance"));
    int first = !p->probed, starting = !P.settled && gw_clock_ms() < P.started_at + STARTUP_MS;
    p->probe = NULL;
    p->probed = 1;
    settle();
    if (err != NULL || status != 200 || tag == NULL || strlen(tag) != 8 || identity == NULL ||
        strlen(identity) != GW_FINGERPRINT_LEN || instance == NULL) {
        char why[256];
        if (err != NULL)
            snprintf(why, sizeof(why), "%s", err);
        else
            snprintf(why, sizeof(why), "GET /lxd-gateway/peer answered status %ld, not a gateway replica's answer", status);
        if (first) /* later failures are logged when a peer that was up goes down */
            gw_log(GW_LOG_WARN, "gateway replica not answering", "peer", p->name, "url", p->url, "err", why, NULL);
        if (err == NULL || gw_call_not_sent(call)) /* not a replica's answer, or nothing listens: evidence */
            peer_down(p, why);
        else /* a timeout, a TLS or connection error: perhaps only busy */
            peer_slow(p, why, 0);
        return;
    }
    peer_alive(p);
    if (strcmp(instance, P.instance) == 0) {
        found_self(p);
        return;
    }
    if (strcmp(tag, gw_replica_id()) == 0) { /* two processes with one id cannot tell their operations apart */
        same_id(p, starting);
        return;
    }
    p->same_id = 0;
    if (strcmp(p->tag, tag) != 0) {
        memcpy(p->tag, tag, 9);
        save_tags();
    }
    memcpy(p->identity, identity, sizeof(p->identity));
    if (p->feed == NULL)
        p->feed = gw_wsclient_open_url(p->url, &p->id, "/lxd-gateway/events", &feed_callbacks, p);
}

static void probe(peer_t *p)
{
    if (p->probe != NULL || p->self)
        return;
    gw_call_opts_t opts = {p->pin, NULL, CONNECT_TIMEOUT_MS};
    p->probe = gw_backend_call_opts(&opts, p->url, &gw_identities[GW_IDENTITY_GATEWAY], "GET", "/lxd-gateway/peer", NULL,
                                    PROBE_TIMEOUT_MS, on_probe, p);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    (void)entry;
    for (size_t i = 0; i != P.num; ++i) {
        peer_t *p = P.peers + i;
        uint64_t rx = p->feed != NULL ? gw_wsclient_last_rx(p->feed) : 0, hnow = h2o_now(P.ctx->loop);
        if (rx != 0 && hnow >= rx && hnow - rx <= P.interval.timeout + PROBE_TIMEOUT_MS)
            peer_alive(p); /* a frame on its feed since the last tick or so (its pong to our last ping) */
        if (p->feed != NULL)
            gw_wsclient_ping(p->feed);
        probe(p);
    }
    h2o_timeout_link(P.ctx->loop, &P.interval, &P.tick);
}

static void on_subscriber_msg(h2o_websocket_conn_t *conn, const struct wslay_event_on_msg_recv_arg *arg);

/* this replica's own operations, to every peer that follows them */
static void on_op_event(const gw_op_t *op, json_t *event)
{
    (void)op;
    if (h2o_linklist_is_empty(&P.subscribers))
        return;
    char *text = json_dumps(event, JSON_COMPACT);
    if (text == NULL)
        return;
    for (h2o_linklist_t *l = P.subscribers.next, *next; l != &P.subscribers; l = next) {
        next = l->next; /* a subscriber that does not read is dropped (it follows again, and lists what it missed) */
        subscriber_t *s = H2O_STRUCT_FROM_MEMBER(subscriber_t, link, l);
        if (gw_eventstream_send(s->conn, text, strlen(text)) != 0) {
            gw_log(GW_LOG_WARN, "peer feed closed: the peer does not read its events", NULL);
            on_subscriber_msg(s->conn, NULL);
        }
    }
    free(text);
}

const char *gw_peers_init(h2o_context_t *ctx, const gw_config_t *conf, const char *identity_fingerprint)
{
    const char *err = NULL;
    P.ctx = ctx;
    h2o_linklist_init_anchor(&P.subscribers);
    snprintf(P.identity, sizeof(P.identity), "%s", identity_fingerprint);
    unsigned char r[16];
    RAND_bytes(r, sizeof(r));
    for (size_t i = 0; i != sizeof(r); ++i)
        sprintf(P.instance + 2 * i, "%02x", r[i]);
    gw_ops_on_event(on_op_event);
    if (conf->num_peers == 0)
        return NULL;
    P.peers = calloc(conf->num_peers, sizeof(*P.peers));
    for (size_t i = 0; i != conf->num_peers; ++i) {
        const gw_config_peer_t *c = conf->peers + i;
        peer_t *p = P.peers + P.num++;
        const char *file = c->certificate != NULL ? c->certificate : conf->tls_certificate;
        X509 *cert = gw_tls_read_cert(file, &err);
        if (cert == NULL)
            return "peers: cannot read a peer's certificate";
        p->name = strdup(c->name);
        p->url = strdup(c->url);
        p->pin = gw_tls_curl_pin(cert);
        p->id = (gw_identity_t){"peer", conf->identity_certificate, conf->identity_key};
        h2o_linklist_init_anchor(&p->forwards);
        p->last_contact = gw_clock_ms();
        err = gw_identity_setup_pinned(&p->id, cert);
        X509_free(cert);
        if (err != NULL)
            return err;
    }
    if (asprintf(&P.tags_file, "%s/peers.tags", conf->state_dir) < 0)
        return "out of memory";
    load_tags();
    for (size_t i = 0; i != P.num; ++i) /* the entry naming one of our listen addresses is us, without asking */
        for (size_t j = 0; j != conf->num_listen && !P.peers[i].self; ++j)
            if (strcmp(P.peers[i].url + 8, conf->listen[j]) == 0)
                found_self(P.peers + i);
    h2o_timeout_init(ctx->loop, &P.interval, conf->health_interval_ms);
    h2o_timeout_init(ctx->loop, &P.retry, RETRY_MS);
    P.tick.cb = on_tick;
    return NULL;
}

void gw_peers_start(void)
{
    P.started_at = gw_clock_ms();
    settle();
    if (P.num != 0 && !h2o_timeout_is_linked(&P.tick))
        on_tick(&P.tick);
}

int gw_peers_must_stop(void)
{
    return P.must_stop;
}

int gw_peers_knows_tag(const char *tag)
{
    if (tag == NULL || strlen(tag) != 8)
        return 0;
    if (strcmp(tag, gw_replica_id()) == 0)
        return 1;
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self && strcmp(P.peers[i].tag, tag) == 0)
            return 1;
    return 0;
}

void gw_peers_foreach(void (*cb)(const char *name, int up, void *data), void *data)
{
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self)
            cb(P.peers[i].name, P.peers[i].up, data);
}

static peer_t *peer_by_identity(const char *fingerprint)
{
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self && P.peers[i].identity[0] != '\0' && strcmp(P.peers[i].identity, fingerprint) == 0)
            return P.peers + i;
    return NULL;
}

const char *gw_peers_adopt_caller(h2o_req_t *req, gw_caller_t *caller)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT(GW_PEERS_CALLER_HEADER), -1);
    if (i == -1)
        return NULL;
    if (caller->kind != GW_TRUST_CLIENT || peer_by_identity(caller->fingerprint) == NULL) {
        for (size_t j = 0; j != P.num; ++j) /* perhaps a peer that started since the last probe: ask them now */
            probe(P.peers + j);
        return "The " GW_PEERS_CALLER_HEADER " header is only taken from the gateway replicas listed in `peers`";
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    char fp[GW_FINGERPRINT_LEN + 1] = ""; /* a value that is not exactly a fingerprint names nobody (untrusted) */
    if (v.len == GW_FINGERPRINT_LEN)
        memcpy(fp, v.base, GW_FINGERPRINT_LEN);
    gw_trust_lookup(req, fp, caller);
    return NULL;
}

/* GET /lxd-gateway/peer: who this replica is */
static void send_self(h2o_req_t *req)
{
    gw_lxd_send_sync(req, json_pack("{s:s, s:s, s:s}", "tag", gw_ops_tag(), "identity", P.identity, "instance", P.instance));
}

static void on_subscriber_msg(h2o_websocket_conn_t *conn, const struct wslay_event_on_msg_recv_arg *arg)
{
    subscriber_t *s = conn->data;
    if (arg != NULL)
        return; /* nothing is expected from a subscriber */
    h2o_linklist_unlink(&s->link);
    h2o_websocket_close(conn);
    free(s);
}

/* a new follower first hears the state of every operation of this replica */
static void send_state(const gw_op_t *op, void *data)
{
    json_t *event = gw_op_event(op);
    char *text = event != NULL ? json_dumps(event, JSON_COMPACT) : NULL;
    if (text != NULL)
        gw_eventstream_send(data, text, strlen(text));
    free(text);
    json_decref(event);
}

/* websocket GET /lxd-gateway/events: a peer follows this replica's operations */
static void subscribe(h2o_req_t *req)
{
    const char *key;
    if (h2o_is_websocket_handshake(req, &key) != 0 || key == NULL || req->version >= 0x200) {
        gw_lxd_send_error(req, 400, "A websocket upgrade (HTTP/1.1) is expected here");
        return;
    }
    subscriber_t *s = calloc(1, sizeof(*s));
    s->conn = h2o_upgrade_to_websocket(req, key, s, on_subscriber_msg);
    h2o_linklist_insert(&P.subscribers, &s->link);
    gw_ops_foreach(send_state, s->conn); /* what it missed while it did not follow (it keeps only news) */
}

static void forward_try(forward_t *f);

/* the request is answered (or its client left): no more attempts */
static void forward_end(forward_t *f)
{
    if (f->call != NULL) {
        gw_backend_cancel(f->call);
        f->call = NULL;
    }
    if (h2o_timeout_is_linked(&f->retry))
        h2o_timeout_unlink(&f->retry);
    if (h2o_linklist_is_linked(&f->link))
        h2o_linklist_unlink(&f->link);
}

static void on_forward_gone(gw_hold_t *hold)
{
    forward_end(H2O_STRUCT_FROM_MEMBER(forward_t, hold, hold)); /* the client left: so does the forwarded call */
}

/* no more attempts: the request, to answer it now (still held: a forward whose client left has ended, and nothing
 * that is ended comes here) */
static h2o_req_t *forward_take(forward_t *f)
{
    forward_end(f);
    return gw_hold_take(&f->hold);
}

static void forward_answer_down(forward_t *f)
{
    gw_lxd_send_error(forward_take(f), 503,
                      "Gateway replica %s (%s), which runs this operation, is down: its outcome is not known here", f->peer->name,
                      f->peer->url);
}

static void on_forward_retry(h2o_timeout_entry_t *entry)
{
    forward_try(H2O_STRUCT_FROM_MEMBER(forward_t, retry, entry));
}

static void on_forwarded(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    forward_t *f = data;
    peer_t *p = f->peer;
    f->call = NULL;
    if (err == NULL) {
        peer_alive(p);
        h2o_req_t *req = forward_take(f);
        if (json == NULL)
            gw_lxd_send_error(req, 502, "Gateway replica %s answered status %ld without a JSON body", p->name, status);
        else
            gw_lxd_send_json(req, (int)status, json_incref(json));
        return;
    }
    if (gw_call_not_sent(call)) { /* nothing listens there: evidence (answers this request and every other one) */
        peer_down(p, err);
        return;
    }
    /* slow, or the connection broke: a DELETE that went out may have been done, so it is not sent twice */
    int sent = gw_call_request_sent(call), is_delete = strcmp(f->method, "DELETE") == 0;
    peer_slow(p, err, 1);
    if (p->down) /* peer_slow found it silent for too long: already answered */
        return;
    if ((is_delete && sent) || (f->deadline != UINT64_MAX && gw_clock_ms() + RETRY_MS >= f->deadline)) {
        gw_lxd_send_error(forward_take(f), 504,
                          "Gateway replica %s (%s), which runs this operation, is busy: it did not answer in time (%s, after %u "
                          "attempt%s); it is not known to be down, ask again",
                          p->name, p->url, err, f->attempts, f->attempts == 1 ? "" : "s");
        return;
    }
    h2o_timeout_link(P.ctx->loop, &P.retry, &f->retry);
}

/* `path` (a wait's) with its ?timeout= value replaced by `secs` (the other parameters kept), in `pool` */
static const char *with_timeout(h2o_mem_pool_t *pool, const char *path, uint64_t secs)
{
    const char *q = strchr(path, '?'), *t = q;
    while (t != NULL && !(strncmp(t + 1, "timeout=", 8) == 0 && (t[0] == '?' || t[0] == '&')))
        t = strpbrk(t + 1, "&");
    if (t == NULL)
        return path;
    const char *value = t + 9, *rest = value + strcspn(value, "&");
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)secs);
    size_t len = (value - path) + n + strlen(rest);
    char *out = h2o_mem_alloc_pool(pool, len + 1);
    memcpy(out, path, value - path);
    memcpy(out + (value - path), num, n);
    strcpy(out + (value - path) + n, rest);
    return out;
}

/* one attempt; a wait takes what is left of the client's timeout (and asks the owner for no more than that) */
static void forward_try(forward_t *f)
{
    peer_t *p = f->peer;
    uint64_t timeout = CALL_TIMEOUT_MS, now = gw_clock_ms(), left = f->deadline > now ? f->deadline - now : 0;
    const char *path = f->path;
    if (f->deadline != UINT64_MAX && left <= RETRY_MS) {
        gw_lxd_send_error(forward_take(f), 504,
                          "Gateway replica %s (%s), which runs this operation, is busy: it did not answer in time", p->name,
                          p->url);
        return;
    }
    if (f->is_wait) {
        timeout = f->deadline == UINT64_MAX ? 0 : left; /* 0: as long as the owner keeps it open */
        if (f->attempts != 0 && f->deadline != UINT64_MAX)
            path = with_timeout(&gw_hold_req(&f->hold)->pool, f->path, left > WAIT_SLACK_MS ? (left - WAIT_SLACK_MS) / 1000 : 0);
    } else if (left < timeout) {
        timeout = left;
    }
    gw_call_opts_t opts = {p->pin, f->header, CONNECT_TIMEOUT_MS};
    ++f->attempts;
    f->call =
        gw_backend_call_opts(&opts, p->url, &gw_identities[GW_IDENTITY_GATEWAY], f->method, path, NULL, timeout, on_forwarded, f);
}

static void forward(h2o_req_t *req, const gw_caller_t *caller, peer_t *p, int is_wait, long wait_s)
{
    if (p->down) {
        gw_lxd_send_error(req, 503, "Gateway replica %s (%s), which runs this operation, is down: its outcome is not known here",
                          p->name, p->url);
        return;
    }
    uint64_t now = gw_clock_ms(), deadline = now + CALL_BUDGET_MS;
    if (is_wait)
        deadline = wait_s >= 0 ? now + (uint64_t)wait_s * 1000 + WAIT_SLACK_MS : UINT64_MAX;
    forward_t *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    *f = (forward_t){.peer = p, .is_wait = is_wait, .deadline = deadline};
    gw_hold_attach(&f->hold, req, on_forward_gone);
    f->retry.cb = on_forward_retry;
    char *header = h2o_mem_alloc_pool(&req->pool, sizeof(GW_PEERS_CALLER_HEADER) + GW_FINGERPRINT_LEN + 4);
    sprintf(header, "%s: %s", GW_PEERS_CALLER_HEADER, caller->fingerprint);
    f->header = header;
    f->method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    f->path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    h2o_linklist_insert(&p->forwards, &f->link);
    forward_try(f);
}

/* the peer (not this replica) that runs operation id `id`: the one that adopted its flow (flows.h), or the one whose
 * tag starts the id */
static peer_t *owner_of(const char *id, size_t len)
{
    if (len != 36)
        return NULL;
    char key[37];
    memcpy(key, id, 36);
    key[36] = '\0';
    const char *adopter = gw_flows_owner(key);
    for (size_t i = 0; adopter != NULL && i != P.num; ++i)
        if (!P.peers[i].self && strcmp(P.peers[i].tag, adopter) == 0 && strcmp(adopter, gw_ops_tag()) != 0)
            return P.peers + i;
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self && P.peers[i].tag[0] != '\0' && memcmp(P.peers[i].tag, id, 8) == 0 &&
            memcmp(P.peers[i].tag, gw_ops_tag(), 8) != 0)
            return P.peers + i;
    return NULL;
}

int gw_peers_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int is_peer = path->kind == GW_PATH_PEER, is_events = path->kind == GW_PATH_PEER_EVENTS;
    if (is_peer || is_events) {
        if (caller->kind != GW_TRUST_CLIENT) /* the other replicas' identities are unrestricted clients of the cluster */
            gw_lxd_send_error(req, 403, "not authorized");
        else if (!get)
            gw_lxd_send_error(req, 405, "method not allowed");
        else if (is_peer)
            send_self(req);
        else
            subscribe(req);
        return 1;
    }
    peer_t *owner = P.num != 0 ? owner_of(path->id.base, path->id.len) : NULL;
    if (owner == NULL)
        return 0;
    if (!gw_trust_is_client(caller)) {
        gw_lxd_send_error(req, 403, "not authorized");
        return 1;
    }
    forward(req, caller, owner, path->kind == GW_PATH_OPERATION_WAIT, path->timeout_s);
    return 1;
}
