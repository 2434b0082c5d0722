/*
 * test_members.c: gw_members_lack_extension, answered from a copy kept between member changes, gives the answer
 * computed from the member list after every kind of change (a probe's extensions, health, presence, a new member).
 * members.c is included for its static callbacks (the unit binary links without members.o).
 */
#include "../../gateway/members.c"
#include "unit.h"

#define EXT "cluster_internal_custom_volume_copy"

/* the kept answer, checked against one computed afresh */
static int lack(const char *name)
{
    int kept = gw_members_lack_extension(name);
    CHECK(kept == lack_compute(name));
    return kept;
}

static void probe_answers(gw_member_t *m, const char *extensions_json)
{
    json_t *answer = json_pack("{s:{s:o}}", "metadata", "api_extensions", json_loads(extensions_json, 0, NULL));
    on_probe(m, NULL, 200, answer, NULL);
    json_decref(answer);
}

static void discovery_lists(const char *members_json)
{
    json_t *answer = json_pack("{s:o}", "metadata", json_loads(members_json, 0, NULL));
    on_discovery(NULL, NULL, 200, answer, NULL);
    json_decref(answer);
}

void test_members(void)
{
    static h2o_context_t ctx;
    ctx.loop = h2o_evloop_create();
    M.ctx = &ctx;
    gw_member_t *a = add("https://127.0.0.1:1", "a"), *b = add("https://127.0.0.1:2", "b"), *c = add("https://127.0.0.1:3", "c");
    CHECK(a != NULL && b != NULL && c != NULL);
    if (a == NULL || b == NULL || c == NULL)
        return;

    /* nothing known yet: claim nothing */
    CHECK(lack(EXT) == 0);
    probe_answers(a, "[\"x\", \"" EXT "\"]");
    probe_answers(b, "[\"x\"]");
    CHECK(lack(EXT) == 0); /* c, healthy, has not answered */
    CHECK(lack("x") == 0);
    probe_answers(c, "[\"x\", \"" EXT "\"]");
    CHECK(lack(EXT) == 1); /* b lacks it */
    CHECK(lack("x") == 0);
    CHECK(lack("y") == 1);

    /* b is upgraded: its next probe says so */
    probe_answers(b, "[\"x\", \"" EXT "\"]");
    CHECK(lack(EXT) == 0);
    probe_answers(b, "[\"x\"]");
    CHECK(lack(EXT) == 1);

    /* health: a member known to lack it still counts while down (its answer is known); one never heard of does not */
    set_healthy(b, 0, "test");
    CHECK(lack(EXT) == 1);
    gw_member_t *d = add("https://127.0.0.1:4", "d");
    CHECK(d != NULL);
    CHECK(lack(EXT) == 0); /* d healthy, not probed yet */
    set_healthy(d, 0, "test");
    CHECK(lack(EXT) == 1); /* d dead and unknown: does not decide */
    set_healthy(d, 1, "test");
    CHECK(lack(EXT) == 0);

    /* presence: the cluster no longer lists b and d */
    discovery_lists("[{\"url\": \"https://127.0.0.1:1\", \"server_name\": \"a\", \"status\": \"Online\"},"
                    " {\"url\": \"https://127.0.0.1:3\", \"server_name\": \"c\", \"status\": \"Online\"}]");
    CHECK(lack(EXT) == 0);
    CHECK(!b->present && !d->present);
    discovery_lists("[{\"url\": \"https://127.0.0.1:1\", \"server_name\": \"a\", \"status\": \"Online\"},"
                    " {\"url\": \"https://127.0.0.1:2\", \"server_name\": \"b\", \"status\": \"Online\"},"
                    " {\"url\": \"https://127.0.0.1:3\", \"server_name\": \"c\", \"status\": \"Online\"}]");
    CHECK(lack(EXT) == 1);

    /* many names: the kept copy stays bounded, answers stay right */
    char name[32];
    for (int i = 0; i != 3 * LACK_KEPT; ++i) {
        snprintf(name, sizeof(name), "ext-%d", i);
        CHECK(lack(name) == 1);
    }
    CHECK(M.lack.num <= LACK_KEPT);
    CHECK(lack("x") == 0);
}
