/*
 * test_hygiene.c: what a client or member sends is made safe before it is formatted or put into JSON; project sets
 * stay sets; LXD's times are read with their offset.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "lxd.h"
#include "log.h"
#include "projects.h"
#include "text.h"
#include "unit.h"

static void test_text(void)
{
    CHECK(gw_text_is_utf8("", 0));
    CHECK(gw_text_is_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    CHECK(!gw_text_is_utf8("\xff", 1));
    CHECK(!gw_text_is_utf8("\xc3", 1));             /* cut in the middle of a character */
    CHECK(!gw_text_is_utf8("\xc0\xaf", 2));         /* overlong '/' */
    CHECK(!gw_text_is_utf8("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!gw_text_is_utf8("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    CHECK(!gw_text_is_utf8("a\0b", 3));             /* NUL */
    char *c = gw_text_clean("a\xff/\xc3", 4, GW_TEXT_PERCENT);
    CHECK(strcmp(c, "a%FF/%C3") == 0);
    free(c);
    c = gw_text_clean("a\xffz\n\x1b", 5, GW_TEXT_REPLACE);
    CHECK(strcmp(c, "a\xef\xbf\xbdz\n\xef\xbf\xbd") == 0);
    free(c);
    c = gw_text_clean("x\ny", 3, GW_TEXT_PERCENT); /* a log line stays one line */
    CHECK(strcmp(c, "x%0Ay") == 0);
    free(c);
    /* 300 two-byte characters: never cut, always valid */
    char big[601];
    for (int i = 0; i != 300; ++i)
        big[2 * i] = '\xc3', big[2 * i + 1] = '\xa9';
    big[600] = '\0';
    c = gw_text_format("Cluster member not found: \"%s\"", big);
    CHECK(strlen(c) == 600 + 28 && gw_text_is_utf8(c, strlen(c)));
    free(c);
}

static void test_error_envelope(void)
{
    /* json_pack refuses bytes that are not UTF-8: the envelope must be made all the same */
    const char *msgs[] = {"Cluster member not found: \"\xff\" (target)", "\xc3", "", "plain"};
    for (size_t i = 0; i != sizeof(msgs) / sizeof(msgs[0]); ++i) {
        json_t *j = gw_lxd_error_json(404, msgs[i]);
        CHECK(j != NULL);
        char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
        CHECK(text != NULL && strstr(text, "\"error_code\":404") != NULL && strstr(text, "\"type\":\"error\"") != NULL);
        free(text);
        json_decref(j);
    }
    json_t *j = gw_lxd_error_json(400, NULL);
    CHECK(j != NULL && strcmp(json_string_value(json_object_get(j, "error")), "") == 0);
    json_decref(j);
}

static void test_projects(void)
{
    json_t *a = json_loads("[\"pb\", \"pa,pb\", \"pa\", \"pb\"]", 0, NULL), *one = json_loads("[\"pa,pb\"]", 0, NULL),
           *two = json_loads("[\"pa\", \"pb\"]", 0, NULL);
    gw_projects_t *s = gw_projects_from_json(a), *s1 = gw_projects_from_json(one), *s2 = gw_projects_from_json(two);
    CHECK(s->num == 3); /* a set: the duplicate is gone */
    CHECK(gw_projects_has(s1, "pa,pb") && !gw_projects_has(s1, "pa") && !gw_projects_has(s1, "pb"));
    CHECK(gw_projects_has(s2, "pa") && gw_projects_has(s2, "pb") && !gw_projects_has(s2, "pa,pb"));
    CHECK(!gw_projects_equal(s1, s2)); /* a comma-named project is not two projects */
    char *k1 = gw_projects_key(s1), *k2 = gw_projects_key(s2);
    CHECK(strcmp(k1, k2) != 0 && strcmp(k1, "[\"pa,pb\"]") == 0);
    free(k1), free(k2);
    gw_projects_t *empty = gw_projects_from_json(NULL);
    CHECK(empty->num == 0 && gw_projects_equal(empty, NULL) && !gw_projects_has(empty, "default"));
    CHECK(gw_projects_ref(s1) == s1 && s1->refs == 2);
    gw_projects_unref(s1);
    gw_projects_unref(s), gw_projects_unref(s1), gw_projects_unref(s2), gw_projects_unref(empty);
    json_decref(a), json_decref(one), json_decref(two);
}

static void test_lxd_time(void)
{
    CHECK(gw_lxd_time("2026-12-02T04:00:00Z") == 1796184000LL);
    CHECK(gw_lxd_time("2026-12-02T04:00:00.123456789Z") == 1796184000LL);
    CHECK(gw_lxd_time("2026-12-02T05:00:00+01:00") == 1796184000LL); /* the offset counts */
    CHECK(gw_lxd_time("2026-12-01T23:30:00.5-04:30") == 1796184000LL);
    CHECK(gw_lxd_time("2026-12-02T04:00:00") == -1); /* no zone: not RFC 3339 */
    CHECK(gw_lxd_time("2026-12-02T04:00:00+1:00") == -1);
    CHECK(gw_lxd_time("yesterday") == -1);
}

void test_hygiene(void)
{
    test_text();
    test_error_envelope();
    test_projects();
    test_lxd_time();
}
