/*
 * fuzz_body.c: the bodies the plugins and the enrolment read, through their real entry points (fuzz_req.h format;
 * method, path and caller as given). volume_copy and volume_move: `claims`, then `handle` when claimed (with no
 * member: "https://127.0.0.1:9", named by its URL until discovery names it; every call to it fails). POST
 * /1.0/certificates (gw_enroll_handle): the caller's certificate put into the body, a trust token's secret decoded.
 * Contract: a claimed request is answered once, in LXD's envelope when it is an error.
 */
#include <openssl/pem.h>
#include "fuzz_req.h"
#include "fuzz_backend.h"
#include "enroll.h"
#include "members.h"
#include "plugin.h"

extern const gw_plugin_t gw_plugin_volume_copy, gw_plugin_volume_move;
static X509 *cert; /* a client certificate, for callers that present one */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(cert));
    X509_set_pubkey(cert, key);
    X509_sign(cert, key, EVP_sha256());
    EVP_PKEY_free(key);
    /* one member, probed once (healthy, without the extension) */
    static h2o_context_t ctx;
    static gw_config_t conf;
    ctx.loop = h2o_evloop_create();
    conf.members[0] = "https://127.0.0.1:9";
    conf.num_members = 1;
    conf.health_interval_ms = 1000;
    if (gw_members_init(&ctx, &conf) != NULL)
        abort();
    json_t *probe = json_pack("{s:{s:[]}}", "metadata", "api_extensions");
    fuzz_backend_answer_all(NULL, 200, probe);
    json_decref(probe);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const gw_plugin_t *plugins[] = {&gw_plugin_volume_copy, &gw_plugin_volume_move};
    for (size_t i = 0; i != 2; ++i) {
        fuzz_req_t f;
        fuzz_req_parse(&f, data, size);
        f.caller.identity = &gw_identities[GW_IDENTITY_GATEWAY];
        if (plugins[i]->claims(&f.req, &f.caller)) {
            plugins[i]->handle(&f.req, &f.caller);
            fuzz_backend_answer_all("fuzz: the member does not answer", 0, NULL);
            fuzz_req_check_answered(&f, plugins[i]->name);
        }
        fuzz_req_dispose(&f);
    }
    fuzz_req_t f;
    fuzz_req_parse(&f, data, size);
    f.caller.identity = &gw_identities[GW_IDENTITY_GATEWAY];
    f.caller.cert = cert; /* an untrusted caller with a certificate: its token is read */
    gw_path_t path;
    gw_path_parse(&f.req, &path); /* (as the route table asks it: POST /1.0/certificates) */
    if (path.kind == GW_PATH_CERTIFICATES && h2o_memis(f.req.method.base, f.req.method.len, H2O_STRLIT("POST")) &&
        gw_enroll_handle(&f.req, &f.caller, &path)) {
        fuzz_backend_answer_all("fuzz: the member does not answer", 0, NULL);
        fuzz_req_check_answered(&f, "gw_enroll_handle");
    }
    fuzz_req_dispose(&f);
    return 0;
}
