/*
 * api_extensions.c: GET /1.0 as clients of the single call must see it.
 *
 * - Appends the extension of each plugin to `api_extensions` while the cluster lacks it natively, so new lxc and
 *   incus clients use the single call. Only extensions a registered plugin implements are ever advertised.
 * - Presents boolean values of `config` as strings ("true"): LXD 5.0 reports `core.trust_password: true`, and the
 *   incus client (6.0) fails on every command with "cannot unmarshal bool into ... type string"; lxc 5.0.2 accepts
 *   both.
 */
#include <string.h>
#include "api10.h"
#include "members.h"
#include "plugin.h"

static int has(json_t *list, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) if (json_is_string(e) && strcmp(json_string_value(e), name) == 0) return 1;
    return 0;
}

static void rewrite(json_t *meta, const gw_caller_t *caller)
{
    (void)caller;
    json_t *exts = json_object_get(meta, "api_extensions");
    for (const gw_plugin_t *const *p = gw_plugins; *p != NULL; ++p)
        if ((*p)->extension != NULL && gw_members_lack_extension((*p)->extension) && json_is_array(exts) &&
            !has(exts, (*p)->extension))
            json_array_append_new(exts, json_string((*p)->extension));
    json_t *config = json_object_get(meta, "config");
    const char *key;
    json_t *v;
    json_object_foreach(config, key, v) if (json_is_boolean(v))
        json_object_set_new(config, key, json_string(json_is_true(v) ? "true" : "false"));
}

const char *gw_plugins_init(const gw_config_t *conf, h2o_context_t *ctx)
{
    const char *err;
    for (const gw_plugin_t *const *p = gw_plugins; *p != NULL; ++p)
        if ((*p)->init != NULL && (err = (*p)->init(conf, ctx)) != NULL)
            return err;
    gw_api10_add_rewrite(rewrite);
    return NULL;
}
