/*
 * config.h: the YAML configuration, read once at start (and again on reload).
 *
 * The keys of the foundation issue are a contract: listen, tls.{certificate,key}, cluster.{members,certificate},
 * identity.{certificate,key}, state_dir, log.level. Everything else has a default. An unknown key, a missing file
 * or a bad value is an error naming the key and its line.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define GW_CONFIG_MAX_LIST 16

/* one gateway replica of the deployment (`peers`) */
typedef struct st_gw_config_peer_t {
    char *name;        /* what logs and errors call it ("gw1") */
    char *url;         /* "https://host:port" where the other replicas reach it directly (not the load balancer) */
    char *certificate; /* PEM: the server certificate it shows; NULL = tls.certificate (replicas behind one load
                        * balancer show clients the same certificate) */
} gw_config_peer_t;

typedef struct st_gw_config_t {
    char *listen[GW_CONFIG_MAX_LIST]; /* "host:port" or "[v6]:port" the clients connect to */
    size_t num_listen;
    char *public_addresses[GW_CONFIG_MAX_LIST]; /* "host:port" clients reach the gateway at (in trust tokens); default: listen */
    size_t num_public_addresses;
    char *tls_certificate;             /* PEM: the gateway's server certificate (with a DNS SAN) */
    char *tls_key;                     /* PEM: its key */
    char *members[GW_CONFIG_MAX_LIST]; /* seed member URLs ("https://host:port"); the rest is discovered */
    size_t num_members;
    char *cluster_certificate;                  /* PEM: the cluster certificate every member serves; pinned */
    char *identity_certificate;                 /* PEM: the gateway's client identity, trusted by the cluster */
    char *identity_key;                         /* PEM: its key */
    char *state_dir;                            /* directory the gateway owns: request-body spill files, later journals */
    int log_level;                              /* gw_log_level_t */
    char *access_log;                           /* path of the access log; NULL = stdout */
    char *audit_log;                            /* path of the audit log (JSON lines); NULL = state_dir/audit.log */
    uint64_t max_request_body;                  /* bytes a request body may have (h2o buffers bodies, spilling to state_dir) */
    uint64_t backend_timeout_ms;                /* idle time on a backend connection before it is cut (ordinary requests) */
    uint64_t stream_timeout_ms;                 /* idle time on a tunnelled websocket (events, exec, console) */
    uint64_t drain_timeout_ms;                  /* how long SIGTERM waits for running gateway operations before exiting */
    uint64_t health_interval_ms;                /* how often each member is probed */
    uint64_t flow_lease_ms;                     /* a flow's owner gone this long (no write seen): another replica adopts it */
    uint64_t trust_refresh_ms;                  /* how often the trust store is read again in full */
    uint64_t server_cache_ttl_ms;               /* GET /1.0 answers are served from the cache this long at most; 0: no cache */
    char *metrics_listen;                       /* "host:port" of the plain-HTTP /metrics listener (Prometheus); NULL = none */
    gw_config_peer_t peers[GW_CONFIG_MAX_LIST]; /* the replicas of this deployment, this one included (or not) */
    size_t num_peers;
} gw_config_t;

/* reads FILE; on error returns NULL and sets *err to a malloc'd one-line message naming the key and line */
gw_config_t *gw_config_load(const char *path, char **err);
void gw_config_free(gw_config_t *conf);
/* parses "1024", "512KiB", "4GiB", "2GB": returns 0 and sets *out, or -1 */
int gw_config_parse_size(const char *s, uint64_t *out);
/* parses "30", "30s", "500ms", "2m", "1h" into milliseconds: returns 0 and sets *out, or -1 */
int gw_config_parse_duration(const char *s, uint64_t *out);

#endif
