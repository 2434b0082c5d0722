/*
 * init.c: `lxd-gateway init --state-dir DIR` (see init.h).
 *
 * Creates, unless they exist: the server key pair (what clients see; its certificate carries DNS names, because LXD
 * members and Go clients verify a pinned certificate by its first DNS name) and the identity key pair (what the
 * cluster trusts). Writes DIR/lxd-gateway.yaml and prints the command an operator runs on the cluster to trust the
 * gateway.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "init.h"
#include "tls.h"

static int write_pair(const char *dir, const char *base, const char *cn, const char *san, int server)
{
    char crt[4096], key[4096];
    const char *err;
    snprintf(crt, sizeof(crt), "%s/%s.crt", dir, base);
    snprintf(key, sizeof(key), "%s/%s.key", dir, base);
    if (access(crt, F_OK) == 0 && access(key, F_OK) == 0) {
        printf("keeping existing %s\n", crt);
        return 0;
    }
    if ((err = gw_tls_write_pair(crt, key, cn, san, server)) != NULL) {
        fprintf(stderr, "lxd-gateway init: %s (%s, %s): %s\n", err, crt, key, strerror(errno));
        return -1;
    }
    printf("created %s\n", crt);
    return 0;
}

/* DNS names first: the first DNS SAN is what LXD members and Go clients verify a pinned certificate against */
static void build_san(char *out, size_t len, const char *listen)
{
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    int n = snprintf(out, len, "DNS:lxd-gateway,DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", host);
    char addr[256];
    snprintf(addr, sizeof(addr), "%s", listen);
    char *colon = strrchr(addr, ':');
    if (colon != NULL)
        *colon = '\0';
    const char *a = addr[0] == '[' ? addr + 1 : addr;
    if (addr[0] == '[' && strlen(addr) > 1)
        addr[strlen(addr) - 1] = '\0';
    unsigned char buf[16];
    if (strcmp(a, "127.0.0.1") != 0 && strcmp(a, "::1") != 0 && strcmp(a, "0.0.0.0") != 0 && strcmp(a, "::") != 0 &&
        (inet_pton(AF_INET, a, buf) == 1 || inet_pton(AF_INET6, a, buf) == 1))
        snprintf(out + n, len - n, ",IP:%s", a);
}

static void usage(FILE *fp)
{
    fprintf(fp, "usage: lxd-gateway init --state-dir DIR [--listen HOST:PORT] [--member URL]... [--cluster-certificate FILE]\n"
                "\n"
                "Creates DIR, the gateway's server and identity key pairs (ECDSA P-256) and DIR/lxd-gateway.yaml, and\n"
                "prints the command that makes the cluster trust the gateway. Existing key pairs are kept.\n");
}

int gw_init_main(int argc, char **argv)
{
    static const struct option opts[] = {{"state-dir", required_argument, NULL, 'd'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"member", required_argument, NULL, 'm'},
                                         {"cluster-certificate", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL}};
    const char *dir = NULL, *listen = "127.0.0.1:8443", *cluster_cert = NULL, *members[16];
    size_t num_members = 0;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            dir = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'm':
            if (num_members < 16)
                members[num_members++] = optarg;
            break;
        case 'c':
            cluster_cert = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (dir == NULL) {
        usage(stderr);
        return 2;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "lxd-gateway init: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char san[1024];
    build_san(san, sizeof(san), listen);
    if (write_pair(dir, "server", "lxd-gateway", san, 1) != 0 || write_pair(dir, "identity", "lxd-gateway-identity", NULL, 0) != 0)
        return 1;
    char conf[4096];
    snprintf(conf, sizeof(conf), "%s/lxd-gateway.yaml", dir);
    if (access(conf, F_OK) == 0) {
        printf("keeping existing %s\n", conf);
    } else {
        FILE *fp = fopen(conf, "w");
        if (fp == NULL) {
            fprintf(stderr, "lxd-gateway init: cannot write %s: %s\n", conf, strerror(errno));
            return 1;
        }
        fprintf(fp, "# written by `lxd-gateway init`; see conf/lxd-gateway.yaml for every key\nlisten: [\"%s\"]\n", listen);
        fprintf(fp, "tls: {certificate: %s/server.crt, key: %s/server.key}\ncluster:\n  members: [", dir, dir);
        for (size_t i = 0; i != num_members; ++i)
            fprintf(fp, "%s\"%s\"", i ? ", " : "", members[i]);
        if (num_members == 0)
            fprintf(fp, "\"https://CHANGE-ME:8443\"");
        fprintf(fp, "]\n  certificate: %s   # the cluster certificate (LXD_DIR/cluster.crt on a member)\n",
                cluster_cert != NULL ? cluster_cert : "CHANGE-ME");
        fprintf(fp, "identity: {certificate: %s/identity.crt, key: %s/identity.key}\nstate_dir: %s\nlog: {level: info}\n", dir, dir,
                dir);
        fclose(fp);
        printf("created %s\n", conf);
    }
    char crt[4096], fp[GW_FINGERPRINT_LEN + 1];
    snprintf(crt, sizeof(crt), "%s/server.crt", dir);
    if (gw_tls_file_fingerprint(crt, fp) == NULL)
        printf("server certificate fingerprint (what clients see): %s\n", fp);
    printf("\nOn a cluster member, trust the gateway's identity:\n    lxc config trust add %s/identity.crt\n", dir);
    return 0;
}
