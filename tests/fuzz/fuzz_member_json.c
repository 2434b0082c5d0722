/*
 * fuzz_member_json.c: what the gateway parses of members' JSON answers, through the callbacks that receive them
 * (gateway/trust.c, members.c and enroll.c are included for their static callbacks; calls to members are
 * fuzz_backend.h's). The first input byte picks the answer, the rest is its JSON:
 *   0 the trust store (GET /1.0/certificates?recursion=1: trust.c on_certificates), then a lookup in it
 *   1 a member's GET /1.0 probe (members.c on_probe), then the extension check
 *   2 the member list (GET /1.0/cluster/members?recursion=1: members.c on_discovery)
 *   3 the token operations searched when a trust token is redeemed (enroll.c on_operations), and token rewriting
 *   4 an LXD event, as the events stream hands it to trust.c (on_event)
 * Contract: no crash, no leak; an answer never makes an untrusted fingerprint trusted by accident (lookup of one the
 * answer does not list stays untrusted); the kept answer of gw_members_lack_extension is the one the member list gives.
 */
#include <netdb.h>
#include "fuzz_req.h"
#include "fuzz_backend.h"
#include "tokens.h"

/* member addresses are resolved without asking DNS */
static int fuzz_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    struct addrinfo h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return getaddrinfo(node, service, &h, res);
}
#define getaddrinfo fuzz_getaddrinfo
#define on_tick members_on_tick
#include "../../gateway/members.c"
#undef on_tick
#undef getaddrinfo
#define on_tick trust_on_tick
#include "../../gateway/trust.c"
#undef on_tick
#include "../../gateway/enroll.c"

#define EXT "cluster_internal_custom_volume_copy"

static h2o_context_t ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx.loop = h2o_evloop_create();
    M.ctx = T.ctx = &ctx;
    static gw_config_t conf;
    conf.listen[0] = "127.0.0.1:8443";
    conf.num_listen = 1;
    gw_tokens_init(&conf, "fp");
    return 0;
}

/* forgets the members an answer added (members are never freed by the gateway itself) */
static void drop_members(void)
{
    for (size_t i = 0; i != M.num; ++i) {
        gw_member_t *m = M.list[i];
        free(m->name), free(m->url), free(m->authority.base);
        json_decref(m->extensions);
        free(m);
    }
    M.num = 0;
    M.discovery = NULL;
    members_changed();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_t *json = json_loadb((const char *)data + 1, size - 1, 0, NULL);
    switch (data[0] % 5) {
    case 0: {
        /* the mirror starts empty for each input: a failed read keeps the last copy (by design), which would carry an
         * earlier input's entries into this one's check */
        free_entries(T.entries, T.num);
        T.entries = NULL, T.num = 0;
        on_certificates(NULL, NULL, 200, json, NULL);
        fuzz_req_t f;
        fuzz_req_init(&f, H2O_STRLIT("GET"), H2O_STRLIT("/1.0"));
        gw_caller_t caller = {{0}};
        gw_trust_lookup(&f.req, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff0000", &caller);
        if (memmem(data, size, "ffff0000", 8) == NULL)
            FUZZ_CHECK(caller.kind == GW_TRUST_NONE, "an unlisted fingerprint is trusted");
        fuzz_req_dispose(&f);
        break;
    }
    case 1: {
        if (M.num == 0 && add("https://127.0.0.1:9", "m1") == NULL)
            abort();
        on_probe(M.list[0], NULL, 200, json, NULL);
        FUZZ_CHECK(gw_members_lack_extension(EXT) == lack_compute(EXT), "the kept extension answer is stale");
        drop_members();
        break;
    }
    case 2:
        on_discovery(NULL, NULL, 200, json, NULL);
        fuzz_backend_answer_all("fuzz: no answer", 0, NULL); /* the probes of new members */
        FUZZ_CHECK(gw_members_lack_extension(EXT) == lack_compute(EXT), "the kept extension answer is stale");
        drop_members();
        break;
    case 3: {
        enroll_t *e = calloc(1, sizeof(*e));
        e->secret = strdup("s3cr3t");
        e->cert_b64 = strdup("MIIB");
        on_answer(e, NULL, 200, json,
                  NULL); /* (EN_FIND_TOKEN) ends with a refusal (its hold holds nothing) or a DELETE, answered below */
        fuzz_backend_answer_all("fuzz: no answer", 0, NULL);
        if (json != NULL)
            gw_tokens_rewrite(json);
        break;
    }
    case 4:
        if (json != NULL)
            on_event(json);
        fuzz_backend_answer_all("fuzz: no answer", 0, NULL);
        break;
    }
    json_decref(json);
    return 0;
}
