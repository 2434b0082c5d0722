/*
 * log.h: the gateway's two logs, both logfmt as LXD writes its own.
 *
 * The error log (stderr, so systemd's journal keeps it) carries events: `time=... level=... msg=... key=value`.
 * The access log carries one line per request (see gw_log_access). Values are quoted only when they need it.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdio.h>

typedef enum en_gw_log_level_t { GW_LOG_DEBUG, GW_LOG_INFO, GW_LOG_WARN, GW_LOG_ERROR } gw_log_level_t;

/* the lowest level written; set once from `log.level` */
extern gw_log_level_t gw_log_level;
/* where access lines go (stdout unless `log.access` names a file) */
extern FILE *gw_log_access_fp;

/* parses "debug|info|warn|error"; returns -1 on anything else */
int gw_log_parse_level(const char *s);
/* writes one event line; the varargs are key, value pairs of strings, ended by NULL */
void gw_log(gw_log_level_t level, const char *msg, ...);
/* writes one access line (time first, then the key, value pairs, ended by NULL) to gw_log_access_fp. Access lines are
 * buffered (one write per many lines, not one per request): gw_log_flush writes them out, which the event loop does at
 * most GW_LOG_FLUSH_MS after a line was buffered (gw_log_on_pending), and which happens at exit and when the file is
 * reopened (SIGHUP). A crash (SIGKILL) loses at most the last GW_LOG_FLUSH_MS of lines. Events and audit lines are
 * never buffered. */
void gw_log_access(const char *key, ...);
#define GW_LOG_FLUSH_MS 250      /* the longest an access line waits in the buffer while the event loop runs */
#define GW_LOG_BUFFER (64 << 10) /* bytes of access lines buffered at most before they are written (a log file's buffer) */
/* called when an access line is buffered after a flush (the event loop arms its flush timer); NULL: every line is
 * written at once (no loop runs, e.g. `init`) */
extern void (*gw_log_on_pending)(void);
/* writes out the buffered access lines */
void gw_log_flush(void);
/* gives a newly opened access log file its buffer (before anything is written to it) */
void gw_log_buffer(FILE *fp);
/* where audit lines go (JSON lines; see gw_log_audit) */
extern FILE *gw_log_audit_fp;
/* writes one audit line: who (fingerprint, identity used) did what (method, path) with which result (status, the
 * operation it started: "" when none). Written for every request that may change something (not GET or HEAD). */
void gw_log_audit(const char *fingerprint, const char *identity, const char *method, const char *path, int status,
                  const char *operation);
/* formats a number for a key/value pair; returns a pointer into a small rotating buffer (valid for a few calls) */
const char *gw_log_num(long long v);
/* formats `v` in decimal at the end of `buf` (GW_LOG_NUM_SIZE bytes) without printf; returns where it starts */
#define GW_LOG_NUM_SIZE 24 /* bytes: "-9223372036854775808" and its NUL fit */
char *gw_log_fmt_num(char *buf, long long v);

#define gw_debug(...) (gw_log_level <= GW_LOG_DEBUG ? gw_log(GW_LOG_DEBUG, __VA_ARGS__) : (void)0)

#endif
