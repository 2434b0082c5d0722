/*
 * metrics.c: see metrics.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"

static const char *const routes[] = {"server",  "operations", "events",   "instances", "storage-pools", "images",    "certificates",
                                     "cluster", "networks",   "projects", "profiles",  "metrics",       "resources", "other"};
#define NUM_ROUTES (sizeof(routes) / sizeof(routes[0]))
#define MAX_STATUS 600

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NUM_BUCKETS (sizeof(buckets) / sizeof(buckets[0]))

#define MAX_SERIES 64 /* labelled counters (operations, single calls): a handful of label values each */

typedef struct st_series_t {
    char labels[160]; /* the label set, as printed: description="...",result="..." */
    uint64_t count;
} series_t;

static struct {
    uint64_t requests[NUM_ROUTES][MAX_STATUS];
    uint64_t backend_buckets[NUM_BUCKETS]; /* cumulative when printed */
    uint64_t backend_count;
    double backend_sum;
    series_t ops[MAX_SERIES], calls[MAX_SERIES], retries[MAX_SERIES];
    size_t num_ops, num_calls, num_retries;
} S;

static size_t route_of(h2o_iovec_t path)
{
    if (path.len < 4 || memcmp(path.base, "/1.0", 4) != 0)
        return NUM_ROUTES - 1;
    const char *p = path.base + 4, *end = path.base + path.len;
    if (p == end || *p == '?' || (*p == '/' && (p + 1 == end || p[1] == '?')))
        return 0;
    if (*p != '/')
        return NUM_ROUTES - 1;
    ++p;
    size_t len = 0;
    while (p + len < end && p[len] != '/' && p[len] != '?')
        ++len;
    for (size_t i = 1; i != NUM_ROUTES - 1; ++i)
        if (strlen(routes[i]) == len && memcmp(routes[i], p, len) == 0)
            return i;
    return NUM_ROUTES - 1;
}

void gw_metrics_request(h2o_iovec_t path, int status)
{
    if (status > 0 && status < MAX_STATUS)
        ++S.requests[route_of(path)][status];
}

void gw_metrics_backend_call(double seconds)
{
    for (size_t i = 0; i != NUM_BUCKETS; ++i)
        if (seconds <= buckets[i]) {
            ++S.backend_buckets[i];
            break;
        }
    ++S.backend_count;
    S.backend_sum += seconds;
}

static void count(series_t *list, size_t *num, const char *labels)
{
    for (size_t i = 0; i != *num; ++i)
        if (strcmp(list[i].labels, labels) == 0) {
            ++list[i].count;
            return;
        }
    if (*num == MAX_SERIES)
        return;
    snprintf(list[*num].labels, sizeof(list[*num].labels), "%s", labels);
    list[(*num)++].count = 1;
}

void gw_metrics_op_finished(const char *description, const char *result)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "description=\"%s\",result=\"%s\"", description, result);
    count(S.ops, &S.num_ops, labels);
}

void gw_metrics_single_call(const char *kind, const char *result)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "kind=\"%s\",result=\"%s\"", kind, result);
    count(S.calls, &S.num_calls, labels);
}

static uint64_t member_handshakes[2]; /* [0] full, [1] resumed */

void gw_metrics_member_handshake(int resumed)
{
    ++member_handshakes[resumed != 0];
}

void gw_metrics_retry(const char *what)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "what=\"%s\"", what);
    count(S.retries, &S.num_retries, labels);
}

/* ---- the text ---- */

gw_metrics_text_t gw_metrics_text_init(void)
{
    return (gw_metrics_text_t){malloc(4096), 0, 4096};
}

void gw_metrics_add(gw_metrics_text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < t->cap - t->len) {
            t->len += n;
            return;
        }
        t->cap = (t->cap + n) * 2;
        t->buf = realloc(t->buf, t->cap);
    }
}

void gw_metrics_add_family(gw_metrics_text_t *t, gw_metrics_family_t family)
{
    switch (family) {
    case GW_METRICS_REQUESTS:
        gw_metrics_add(
            t, "# HELP lxd_gateway_requests_total Requests answered, by route (first path segment under /1.0) and HTTP status.\n"
               "# TYPE lxd_gateway_requests_total counter\n");
        for (size_t r = 0; r != NUM_ROUTES; ++r)
            for (int s = 0; s != MAX_STATUS; ++s)
                if (S.requests[r][s] != 0)
                    gw_metrics_add(t, "lxd_gateway_requests_total{route=\"%s\",status=\"%d\"} %llu\n", routes[r], s,
                                   (unsigned long long)S.requests[r][s]);
        break;
    case GW_METRICS_BACKEND: {
        gw_metrics_add(t, "# HELP lxd_gateway_backend_call_duration_seconds The gateway's own calls to cluster members.\n"
                          "# TYPE lxd_gateway_backend_call_duration_seconds histogram\n");
        uint64_t cumulative = 0;
        for (size_t i = 0; i != NUM_BUCKETS; ++i) {
            cumulative += S.backend_buckets[i];
            gw_metrics_add(t, "lxd_gateway_backend_call_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
                           (unsigned long long)cumulative);
        }
        gw_metrics_add(t, "lxd_gateway_backend_call_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                       (unsigned long long)S.backend_count);
        gw_metrics_add(t, "lxd_gateway_backend_call_duration_seconds_sum %.6f\n", S.backend_sum);
        gw_metrics_add(t, "lxd_gateway_backend_call_duration_seconds_count %llu\n", (unsigned long long)S.backend_count);
        break;
    }
    case GW_METRICS_OPS_FINISHED:
        gw_metrics_add(t, "# HELP lxd_gateway_operations_finished_total Gateway-owned operations ended, by result.\n"
                          "# TYPE lxd_gateway_operations_finished_total counter\n");
        for (size_t i = 0; i != S.num_ops; ++i)
            gw_metrics_add(t, "lxd_gateway_operations_finished_total{%s} %llu\n", S.ops[i].labels,
                           (unsigned long long)S.ops[i].count);
        break;
    case GW_METRICS_SINGLE_CALLS:
        gw_metrics_add(t, "# HELP lxd_gateway_single_calls_total Single calls the gateway answered, by kind and result.\n"
                          "# TYPE lxd_gateway_single_calls_total counter\n");
        for (size_t i = 0; i != S.num_calls; ++i)
            gw_metrics_add(t, "lxd_gateway_single_calls_total{%s} %llu\n", S.calls[i].labels, (unsigned long long)S.calls[i].count);
        break;
    case GW_METRICS_RETRIES:
        gw_metrics_add(t, "# HELP lxd_gateway_retries_total Steps tried again after a member or the disk failed them, by step.\n"
                          "# TYPE lxd_gateway_retries_total counter\n");
        for (size_t i = 0; i != S.num_retries; ++i)
            gw_metrics_add(t, "lxd_gateway_retries_total{%s} %llu\n", S.retries[i].labels, (unsigned long long)S.retries[i].count);
        break;
    case GW_METRICS_MEMBER_TLS:
        gw_metrics_add(
            t, "# HELP lxd_gateway_member_tls_handshakes_total TLS handshakes with members and replicas: a session resumed, or "
               "a full one.\n"
               "# TYPE lxd_gateway_member_tls_handshakes_total counter\n");
        gw_metrics_add(t, "lxd_gateway_member_tls_handshakes_total{resumed=\"false\"} %llu\n",
                       (unsigned long long)member_handshakes[0]);
        gw_metrics_add(t, "lxd_gateway_member_tls_handshakes_total{resumed=\"true\"} %llu\n",
                       (unsigned long long)member_handshakes[1]);
        break;
    }
}
