/*
 * loadgen.c: a fixed-concurrency HTTPS load generator with client certificates (wrk and ab cannot present one).
 *
 * usage: loadgen URL CERT KEY CONCURRENCY SECONDS
 * Keeps CONCURRENCY requests in flight over keep-alive connections for SECONDS, then prints one line:
 *   requests=N errors=N seconds=S rps=R p50_ms=X p99_ms=Y
 * Every request must answer 200; anything else counts as an error. Bounded by SECONDS: it stops by itself.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p, (void)u;
    return s * n;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: loadgen URL CERT KEY CONCURRENCY SECONDS\n");
        return 2;
    }
    const char *url = argv[1], *cert = argv[2], *key = argv[3];
    int conc = atoi(argv[4]);
    double secs = atof(argv[5]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)conc);
    size_t cap = 1 << 20, n = 0, errors = 0;
    double *lat = malloc(cap * sizeof(*lat)), *started = calloc(conc, sizeof(*started));
    CURL **easy = calloc(conc, sizeof(*easy));
    double t0 = now(), end = t0 + secs;
    for (int i = 0; i != conc; ++i) {
        CURL *e = easy[i] = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, key);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)(started + i));
        started[i] = now();
        curl_multi_add_handle(multi, e);
    }
    int running = conc;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            CURL *e = m->easy_handle;
            double *st;
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&st);
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            double t = now();
            if (m->data.result != CURLE_OK || code != 200)
                ++errors;
            if (n == cap)
                lat = realloc(lat, (cap *= 2) * sizeof(*lat));
            lat[n++] = (t - *st) * 1e3;
            curl_multi_remove_handle(multi, e);
            if (t < end) {
                *st = t;
                curl_multi_add_handle(multi, e);
                ++running;
            }
        }
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    double took = now() - t0;
    qsort(lat, n, sizeof(*lat), cmp);
    printf("requests=%zu errors=%zu seconds=%.2f rps=%.1f p50_ms=%.2f p99_ms=%.2f\n", n, errors, took, n / took,
           n ? lat[n / 2] : 0.0, n ? lat[(size_t)(n * 0.99)] : 0.0);
    return errors != 0;
}
