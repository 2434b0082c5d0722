/*
 * fuzz_backend.h: a stand-in for gateway/backend.c (the harness links without backend.o, FUZZ_EXCLUDE_<target>):
 * calls to members are kept pending instead of leaving the process; fuzz_backend_answer_all answers them, so that
 * the chains of callbacks run to their end within one input.
 */
#ifndef GW_FUZZ_BACKEND_H
#define GW_FUZZ_BACKEND_H

#include <stdlib.h>
#include <string.h>
#include "backend.h"

struct st_gw_call_t {
    gw_call_cb cb;
    void *data;
    char *method, *path; /* what was asked */
    int not_sent;        /* the answer the harness gives: nothing was sent (the member is down) */
    struct st_gw_call_t *next;
};
static gw_call_t *fuzz_pending;

void gw_backend_init(h2o_evloop_t *loop, const char *pin)
{
    (void)loop, (void)pin;
}

gw_call_t *gw_backend_call_opts(const gw_call_opts_t *opts, const char *base_url, const gw_identity_t *id, const char *method,
                                const char *path, const char *body, uint64_t timeout_ms, gw_call_cb cb, void *data)
{
    (void)opts, (void)base_url, (void)id, (void)body, (void)timeout_ms;
    gw_call_t *c = calloc(1, sizeof(*c));
    c->cb = cb, c->data = data, c->next = fuzz_pending;
    c->method = strdup(method), c->path = strdup(path);
    fuzz_pending = c;
    return c;
}

gw_call_t *gw_backend_call(const char *base_url, const gw_identity_t *id, const char *method, const char *path, const char *body,
                           uint64_t timeout_ms, gw_call_cb cb, void *data)
{
    gw_call_opts_t opts = {NULL};
    return gw_backend_call_opts(&opts, base_url, id, method, path, body, timeout_ms, cb, data);
}

int gw_call_not_sent(const gw_call_t *call)
{
    return call == NULL || call->not_sent;
}

int gw_call_request_sent(const gw_call_t *call)
{
    return call != NULL && !call->not_sent;
}

const char *gw_call_header(const gw_call_t *call, const char *name)
{
    (void)call, (void)name;
    return NULL;
}

void gw_backend_cancel(gw_call_t *call)
{
    for (gw_call_t **p = &fuzz_pending; *p != NULL; p = &(*p)->next)
        if (*p == call) {
            *p = call->next;
            free(call->method), free(call->path);
            free(call);
            return;
        }
}

CURL *gw_backend_easy(const gw_identity_t *id)
{
    (void)id;
    return NULL;
}

void gw_backend_start(CURL *easy, gw_backend_done_t *done)
{
    (void)easy, (void)done;
}

void gw_backend_stop(CURL *easy)
{
    (void)easy;
}

int32_t gw_backend_wait_ms(void)
{
    return INT32_MAX;
}

void gw_backend_run_timers(void)
{
}

/* answers every pending call, and those the answers make, with `status` and `json` (borrowed; err when status is 0) */
static void fuzz_backend_answer_all(const char *err, long status, json_t *json)
{
    for (int rounds = 0; fuzz_pending != NULL && rounds != 1000; ++rounds) {
        gw_call_t *c = fuzz_pending;
        fuzz_pending = c->next;
        c->cb(c->data, status == 0 ? err : NULL, status, status == 0 ? NULL : json, c);
        free(c->method), free(c->path);
        free(c);
    }
}

#endif
