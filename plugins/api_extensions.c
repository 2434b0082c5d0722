/*
 * api_extensions.c: GET /1.0 as clients of the single call must see it.
 *
 * - Appends the extension of each plugin to `api_extensions` while the cluster lacks it natively, so new lxc and
 *   incus clients use the single call. Only extensions a registered plugin implements are ever advertised.
 * - Presents boolean values of `config` as strings ("true"): LXD 5.0 reports `core.trust_password: true`, and the
 *   incus client (6.0) fails on every command with "cannot unmarshal bool into ... type string"; lxc 5.0.2 accepts
 *   both. What a client sends back in PUT or PATCH /1.0 is turned back (write_rewrite).
 */
#include <stdlib.h>
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

/* the `config` keys a member showed as booleans (LXD shows a hidden key that is set, core.trust_password, as `true`),
 * which the clients see as "true" */
static char *bool_keys[8];
static size_t num_bool_keys;

static void remember_bool_key(const char *key)
{
    for (size_t i = 0; i != num_bool_keys; ++i)
        if (strcmp(bool_keys[i], key) == 0)
            return;
    if (num_bool_keys < sizeof(bool_keys) / sizeof(bool_keys[0]))
        bool_keys[num_bool_keys++] = strdup(key);
}

/* PUT or PATCH /1.0 (`lxc config set` sends back the whole `config` it read): a hidden key read as "true" goes back as
 * `true`, which LXD takes as "keep it unchanged" (lxd/config/map.go, Change); the string "true" would set it, and the
 * trust password would become "true". (So through the gateway, the trust password cannot be set to "true" itself.) */
static int write_rewrite(json_t *body)
{
    json_t *config = json_object_get(body, "config");
    int changed = 0;
    for (size_t i = 0; json_is_object(config) && i != num_bool_keys; ++i) {
        json_t *v = json_object_get(config, bool_keys[i]);
        if (json_is_string(v) && strcmp(json_string_value(v), "true") == 0) {
            json_object_set_new(config, bool_keys[i], json_true());
            changed = 1;
        }
    }
    return changed;
}

static void rewrite(json_t *meta)
{
    json_t *exts = json_object_get(meta, "api_extensions");
    for (const gw_plugin_t *const *p = gw_plugins; *p != NULL; ++p)
        if ((*p)->extension != NULL && gw_members_lack_extension((*p)->extension) && json_is_array(exts) &&
            !has(exts, (*p)->extension))
            json_array_append_new(exts, json_string((*p)->extension));
    json_t *config = json_object_get(meta, "config");
    const char *key;
    json_t *v;
    json_object_foreach(config, key, v) if (json_is_boolean(v))
    {
        remember_bool_key(key);
        json_object_set_new(config, key, json_string(json_is_true(v) ? "true" : "false"));
    }
}

const char *gw_plugins_init(const gw_config_t *conf, h2o_context_t *ctx)
{
    const char *err;
    for (const gw_plugin_t *const *p = gw_plugins; *p != NULL; ++p)
        if ((*p)->init != NULL && (err = (*p)->init(conf, ctx)) != NULL)
            return err;
    gw_api10_add_rewrite(rewrite);
    remember_bool_key("core.trust_password"); /* LXD 5.0's hidden key, known before any GET /1.0 has shown it */
    gw_api10_add_write_rewrite(write_rewrite);
    return NULL;
}
