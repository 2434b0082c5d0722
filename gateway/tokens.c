/*
 * tokens.c: see tokens.h.
 */
#include <string.h>
#include "rewrite.h"
#include "tokens.h"

static json_t *addresses; /* public_addresses, as a JSON array */
static char *fingerprint; /* of the gateway's server certificate */

void gw_tokens_init(const gw_config_t *conf, const char *server_fingerprint)
{
    json_decref(addresses); /* again on reload */
    free(fingerprint);
    addresses = json_array();
    char *const *list = conf->num_public_addresses != 0 ? conf->public_addresses : conf->listen;
    size_t num = conf->num_public_addresses != 0 ? conf->num_public_addresses : conf->num_listen;
    for (size_t i = 0; i != num; ++i)
        json_array_append_new(addresses, json_string(list[i]));
    fingerprint = strdup(server_fingerprint);
}

static void rewrite_value(json_t *v, int depth)
{
    if (depth > 3)
        return;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) rewrite_value(e, depth + 1);
        return;
    }
    if (!json_is_object(v))
        return;
    const char *class = json_string_value(json_object_get(v, "class"));
    json_t *meta = json_object_get(v, "metadata");
    if (class != NULL) { /* an operation */
        if (strcmp(class, "token") == 0 && json_is_object(meta) && json_object_get(meta, "secret") != NULL) {
            json_object_set(meta, "addresses", addresses);
            json_object_set_new(meta, "fingerprint", json_string(fingerprint));
        }
        return;
    }
    const char *key;
    json_t *e;
    json_object_foreach(v, key, e) rewrite_value(e, depth + 1); /* {"running": [...], "success": [...]} */
}

void gw_tokens_rewrite(json_t *answer)
{
    rewrite_value(json_object_get(answer, "metadata"), 0);
}

static void rewrite(h2o_req_t *req, json_t *answer, long status, const gw_caller_t *caller)
{
    (void)req, (void)caller;
    if (status == 200)
        gw_tokens_rewrite(answer);
}

int gw_tokens_handle(h2o_req_t *req, const gw_caller_t *caller, const gw_path_t *path)
{
    (void)path; /* the list, or one operation: not .../wait (a long poll) nor .../websocket, which pass through */
    gw_rewrite_pass(req, caller, rewrite);
    return 1;
}
