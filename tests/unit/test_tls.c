/*
 * test_tls.c: fingerprints as LXD computes them (checked against openssl's own output, recorded in data/).
 */
#include <stdlib.h>
#include <string.h>
#include "tls.h"
#include "unit.h"

static char *read_line(const char *name)
{
    char path[512], buf[256];
    snprintf(path, sizeof(path), "%s/%s", unit_data_dir, name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL || fgets(buf, sizeof(buf), fp) == NULL) {
        if (fp)
            fclose(fp);
        return NULL;
    }
    fclose(fp);
    buf[strcspn(buf, "\n")] = '\0';
    return strdup(buf);
}

void test_tls(void)
{
    char path[512], fp[GW_FINGERPRINT_LEN + 1];
    const char *err = NULL;
    snprintf(path, sizeof(path), "%s/cert.pem", unit_data_dir);
    X509 *cert = gw_tls_read_cert(path, &err);
    CHECK(cert != NULL);
    if (cert == NULL)
        return;
    gw_tls_fingerprint(cert, fp);
    char *want = read_line("cert.sha256");
    CHECK(want != NULL && strcmp(fp, want) == 0);
    char *pin = gw_tls_curl_pin(cert), *want_pin = read_line("cert.pin");
    CHECK(want_pin != NULL && strcmp(pin, want_pin) == 0);
    free(pin), free(want), free(want_pin);

    /* a pinned backend context accepts its pair, refuses a key that does not match */
    char key[512];
    snprintf(key, sizeof(key), "%s/key.pem", unit_data_dir);
    SSL_CTX *ctx = gw_tls_backend_ctx(cert, path, key, &err);
    CHECK(ctx != NULL);
    SSL_CTX_free(ctx);
    snprintf(key, sizeof(key), "%s/other-key.pem", unit_data_dir);
    CHECK(gw_tls_backend_ctx(cert, path, key, &err) == NULL && err != NULL);
    CHECK(gw_tls_read_cert("/nonexistent", &err) == NULL);
    X509_free(cert);
}
