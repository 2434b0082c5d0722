/*
 * oplist.c: see oplist.h.
 */
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include "lxd.h"
#include "operations.h"
#include "oplist.h"
#include "rewrite.h"
#include "text.h"
#include "tokens.h"

/* what the list is being built for: the caller's view of one request */
typedef struct st_list_t {
    json_t *meta;              /* the answer's metadata: groups by lower-cased status */
    int deep;                  /* ?recursion= asked for the operations themselves, not their URLs */
    int every;                 /* ?all-projects=true */
    const char *want;          /* the project asked for ("default" when none) */
    const gw_caller_t *caller; /* who asks: what it may see */
} list_t;

/* adds `op` (stolen) to the list's group of its status: itself (recursion) or its URL */
static void list_add(json_t *meta, int deep, json_t *op)
{
    const char *status = json_string_value(json_object_get(op, "status"));
    char *key = gw_text_dupf("%s", status != NULL ? status : "unknown");
    key[0] = (char)tolower((unsigned char)key[0]); /* LXD groups by lower-cased status */
    json_t *group = json_object_get(meta, key);
    if (!json_is_array(group)) {
        group = json_array();
        json_object_set_new(meta, key, group);
    }
    if (deep) {
        json_array_append(group, op);
    } else {
        const char *id = json_string_value(json_object_get(op, "id"));
        char *url = gw_text_dupf("/1.0/operations/%s", id != NULL ? id : "");
        json_array_append_new(group, json_string(url));
        free(url);
    }
    free(key);
    json_decref(op);
}

static int listed(const list_t *l, const char *project)
{
    return (l->every || strcmp(project, l->want) == 0) && gw_ops_may_see(l->caller->kind, l->caller->projects, project);
}

static void add_own(const gw_op_t *op, void *data)
{
    list_t *l = data;
    if (listed(l, gw_op_project(op)))
        list_add(l->meta, l->deep, gw_op_json(op));
}

static void add_mirrored(const char *project, json_t *op, void *data)
{
    list_t *l = data;
    if (listed(l, project))
        list_add(l->meta, l->deep, json_incref(op));
}

/* GET /1.0/operations: the cluster's list (token operations rewritten) with the gateway's own of the project added */
static void merge(h2o_req_t *req, json_t *answer, long status, const gw_caller_t *caller)
{
    if (status != 200)
        return;
    gw_tokens_rewrite(answer);
    const char *project = gw_lxd_query(req, "project"), *all = gw_lxd_query(req, "all-projects"),
               *recursion = gw_lxd_query(req, "recursion");
    list_t l = {.deep = recursion != NULL && strcmp(recursion, "0") != 0 && *recursion != '\0',
                .every = all != NULL && strcmp(all, "true") == 0,
                .want = project != NULL && *project != '\0' ? project : "default",
                .caller = caller};
    l.meta = json_object_get(answer, "metadata");
    if (!json_is_object(l.meta)) {
        l.meta = json_object();
        json_object_set_new(answer, "metadata", l.meta);
    }
    gw_ops_foreach(add_own, &l);
    gw_ops_mirror_foreach(add_mirrored, &l);
}

int gw_oplist_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)path;
    if (gw_ops_is_empty())
        return 0; /* nothing to add: tokens.c rewrites it */
    gw_rewrite_pass(req, caller, merge);
    return 1;
}
