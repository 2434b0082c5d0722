/*
 * plugin.h: a single-call capability the gateway adds to a cluster that lacks it.
 *
 * A plugin claims the requests of its kind while the cluster lacks its API extension, and answers them itself
 * (with sub-calls to members, as the caller's identity). When every member has the extension natively (after an
 * upgrade), the plugin claims nothing and requests pass through: the gateway steps aside.
 */
#ifndef GW_PLUGIN_H
#define GW_PLUGIN_H

#include <h2o.h>
#include "config.h"
#include "trust.h"

typedef struct st_gw_plugin_t {
    const char *name;      /* for logs */
    const char *extension; /* the API extension it provides, advertised in GET /1.0 while the cluster lacks it */
    /* reads what it needs of the configuration at start, on the loop of `ctx` (NULL: nothing); NULL or an error */
    const char *(*init)(const gw_config_t *conf, h2o_context_t *ctx);
    /* 1 if this plugin answers `req` (only asked while the cluster lacks the extension); must not block or answer */
    int (*claims)(h2o_req_t *req, const gw_caller_t *caller);
    /* answers `req` (asynchronously) */
    void (*handle)(h2o_req_t *req, const gw_caller_t *caller);
} gw_plugin_t;

/* every plugin, NULL-terminated (plugins/registry.c) */
extern const gw_plugin_t *const gw_plugins[];

/* initialises every plugin and registers the GET /1.0 rewrite (extensions, value types); call once at start.
 * Returns NULL or an error */
const char *gw_plugins_init(const gw_config_t *conf, h2o_context_t *ctx);
/* the first plugin that claims `req` answers it (returns 1); 0 when none does */
int gw_plugins_dispatch(h2o_req_t *req, const gw_caller_t *caller);

#endif
