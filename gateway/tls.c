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
#include <time.h>
#include <unistd.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <inttypes.h>
#include "metrics.h"
#include "text.h"
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
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA); /* (a client without AES hardware lists ChaCha20 first) */
    /* AES-128-GCM first, as LXD's own server chooses: it is half again as fast as AES-256-GCM here (3.2 against 2.1 GB/s
     * for 16 KiB records, `openssl speed`), and every byte of an upload or a relayed move is decrypted or encrypted on
     * this side. OpenSSL's default puts AES-256 first, and the server's order decides. */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AES128+AESGCM:ECDHE+AESGCM:ECDHE+CHACHA20") != 1 ||
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
        *err = "cannot set the TLS cipher suites";
        goto Error;
    }
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

/*
 * Member connections resume TLS sessions. h2o 2.2.5 looks a session up in the context's h2o cache (key "host:port")
 * before it connects, and stores the connection's session when its handshake ends; but with TLS 1.3 (LXD 5.0.2 speaks
 * nothing else) the session a server lets a client resume arrives after the handshake (NewSessionTicket), so the one
 * h2o stores cannot be resumed. OpenSSL hands each ticket's session to on_new_session, which puts it into the same
 * cache under h2o's key. The cache belongs to one SSL_CTX, which belongs to one identity: a session (which carries the
 * client certificate the member authenticated) is never resumed for another identity.
 */
#define SESSIONS_KEPT 256     /* sessions per identity at most: one per member or replica it talks to */
#define SESSION_TTL_MS 600000 /* a session no new connection renewed within 10 min is dropped */

static h2o_socket_t *socket_of(SSL *ossl);

static int on_new_session(SSL *ossl, SSL_SESSION *session)
{
    h2o_socket_t *sock = socket_of(ossl);
    h2o_cache_t *cache = h2o_socket_ssl_get_session_cache(SSL_get_SSL_CTX(ossl));
    const char *host = SSL_get_servername(ossl, TLSEXT_NAMETYPE_host_name);
    struct sockaddr_storage sa;
    int32_t port;
    if (sock == NULL || cache == NULL || host == NULL || h2o_socket_getpeername(sock, (struct sockaddr *)&sa) == 0 ||
        (port = h2o_socket_getport((struct sockaddr *)&sa)) == -1)
        return 0;                                                  /* not kept: the next connection has a full handshake */
    char *key = gw_text_dupf("%s:%" PRIu16, host, (uint16_t)port); /* h2o's key (lib/common/socket.c) */
    h2o_cache_set(cache, h2o_now(h2o_socket_get_loop(sock)), h2o_iovec_init(key, strlen(key)), 0, h2o_iovec_init(session, 1));
    free(key);
    return 1; /* the cache holds the reference now */
}

static int counted_ex_index = -1; /* set on an SSL whose handshake was counted */

static void on_info(const SSL *ossl, int where, int ret)
{
    (void)ret;
    /* TLS 1.3 reports HANDSHAKE_DONE again after each post-handshake message (a session ticket): count the first */
    if ((where & SSL_CB_HANDSHAKE_DONE) == 0 || SSL_get_ex_data(ossl, counted_ex_index) != NULL)
        return;
    SSL_set_ex_data((SSL *)ossl, counted_ex_index, (void *)1);
    gw_metrics_member_handshake(SSL_session_reused((SSL *)ossl));
}

void gw_tls_count_handshakes(SSL_CTX *ctx)
{
    if (counted_ex_index < 0)
        counted_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX_set_info_callback(ctx, on_info);
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
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    h2o_socket_ssl_set_session_cache(
        ctx, h2o_cache_create(0, SESSIONS_KEPT, SESSION_TTL_MS, h2o_socket_ssl_destroy_session_cache_entry));
    gw_tls_count_handshakes(ctx);
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

const gw_tls_peer_t *gw_tls_peer(h2o_req_t *req)
{
    return gw_tls_socket_peer(req->conn->callbacks->get_socket != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL);
}

static int peer_ex_index = -1; /* the gw_tls_peer_t of a client connection's SSL */

static void free_peer(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    gw_tls_peer_t *peer = ptr;
    if (peer != NULL) {
        X509_free(peer->cert);
        free(peer);
    }
}

/* an ASN1 time as seconds since the epoch; `dflt` when it cannot be read */
static int64_t epoch_of(const ASN1_TIME *t, int64_t dflt)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return dflt;
    return (int64_t)timegm(&tm);
}

/* the h2o socket of `ossl` (its BIO's data), checked through the same prefix the other way round; or NULL */
static h2o_socket_t *socket_of(SSL *ossl)
{
    BIO *bio = SSL_get_rbio(ossl);
    h2o_socket_t *sock = bio != NULL ? BIO_get_data(bio) : NULL;
    if (sock == NULL || sock->ssl == NULL || ((struct st_h2o_2_2_socket_ssl_prefix_t *)sock->ssl)->ossl != ossl)
        return NULL;
    return sock;
}

const gw_tls_peer_t *gw_tls_socket_peer(h2o_socket_t *sock)
{
    if (sock == NULL || sock->ssl == NULL)
        return NULL;
    SSL *ossl = ((struct st_h2o_2_2_socket_ssl_prefix_t *)sock->ssl)->ossl;
    if (ossl == NULL || socket_of(ossl) != sock)
        return NULL;
    if (peer_ex_index < 0)
        peer_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_peer);
    gw_tls_peer_t *peer = SSL_get_ex_data(ossl, peer_ex_index);
    if (peer != NULL)
        return peer;
    X509 *cert = SSL_get_peer_certificate(ossl); /* a new reference: the kept copy's */
    if (cert == NULL)
        return NULL; /* none (asked again on the next request: a rare, cheap case) */
    peer = calloc(1, sizeof(*peer));
    peer->cert = cert;
    gw_tls_fingerprint(cert, peer->fingerprint);
    /* an unreadable bound makes the period empty: never valid (as X509_cmp_current_time's error is) */
    peer->not_before = epoch_of(X509_get0_notBefore(cert), INT64_MAX);
    peer->not_after = epoch_of(X509_get0_notAfter(cert), INT64_MIN);
    if (SSL_set_ex_data(ossl, peer_ex_index, peer) != 1) {
        free_peer(NULL, peer, NULL, 0, 0, NULL);
        return NULL; /* fails closed: no certificate = untrusted */
    }
    return peer;
}

/* key pairs: ECDSA P-256, self-signed. LXD makes P-384 keys; a P-384 signature costs ~1.6 ms of CPU against ~0.04 ms
 * for P-256 (`openssl speed ecdsap256 ecdsap384`), and the gateway signs once per full handshake on each side: with
 * its server key for every client that connects, with its identity keys for every new member connection */
static EVP_PKEY *new_key(void)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    EVP_PKEY_keygen_init(kctx);
    EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1);
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
    X509_sign(cert, key, EVP_sha256());
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
