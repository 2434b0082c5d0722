/*
 * peers.c: see peers.h.
 */
#include <stdlib.h>
#include <string.h>
#include <h2o/websocket.h>
#include <openssl/rand.h>
#include "backend.h"
#include "eventstream.h"
#include "log.h"
#include "lxd.h"
#include "operations.h"
#include "peers.h"
#include "relay.h"
#include "tls.h"
#include "wsclient.h"

#define PROBE_TIMEOUT_MS 5000   /* a probe unanswered this long counts as a miss */
#define PROBE_MISSES 3          /* misses in a row that make a peer down (one slow answer may be its busy loop) */
#define CONNECT_TIMEOUT_MS 2000 /* a peer that takes longer to accept is not answering */
#define CALL_TIMEOUT_MS 15000   /* a forwarded GET or DELETE */
#define WAIT_SLACK_MS 30000     /* a forwarded wait may take its timeout and this much more */

typedef struct st_peer_t {
    char *name;                            /* from `peers` */
    char *url;                             /* "https://host:port" */
    char *pin;                             /* curl's pin of its server certificate */
    gw_identity_t id;                      /* this replica's identity, its server certificate pinned (the feed) */
    char tag[9];                           /* its operations' tag; "" until it answered once */
    char identity[GW_FINGERPRINT_LEN + 1]; /* its identity's fingerprint; "" until it answered once */
    int self;                              /* this entry is this replica */
    int probed;                            /* a probe has ended at least once */
    int up;                                /* its feed is open */
    unsigned misses;                       /* probes in a row without an answer */
    gw_call_t *probe;                      /* in flight, or NULL */
    gw_wsclient_t *feed;                   /* its operation events, or NULL */
} peer_t;

/* a peer following this replica's operations */
typedef struct st_subscriber_t {
    h2o_websocket_conn_t *conn;
    h2o_linklist_t link; /* in P.subscribers */
} subscriber_t;

/* a request forwarded to the operation's owner */
typedef struct st_forward_t {
    h2o_req_t *req;
    gw_call_t *call; /* in flight, or NULL */
    peer_t *peer;
} forward_t;

static struct {
    h2o_context_t *ctx;
    peer_t *peers;
    size_t num;
    char instance[33];                     /* random, per process: tells this replica's own entry apart */
    char identity[GW_FINGERPRINT_LEN + 1]; /* this replica's identity fingerprint */
    char *tags_file;                       /* state_dir/peers.tags: the tags learned, for a restart while a peer is down */
    h2o_timeout_t interval;                /* cluster.health_interval */
    h2o_timeout_entry_t tick;
    h2o_linklist_t subscribers; /* subscriber_t.link */
} P;

static void probe(peer_t *p);

/* the peer is not answering: forget its feed; its running operations end for the clients that follow them here */
static void peer_down(peer_t *p, const char *why)
{
    if (p->feed != NULL) {
        gw_wsclient_close(p->feed);
        p->feed = NULL;
    }
    if (!p->up)
        return;
    p->up = 0;
    gw_log(GW_LOG_WARN, "gateway replica down", "peer", p->name, "url", p->url, "err", why, NULL);
    char err[512];
    snprintf(err, sizeof(err),
             "Gateway replica %s (%s), which runs this operation, stopped answering (%s); it finishes or rolls back its "
             "moves from its journal when it starts again",
             p->name, p->url, why);
    gw_ops_mirror_fail(p->tag, err, gw_eventstream_publish);
}

static void on_feed_open(gw_wsclient_t *ws, void *data)
{
    peer_t *p = data;
    (void)ws;
    p->up = 1;
    gw_log(GW_LOG_INFO, "gateway replica up", "peer", p->name, "url", p->url, "tag", p->tag, NULL);
}

static void on_feed_message(gw_wsclient_t *ws, void *data, const uint8_t *msg, size_t len)
{
    peer_t *p = data;
    (void)ws;
    json_t *event = json_loadb((const char *)msg, len, 0, NULL), *op = json_object_get(event, "metadata");
    const char *project = json_string_value(json_object_get(event, "project")), *id = json_string_value(json_object_get(op, "id"));
    /* only the peer's own operations: a peer cannot speak for another replica's, nor for the cluster's */
    if (project != NULL && id != NULL && strlen(id) == 36 && memcmp(id, p->tag, 8) == 0) {
        gw_ops_mirror(project, op);
        gw_eventstream_publish(project, event);
    }
    json_decref(event);
}

static void on_feed_close(gw_wsclient_t *ws, void *data, const char *err)
{
    peer_t *p = data;
    (void)ws;
    p->feed = NULL;
    peer_down(p, err != NULL ? err : "its event feed ended");
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
            if (strcmp(P.peers[i].name, name) == 0 && strlen(tag) == 8)
                memcpy(P.peers[i].tag, tag, 9);
    fclose(fp);
}

/* members pull this replica's relays from its own URL: through the load balancer they could reach the other one */
static void found_self(peer_t *p)
{
    p->self = 1;
    gw_relay_set_base(p->url);
    gw_log(GW_LOG_INFO, "this replica is a listed peer", "peer", p->name, "url", p->url, NULL);
}

static void on_probe(void *data, const char *err, long status, json_t *json)
{
    peer_t *p = data;
    json_t *meta = json_object_get(json, "metadata");
    const char *tag = json_string_value(json_object_get(meta, "tag")),
               *identity = json_string_value(json_object_get(meta, "identity")),
               *instance = json_string_value(json_object_get(meta, "instance"));
    int first = !p->probed;
    p->probe = NULL;
    p->probed = 1;
    if (err != NULL || status != 200 || tag == NULL || strlen(tag) != 8 || identity == NULL ||
        strlen(identity) != GW_FINGERPRINT_LEN || instance == NULL) {
        char why[256];
        if (err != NULL)
            snprintf(why, sizeof(why), "%s", err);
        else
            snprintf(why, sizeof(why), "GET /lxd-gateway/peer answered status %ld, not a gateway replica's answer", status);
        if (first) /* later failures are logged when a peer that was up goes down */
            gw_log(GW_LOG_WARN, "gateway replica not answering", "peer", p->name, "url", p->url, "err", why, NULL);
        /* refused: down now; a timeout: maybe only slow */
        if (err == NULL || gw_backend_not_sent() || ++p->misses >= PROBE_MISSES)
            peer_down(p, why);
        return;
    }
    p->misses = 0;
    if (strcmp(instance, P.instance) == 0) {
        found_self(p);
        return;
    }
    if (strcmp(tag, gw_ops_tag()) == 0) { /* two processes with one identity cannot tell their operations apart */
        if (p->tag[0] == '\0')
            gw_log(GW_LOG_ERROR, "a peer uses this replica's identity certificate; each replica needs its own", "peer", p->name,
                   "url", p->url, NULL);
        memcpy(p->tag, tag, 9);
        return;
    }
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
    for (size_t i = 0; i != P.num; ++i)
        probe(P.peers + i);
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
    P.tick.cb = on_tick;
    return NULL;
}

void gw_peers_start(void)
{
    if (P.num != 0 && !h2o_timeout_is_linked(&P.tick))
        on_tick(&P.tick);
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
}

static void on_forward_dispose(void *data)
{
    forward_t *f = data;
    if (f->call != NULL) /* the client left: so does the forwarded call */
        gw_backend_cancel(f->call);
}

static void on_forwarded(void *data, const char *err, long status, json_t *json)
{
    forward_t *f = data;
    f->call = NULL;
    if (err != NULL) {
        gw_lxd_send_error(f->req, 503,
                          "Gateway replica %s (%s), which runs this operation, does not answer (%s); it finishes or rolls back "
                          "its moves from its journal when it starts again",
                          f->peer->name, f->peer->url, err);
        if (gw_backend_not_sent())
            peer_down(f->peer, err);
    } else if (json == NULL) {
        gw_lxd_send_error(f->req, 502, "Gateway replica %s answered status %ld without a JSON body", f->peer->name, status);
    } else {
        gw_lxd_send_json(f->req, (int)status, json_incref(json));
    }
}

static void forward(h2o_req_t *req, const gw_caller_t *caller, peer_t *p, int is_wait)
{
    if (!p->up) {
        gw_lxd_send_error(req, 503,
                          "Gateway replica %s (%s), which runs this operation, is not answering; it finishes or rolls back its "
                          "moves from its journal when it starts again",
                          p->name, p->url);
        return;
    }
    uint64_t timeout = CALL_TIMEOUT_MS;
    if (is_wait) {
        const char *t = gw_lxd_query(req, "timeout");
        long secs = t != NULL && *t != '\0' ? strtol(t, NULL, 10) : -1;
        timeout = secs >= 0 ? (uint64_t)secs * 1000 + WAIT_SLACK_MS : 0; /* 0: as long as the owner keeps it open */
    }
    forward_t *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), on_forward_dispose);
    *f = (forward_t){req, NULL, p};
    char *header = h2o_mem_alloc_pool(&req->pool, sizeof(GW_PEERS_CALLER_HEADER) + GW_FINGERPRINT_LEN + 4);
    sprintf(header, "%s: %s", GW_PEERS_CALLER_HEADER, caller->fingerprint);
    gw_call_opts_t opts = {p->pin, header, CONNECT_TIMEOUT_MS};
    char *method = h2o_strdup(&req->pool, req->method.base, req->method.len).base,
         *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    f->call =
        gw_backend_call_opts(&opts, p->url, &gw_identities[GW_IDENTITY_GATEWAY], method, path, NULL, timeout, on_forwarded, f);
}

/* the peer (not this replica) whose tag starts operation id `id` */
static peer_t *owner_of(const char *id, size_t len)
{
    if (len != 36)
        return NULL;
    for (size_t i = 0; i != P.num; ++i)
        if (!P.peers[i].self && P.peers[i].tag[0] != '\0' && memcmp(P.peers[i].tag, id, 8) == 0 &&
            memcmp(P.peers[i].tag, gw_ops_tag(), 8) != 0)
            return P.peers + i;
    return NULL;
}

int gw_peers_handle(h2o_req_t *req, const gw_caller_t *caller)
{
    static const char ops[] = "/1.0/operations/";
    h2o_iovec_t p = req->path_normalized;
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int is_peer = h2o_memis(p.base, p.len, H2O_STRLIT("/lxd-gateway/peer")),
        is_events = h2o_memis(p.base, p.len, H2O_STRLIT("/lxd-gateway/events"));
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
    if (P.num == 0 || p.len < sizeof(ops) - 1 + 36 || memcmp(p.base, ops, sizeof(ops) - 1) != 0)
        return 0;
    const char *id = p.base + sizeof(ops) - 1, *end = p.base + p.len, *slash = memchr(id, '/', end - id);
    peer_t *owner = owner_of(id, (slash != NULL ? slash : end) - id);
    if (owner == NULL)
        return 0;
    if (!gw_trust_is_client(caller)) {
        gw_lxd_send_error(req, 403, "not authorized");
        return 1;
    }
    forward(req, caller, owner, slash != NULL && h2o_memis(slash, end - slash, H2O_STRLIT("/wait")));
    return 1;
}
