/*
 * peers.h: the other gateway replicas of one deployment (`peers`), so that any replica answers for an operation
 * another one runs.
 *
 * No consensus: a gateway operation belongs to the replica that started it, and its id starts with that replica's tag
 * (its replica id: replica.h). Peers are told apart by that tag, never by identity: replicas may share one identity
 * and server certificate. Every cluster.health_interval each peer is asked GET /lxd-gateway/peer, with this replica's
 * identity certificate and the peer's server certificate pinned (tls.certificate, which replicas behind one load
 * balancer share, or the peer's own `certificate`). It answers its tag, its identity fingerprint and a random id of
 * its process; the entry whose URL is one of the `listen` addresses, or that answers with this process's id, is this
 * replica itself. A peer that answers with this replica's tag from another process (a copied state_dir) is a
 * configuration that cannot work: while this process starts (until every peer was probed once, at most 10 s after it
 * listens) it stops, with an error naming the peer; later it logs that once and never takes that peer for itself (members then pull
 * relays from that URL, not from the load balancer's). While a peer answers, its feed (websocket GET /lxd-gateway/events: the
 * events of its own operations, every project) is followed: each event is mirrored for GET /1.0/operations and handed to this
 * replica's client event streams, as LXD members relay each other's events. GET, GET .../wait and DELETE of a peer's operation are
 * forwarded to it with the client's fingerprint in X-LXD-Gateway-Caller; the owner honours that header only from a peer's identity,
 * and it can only narrow what that (unrestricted) identity may do.
 *
 * A busy peer is not a dead peer. A peer is down only on evidence: its port refuses connections, it answers as
 * something that is not a replica, or it gave no sign of life (an answered probe, a frame or pong on its feed) for
 * 60 s. Then its operations answer 503 at once, naming it, requests forwarded to it are answered so, and event
 * listeners see its running operations fail with the same words. A timeout or a broken feed only makes it "slow": it
 * is probed at once, and forwarded requests are tried again within the client's own bound (a wait's timeout; 60 s
 * for GET and DELETE; a DELETE that went out is not sent twice). A feed opens with the state of all the peer's
 * operations, so that what changed while it was broken is not lost.
 */
#ifndef GW_PEERS_H
#define GW_PEERS_H

#include <h2o.h>
#include "config.h"
#include "path.h"
#include "trust.h"

#define GW_PEERS_CALLER_HEADER "x-lxd-gateway-caller" /* the client a forwarded request is for (its fingerprint) */

/* reads the peers' certificates and starts probing them; returns NULL or an error */
const char *gw_peers_init(h2o_context_t *ctx, const gw_config_t *conf, const char *identity_fingerprint);
/* starts probing the peers (once this replica listens: it may be one of them, recognised by its answer) */
void gw_peers_start(void);
/* a request a peer forwards for a client: `caller` becomes that client; returns NULL, or why the request must be
 * refused (the header came from a certificate that is not a known peer's) */
const char *gw_peers_adopt_caller(h2o_req_t *req, gw_caller_t *caller);
/* takes GET /lxd-gateway/peer, the websocket GET /lxd-gateway/events, and requests for a peer's operation (returns 1
 * and answers); 0 for anything else */
int gw_peers_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);
/* 1 once this process must stop: while it started, a peer answered with this replica's id (replica.h) from another
 * process; main then exits non-zero */
int gw_peers_must_stop(void);
/* 1 if `tag` (8 hex digits) is this replica's id or the tag a listed peer answered with (remembered across restarts
 * in state_dir/peers.tags); 0 otherwise */
int gw_peers_knows_tag(const char *tag);
/* calls `cb` for every peer but this replica: its name, and 1 if it answers */
void gw_peers_foreach(void (*cb)(const char *name, int up, void *data), void *data);

#endif
