/*
 * main.c: command line, start-up order, and the event loop.
 */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <h2o.h>
#include "api10.h"
#include "backend.h"
#include "config.h"
#include "eventstream.h"
#include "flows.h"
#include "journal.h"
#include "identity.h"
#include "init.h"
#include "linger.h"
#include "log.h"
#include "operations.h"
#include "members.h"
#include "peers.h"
#include "plugin.h"
#include "relay.h"
#include "reload.h"
#include "replica.h"
#include "server.h"
#include "shadow.h"
#include "tls.h"
#include "tokens.h"
#include "trust.h"
#include "upload.h"

#define READY_WAIT_MS 10000 /* the longest the gateway waits to know the cluster before it listens */

#ifndef GW_VERSION
#define GW_VERSION "0.1.0"
#endif

static volatile sig_atomic_t stop_requested; /* SIGTERM/SIGINT received: 1 = drain, 2 or more = stop now */

static void on_signal(int sig)
{
    (void)sig;
    if (stop_requested < 2)
        ++stop_requested;
}

static volatile sig_atomic_t reload_requested; /* SIGHUP received */

static void on_hup(int sig)
{
    (void)sig;
    reload_requested = 1;
}

/* access lines are written out at most GW_LOG_FLUSH_MS after they were logged (log.h) */
static struct {
    h2o_evloop_t *loop;
    h2o_timeout_t timeout;     /* GW_LOG_FLUSH_MS */
    h2o_timeout_entry_t entry; /* linked while access lines wait in the buffer */
} log_flush;

static void on_log_flush(h2o_timeout_entry_t *entry)
{
    (void)entry;
    gw_log_flush();
}

static void arm_log_flush(void)
{
    if (!h2o_timeout_is_linked(&log_flush.entry))
        h2o_timeout_link(log_flush.loop, &log_flush.timeout, &log_flush.entry);
}

static void run_once(h2o_evloop_t *loop, int32_t max_ms)
{
    int32_t wait = gw_backend_wait_ms();
    h2o_evloop_run(loop, wait < max_ms ? wait : max_ms);
    gw_backend_run_timers();
    gw_upload_after_turn(); /* a request body that began in this turn is followed before the next read */
}

static void usage(FILE *fp)
{
    fprintf(fp, "usage: lxd-gateway --config FILE\n"
                "       lxd-gateway init --state-dir DIR [--listen HOST:PORT] [--member URL]... [--cluster-certificate FILE]\n"
                "       lxd-gateway --version | --help\n"
                "\n"
                "A TLS-terminating gateway in front of an LXD cluster (LXD < 5.20) that adds the single-call copy and\n"
                "move of custom volumes across members (API extension cluster_internal_custom_volume_copy) and passes\n"
                "everything else through unchanged.\n"
                "\n"
                "  --config FILE   the YAML configuration (see conf/lxd-gateway.yaml)\n"
                "  --version       print the version and exit\n"
                "  --help          print this help and exit\n");
}

static int run(const char *config_path)
{
    char *cerr = NULL;
    const char *err = NULL;
    gw_config_t *conf = gw_config_load(config_path, &cerr);
    if (conf == NULL) {
        fprintf(stderr, "lxd-gateway: %s\n", cerr != NULL ? cerr : "cannot read the configuration");
        return 1;
    }
    gw_log_level = conf->log_level;
    if ((err = gw_logs_open(conf)) != NULL) {
        fprintf(stderr, "lxd-gateway: config: %s\n", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGHUP, on_hup);

    /* request bodies (image imports, file pushes) past 32 MB spill to files in state_dir, not /tmp */
    snprintf(h2o_socket_buffer_mmap_settings.fn_template, sizeof(h2o_socket_buffer_mmap_settings.fn_template), "%s/body.XXXXXX",
             conf->state_dir);

    X509 *cluster_cert = gw_tls_read_cert(conf->cluster_certificate, &err);
    if (cluster_cert == NULL) {
        fprintf(stderr, "lxd-gateway: config: cluster.certificate: %s\n", err);
        return 1;
    }
    char server_fp[GW_FINGERPRINT_LEN + 1], identity_fp[GW_FINGERPRINT_LEN + 1];
    if ((err = gw_tls_file_fingerprint(conf->tls_certificate, server_fp)) != NULL) {
        fprintf(stderr, "lxd-gateway: config: tls.certificate: %s\n", err);
        return 1;
    }
    if ((err = gw_tls_file_fingerprint(conf->identity_certificate, identity_fp)) != NULL) {
        fprintf(stderr, "lxd-gateway: config: identity.certificate: %s\n", err);
        return 1;
    }
    if ((err = gw_replica_init(conf->state_dir)) != NULL) { /* the tag of this replica's operations */
        fprintf(stderr, "lxd-gateway: %s\n", err);
        return 1;
    }
    gw_tokens_init(conf, server_fp);
    h2o_evloop_t *loop = h2o_evloop_create();
    log_flush.loop = loop;
    h2o_timeout_init(loop, &log_flush.timeout, GW_LOG_FLUSH_MS);
    log_flush.entry.cb = on_log_flush;
    gw_log_on_pending = arm_log_flush;
    static gw_server_t srv;
    char *pin = gw_tls_curl_pin(cluster_cert);
    if ((err = gw_server_init(&srv, conf, loop)) != NULL ||
        (err = gw_identity_init(&srv.ctx, cluster_cert, conf->identity_certificate, conf->identity_key, conf->backend_timeout_ms,
                                conf->stream_timeout_ms)) != NULL) {
        fprintf(stderr, "lxd-gateway: %s\n", err);
        return 1;
    }
    gw_backend_init(loop, pin);
    free(pin);
    if ((err = gw_members_init(&srv.ctx, conf)) != NULL) {
        fprintf(stderr, "lxd-gateway: %s\n", err);
        return 1;
    }
    gw_ops_init(&srv.ctx, gw_replica_id()); /* operation ids name this replica by its id, not by its identity */
    gw_eventstream_init(&srv.ctx);
    if ((err = gw_relay_init(conf)) != NULL || (err = gw_peers_init(&srv.ctx, conf, identity_fp)) != NULL) {
        fprintf(stderr, "lxd-gateway: %s\n", err);
        return 1;
    }
    gw_trust_init(&srv.ctx, conf->trust_refresh_ms);
    gw_api10_init(conf->server_cache_ttl_ms);
    gw_shadow_init(conf->state_dir, identity_fp);
    if ((err = gw_plugins_init(conf, &srv.ctx)) != NULL) {
        fprintf(stderr, "lxd-gateway: %s\n", err);
        return 1;
    }
    /* the flows' state in the cluster (after the plugins: they opened the journal and said who adopts what) */
    gw_flows_init(&srv.ctx, conf, gw_ops_tag(), gw_peers_knows_tag, gw_journal_unfinished());
    gw_log(GW_LOG_INFO, "started", "version", GW_VERSION, "config", config_path, NULL);

    /* listen once the gateway knows the cluster (members and their API extensions, the trust store), so that its
     * first answers are right; a cluster that does not answer within READY_WAIT_MS does not keep it closed */
    uint64_t ready_by = h2o_now(loop) + READY_WAIT_MS;
    while (!stop_requested && !(gw_members_settled() && gw_trust_age_ms() != UINT64_MAX) && h2o_now(loop) < ready_by) {
        int32_t wait = gw_backend_wait_ms();
        h2o_evloop_run(loop, wait < 100 ? wait : 100);
        gw_backend_run_timers();
    }
    if ((err = gw_server_listen(&srv, conf)) != NULL) {
        fprintf(stderr, "lxd-gateway: %s\n", err);
        return 1;
    }
    gw_peers_start();

    while (!stop_requested && !gw_peers_must_stop()) { /* (a peer that has this replica's id stops it: peers.h) */
        run_once(loop, 1000);
        if (reload_requested) {
            reload_requested = 0;
            gw_reload(config_path, conf, &srv);
        }
    }

    /* drain: no new connections; running operations (moves) may end within timeouts.drain (a drain of a member starts no
     * new move: gw_ops_stop); a second signal stops at once. Whatever is cut short is finished or rolled back from the journal at
     * the next start. */
    gw_server_stop_listening(&srv);
    gw_ops_stop();
    uint64_t drain_by = h2o_now(loop) + conf->drain_timeout_ms;
    size_t n = gw_ops_running();
    gw_log(GW_LOG_INFO, "stopping", "running_operations", gw_log_num((long long)n), NULL);
    /* (a connection answered early is given its lingering close too: exiting would reset it under the answer) */
    /* (and an ended flow's record is deleted from the cluster: else it would be recovered a lease later, its lock held) */
    while ((n != 0 || gw_linger_count() != 0 || gw_flows_ending() != 0) && stop_requested < 2 && h2o_now(loop) < drain_by) {
        run_once(loop, 100);
        n = gw_ops_running();
    }
    if (n != 0)
        gw_log(GW_LOG_WARN, "stopped with operations running; the next start finishes or rolls them back from the journal",
               "running_operations", gw_log_num((long long)n), NULL);
    else
        gw_log(GW_LOG_INFO, "drained", NULL);
    gw_log_flush();
    return gw_peers_must_stop() ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"version", no_argument, NULL, 'v'}, {"help", no_argument, NULL, 'h'}, {NULL}};
    const char *config_path = NULL;
    int ch;

    if (argc > 1 && strcmp(argv[1], "init") == 0)
        return gw_init_main(argc - 1, argv + 1);
    /* The buffers of a streamed body or of a relay are MiBs, allocated and freed many times a second (h2o frees an
     * input buffer once it is read out). With glibc's own, moving thresholds the heap top was given back to the kernel
     * and taken again read after read, faulting every page in anew: a fifth of an upload's CPU (perf, 1 GiB upload).
     * Fixed thresholds: blocks under 32 MiB come from the heap, and up to 32 MiB of free heap top is kept. Both calls
     * are needed (either one turns the moving thresholds off). Under AddressSanitizer both do nothing. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    while ((ch = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'v':
            printf("lxd-gateway %s (h2o %s)\n", GW_VERSION, H2O_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    return run(config_path);
}
