/*
 * fuzz_peer_json.c: operation messages (gateway/peers.c, operations.c and oplist.c included for their static callbacks). The
 * first input byte picks, the rest is JSON:
 *   0 an event on a peer's feed (peers.c on_feed_message: mirrored into the operation list, published to streams)
 *   1 a peer's answer to GET /lxd-gateway/peer (peers.c on_probe)
 *   2 the cluster's GET /1.0/operations answer, merged with this replica's and the mirrored operations
 *     (oplist.c merge, ?recursion=1), after the peer went down (gw_ops_mirror_fail)
 * Contract: no crash, no leak; only the peer's own operations are mirrored (ids that start with its tag).
 */
#include <stdio.h>
#include <unistd.h>
#include "fuzz_req.h"
#include "fuzz_backend.h"
#include "wsclient.h"

/* a peer's feed is not opened here */
static gw_wsclient_t *fuzz_ws_open_url(const char *url, const gw_identity_t *id, const char *path, const gw_wsclient_cbs_t *cbs,
                                       void *data)
{
    (void)url, (void)id, (void)path, (void)cbs, (void)data;
    return NULL;
}
#define gw_wsclient_open_url fuzz_ws_open_url
#include "../../gateway/peers.c"
#undef gw_wsclient_open_url
#include "../../gateway/operations.c"
#include "../../gateway/oplist.c"

static h2o_context_t ctx;
static peer_t peer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx.loop = h2o_evloop_create();
    gw_ops_init(&ctx, "0123abcd");
    static gw_config_t conf;
    gw_peers_init(&ctx, &conf, "");
    peer.name = "gw2", peer.url = "https://10.0.0.9:8443";
    memcpy(peer.tag, "89abcdef", 9);
    h2o_linklist_init_anchor(&peer.forwards);
    P.peers = &peer, P.num = 1;
    /* peers.c writes the tags file atomically (a temporary file renamed over it): never a path that is not ours
     * (it was /dev/null once, and every fuzz run replaced the machine's /dev/null with a regular file) */
    static char tags[64];
    snprintf(tags, sizeof(tags), "/tmp/fuzz_peer_json.%d.tags", (int)getpid());
    P.tags_file = tags;
    gw_op_start("Moving storage volume", "default", "m1", NULL, NULL, NULL);
    return 0;
}

/* drops every mirrored operation (they would be dropped GW_OP_KEEP_MS after their end) */
static void drop_mirrors(void)
{
    while (!h2o_linklist_is_empty(&O.mirrored)) {
        mirror_t *m = H2O_STRUCT_FROM_MEMBER(mirror_t, link, O.mirrored.next);
        if (h2o_timeout_is_linked(&m->drop))
            h2o_timeout_unlink(&m->drop);
        on_mirror_drop(&m->drop);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_t *json = json_loadb((const char *)data + 1, size - 1, 0, NULL);
    switch (data[0] % 3) {
    case 0:
        peer.up = 1;
        on_feed_message(NULL, &peer, data + 1, size - 1);
        for (h2o_linklist_t *l = O.mirrored.next; l != &O.mirrored; l = l->next)
            FUZZ_CHECK(memcmp(H2O_STRUCT_FROM_MEMBER(mirror_t, link, l)->id, peer.tag, 8) == 0, "mirrored another's operation");
        break;
    case 1:
        on_probe(&peer, NULL, 200, json, NULL);
        peer.self = 0, peer.feed = NULL;
        memcpy(peer.tag, "89abcdef", 9);
        h2o_linklist_init_anchor(&peer.forwards);
        break;
    case 2: {
        json_t *ev = json_pack("{s:s, s:{s:s, s:s, s:i, s:s}}", "project", "default", "metadata", "id",
                               "89abcdef-0000-4000-8000-000000000001", "status", "Running", "status_code", 103, "location", "m1");
        char *text = json_dumps(ev, 0);
        on_feed_message(NULL, &peer, (const uint8_t *)text, strlen(text));
        free(text);
        json_decref(ev);
        peer.up = 1;
        peer_down(&peer, "fuzz: gone");
        if (json != NULL) {
            fuzz_req_t f;
            fuzz_req_init(&f, H2O_STRLIT("GET"), H2O_STRLIT("/1.0/operations?recursion=1&all-projects=true"));
            merge(&f.req, json, 200, &f.caller);
            char *out = json_dumps(json, 0);
            FUZZ_CHECK(out != NULL, "the merged list cannot be written");
            free(out);
            fuzz_req_dispose(&f);
        }
        break;
    }
    }
    drop_mirrors();
    fuzz_backend_answer_all("fuzz: no answer", 0, NULL);
    json_decref(json);
    return 0;
}
