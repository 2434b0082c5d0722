/*
 * text.h: bytes a client or a member sent, made safe to format, log and put into JSON.
 *
 * jansson refuses strings that are not valid UTF-8 (json_pack then returns NULL), and a fixed buffer cut in the
 * middle of a multi-byte character makes one. Everything the gateway puts into JSON or a log line that came from
 * outside goes through here first: the result is always valid UTF-8, always NUL-terminated, never truncated.
 */
#ifndef GW_TEXT_H
#define GW_TEXT_H

#include <stdarg.h>
#include <stddef.h>

typedef enum en_gw_text_bad_t {
    GW_TEXT_REPLACE, /* a byte that is not part of valid UTF-8 becomes U+FFFD (messages for people) */
    GW_TEXT_PERCENT, /* it becomes "%XX" (paths and queries: the bytes stay recoverable, as in a URL) */
} gw_text_bad_t;

/* 1 if s[0..len) is valid UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF) without NUL bytes */
int gw_text_is_utf8(const char *s, size_t len);
/* s[0..len) as valid UTF-8 without NUL or other control bytes (GW_TEXT_REPLACE keeps tab, CR and LF, which JSON
 * escapes), bad bytes written as `bad` says; malloc'd, never NULL */
char *gw_text_clean(const char *s, size_t len, gw_text_bad_t bad);
/* vasprintf that never fails and always returns valid UTF-8 (GW_TEXT_REPLACE); malloc'd */
char *gw_text_vformat(const char *fmt, va_list ap);
/* the same with arguments */
char *gw_text_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* asprintf that never fails (aborts when memory is exhausted), bytes unchanged: for URLs and paths sized to fit */
char *gw_text_dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
