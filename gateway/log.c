/*
 * log.c: logfmt writer (see log.h).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include <jansson.h>
#include "log.h"
#include "text.h"

gw_log_level_t gw_log_level = GW_LOG_INFO;
FILE *gw_log_access_fp;
FILE *gw_log_audit_fp;

static const char *level_names[] = {"debug", "info", "warn", "error"};

int gw_log_parse_level(const char *s)
{
    for (size_t i = 0; i != sizeof(level_names) / sizeof(level_names[0]); ++i)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *gw_log_num(long long v)
{
    static char bufs[8][GW_LOG_NUM_SIZE];
    static unsigned next;
    return gw_log_fmt_num(bufs[next++ % 8], v);
}

char *gw_log_fmt_num(char *buf, long long v)
{
    char *p = buf + GW_LOG_NUM_SIZE - 1;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    *p = '\0';
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        *--p = '-';
    return p;
}

/* logfmt: a value is quoted when it is empty or holds a space, a quote, '=' or a backslash; bytes that are not
 * printable UTF-8 (what a client or member sent may be anything) are written as %XX, so a line is always one line.
 * Printable ASCII (nearly every value: one per request and key) is its own clean form: written without a copy. */
static void put_value(FILE *fp, const char *raw)
{
    const char *v = raw != NULL ? raw : "";
    size_t len = strlen(v), i;
    for (i = 0; i != len && v[i] >= 0x20 && v[i] < 0x7f; ++i)
        ;
    char *clean = i != len ? gw_text_clean(v, len, GW_TEXT_PERCENT) : NULL;
    if (clean != NULL)
        v = clean, len = strlen(clean);
    if (len != 0 && strpbrk(v, " \"=\\") == NULL) {
        fwrite_unlocked(v, 1, len, fp);
    } else {
        fputc_unlocked('"', fp);
        for (const char *span = v, *end = v + len; span < end;) {
            size_t n = strcspn(span, "\"\\");
            fwrite_unlocked(span, 1, n, fp);
            if ((span += n) < end) {
                fputc_unlocked('\\', fp);
                fputc_unlocked(*span++, fp);
            }
        }
        fputc_unlocked('"', fp);
    }
    free(clean);
}

/* `time="2026-12-02T22:55:55.123456Z"`: the part up to the seconds is formatted once per second (strftime is most of
 * an access line's cost otherwise), the microseconds by hand */
static void put_time(FILE *fp)
{
    static time_t cached_sec = (time_t)-1;
    static char cached[40]; /* `time="YYYY-mm-ddTHH:MM:SS.`: 26 bytes for any 4-digit year */
    static size_t cached_len;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        cached_len = strftime(cached, sizeof(cached), "time=\"%Y-%m-%dT%H:%M:%S.", &tm);
        cached_sec = tv.tv_sec;
    }
    char frac[8];
    long us = (long)tv.tv_usec;
    for (int i = 5; i >= 0; --i, us /= 10)
        frac[i] = (char)('0' + us % 10);
    frac[6] = 'Z', frac[7] = '"';
    fwrite_unlocked(cached, 1, cached_len, fp);
    fwrite_unlocked(frac, 1, sizeof(frac), fp);
}

static void put_pairs(FILE *fp, const char *k, va_list ap)
{
    for (; k != NULL; k = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        fputc_unlocked(' ', fp);
        fputs_unlocked(k, fp);
        fputc_unlocked('=', fp);
        put_value(fp, v);
    }
    fputc_unlocked('\n', fp);
}

void gw_log(gw_log_level_t level, const char *msg, ...)
{
    if (level < gw_log_level)
        return;
    va_list ap;
    put_time(stderr);
    fprintf(stderr, " level=%s msg=", level_names[level]);
    put_value(stderr, msg);
    va_start(ap, msg);
    put_pairs(stderr, va_arg(ap, const char *), ap);
    va_end(ap);
    fflush(stderr);
}

void (*gw_log_on_pending)(void);
static int access_pending; /* access lines were buffered since the last gw_log_flush */

void gw_log_access(const char *key, ...)
{
    FILE *fp = gw_log_access_fp != NULL ? gw_log_access_fp : stdout;
    va_list ap;
    put_time(fp);
    va_start(ap, key);
    put_pairs(fp, key, ap);
    va_end(ap);
    if (gw_log_on_pending == NULL) {
        fflush(fp);
    } else if (!access_pending) {
        access_pending = 1;
        gw_log_on_pending();
    }
}

void gw_log_flush(void)
{
    access_pending = 0;
    fflush(gw_log_access_fp != NULL ? gw_log_access_fp : stdout);
}

void gw_log_buffer(FILE *fp)
{
    setvbuf(fp, NULL, _IOFBF, GW_LOG_BUFFER);
}

void gw_log_audit(const char *fingerprint, const char *identity, const char *method, const char *path, int status,
                  const char *operation)
{
    if (gw_log_audit_fp == NULL)
        return;
    struct timeval tv;
    struct tm tm;
    char ts[64], frac[16];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(frac, sizeof(frac), ".%06ldZ", (long)tv.tv_usec);
    strcat(ts, frac);
    /* every state-changing request is audited, whatever bytes it held: what is not UTF-8 is written as %XX */
    const char *raw[] = {fingerprint, identity, method, path, operation};
    char *v[5];
    for (size_t i = 0; i != 5; ++i)
        v[i] = gw_text_clean(raw[i] != NULL ? raw[i] : "", raw[i] != NULL ? strlen(raw[i]) : 0, GW_TEXT_PERCENT);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s}", "time", ts, "fingerprint", v[0], "identity", v[1], "method", v[2],
                          "path", v[3], "status", status, "operation", v[4]);
    char *line = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    for (size_t i = 0; i != 5; ++i)
        free(v[i]);
    if (line == NULL) { /* cannot happen with clean strings; never drop an audit line silently */
        gw_log(GW_LOG_ERROR, "audit line could not be encoded", "method", method, "path", path, NULL);
        return;
    }
    fprintf(gw_log_audit_fp, "%s\n", line);
    fflush(gw_log_audit_fp);
    free(line);
}
