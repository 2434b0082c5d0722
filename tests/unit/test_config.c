/*
 * test_config.c: the configuration is strict: every error names the key and its line.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"
#include "unit.h"

static char tmpdir[] = "/tmp/gw-unit-XXXXXX";

/* writes `yaml` (with @D@ replaced by the data dir, @T@ by a writable temp dir) and loads it */
static gw_config_t *load(const char *yaml, char **err)
{
    char path[512], text[8192], *o = text;
    for (const char *p = yaml; *p != '\0' && o < text + sizeof(text) - 512;) {
        if (strncmp(p, "@D@", 3) == 0) {
            o += sprintf(o, "%s", unit_data_dir);
            p += 3;
        } else if (strncmp(p, "@T@", 3) == 0) {
            o += sprintf(o, "%s", tmpdir);
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    snprintf(path, sizeof(path), "%s/conf.yaml", tmpdir);
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
    *err = NULL;
    return gw_config_load(path, err);
}

#define GOOD                                                                                                                       \
    "listen: [\"127.0.0.1:8443\", \"[::1]:8443\"]\n"                                                                               \
    "tls: {certificate: @D@/cert.pem, key: @D@/key.pem}\n"                                                                         \
    "cluster:\n"                                                                                                                   \
    "  members: [\"https://127.0.0.11:8443\"]\n"                                                                                   \
    "  certificate: @D@/cert.pem\n"                                                                                                \
    "identity: {certificate: @D@/cert.pem, key: @D@/key.pem}\n"                                                                    \
    "state_dir: @T@\n"

static int err_has(const char *err, const char *a, const char *b)
{
    if (err == NULL || strstr(err, a) == NULL || (b != NULL && strstr(err, b) == NULL)) {
        fprintf(stderr, "  error was: %s (wanted \"%s\" and \"%s\")\n", err ? err : "(none)", a, b ? b : "");
        return 0;
    }
    return 1;
}

static void good_file(void)
{
    char *err;
    gw_config_t *c =
        load(GOOD "log: {level: debug}\nlimits: {max_request_body: 2GiB}\ntimeouts: {backend: 90s, stream: 1h}\n", &err);
    CHECK(c != NULL);
    if (c == NULL) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK(c->num_listen == 2 && strcmp(c->listen[1], "[::1]:8443") == 0);
    CHECK(c->num_members == 1 && strcmp(c->members[0], "https://127.0.0.11:8443") == 0);
    CHECK(c->log_level == 0);
    CHECK(c->max_request_body == 2ULL << 30);
    CHECK(c->backend_timeout_ms == 90000 && c->stream_timeout_ms == 3600000);
    CHECK(c->health_interval_ms == 2000);  /* default */
    CHECK(c->server_cache_ttl_ms == 3000); /* default */
    gw_config_free(c);
}

/* cluster.server_cache_ttl: a duration, and 0 (no cache) too */
static void server_cache_ttl(void)
{
    static const char head[] = "listen: [\"127.0.0.1:8443\"]\n"
                               "tls: {certificate: @D@/cert.pem, key: @D@/key.pem}\n"
                               "identity: {certificate: @D@/cert.pem, key: @D@/key.pem}\n"
                               "state_dir: @T@\n"
                               "cluster:\n"
                               "  members: [\"https://127.0.0.11:8443\"]\n"
                               "  certificate: @D@/cert.pem\n";
    char yaml[1024], *err;
    const struct {
        const char *value;
        uint64_t ms; /* UINT64_MAX: refused */
    } cases[] = {{"0", 0}, {"0s", 0}, {"1h", 3600000}, {"500ms", 500}, {"soon", UINT64_MAX}};
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        snprintf(yaml, sizeof(yaml), "%s  server_cache_ttl: %s\n", head, cases[i].value);
        gw_config_t *c = load(yaml, &err);
        if (cases[i].ms == UINT64_MAX) {
            CHECK(c == NULL && err_has(err, "cluster.server_cache_ttl", "line 8"));
            free(err);
        } else {
            CHECK(c != NULL && c->server_cache_ttl_ms == cases[i].ms);
            if (c != NULL)
                gw_config_free(c);
        }
    }
}

static void errors_name_key_and_line(void)
{
    char *err;
    CHECK(load(GOOD "bogus: 1\n", &err) == NULL && err_has(err, "bogus", "line 8"));
    free(err);
    CHECK(load(GOOD "tls2: {}\n", &err) == NULL && err_has(err, "tls2", "unknown key"));
    free(err);
    CHECK(load(GOOD "log: {level: loud}\n", &err) == NULL && err_has(err, "log.level", "line 8"));
    free(err);
    CHECK(load(GOOD "log: {colour: red}\n", &err) == NULL && err_has(err, "log.colour", "unknown key"));
    free(err);
    CHECK(load("listen: [\"nope\"]\n", &err) == NULL && err_has(err, "listen", "line 1"));
    free(err);
    CHECK(load("listen: [\"127.0.0.1:8443\"]\ntls: {certificate: /nonexistent/x.pem, key: @D@/key.pem}\n", &err) == NULL &&
          err_has(err, "tls.certificate", "/nonexistent/x.pem"));
    free(err);
    CHECK(load("listen: [\"127.0.0.1:8443\"]\n", &err) == NULL && err_has(err, "is required", NULL));
    free(err);
    CHECK(load(GOOD "limits: {max_request_body: lots}\n", &err) == NULL && err_has(err, "limits.max_request_body", "line 8"));
    free(err);
    CHECK(load("listen: [unclosed\n", &err) == NULL && err_has(err, "line", NULL));
    free(err);
    CHECK(load("cluster:\n  members: [\"http://127.0.0.11:8443\"]\n", &err) == NULL && err_has(err, "cluster.members", "line 2"));
    free(err);
}

static void peers(void)
{
    char *err;
    gw_config_t *c = load(GOOD "peers:\n  - {name: gw1, url: \"https://10.0.0.1:8443\"}\n"
                               "  - {name: gw2, url: \"https://10.0.0.2:8443\", certificate: @D@/cert.pem}\n",
                          &err);
    CHECK(c != NULL && c->num_peers == 2);
    if (c != NULL) {
        CHECK(strcmp(c->peers[0].name, "gw1") == 0 && strcmp(c->peers[0].url, "https://10.0.0.1:8443") == 0 &&
              c->peers[0].certificate == NULL);
        CHECK(c->peers[1].certificate != NULL && strstr(c->peers[1].certificate, "cert.pem") != NULL);
        gw_config_free(c);
    }
    CHECK(load(GOOD "peers:\n  - {name: gw1, url: \"https://10.0.0.1:8443\"}\n  - {name: gw1, url: \"https://10.0.0.2:8443\"}\n",
               &err) == NULL &&
          err_has(err, "peers.name", "listed twice"));
    free(err);
    CHECK(load(GOOD "peers:\n  - {name: gw1, url: \"http://10.0.0.1:8443\"}\n", &err) == NULL &&
          err_has(err, "peers.url", "line 9"));
    free(err);
    CHECK(load(GOOD "peers:\n  - {name: gw1}\n", &err) == NULL && err_has(err, "peers", "needs a name and a url"));
    free(err);
    CHECK(load(GOOD "peers:\n  - {name: gw1, url: \"https://10.0.0.1:8443\", weight: 2}\n", &err) == NULL &&
          err_has(err, "peers.weight", "unknown key"));
    free(err);
    CHECK(load(GOOD "peers: [\"https://10.0.0.1:8443\"]\n", &err) == NULL && err_has(err, "peers", "mapping"));
    free(err);
}

static void sizes_and_durations(void)
{
    uint64_t v;
    CHECK(gw_config_parse_size("1024", &v) == 0 && v == 1024);
    CHECK(gw_config_parse_size("4GiB", &v) == 0 && v == 4ULL << 30);
    CHECK(gw_config_parse_size("2GB", &v) == 0 && v == 2000000000ULL);
    CHECK(gw_config_parse_size("-1", &v) != 0);
    CHECK(gw_config_parse_size("12 parsecs", &v) != 0);
    CHECK(gw_config_parse_size("99999999999TiB", &v) != 0);
    CHECK(gw_config_parse_duration("30", &v) == 0 && v == 30000);
    CHECK(gw_config_parse_duration("500ms", &v) == 0 && v == 500);
    CHECK(gw_config_parse_duration("2m", &v) == 0 && v == 120000);
    CHECK(gw_config_parse_duration("1h", &v) == 0 && v == 3600000);
    CHECK(gw_config_parse_duration("soon", &v) != 0);
}

void test_config(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        CHECK(!"mkdtemp");
        return;
    }
    good_file();
    errors_name_key_and_line();
    server_cache_ttl();
    peers();
    sizes_and_durations();
    char path[512];
    snprintf(path, sizeof(path), "%s/conf.yaml", tmpdir);
    unlink(path);
    rmdir(tmpdir);
}
