/*
 * test_api10.c: which GET /1.0 query strings the cache keeps answers for (api10.c): none, project= and target=, each
 * once, with plain values; everything else is fetched every time, so that hostile query strings take no room.
 */
#include <string.h>
#include "api10.h"
#include "unit.h"

static int ok(const char *tail)
{
    return gw_api10_cacheable_tail(tail, strlen(tail));
}

void test_api10(void)
{
    char long_value[300];
    CHECK(ok(""));
    CHECK(ok("?project=default"));
    CHECK(ok("?target=node2"));
    CHECK(ok("?project=p1&target=node2"));
    CHECK(ok("?target=node2&project=p1"));
    CHECK(ok("?project=pa%2Cpb")); /* lxc percent-encodes a comma */
    CHECK(!ok("?"));
    CHECK(!ok("?project="));
    CHECK(!ok("?project"));
    CHECK(!ok("?project=a&project=b"));
    CHECK(!ok("?target=a&target=a"));
    CHECK(!ok("?recursion=1"));
    CHECK(!ok("?project=p1&"));
    CHECK(!ok("?&project=p1"));
    CHECK(!ok("?project=a b"));
    CHECK(!ok("?project=a/b"));
    CHECK(!ok("?projectx=a"));
    CHECK(!ok("project=a")); /* not a query string */
    strcpy(long_value, "?project=");
    memset(long_value + 9, 'a', 100);
    long_value[109] = '\0';
    CHECK(ok(long_value)); /* 100 characters: kept */
    strcat(long_value, "a");
    CHECK(!ok(long_value)); /* 101: not */
}
