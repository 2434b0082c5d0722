/*
 * config.c: YAML -> gw_config_t, strictly (see config.h).
 *
 * The document is loaded whole with libyaml's node API, so each error can name the node's line. A table maps each
 * known key path to a setter; anything not in the table is an unknown key.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>
#include "config.h"
#include "text.h"
#include "log.h"

typedef struct st_ctx_t {
    yaml_document_t *doc;
    gw_config_t *conf;
    char *err;
} ctx_t;

static int fail(ctx_t *c, const char *key, yaml_node_t *node, const char *fmt, ...)
{
    char *what = NULL, *raw = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&what, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (c->err == NULL) { /* one line, whatever the key or the value held */
        raw = gw_text_dupf("config: %s (line %zu): %s", key, node->start_mark.line + 1, what);
        c->err = gw_text_clean(raw, strlen(raw), GW_TEXT_PERCENT);
    }
    free(raw);
    free(what);
    return -1;
}

static const char *scalar(ctx_t *c, const char *key, yaml_node_t *node)
{
    if (node->type != YAML_SCALAR_NODE) {
        fail(c, key, node, "expected a single value");
        return NULL;
    }
    return (const char *)node->data.scalar.value;
}

static int set_string(ctx_t *c, const char *key, yaml_node_t *node, char **dst)
{
    const char *v = scalar(c, key, node);
    if (v == NULL)
        return -1;
    if (*v == '\0')
        return fail(c, key, node, "must not be empty");
    free(*dst);
    *dst = strdup(v);
    return 0;
}

/* a file the gateway must be able to read at start */
static int set_file(ctx_t *c, const char *key, yaml_node_t *node, char **dst)
{
    if (set_string(c, key, node, dst) != 0)
        return -1;
    if (access(*dst, R_OK) != 0)
        return fail(c, key, node, "cannot read %s: %s", *dst, strerror(errno));
    return 0;
}

static int set_list(ctx_t *c, const char *key, yaml_node_t *node, char **dst, size_t *num, int (*check)(const char *))
{
    if (node->type != YAML_SEQUENCE_NODE)
        return fail(c, key, node, "expected a list, e.g. [\"a\", \"b\"]");
    for (yaml_node_item_t *it = node->data.sequence.items.start; it != node->data.sequence.items.top; ++it) {
        yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        const char *v = scalar(c, key, item);
        if (v == NULL)
            return -1;
        if (*num == GW_CONFIG_MAX_LIST)
            return fail(c, key, item, "at most %d entries", GW_CONFIG_MAX_LIST);
        if (!check(v))
            return fail(c, key, item, "bad value \"%s\"", v);
        dst[(*num)++] = strdup(v);
    }
    if (*num == 0)
        return fail(c, key, node, "must list at least one entry");
    return 0;
}

static int is_hostport(const char *v)
{
    const char *colon = v[0] == '[' ? strstr(v, "]:") : strrchr(v, ':');
    if (colon == NULL || colon == v)
        return 0;
    colon += v[0] == '[' ? 2 : 1;
    char *end;
    long port = strtol(colon, &end, 10);
    return *end == '\0' && port > 0 && port < 65536;
}

static int is_https_url(const char *v)
{
    return strncmp(v, "https://", 8) == 0 && is_hostport(v + 8);
}

int gw_config_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        {"", 1},      {"B", 1},        {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20},     {"GiB", 1ULL << 30}, {"TiB", 1ULL << 40},
        {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000},  {"TB", 1000000000000ULL}};
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (end == s || errno != 0 || *s == '-')
        return -1;
    for (size_t i = 0; i != sizeof(units) / sizeof(units[0]); ++i) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (n > UINT64_MAX / units[i].mult)
                return -1;
            *out = n * units[i].mult;
            return 0;
        }
    }
    return -1;
}

int gw_config_parse_duration(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"", 1000}, {"s", 1000}, {"ms", 1}, {"m", 60000}, {"h", 3600000}};
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (end == s || errno != 0 || *s == '-')
        return -1;
    for (size_t i = 0; i != sizeof(units) / sizeof(units[0]); ++i) {
        if (strcmp(end, units[i].suffix) == 0) {
            *out = n * units[i].ms;
            return 0;
        }
    }
    return -1;
}

/* setters for each known key path */
static int k_listen(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_list(c, k, n, c->conf->listen, &c->conf->num_listen, is_hostport);
}
static int k_public(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_list(c, k, n, c->conf->public_addresses, &c->conf->num_public_addresses, is_hostport);
}
static int k_members(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_list(c, k, n, c->conf->members, &c->conf->num_members, is_https_url);
}
static int k_tls_cert(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_file(c, k, n, &c->conf->tls_certificate);
}
static int k_tls_key(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_file(c, k, n, &c->conf->tls_key);
}
static int k_cluster_cert(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_file(c, k, n, &c->conf->cluster_certificate);
}
static int k_identity_cert(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_file(c, k, n, &c->conf->identity_certificate);
}
static int k_identity_key(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_file(c, k, n, &c->conf->identity_key);
}
static int k_state_dir(ctx_t *c, const char *k, yaml_node_t *n)
{
    if (set_string(c, k, n, &c->conf->state_dir) != 0)
        return -1;
    if (access(c->conf->state_dir, R_OK | W_OK | X_OK) != 0)
        return fail(c, k, n, "cannot use directory %s: %s", c->conf->state_dir, strerror(errno));
    return 0;
}
static int k_log_level(ctx_t *c, const char *k, yaml_node_t *n)
{
    const char *v = scalar(c, k, n);
    if (v == NULL)
        return -1;
    if ((c->conf->log_level = gw_log_parse_level(v)) < 0)
        return fail(c, k, n, "must be one of debug, info, warn, error (not \"%s\")", v);
    return 0;
}
static int k_access_log(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_string(c, k, n, &c->conf->access_log);
}
static int k_audit_log(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_string(c, k, n, &c->conf->audit_log);
}
static int set_size(ctx_t *c, const char *k, yaml_node_t *n, uint64_t *dst)
{
    const char *v = scalar(c, k, n);
    if (v == NULL)
        return -1;
    if (gw_config_parse_size(v, dst) != 0 || *dst == 0)
        return fail(c, k, n, "expected a size such as 4GiB (not \"%s\")", v);
    return 0;
}
static int set_duration(ctx_t *c, const char *k, yaml_node_t *n, uint64_t *dst)
{
    const char *v = scalar(c, k, n);
    if (v == NULL)
        return -1;
    if (gw_config_parse_duration(v, dst) != 0 || *dst == 0)
        return fail(c, k, n, "expected a duration such as 30s, 500ms, 1h (not \"%s\")", v);
    return 0;
}
static int k_max_body(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_size(c, k, n, &c->conf->max_request_body);
}
static int k_backend_timeout(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_duration(c, k, n, &c->conf->backend_timeout_ms);
}
static int k_drain_timeout(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_duration(c, k, n, &c->conf->drain_timeout_ms);
}
static int k_stream_timeout(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_duration(c, k, n, &c->conf->stream_timeout_ms);
}
static int k_health(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_duration(c, k, n, &c->conf->health_interval_ms);
}
static int k_flow_lease(ctx_t *c, const char *k, yaml_node_t *n)
{
    if (set_duration(c, k, n, &c->conf->flow_lease_ms) != 0)
        return -1;
    if (c->conf->flow_lease_ms < 2000)
        return fail(c, k, n, "must be at least 2s (the owner renews it every quarter)");
    return 0;
}
static int k_trust_refresh(ctx_t *c, const char *k, yaml_node_t *n)
{
    return set_duration(c, k, n, &c->conf->trust_refresh_ms);
}
static int k_server_cache_ttl(ctx_t *c, const char *k, yaml_node_t *n)
{
    const char *v = scalar(c, k, n);
    if (v == NULL)
        return -1;
    if (gw_config_parse_duration(v, &c->conf->server_cache_ttl_ms) != 0)
        return fail(c, k, n, "expected a duration such as 3s, or 0 for no cache (not \"%s\")", v);
    return 0;
}

static int k_metrics_listen(ctx_t *c, const char *k, yaml_node_t *n)
{
    if (set_string(c, k, n, &c->conf->metrics_listen) != 0)
        return -1;
    if (!is_hostport(c->conf->metrics_listen))
        return fail(c, k, n, "expected host:port");
    return 0;
}

/* peers: [{name, url, certificate?}]: names unique, URLs https://host:port */
static int k_peers(ctx_t *c, const char *k, yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(c, k, n, "expected a list of {name, url}");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it != n->data.sequence.items.top; ++it) {
        yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        if (item->type != YAML_MAPPING_NODE)
            return fail(c, k, item, "each peer is a mapping {name: ..., url: https://host:port}");
        if (c->conf->num_peers == GW_CONFIG_MAX_LIST)
            return fail(c, k, item, "at most %d peers", GW_CONFIG_MAX_LIST);
        gw_config_peer_t *peer = &c->conf->peers[c->conf->num_peers++];
        for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p != item->data.mapping.pairs.top; ++p) {
            yaml_node_t *kn = yaml_document_get_node(c->doc, p->key), *vn = yaml_document_get_node(c->doc, p->value);
            const char *key = kn->type == YAML_SCALAR_NODE ? (const char *)kn->data.scalar.value : "";
            char path[64];
            snprintf(path, sizeof(path), "peers.%s", key);
            int r = strcmp(key, "name") == 0          ? set_string(c, path, vn, &peer->name)
                    : strcmp(key, "url") == 0         ? set_string(c, path, vn, &peer->url)
                    : strcmp(key, "certificate") == 0 ? set_file(c, path, vn, &peer->certificate)
                                                      : fail(c, path, kn, "unknown key (a peer has name, url, certificate)");
            if (r != 0)
                return -1;
        }
        if (peer->name == NULL || peer->url == NULL)
            return fail(c, k, item, "each peer needs a name and a url");
        if (!is_https_url(peer->url))
            return fail(c, "peers.url", item, "expected https://host:port (not \"%s\")", peer->url);
        for (size_t i = 0; i + 1 < c->conf->num_peers; ++i)
            if (strcmp(c->conf->peers[i].name, peer->name) == 0)
                return fail(c, "peers.name", item, "\"%s\" is listed twice", peer->name);
    }
    return 0;
}

typedef int (*setter_t)(ctx_t *, const char *, yaml_node_t *);
static const struct {
    const char *path; /* dotted key path; a path with a NULL setter is a mapping */
    setter_t set;
} keys[] = {
    {"listen", k_listen},
    {"public_addresses", k_public},
    {"tls", NULL},
    {"tls.certificate", k_tls_cert},
    {"tls.key", k_tls_key},
    {"cluster", NULL},
    {"cluster.members", k_members},
    {"cluster.certificate", k_cluster_cert},
    {"cluster.health_interval", k_health},
    {"cluster.flow_lease", k_flow_lease},
    {"cluster.server_cache_ttl", k_server_cache_ttl},
    {"identity", NULL},
    {"identity.certificate", k_identity_cert},
    {"identity.key", k_identity_key},
    {"identity.trust_refresh", k_trust_refresh},
    {"state_dir", k_state_dir},
    {"log", NULL},
    {"log.level", k_log_level},
    {"log.access", k_access_log},
    {"log.audit", k_audit_log},
    {"limits", NULL},
    {"limits.max_request_body", k_max_body},
    {"timeouts", NULL},
    {"timeouts.backend", k_backend_timeout},
    {"timeouts.stream", k_stream_timeout},
    {"timeouts.drain", k_drain_timeout},
    {"metrics", NULL},
    {"metrics.listen", k_metrics_listen},
    {"peers", k_peers},
};

static int walk_mapping(ctx_t *c, const char *prefix, yaml_node_t *map)
{
    if (map->type != YAML_MAPPING_NODE)
        return fail(c, *prefix ? prefix : "(top)", map, "expected a mapping of key: value");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p != map->data.mapping.pairs.top; ++p) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, p->key), *vn = yaml_document_get_node(c->doc, p->value);
        if (kn->type != YAML_SCALAR_NODE)
            return fail(c, *prefix ? prefix : "(top)", kn, "keys must be plain words");
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", (const char *)kn->data.scalar.value);
        size_t i;
        for (i = 0; i != sizeof(keys) / sizeof(keys[0]); ++i)
            if (strcmp(keys[i].path, path) == 0)
                break;
        if (i == sizeof(keys) / sizeof(keys[0]))
            return fail(c, path, kn, "unknown key");
        if ((keys[i].set != NULL ? keys[i].set(c, path, vn) : walk_mapping(c, path, vn)) != 0)
            return -1;
    }
    return 0;
}

static int require(ctx_t *c, yaml_node_t *root)
{
    static const struct {
        const char *key;
        size_t off;
    } required[] = {
        {"tls.certificate", offsetof(gw_config_t, tls_certificate)},
        {"tls.key", offsetof(gw_config_t, tls_key)},
        {"cluster.certificate", offsetof(gw_config_t, cluster_certificate)},
        {"identity.certificate", offsetof(gw_config_t, identity_certificate)},
        {"identity.key", offsetof(gw_config_t, identity_key)},
        {"state_dir", offsetof(gw_config_t, state_dir)},
    };
    for (size_t i = 0; i != sizeof(required) / sizeof(required[0]); ++i)
        if (*(char **)((char *)c->conf + required[i].off) == NULL)
            return fail(c, required[i].key, root, "is required");
    if (c->conf->num_listen == 0)
        return fail(c, "listen", root, "is required");
    if (c->conf->num_members == 0)
        return fail(c, "cluster.members", root, "is required");
    return 0;
}

static gw_config_t *new_defaults(void)
{
    gw_config_t *conf = calloc(1, sizeof(*conf));
    conf->log_level = GW_LOG_INFO;
    conf->max_request_body = 64ULL << 30; /* images and backups are large; bodies spill to state_dir */
    conf->drain_timeout_ms = 60 * 1000;
    conf->backend_timeout_ms = 3600 * 1000;        /* LXD long-polls (/wait, exports) stay idle for minutes */
    conf->stream_timeout_ms = 7 * 24 * 3600000ULL; /* an `lxc monitor` or console may stay quiet for days */
    conf->health_interval_ms = 2000;
    conf->flow_lease_ms = 60000;
    conf->trust_refresh_ms = 30000;   /* a safety net: lifecycle events drive the re-reads */
    conf->server_cache_ttl_ms = 3000; /* a safety net too: events and the gateway's own writes drop it (api10.c) */
    return conf;
}

gw_config_t *gw_config_load(const char *path, char **err)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        if (asprintf(err, "config: cannot open %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return NULL;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    ctx_t c = {&doc, new_defaults(), NULL};
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        if (asprintf(err, "config: %s line %zu: %s", path, parser.problem_mark.line + 1,
                     parser.problem != NULL ? parser.problem : "not YAML") < 0)
            *err = NULL;
        yaml_parser_delete(&parser);
        fclose(fp);
        gw_config_free(c.conf);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        if (asprintf(&c.err, "config: %s is empty", path) < 0)
            c.err = NULL;
    } else if (walk_mapping(&c, "", root) == 0) {
        require(&c, root);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(fp);
    if (c.err != NULL) {
        *err = c.err;
        gw_config_free(c.conf);
        return NULL;
    }
    return c.conf;
}

void gw_config_free(gw_config_t *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i != conf->num_listen; ++i)
        free(conf->listen[i]);
    for (size_t i = 0; i != conf->num_members; ++i)
        free(conf->members[i]);
    for (size_t i = 0; i != conf->num_public_addresses; ++i)
        free(conf->public_addresses[i]);
    free(conf->tls_certificate);
    free(conf->tls_key);
    free(conf->cluster_certificate);
    free(conf->identity_certificate);
    free(conf->identity_key);
    free(conf->state_dir);
    free(conf->access_log);
    free(conf->audit_log);
    free(conf->metrics_listen);
    for (size_t i = 0; i != conf->num_peers; ++i)
        free(conf->peers[i].name), free(conf->peers[i].url), free(conf->peers[i].certificate);
    free(conf);
}
