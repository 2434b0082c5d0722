/*
 * metrics_page.c: see metrics_page.h.
 */
#include <stdint.h>
#include "api10.h"
#include "linger.h"
#include "members.h"
#include "metrics.h"
#include "metrics_page.h"
#include "operations.h"
#include "peers.h"
#include "trust.h"

static void running(const gw_op_t *op, void *data)
{
    json_t *j = gw_op_json(op);
    if (json_integer_value(json_object_get(j, "status_code")) < 200)
        gw_metrics_add(data, "lxd_gateway_operations_running{description=\"%s\"} 1\n",
                       json_string_value(json_object_get(j, "description")));
    json_decref(j);
}

static void peer(const char *name, int up, void *data)
{
    gw_metrics_add(data, "lxd_gateway_peer_up{peer=\"%s\"} %d\n", name, up);
}

static void member(const gw_member_t *m, void *data)
{
    gw_metrics_add(data, "lxd_gateway_member_up{member=\"%s\"} %d\n", m->name, m->healthy && m->online);
}

char *gw_metrics_page_text(void)
{
    gw_metrics_text_t t = gw_metrics_text_init();
    gw_metrics_add_family(&t, GW_METRICS_REQUESTS);
    gw_metrics_add_family(&t, GW_METRICS_BACKEND);
    gw_metrics_add(&t, "# HELP lxd_gateway_operations_running Gateway-owned operations in flight.\n"
                       "# TYPE lxd_gateway_operations_running gauge\n");
    gw_ops_foreach(running, &t);
    gw_metrics_add_family(&t, GW_METRICS_OPS_FINISHED);
    gw_metrics_add_family(&t, GW_METRICS_SINGLE_CALLS);
    gw_metrics_add_family(&t, GW_METRICS_RETRIES);
    gw_metrics_add_family(&t, GW_METRICS_MEMBER_TLS);
    gw_metrics_add(&t, "# HELP lxd_gateway_member_up 1 if the cluster member answers the gateway's probes.\n"
                       "# TYPE lxd_gateway_member_up gauge\n");
    gw_members_foreach(member, &t);
    gw_metrics_add(&t, "# HELP lxd_gateway_peer_up 1 if the other gateway replica answers and its operation feed is open.\n"
                       "# TYPE lxd_gateway_peer_up gauge\n");
    gw_peers_foreach(peer, &t);
    size_t hits, misses, uncached;
    gw_api10_stats(&hits, &misses, &uncached);
    gw_metrics_add(
        &t,
        "# HELP lxd_gateway_api10_requests_total GET /1.0 requests by how they were answered: from the cache (hit), by a "
        "fetch for it (miss), without it (uncached: an odd query, the event stream down, too many fetches).\n"
        "# TYPE lxd_gateway_api10_requests_total counter\n"
        "lxd_gateway_api10_requests_total{result=\"hit\"} %zu\n"
        "lxd_gateway_api10_requests_total{result=\"miss\"} %zu\n"
        "lxd_gateway_api10_requests_total{result=\"uncached\"} %zu\n",
        hits, misses, uncached);
    gw_metrics_add(&t,
                   "# HELP lxd_gateway_lingering_connections Client connections answered early (before their whole body was "
                   "read): being answered, or read and dropped until the client closes (at most 5 s after the answer).\n"
                   "# TYPE lxd_gateway_lingering_connections gauge\n"
                   "lxd_gateway_lingering_connections %zu\n",
                   gw_linger_count());
    uint64_t age = gw_trust_age_ms();
    gw_metrics_add(&t,
                   "# HELP lxd_gateway_trust_mirror_age_seconds Age of the gateway's copy of the trust store (-1: never read).\n"
                   "# TYPE lxd_gateway_trust_mirror_age_seconds gauge\n"
                   "lxd_gateway_trust_mirror_age_seconds %.3f\n",
                   age == UINT64_MAX ? -1.0 : age / 1000.0);
    return t.buf;
}
