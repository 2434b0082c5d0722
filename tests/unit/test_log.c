/*
 * test_log.c: access lines as logfmt writes them (values quoted only when they need it, bytes that are not printable
 * UTF-8 as %XX), whatever path the writer takes for plain ASCII.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "log.h"
#include "unit.h"

/* the whole access line for one key=value pair */
static char *whole_line_of(const char *value)
{
    FILE *saved = gw_log_access_fp, *fp = tmpfile();
    gw_log_access_fp = fp;
    gw_log_access("k", value, "z", "1", NULL);
    gw_log_flush();
    gw_log_access_fp = saved;
    long size = ftell(fp);
    char *text = calloc(1, size + 1);
    rewind(fp);
    if (fread(text, 1, size, fp) != (size_t)size)
        text[0] = '\0';
    fclose(fp);
    return text;
}

/* the access line for one key=value pair, without its time */
static char *line_of(const char *value)
{
    char *text = whole_line_of(value), *pair = strstr(text, " k="), *out = strdup(pair != NULL ? pair + 1 : "");
    free(text);
    return out;
}

/* `time="YYYY-mm-ddTHH:MM:SS.uuuuuuZ" ` (formatted by hand after the seconds), and within a second of `before` */
static int time_is_well_formed(const char *line, time_t before)
{
    struct tm tm = {0};
    const char *rest = strptime(line, "time=\"%Y-%m-%dT%H:%M:%S.", &tm);
    if (rest == NULL || strspn(rest, "0123456789") != 6 || strncmp(rest + 6, "Z\" k=", 5) != 0)
        return 0;
    time_t t = timegm(&tm);
    return t >= before && t <= before + 2;
}

static int num_is(long long v, const char *want)
{
    char buf[GW_LOG_NUM_SIZE];
    const char *got = gw_log_fmt_num(buf, v);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "number %lld: got [%s], want [%s]\n", v, got, want);
    return strcmp(got, want) == 0 && strcmp(gw_log_num(v), want) == 0;
}

static int logs_as(const char *value, const char *want)
{
    char *got = line_of(value);
    int ok = strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "access line of %s: got [%s], want [%s]\n", value != NULL ? value : "(null)", got, want);
    free(got);
    return ok;
}

void test_log(void)
{
    CHECK(logs_as("/1.0/instances", "k=/1.0/instances z=1\n"));
    CHECK(logs_as("/1.0/instances?recursion=1", "k=\"/1.0/instances?recursion=1\" z=1\n"));
    CHECK(logs_as("", "k=\"\" z=1\n"));
    CHECK(logs_as(NULL, "k=\"\" z=1\n"));
    CHECK(logs_as("a b", "k=\"a b\" z=1\n"));
    CHECK(logs_as("a=b", "k=\"a=b\" z=1\n"));
    CHECK(logs_as("say \"hi\"", "k=\"say \\\"hi\\\"\" z=1\n"));
    CHECK(logs_as("back\\slash", "k=\"back\\\\slash\" z=1\n"));
    CHECK(logs_as("line\nbreak", "k=line%0Abreak z=1\n"));
    CHECK(logs_as("tab\there x", "k=\"tab%09here x\" z=1\n"));
    CHECK(logs_as("del\x7f", "k=del%7F z=1\n"));
    CHECK(logs_as("caf\xc3\xa9", "k=caf\xc3\xa9 z=1\n"));
    CHECK(logs_as("bad\xff byte", "k=\"bad%FF byte\" z=1\n"));
    CHECK(logs_as("%41", "k=%41 z=1\n"));
    for (int i = 0; i != 3; ++i) { /* the second and third reuse the formatted seconds */
        time_t before = time(NULL);
        char *line = whole_line_of("x");
        int ok = time_is_well_formed(line, before);
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "access line: [%s]\n", line);
        free(line);
    }
    CHECK(num_is(0, "0"));
    CHECK(num_is(7, "7"));
    CHECK(num_is(200, "200"));
    CHECK(num_is(-42, "-42"));
    CHECK(num_is(1234567890123LL, "1234567890123"));
    CHECK(num_is(9223372036854775807LL, "9223372036854775807"));
    CHECK(num_is(-9223372036854775807LL - 1, "-9223372036854775808"));
}
