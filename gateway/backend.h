/*
 * backend.h: the gateway's own calls to cluster members (member list, health, trust store, plugin sub-calls).
 *
 * libcurl's multi interface driven by h2o's event loop: no threads, no blocking. Every call pins the cluster
 * certificate and presents one identity. Client traffic does not come here: it goes through proxy.h.
 */
#ifndef GW_BACKEND_H
#define GW_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <jansson.h>
#include <h2o.h>
#include "identity.h"

typedef struct st_gw_call_t gw_call_t;

/*
 * called once per call. err != NULL: the call did not get an HTTP answer (connect, TLS, timeout) and status is 0.
 * Otherwise status is the HTTP status and json the parsed body (NULL if not JSON). `call` is the call answered, for
 * gw_call_not_sent, gw_call_request_sent and gw_call_header. All are valid only during the callback (use
 * json_incref to keep the body).
 */
typedef void (*gw_call_cb)(void *data, const char *err, long status, json_t *json, const gw_call_t *call);
/* (call == NULL: no call was made, e.g. no member to ask: nothing was sent, no header) */

/* binds the call engine to the loop; `pin` is curl's pin string of the cluster certificate */
void gw_backend_init(h2o_evloop_t *loop, const char *pin);
/* starts METHOD base_url+path with `body` (NULL = none; JSON text), as `id`; the call ends after timeout_ms */
gw_call_t *gw_backend_call(const char *base_url, const gw_identity_t *id, const char *method, const char *path, const char *body,
                           uint64_t timeout_ms, gw_call_cb cb, void *data);
/* what a call to another gateway replica needs beyond gw_backend_call's */
typedef struct st_gw_call_opts_t {
    const char *pin;             /* curl pin of the server's key; NULL = the cluster certificate */
    const char *header;          /* one more request header line ("Name: value"), or NULL */
    uint64_t connect_timeout_ms; /* how long connecting may take; 0 = libcurl's default (300 s) */
} gw_call_opts_t;
/* gw_backend_call with `opts`; timeout_ms == 0: no limit (a long-poll; the connection breaking still ends it) */
gw_call_t *gw_backend_call_opts(const gw_call_opts_t *opts, const char *base_url, const gw_identity_t *id, const char *method,
                                const char *path, const char *body, uint64_t timeout_ms, gw_call_cb cb, void *data);
/* the answered `call` failed before anything was sent (connection refused or unreachable): the member did nothing */
int gw_call_not_sent(const gw_call_t *call);
/* the answered `call`'s request went out whole (a call that failed after this may have had its effect) */
int gw_call_request_sent(const gw_call_t *call);
/* the value of the header `name` (Location, ETag, ...; any case) in the answer to `call`, or NULL */
const char *gw_call_header(const gw_call_t *call, const char *name);
/* drops a call that has not called back yet; its callback will not run */
void gw_backend_cancel(gw_call_t *call);

/*
 * Lower level, for transfers that are not JSON calls (the large-body forwarder): gw_backend_easy makes an easy
 * handle that already pins the cluster certificate and presents `id`; the caller adds its own options, then
 * gw_backend_start runs it and calls done->cb(done->data, result) once when it ends. gw_backend_stop removes a
 * started handle (done->cb is then not called). `done` must stay valid until then.
 */
typedef struct st_gw_backend_done_t {
    void (*cb)(void *data, CURLcode result); /* called once, when the transfer ends */
    void *data;                              /* passed to cb */
} gw_backend_done_t;

CURL *gw_backend_easy(const gw_identity_t *id);
void gw_backend_start(CURL *easy, gw_backend_done_t *done);
void gw_backend_stop(CURL *easy);
/* milliseconds until libcurl wants its timer run (INT32_MAX = no timer); the main loop waits at most this long */
int32_t gw_backend_wait_ms(void);
/* runs libcurl's timer if it is due; the main loop calls this after each turn */
void gw_backend_run_timers(void);

#endif
