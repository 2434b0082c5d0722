/*
 * reload.c: see reload.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "relay.h"
#include "reload.h"
#include "tls.h"
#include "tokens.h"

static FILE *reopen(FILE *old, const char *path, FILE *dflt)
{
    FILE *fp = path != NULL ? fopen(path, "a") : dflt;
    if (fp == NULL)
        return NULL;
    if (old != NULL && old != stdout && old != stderr && old != fp)
        fclose(old);
    return fp;
}

const char *gw_logs_open(const gw_config_t *conf)
{
    FILE *fp;
    gw_log_flush(); /* the lines buffered so far go to the file they were written for */
    if ((fp = reopen(gw_log_access_fp, conf->access_log, stdout)) == NULL)
        return "log.access: cannot open the file";
    if (fp != gw_log_access_fp && (fp != stdout || gw_log_access_fp == NULL))
        gw_log_buffer(fp); /* a file just opened, or stdout before its first line */
    gw_log_access_fp = fp;
    char audit[4096];
    snprintf(audit, sizeof(audit), "%s/audit.log", conf->state_dir);
    if ((fp = reopen(gw_log_audit_fp, conf->audit_log != NULL ? conf->audit_log : audit, NULL)) == NULL)
        return "log.audit: cannot open the file";
    gw_log_audit_fp = fp;
    return NULL;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_peers(const gw_config_t *a, const gw_config_t *b)
{
    if (a->num_peers != b->num_peers)
        return 0;
    for (size_t i = 0; i != a->num_peers; ++i)
        if (!same_str(a->peers[i].name, b->peers[i].name) || !same_str(a->peers[i].url, b->peers[i].url) ||
            !same_str(a->peers[i].certificate, b->peers[i].certificate))
            return 0;
    return 1;
}

static int same_list(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i != na; ++i)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

/* the keys that changed but take effect only at the next start, ","-joined into `out` */
static void needs_restart(const gw_config_t *o, const gw_config_t *n, char *out, size_t size)
{
    const struct {
        const char *key;
        int same;
    } keys[] = {
        {"listen", same_list(o->listen, o->num_listen, n->listen, n->num_listen)},
        {"public_addresses", same_list(o->public_addresses, o->num_public_addresses, n->public_addresses, n->num_public_addresses)},
        {"cluster.members", same_list(o->members, o->num_members, n->members, n->num_members)},
        {"cluster.certificate", same_str(o->cluster_certificate, n->cluster_certificate)},
        {"cluster.health_interval", o->health_interval_ms == n->health_interval_ms},
        {"cluster.server_cache_ttl", o->server_cache_ttl_ms == n->server_cache_ttl_ms},
        {"identity.certificate", same_str(o->identity_certificate, n->identity_certificate)},
        {"identity.key", same_str(o->identity_key, n->identity_key)},
        {"identity.trust_refresh", o->trust_refresh_ms == n->trust_refresh_ms},
        {"state_dir", same_str(o->state_dir, n->state_dir)},
        {"limits.max_request_body", o->max_request_body == n->max_request_body},
        {"timeouts.backend", o->backend_timeout_ms == n->backend_timeout_ms},
        {"timeouts.stream", o->stream_timeout_ms == n->stream_timeout_ms},
        {"metrics.listen", same_str(o->metrics_listen, n->metrics_listen)},
        {"peers", same_peers(o, n)},
    };
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i != sizeof(keys) / sizeof(keys[0]); ++i)
        if (!keys[i].same)
            len += snprintf(out + len, len < size ? size - len : 0, "%s%s", len != 0 ? "," : "", keys[i].key);
}

static void swap_str(char **a, char **b)
{
    char *t = *a;
    *a = *b;
    *b = t;
}

void gw_reload(const char *path, gw_config_t *conf, gw_server_t *srv)
{
    char *cerr = NULL;
    const char *err = NULL;
    gw_config_t *next = gw_config_load(path, &cerr);
    if (next == NULL) {
        gw_log(GW_LOG_ERROR, "reload refused: the configuration does not load; running on as before", "err",
               cerr != NULL ? cerr : "unreadable", NULL);
        free(cerr);
        return;
    }
    /* the server certificate first: if it does not load, nothing changes */
    SSL_CTX *ssl = gw_tls_server_ctx(next->tls_certificate, next->tls_key, &err); /* read again even at the same path */
    if (ssl == NULL) {
        gw_log(GW_LOG_ERROR, "reload refused: tls.certificate/key", "err", err, NULL);
        gw_config_free(next);
        return;
    }
    char later[512];
    needs_restart(conf, next, later, sizeof(later));
    conf->log_level = next->log_level;
    gw_log_level = next->log_level;
    swap_str(&conf->access_log, &next->access_log);
    swap_str(&conf->audit_log, &next->audit_log);
    if ((err = gw_logs_open(conf)) != NULL)
        gw_log(GW_LOG_ERROR, "reload: cannot reopen a log; keeping the previous one", "err", err, NULL);
    swap_str(&conf->tls_certificate, &next->tls_certificate);
    swap_str(&conf->tls_key, &next->tls_key);
    SSL_CTX *old = srv->accept.ssl_ctx;
    srv->accept.ssl_ctx = ssl; /* new connections; established ones hold a reference to the old context */
    SSL_CTX_free(old);
    char fp[GW_FINGERPRINT_LEN + 1];
    if (gw_tls_file_fingerprint(conf->tls_certificate, fp) == NULL) /* what tokens and relays name */
        gw_tokens_init(conf, fp);
    gw_relay_init(conf);
    gw_config_free(next);
    gw_log(GW_LOG_INFO, "configuration reloaded", "needs_restart", later[0] != '\0' ? later : "-", NULL);
    if (later[0] != '\0')
        gw_log(GW_LOG_WARN, "changed keys take effect at the next start", "keys", later, NULL);
}
