/*
 * tls.h: TLS on both sides of the gateway.
 *
 * Client side: the gateway terminates TLS, asks for (does not require) a client certificate, and computes its
 * fingerprint as LXD does (SHA-256 over the DER, lower-case hex). Member side: every connection pins the cluster
 * certificate (members are addressed by IP, and h2o's name check cannot be relied on for IPs), and presents the
 * client certificate of the identity chosen for the request, or none.
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <h2o.h>

#define GW_FINGERPRINT_LEN 64 /* hex characters of a SHA-256 */

/* server context: TLS 1.2+, modern ciphers, ALPN h2 + http/1.1, optional client certificate */
SSL_CTX *gw_tls_server_ctx(const char *cert_file, const char *key_file, const char **err);
/* member-side context pinned to `cluster_cert`; cert_file/key_file NULL = connect without a client certificate */
SSL_CTX *gw_tls_backend_ctx(X509 *cluster_cert, const char *cert_file, const char *key_file, const char **err);
/* counts the handshakes of connections made with `ctx` in lxd_gateway_member_tls_handshakes_total (resumed or full);
 * gw_tls_backend_ctx's contexts already count theirs (libcurl's are given this through CURLOPT_SSL_CTX_FUNCTION) */
void gw_tls_count_handshakes(SSL_CTX *ctx);
/* reads the first certificate of a PEM file */
X509 *gw_tls_read_cert(const char *file, const char **err);
/* the certificate of `file` as PEM text (what LXD's API carries), malloc'd; NULL and *err on error */
char *gw_tls_cert_pem(const char *file, const char **err);
/* LXD's fingerprint of `cert` into out (NUL-terminated) */
void gw_tls_fingerprint(X509 *cert, char out[GW_FINGERPRINT_LEN + 1]);
/* LXD's fingerprint of the first certificate of PEM file `file` into out; returns NULL or an error */
const char *gw_tls_file_fingerprint(const char *file, char out[GW_FINGERPRINT_LEN + 1]);
/* curl's pin string for `cert`: "sha256//<base64 of the SPKI digest>" (malloc'd) */
char *gw_tls_curl_pin(X509 *cert);
/* writes a new ECDSA P-256 key (mode 0600) and a self-signed 10-year certificate for it; san may be NULL;
 * server=1 marks it for server use, else client use. Returns NULL or an error. */
const char *gw_tls_write_pair(const char *crt_file, const char *key_file, const char *cn, const char *san, int server);
/* what the gateway knows of the certificate a client presented on its connection: worked out once per connection (on
 * first use) and kept with it (SSL ex_data, freed with the connection). The certificate cannot change during a
 * connection: renegotiation is refused (SSL_OP_NO_RENEGOTIATION here, and h2o 2.2.5 closes a connection on which the
 * peer starts one: lib/common/socket.c, "ssl renegotiation not supported"), and TLS 1.3 post-handshake authentication
 * is never asked for. An HTTP/2 connection carries many requests: each reads this copy. */
typedef struct st_gw_tls_peer_t {
    X509 *cert;                               /* the client's certificate (the connection holds this reference) */
    char fingerprint[GW_FINGERPRINT_LEN + 1]; /* LXD's fingerprint of it */
    int64_t not_before;                       /* its validity period, seconds since the epoch (UTC): valid from */
    int64_t not_after;                        /* ... until before this; not_after <= not_before when unreadable */
} gw_tls_peer_t;
/* the certificate the client presented on this request's connection (valid while the connection lives), or NULL */
const gw_tls_peer_t *gw_tls_peer(h2o_req_t *req);
/* the same for a TLS socket whose handshake has ended */
const gw_tls_peer_t *gw_tls_socket_peer(h2o_socket_t *sock);

#endif
