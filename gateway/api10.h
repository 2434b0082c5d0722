/*
 * api10.h: GET /1.0, the server's description, as the caller must see it, from a cache.
 *
 * Every lxc and incus command starts with GET /1.0. The gateway answers it from a member, asked with the caller's
 * backend identity, rewritten: a trusted caller sees its own fingerprint in auth_user_name (the member saw the
 * gateway's or a shadow's), and plugins add rewrite steps (the API extensions they bring). The rewritten answer is
 * kept per backend identity, member and query string, with only auth_user_name put in per caller, and dropped
 * whenever what it shows may have changed (api10.c says when and why), so that a repeated GET /1.0 costs a copy,
 * never a member call, and never shows a caller what LXD would not show it.
 */
#ifndef GW_API10_H
#define GW_API10_H

#include <jansson.h>
#include <h2o.h>
#include "path.h"
#include "trust.h"

/* a rewrite step: changes the `metadata` of a GET /1.0 answer in place. It may depend on the answer and on the
 * members (gw_members_*: the cache is dropped when they change), never on the caller: one rewritten answer serves
 * every caller of the same backend identity */
typedef void (*gw_api10_rewrite_cb)(json_t *metadata);

/* follows the cluster's lifecycle events (events.h) to drop the cache; answers are served `ttl_ms` at most (0: no
 * cache) */
void gw_api10_init(uint64_t ttl_ms);
/* takes GET /1.0 (returns 1, and answers it); returns 0 for any other request */
int gw_api10_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);
/* a request other than GET or HEAD to /1.0: drops the cache now and again when its answer starts; returns 0 (the
 * request passes through) */
int gw_api10_write(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path);
/* adds a rewrite step, run after the built-in ones in the order added (at most 8) */
void gw_api10_add_rewrite(gw_api10_rewrite_cb cb);
/* a rewrite step for the JSON body of a PUT or PATCH to /1.0 before it passes through (undoing, in what a client
 * sends back, a rewrite of what it read); returns 1 when it changed `body` */
typedef int (*gw_api10_write_rewrite_cb)(json_t *body);
/* adds one (at most 8) */
void gw_api10_add_write_rewrite(gw_api10_write_rewrite_cb cb);
/* the query string (`tail`: "" or "?..." as sent) is one whose answer is kept: none, or project=<v> and/or target=<v>,
 * each at most once, values of 1 to 100 characters [A-Za-z0-9._%-], 200 characters in all */
int gw_api10_cacheable_tail(const char *tail, size_t len);
/* GET /1.0 requests answered so far: from the cache, by a fetch for it (alone or with others), without it */
void gw_api10_stats(size_t *hits, size_t *misses, size_t *uncached);

#endif
