/*
 * test_volumes_all.c: the merge of per-pool volume lists (recorded from LXD 5.0.2, tests/unit/data/volumes_all_*.json)
 * and the reading of `filter=` (volume_filter.h): which clauses on `pool` become what, for each pool.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "text.h"
#include "unit.h"
#include "volume_filter.h"
#include "volumes_all.h"

static json_t *load(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", unit_data_dir, name);
    json_t *j = json_load_file(path, 0, NULL);
    json_t *meta = json_incref(json_object_get(j, "metadata"));
    json_decref(j);
    return meta;
}

/* the filter a member gets for `pool`, compared with `want` */
static int for_pool(const char *filter, const char *pool, const char *want)
{
    int status = 0;
    char *msg = NULL, *got;
    gw_vfilter_t *f = gw_vfilter_parse(filter, &status, &msg);
    if (f == NULL) {
        fprintf(stderr, "  %s: %d %s\n", filter, status, msg);
        free(msg);
        return 0;
    }
    got = gw_vfilter_for_pool(f, pool);
    int ok = strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "  %s for %s: \"%s\", not \"%s\"\n", filter, pool, got, want);
    free(got);
    gw_vfilter_free(f);
    return ok;
}

/* the status and message of a filter the gateway refuses */
static int refused(const char *filter, int want_status, const char *want_msg)
{
    int status = 0;
    char *msg = NULL;
    gw_vfilter_t *f = gw_vfilter_parse(filter, &status, &msg);
    int ok = f == NULL && status == want_status && (want_msg == NULL || strcmp(msg, want_msg) == 0);
    gw_vfilter_free(f);
    free(msg);
    return ok;
}

static void test_filter(void)
{
    /* no clause on pool: as it came (re-joined by single spaces, as LXD reads it anyway) */
    CHECK(for_pool("name eq va", "p1", "name eq va"));
    CHECK(for_pool("  description  eq \"a   b\"\tand name ne x", "p1", "description eq \"a b\" and name ne x"));
    /* a clause on pool becomes one 5.0.2 always decides the same way */
    CHECK(for_pool("pool eq p1", "p1", "pool ne _"));
    CHECK(for_pool("pool eq p1", "p2", "pool eq _"));
    CHECK(for_pool("pool ne p1", "p1", "pool eq _"));
    CHECK(for_pool("NOT pool eq p1", "p1", "pool eq _"));
    CHECK(for_pool("not pool ne p1", "p1", "pool ne _"));
    CHECK(for_pool("pool eq P1", "p1", "pool ne _"));  /* without case */
    CHECK(for_pool("pool eq p.", "p9", "pool ne _"));  /* any one character */
    CHECK(for_pool("pool eq p.", "p10", "pool eq _")); /* anchored */
    CHECK(for_pool("pool eq p", "p1", "pool eq _"));
    CHECK(for_pool("pool eq \"my pool\" or name eq x", "my pool", "pool ne _ or name eq x"));
    CHECK(for_pool("name eq \"a b\" and pool eq p2 or not location eq node1", "p2",
                   "name eq \"a b\" and pool ne _ or not location eq node1"));
    CHECK(for_pool("pool eq é", "É", "pool eq _"));  /* beyond ASCII: exact (narrower than Go's folding) */
    CHECK(for_pool("pool eq ..", "é", "pool eq _")); /* "." is a character, not a byte */
    CHECK(for_pool("pool eq p.l", "pöl", "pool ne _"));
    CHECK(for_pool("pool\xc2\xa0"
                   "eq\xe3\x80\x80p1",
                   "p1", "pool ne _")); /* Go's white space beyond ASCII */
    /* LXD 5.0.2's errors, in its order */
    CHECK(refused("not", 500, "Invalid filter: incomplete not clause"));
    CHECK(refused("name", 500, "Invalid filter: clause has no operator"));
    CHECK(refused("name eq", 500, "Invalid filter: clause has no value"));
    CHECK(refused("name eq \"a b", 500, "Invalid filter: unterminated quote"));
    CHECK(refused("name eq a xor b", 500, "Invalid filter: invalid clause composition"));
    CHECK(refused("name eq a and", 500, "Invalid filter: unterminated compound clause"));
    /* a pattern, as LXD 6.1's shared/filter reads it: "(?i)" + the value, "^...$" around it unless it holds ^ or $ */
    CHECK(for_pool("pool eq p[12]", "p1", "pool ne _") && for_pool("pool eq p[12]", "p3", "pool eq _"));
    CHECK(for_pool("pool eq p.*", "pool2", "pool ne _") && for_pool("pool eq p.*", "xpool", "pool eq _"));
    CHECK(for_pool("pool eq POOL.+", "pool1", "pool ne _"));
    CHECK(for_pool("pool eq ^p", "pool1", "pool ne _") && for_pool("pool eq ^p", "xp", "pool eq _")); /* not anchored at the end */
    CHECK(for_pool("pool eq 1$", "pool1", "pool ne _") && for_pool("pool eq 1$", "pool2", "pool eq _"));
    CHECK(for_pool("pool eq [^a]b", "xxcb", "pool ne _") && for_pool("pool eq [^a]b", "xab", "pool eq _")); /* a ^: searched */
    CHECK(for_pool("pool eq a|b", "axx", "pool ne _") && for_pool("pool eq a|b", "xxb", "pool ne _"));      /* ^a|b$, not ^(a|b)$ */
    CHECK(for_pool("pool eq (a|b)", "axx", "pool eq _") && for_pool("pool eq (a|b)", "B", "pool ne _"));
    CHECK(for_pool("pool eq [A-Z]+1", "pool1", "pool ne _") && for_pool("pool eq [a-z]+", "POOL", "pool ne _")); /* (?i) */
    CHECK(for_pool("pool eq [[:alpha:]]+[[:digit:]]", "Pool1", "pool ne _"));
    CHECK(for_pool("pool eq p[]-]", "p-", "pool ne _") && for_pool("pool eq p[^-a]", "p-", "pool eq _") &&
          for_pool("pool eq p[a-]", "p-", "pool ne _"));
    CHECK(for_pool("pool eq p{2}o\\.1", "ppo.1", "pool ne _") && for_pool("pool eq p{2}o\\.1", "ppox1", "pool eq _"));
    CHECK(for_pool("pool ne p.*", "pool1", "pool eq _") && for_pool("not pool eq p.*", "q", "pool ne _"));
    CHECK(for_pool("pool eq k.*",
                   "\xe2\x84\xaa"
                   "elvin",
                   "pool ne _")); /* Go folds U+212A KELVIN SIGN to k */
    CHECK(for_pool("pool eq p.l", "p\nl", "pool eq _") && for_pool("pool eq p[^x]l", "p\nl", "pool ne _")); /* RE2's . */
    /* syntax POSIX and RE2 read differently, or RE2 does not compile (native then compares the name): said, not guessed */
    CHECK(refused("pool eq p**", 400,
                  "Invalid filter: the pool pattern \"p**\" is not supported by this gateway: a repetition of nothing or of a "
                  "repetition"));
    static const char *const unlike[] = {"(?i)p",
                                         "p*?",
                                         "p+?",
                                         "*p",
                                         "^*",
                                         "\\d",
                                         "\\<p",
                                         "[\\d]",
                                         "[[:upper:]]",
                                         "[[:word:]]",
                                         "[[.a.]]",
                                         "[z-a]",
                                         "[a-Z]",
                                         "[!--]",
                                         "[]-a]",
                                         "[a-b-c]",
                                         "[[:alpha:]-z]",
                                         "a{2000}",
                                         "(a{100}){100}",
                                         "a{,2}",
                                         "a{2",
                                         "a}",
                                         "a|",
                                         "|a",
                                         "()",
                                         "(a",
                                         "a)",
                                         "(|a)",
                                         "[a",
                                         "[]",
                                         "é.",
                                         "p\\",
                                         NULL};
    for (size_t i = 0; unlike[i] != NULL; ++i) {
        char *flt = gw_text_dupf("pool eq %s", unlike[i]);
        if (!refused(flt, 400, NULL))
            fprintf(stderr, "  %s: not refused\n", flt);
        CHECK(refused(flt, 400, NULL));
        free(flt);
    }
    char *longest = gw_text_dupf("pool eq %0256d.", 0), *named = gw_text_dupf("pool eq %0300d", 0);
    CHECK(refused(longest, 400, NULL)); /* a pattern over 256 bytes */
    /* what regcomp would expand past 256 bytes (2.4 s and 1.6 GB for the first before the bound), or past 1024 over a
     * filter's pool patterns (each is compiled once, at parse) */
    CHECK(refused("pool eq (.?.?.?.?.?.?.?.?.?.?){1000}x", 400,
                  "Invalid filter: the pool pattern \"(.?.?.?.?.?.?.?.?.?.?){1000}x\" is not supported by this gateway: counts "
                  "that repeat the pattern to over 256 bytes"));
    CHECK(refused("pool eq (.?|.?.?|a?b?c?){64}z", 400, NULL) && !refused("pool eq (.?|.?.?|a?b?c?){12}z", 400, NULL));
    char *many = strdup("pool eq (.?|.?.?|a?b?c?){12}z");
    for (int i = 0; i != 4; ++i) {
        char *more = gw_text_dupf("%s or pool eq (.?|.?.?|a?b?c?){12}z", many);
        free(many);
        many = more;
    }
    CHECK(refused(many, 400, NULL) && strstr(many, " or ") != NULL); /* 5 x 252 bytes */
    free(many);
    CHECK(for_pool(named, "p1", "pool eq _")); /* a name of any length */
    free(longest), free(named);
    CHECK(!refused("name eq v.*", 400, NULL)); /* other fields: the member's business */
    CHECK(!refused("name eq (?i)p**", 400, NULL));
    /* an empty filter has no clause */
    int status;
    char *msg = NULL;
    gw_vfilter_t *f = gw_vfilter_parse("   ", &status, &msg);
    CHECK(f != NULL && !gw_vfilter_has_pool(f));
    gw_vfilter_free(f);
    CHECK(gw_vfilter_pool_matches("a.c", "abc") && !gw_vfilter_pool_matches("a.c", "ac") && !gw_vfilter_pool_matches("", "a"));
    CHECK(!gw_vfilter_pool_matches("p**", "p") && !gw_vfilter_pool_matches("[", "[")); /* (refused by parse: never asked) */
}

static void test_merge(void)
{
    json_t *p1 = load("volumes_all_pool1.json"), *urls = load("volumes_all_pool1_urls.json");
    CHECK(json_array_size(p1) == 2 && json_array_size(urls) == 3);
    /* pool2: an image, a container and a custom volume named like pool1's, in LXD's own (per-pool) order */
    json_t *p2 = json_pack("[{s:s,s:s}, {s:s,s:s}, {s:s,s:s}, {s:s,s:s}]", "name", "c1", "type", "container", "name", "abc", "type",
                           "image", "name", "va", "type", "custom", "name", "vm", "type", "virtual-machine");
    char *names[] = {"pool1", "pool2"};
    json_t *lists[] = {p1, p2};
    json_t *m = gw_volumes_all_merge(names, lists, 2, 1);
    static const char *const want[][3] = {{"c1", "container", "pool2"}, {"abc", "image", "pool2"},
                                          {"va", "custom", "pool1"},    {"va", "custom", "pool2"},
                                          {"vb", "custom", "pool1"},    {"vm", "virtual-machine", "pool2"}};
    CHECK(json_array_size(m) == 6);
    for (size_t i = 0; i != 6 && i < json_array_size(m); ++i) {
        json_t *v = json_array_get(m, i);
        CHECK(strcmp(json_string_value(json_object_get(v, "name")), want[i][0]) == 0);
        CHECK(strcmp(json_string_value(json_object_get(v, "type")), want[i][1]) == 0);
        CHECK(strcmp(json_string_value(json_object_get(v, "pool")), want[i][2]) == 0);
    }
    CHECK(json_object_get(json_array_get(p1, 0), "pool") == NULL); /* the members' lists are not changed */
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(m, 2), "location")), "node1") == 0);
    json_decref(m);

    /* recursion=0: URLs as the members wrote them, merged in the same order; what is not a volume URL is left out */
    json_t *u2 = json_pack("[s, s, i, s]", "/1.0/storage-pools/pool2/volumes/custom/a%20b?target=node1",
                           "/1.0/storage-pools/pool2/volumes/container/z", 7, "/1.0/instances/x");
    json_t *ulists[] = {urls, u2};
    m = gw_volumes_all_merge(names, ulists, 2, 0);
    static const char *const want_urls[] = {
        "/1.0/storage-pools/pool2/volumes/container/z", "/1.0/storage-pools/pool2/volumes/custom/a%20b?target=node1",
        "/1.0/storage-pools/pool1/volumes/custom/va?target=node1", "/1.0/storage-pools/pool1/volumes/custom/vb?target=node2",
        "/1.0/storage-pools/pool1/volumes/custom/vc?project=p2&target=node3"};
    CHECK(json_array_size(m) == 5);
    for (size_t i = 0; i != 5 && i < json_array_size(m); ++i)
        CHECK(strcmp(json_string_value(json_array_get(m, i)), want_urls[i]) == 0);
    json_decref(m);
    json_t *none[] = {NULL, NULL};
    m = gw_volumes_all_merge(names, none, 2, 1);
    CHECK(json_is_array(m) && json_array_size(m) == 0);
    json_decref(m);
    json_decref(p1), json_decref(p2), json_decref(urls), json_decref(u2);

    /* pool names from GET /1.0/storage-pools */
    char *n = gw_volumes_all_pool_name("/1.0/storage-pools/my%20pool");
    CHECK(n != NULL && strcmp(n, "my pool") == 0);
    free(n);
    CHECK(gw_volumes_all_pool_name("/1.0/storage-pools/") == NULL);
    CHECK(gw_volumes_all_pool_name("/1.0/storage-pools/a/b") == NULL);
    CHECK(gw_volumes_all_pool_name("/1.0/networks/a") == NULL);
    CHECK(gw_volumes_all_pool_name("/1.0/storage-pools/%ff") == NULL); /* not text */
    CHECK(gw_volumes_all_pool_name(NULL) == NULL);
    CHECK(gw_volumes_all_type_rank("custom") == 2 && gw_volumes_all_type_rank("bogus") == 4);
}

void test_volumes_all(void)
{
    test_filter();
    test_merge();
}
