/*
 * fuzz_flows.h: a stand-in for gateway/flows.c (the move harness links without flows.o, FUZZ_EXCLUDE_move): the
 * cluster records every step at once, this replica always holds its lease and every lock. The move's dealings with
 * its members are what fuzz_move.c fuzzes; the cluster's own answers are flows.c's and the adoption tests'.
 */
#ifndef GW_FUZZ_FLOWS_H
#define GW_FUZZ_FLOWS_H

#include <stdlib.h>
#include <string.h>
#include "flows.h"

struct st_gw_flow_t {
    char *id;
};

const char *gw_flows_init(h2o_context_t *ctx, const gw_config_t *conf, const char *replica, int (*ours)(const char *owner),
                          json_t *unfinished)
{
    (void)ctx, (void)conf, (void)replica, (void)ours;
    json_decref(unfinished);
    return NULL;
}

void gw_flows_on_adopt(const char *kind, gw_flow_adopt_cb cb)
{
    (void)kind, (void)cb;
}

gw_flow_t *gw_flow_new(const char *id, const char *kind)
{
    (void)kind;
    gw_flow_t *f = calloc(1, sizeof(*f));
    f->id = strdup(id);
    return f;
}

void gw_flow_write(gw_flow_t *flow, const char *step, json_t *fields, gw_flow_written_cb cb, void *data)
{
    (void)flow, (void)step, (void)fields;
    cb(data, NULL, 0);
}

int gw_flow_may_act(const gw_flow_t *flow)
{
    (void)flow;
    return 1;
}

static void fuzz_flow_free(gw_flow_t *f)
{
    free(f->id);
    free(f);
}

void gw_flow_end(gw_flow_t *flow)
{
    fuzz_flow_free(flow);
}

void gw_flow_release(gw_flow_t *flow)
{
    fuzz_flow_free(flow);
}

void gw_flow_forget(gw_flow_t *flow)
{
    fuzz_flow_free(flow);
}

const char *gw_flow_id(const gw_flow_t *flow)
{
    return flow->id;
}

void gw_flows_lock(const char *key, const char *flow_id, gw_flow_locked_cb cb, void *data)
{
    (void)key, (void)flow_id;
    cb(data, NULL, NULL);
}

void gw_flows_unlock(const char *key, const char *flow_id)
{
    (void)key, (void)flow_id;
}

const char *gw_flows_owner(const char *id)
{
    (void)id;
    return NULL;
}

int gw_flows_live(const char *id)
{
    (void)id;
    return 0;
}

int gw_flows_settled(void)
{
    return 1;
}

size_t gw_flows_ending(void)
{
    return 0;
}

#endif
