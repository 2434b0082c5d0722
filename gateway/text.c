/*
 * text.c: see text.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "text.h"

/* length of the valid UTF-8 sequence at s[0..len), or 0 when it is not one (RFC 3629 table 3-7) */
static size_t seq_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; ++i)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

int gw_text_is_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0, n; i < len; i += n)
        if (p[i] == '\0' || (n = seq_len(p + i, len - i)) == 0)
            return 0;
    return 1;
}

char *gw_text_clean(const char *s, size_t len, gw_text_bad_t bad)
{
    const unsigned char *p = (const unsigned char *)s;
    char *out = malloc(len * 3 + 1), *o = out; /* a bad byte takes at most 3 bytes ("%XX" or U+FFFD) */
    if (out == NULL)
        abort();
    for (size_t i = 0, n; i < len; i += n) {
        int control = p[i] < 0x20 || p[i] == 0x7f, kept = bad == GW_TEXT_REPLACE && (p[i] == '\t' || p[i] == '\n' || p[i] == '\r');
        if ((control && !kept) || (n = seq_len(p + i, len - i)) == 0) {
            n = 1;
            if (bad == GW_TEXT_PERCENT)
                o += sprintf(o, "%%%02X", p[i]);
            else
                memcpy(o, "\xef\xbf\xbd", 3), o += 3;
        } else {
            memcpy(o, p + i, n), o += n;
        }
    }
    *o = '\0';
    return out;
}

char *gw_text_vformat(const char *fmt, va_list ap)
{
    char *raw = NULL;
    int n = vasprintf(&raw, fmt, ap);
    if (n < 0)
        abort();
    char *clean = gw_text_clean(raw, (size_t)n, GW_TEXT_REPLACE);
    free(raw);
    return clean;
}

char *gw_text_dupf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return s;
}

char *gw_text_format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = gw_text_vformat(fmt, ap);
    va_end(ap);
    return s;
}
