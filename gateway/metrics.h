/*
 * metrics.h: what operators watch, in Prometheus' text format, served on its own plain-HTTP address
 * (`metrics.listen`), GET /metrics.
 *
 *   lxd_gateway_requests_total{route,status}              requests answered (route: first path segment under /1.0)
 *   lxd_gateway_backend_call_duration_seconds             the gateway's own calls to members (histogram)
 *   lxd_gateway_operations_running{description}           gateway-owned operations in flight
 *   lxd_gateway_operations_finished_total{description,result}
 *   lxd_gateway_single_calls_total{kind,result}           single calls answered (copy: started or refused)
 *   lxd_gateway_member_up{member}                         1 if the member answers its probes
 *   lxd_gateway_peer_up{peer}                             1 if the other gateway replica answers (its feed is open)
 *   lxd_gateway_trust_mirror_age_seconds                  age of the trust-store copy (-1: never read)
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
/* the Prometheus text of every metric now (malloc'd) */
char *gw_metrics_text(void);

#endif
