/*
 * metrics_page.h: what operators watch, in Prometheus' text format, served on its own plain-HTTP address
 * (`metrics.listen`), GET /metrics. Top floor: it reads the counters (metrics.h) and the state of members,
 * operations, peers and trust.
 *
 *   lxd_gateway_requests_total{route,status}              requests answered (route: first path segment under /1.0)
 *   lxd_gateway_backend_call_duration_seconds             the gateway's own calls to members (histogram)
 *   lxd_gateway_operations_running{description}           gateway-owned operations in flight
 *   lxd_gateway_operations_finished_total{description,result}
 *   lxd_gateway_single_calls_total{kind,result}           single calls answered (copy: started or refused)
 *   lxd_gateway_retries_total{what}                       steps tried again after a member or the disk failed them
 *   lxd_gateway_member_up{member}                         1 if the member answers its probes
 *   lxd_gateway_peer_up{peer}                             1 if the other gateway replica answers (its feed is open)
 *   lxd_gateway_trust_mirror_age_seconds                  age of the trust-store copy (-1: never read)
 *
 * The text is built only when scraped.
 */
#ifndef GW_METRICS_PAGE_H
#define GW_METRICS_PAGE_H

/* the Prometheus text of every metric now (malloc'd) */
char *gw_metrics_page_text(void);

#endif
