/*
 * metrics.h: the counters operators watch (ground floor: anyone may count, this module reads no other). The page
 * that shows them with the gauges read from members, operations, peers and trust is metrics_page.h.
 *
 *   lxd_gateway_requests_total{route,status}              requests answered (route: first path segment under /1.0)
 *   lxd_gateway_backend_call_duration_seconds             the gateway's own calls to members (histogram)
 *   lxd_gateway_operations_finished_total{description,result}
 *   lxd_gateway_single_calls_total{kind,result}           single calls answered (copy: started or refused)
 *   lxd_gateway_retries_total{what}                       steps tried again after a member or the disk failed them
 *   lxd_gateway_member_tls_handshakes_total{resumed}      TLS handshakes with members and replicas, resumed or full
 *
 * Counting is a few additions per request; the text is built only when scraped.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <h2o.h>

/* a request was answered with `status` (called from the access logger) */
void gw_metrics_request(h2o_iovec_t path, int status);
/* a backend call ended after `seconds` */
void gw_metrics_backend_call(double seconds);
/* a gateway operation ended ("success", "failure", "cancelled") */
void gw_metrics_op_finished(const char *description, const char *result);
/* a single call of `kind` ("volume_copy") was answered with `result` ("started", "refused") */
void gw_metrics_single_call(const char *kind, const char *result);
/* a step was tried again: `what` is one of a few fixed names ("move_watch", "move_rollback", "move_recovery",
 * "journal_end", ...) */
void gw_metrics_retry(const char *what);
/* a TLS handshake with a member (or replica) ended: `resumed` a session, or a full one */
void gw_metrics_member_handshake(int resumed);

/* Prometheus text being built: grows as needed */
typedef struct st_gw_metrics_text_t {
    char *buf;  /* malloc'd, NUL-terminated */
    size_t len; /* bytes written, the NUL not counted */
    size_t cap; /* bytes allocated */
} gw_metrics_text_t;

/* the counter families, each printed with its HELP and TYPE lines */
typedef enum en_gw_metrics_family_t {
    GW_METRICS_REQUESTS,     /* lxd_gateway_requests_total */
    GW_METRICS_BACKEND,      /* lxd_gateway_backend_call_duration_seconds */
    GW_METRICS_OPS_FINISHED, /* lxd_gateway_operations_finished_total */
    GW_METRICS_SINGLE_CALLS, /* lxd_gateway_single_calls_total */
    GW_METRICS_RETRIES,      /* lxd_gateway_retries_total */
    GW_METRICS_MEMBER_TLS,   /* lxd_gateway_member_tls_handshakes_total */
} gw_metrics_family_t;

/* an empty text (4 KiB allocated) */
gw_metrics_text_t gw_metrics_text_init(void);
/* appends printf-formatted text */
void gw_metrics_add(gw_metrics_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* appends counter family `family` as it is now */
void gw_metrics_add_family(gw_metrics_text_t *t, gw_metrics_family_t family);

#endif
