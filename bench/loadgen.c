/*
 * loadgen.c: a fixed-concurrency HTTPS load generator with client certificates (wrk and ab cannot present one).
 *
 * usage: loadgen URL CERT KEY CONCURRENCY SECONDS [WARMUP [PID]]
 * Keeps CONCURRENCY requests in flight over keep-alive connections for WARMUP (default 0) + SECONDS, then prints
 * one line about the SECONDS after the warm-up (connections are opened during the warm-up, so at high concurrency
 * the handshakes are not what is measured):
 *   requests=N errors=N connects=N seconds=S rps=R p50_ms=X p99_ms=Y [cpu_s=C]
 * requests: the ones that ended within the window; connects: TLS connections opened in all (CONCURRENCY
 * when keep-alive held throughout); cpu_s: CPU seconds (user + system, all threads) process PID used in the window
 * (/proc/PID/stat; the proxy's cost, which does not depend on how busy the machine is). Every request must answer
 * 200; anything else, warm-up included, counts as an error. Bounded by WARMUP + SECONDS: it stops by itself. Exit 1
 * on any error or if nothing completed in the window.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* CPU seconds (utime + stime) of process `pid` so far, -1 if unreadable */
static double cpu_seconds(const char *pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces; fields 3.. follow its ')' */
    unsigned long long utime, stime;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: loadgen URL CERT KEY CONCURRENCY SECONDS [WARMUP [PID]]\n");
        return 2;
    }
    const char *url = argv[1], *cert = argv[2], *key = argv[3], *pid = argc > 7 ? argv[7] : NULL;
    int conc = atoi(argv[4]);
    double secs = atof(argv[5]), warm = argc > 6 ? atof(argv[6]) : 0, cpu0 = -1, cpu1 = -1;
    if (conc < 1 || secs <= 0 || warm < 0) {
        fprintf(stderr, "loadgen: bad CONCURRENCY, SECONDS or WARMUP\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)conc);
    size_t cap = 1 << 20, n = 0, errors = 0, connects = 0;
    double *lat = malloc(cap * sizeof(*lat)), *started = calloc(conc, sizeof(*started));
    CURL **easy = calloc(conc, sizeof(*easy));
    double t0 = now(), start = t0 + warm, end = start + secs;
    if (warm == 0 && pid != NULL)
        cpu0 = cpu_seconds(pid);
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
            long code = 0, made = 0;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&st);
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &made);
            connects += (size_t)made;
            double t = now();
            if (m->data.result != CURLE_OK || code != 200)
                ++errors;
            if (t >= start && t <= end) {
                if (n == cap)
                    lat = realloc(lat, (cap *= 2) * sizeof(*lat));
                lat[n++] = (t - *st) * 1e3;
            }
            curl_multi_remove_handle(multi, e);
            if (t < end) {
                *st = t;
                curl_multi_add_handle(multi, e);
                ++running;
            }
        }
        if (pid != NULL && cpu0 < 0 && now() >= start)
            cpu0 = cpu_seconds(pid);
        if (pid != NULL && cpu1 < 0 && now() >= end)
            cpu1 = cpu_seconds(pid);
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    if (pid != NULL && cpu1 < 0)
        cpu1 = cpu_seconds(pid);
    double took = secs;
    qsort(lat, n, sizeof(*lat), cmp);
    printf("requests=%zu errors=%zu connects=%zu seconds=%.2f rps=%.1f p50_ms=%.2f p99_ms=%.2f", n, errors, connects, took,
           n / took, n ? lat[n / 2] : 0.0, n ? lat[(size_t)(n * 0.99)] : 0.0);
    if (pid != NULL)
        printf(" cpu_s=%.2f", cpu0 < 0 || cpu1 < 0 ? -1.0 : cpu1 - cpu0);
    printf("\n");
    if (pid != NULL && (cpu0 < 0 || cpu1 < 0)) {
        fprintf(stderr, "loadgen: cannot read /proc/%s/stat\n", pid);
        return 1;
    }
    return errors != 0 || n == 0;
}
