/*
 * tls.c: see tls.h.
 */
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "tls.h"

static int pin_ex_index = -1;

static int accept_any_client_cert(int preverify_ok, X509_STORE_CTX *store)
{
    (void)preverify_ok, (void)store;
    return 1; /* who the caller is gets decided from the fingerprint, against the cluster's trust store */
}

SSL_CTX *gw_tls_server_ctx(const char *cert_file, const char *key_file, const char **err)
{
    static const unsigned char sid_ctx[] = "lxd-gateway";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        *err = "cannot load the server certificate (tls.certificate)";
        goto Error;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        *err = "cannot load the server key, or it does not match the certificate (tls.key)";
        goto Error;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_client_cert);
    /* without a session id context, every resumed session with a client certificate fails the handshake */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;
Error:
    SSL_CTX_free(ctx);
    return NULL;
}

/* accepts the member only if it shows exactly the pinned cluster certificate */
static int verify_pinned(int preverify_ok, X509_STORE_CTX *store)
{
    (void)preverify_ok;
    if (X509_STORE_CTX_get_error_depth(store) != 0)
        return 1; /* the leaf decides; the cluster certificate is self-signed */
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *pinned = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), pin_ex_index);
    X509 *peer = X509_STORE_CTX_get_current_cert(store);
    if (pinned == NULL || peer == NULL || X509_cmp(pinned, peer) != 0)
        return 0;
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
}

SSL_CTX *gw_tls_backend_ctx(X509 *cluster_cert, const char *cert_file, const char *key_file, const char **err)
{
    if (pin_ex_index < 0)
        pin_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            *err = "cannot load the client identity certificate/key";
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    X509_up_ref(cluster_cert);
    SSL_CTX_set_ex_data(ctx, pin_ex_index, cluster_cert);
    /* not SSL_VERIFY_PEER: h2o would then check the host name, which fails for IP addresses; OpenSSL still runs the
     * verify callback for any non-zero mode, and the callback pins */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_pinned);
    return ctx;
}

X509 *gw_tls_read_cert(const char *file, const char **err)
{
    FILE *fp = fopen(file, "r");
    if (fp == NULL) {
        *err = "cannot open certificate file";
        return NULL;
    }
    X509 *cert = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    if (cert == NULL)
        *err = "not a PEM certificate";
    return cert;
}

void gw_tls_fingerprint(X509 *cert, char out[GW_FINGERPRINT_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    X509_digest(cert, EVP_sha256(), md, &len);
    for (unsigned i = 0; i != len; ++i)
        sprintf(out + i * 2, "%02x", md[i]);
    out[len * 2] = '\0';
}

const char *gw_tls_file_fingerprint(const char *file, char out[GW_FINGERPRINT_LEN + 1])
{
    const char *err = NULL;
    X509 *cert = gw_tls_read_cert(file, &err);
    if (cert == NULL)
        return err;
    gw_tls_fingerprint(cert, out);
    X509_free(cert);
    return NULL;
}

char *gw_tls_curl_pin(X509 *cert)
{
    unsigned char *der = NULL, md[32], b64[64];
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    SHA256(der, len, md);
    OPENSSL_free(der);
    EVP_EncodeBlock(b64, md, sizeof(md));
    char *pin = malloc(sizeof("sha256//") + sizeof(b64));
    sprintf(pin, "sha256//%s", b64);
    return pin;
}

/*
 * h2o 2.2.5 has no accessor for the peer certificate. Its private `struct st_h2o_socket_ssl_t` begins with
 * { SSL_CTX *ssl_ctx; SSL *ossl; }: reach `ossl` through that prefix, and check at run time that the SSL found is
 * the one bound to this socket (its BIO's data is the h2o socket), so a layout change fails closed (no certificate
 * = untrusted) instead of reading garbage.
 */
#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2
#error "gw_tls_peer_cert reaches into h2o 2.2's private socket layout; check it against this h2o version"
#endif
struct st_h2o_2_2_socket_ssl_prefix_t {
    SSL_CTX *ssl_ctx;
    SSL *ossl;
};

X509 *gw_tls_peer_cert(h2o_req_t *req)
{
    return gw_tls_socket_peer_cert(req->conn->callbacks->get_socket != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL);
}

X509 *gw_tls_socket_peer_cert(h2o_socket_t *sock)
{
    if (sock == NULL || sock->ssl == NULL)
        return NULL;
    SSL *ossl = ((struct st_h2o_2_2_socket_ssl_prefix_t *)sock->ssl)->ossl;
    if (ossl == NULL || BIO_get_data(SSL_get_rbio(ossl)) != sock)
        return NULL;
    return SSL_get_peer_certificate(ossl);
}

/* key pairs: ECDSA P-384, self-signed, as LXD makes its own */
static EVP_PKEY *new_key(void)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    EVP_PKEY_keygen_init(kctx);
    EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_secp384r1);
    EVP_PKEY_keygen(kctx, &key);
    EVP_PKEY_CTX_free(kctx);
    return key;
}

static void add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

/* a self-signed certificate valid for 10 years, as LXD makes */
static X509 *new_cert(EVP_PKEY *key, const char *cn, const char *san, int server)
{
    X509 *cert = X509_new();
    X509_set_version(cert, 2);
    unsigned char serial[16];
    FILE *r = fopen("/dev/urandom", "r");
    if (r == NULL || fread(serial, 1, sizeof(serial), r) != sizeof(serial))
        memset(serial, 0x5a, sizeof(serial));
    if (r != NULL)
        fclose(r);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"lxd-gateway", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert, name);
    add_ext(cert, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert, NID_key_usage, "critical,digitalSignature,keyEncipherment");
    add_ext(cert, NID_ext_key_usage, server ? "serverAuth" : "clientAuth");
    if (san != NULL)
        add_ext(cert, NID_subject_alt_name, san);
    X509_sign(cert, key, EVP_sha384());
    return cert;
}

/* writes `obj` with `write` to `file` atomically: a temporary file beside it, flushed and fsync'd, then renamed over
 * it; a failed write (a full disk) leaves no partial file. Returns 0 or -1 */
static int write_atomically(const char *file, mode_t mode, int (*write)(FILE *fp, void *obj), void *obj)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", file) < 0)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode), ok = 0;
    FILE *fp = fd != -1 ? fdopen(fd, "w") : NULL;
    if (fp != NULL) {
        ok = write(fp, obj) == 1 && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
        ok = fclose(fp) == 0 && ok;
    } else if (fd != -1) {
        close(fd);
    }
    ok = ok && rename(tmp, file) == 0;
    if (!ok)
        unlink(tmp);
    free(tmp);
    return ok ? 0 : -1;
}

static int write_key(FILE *fp, void *key)
{
    return PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
}

static int write_cert(FILE *fp, void *cert)
{
    return PEM_write_X509(fp, cert);
}

const char *gw_tls_write_pair(const char *crt, const char *key, const char *cn, const char *san, int server)
{
    EVP_PKEY *pkey = new_key();
    X509 *cert = new_cert(pkey, cn, san, server);
    /* the key first: a certificate on disk always has its key */
    int ok = write_atomically(key, 0600, write_key, pkey) == 0 && write_atomically(crt, 0644, write_cert, cert) == 0;
    X509_free(cert);
    EVP_PKEY_free(pkey);
    return ok ? NULL : "cannot write the key pair";
}

char *gw_tls_cert_pem(const char *file, const char **err)
{
    X509 *cert = gw_tls_read_cert(file, err);
    if (cert == NULL)
        return NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *pem = NULL;
    if (PEM_write_bio_X509(bio, cert) == 1) {
        long len = BIO_get_mem_data(bio, &data);
        pem = strndup(data, len);
    } else {
        *err = "cannot write the certificate as PEM";
    }
    BIO_free(bio);
    X509_free(cert);
    return pem;
}
