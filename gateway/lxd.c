/*
 * lxd.c: LXD response envelopes (lxd/response/response.go in LXD's tree describes the shapes).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include "lxd.h"
#include "text.h"

void gw_lxd_send_json(h2o_req_t *req, int status, json_t *json)
{
    char *text = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (text == NULL) { /* cannot happen with what gw_lxd_* build; a fixed answer rather than a crash if it does */
        status = 500;
        text = strdup("{\"type\":\"error\",\"status\":\"\",\"status_code\":0,\"operation\":\"\",\"error_code\":500,"
                      "\"error\":\"The gateway could not encode its answer\",\"metadata\":null}");
    }
    size_t len = strlen(text);
    gw_lxd_send_text(req, status, h2o_strdup(&req->pool, text, len));
    free(text);
}

void gw_lxd_send_text(h2o_req_t *req, int status, h2o_iovec_t body)
{
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : status == 202 ? "Accepted" : "Error";
    req->res.content_length = body.len + 1;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    /* LXD ends its JSON bodies with a newline */
    h2o_iovec_t *bufs = h2o_mem_alloc_pool(&req->pool, sizeof(*bufs) * 2);
    bufs[0] = body;
    bufs[1] = h2o_iovec_init(H2O_STRLIT("\n"));
    static h2o_generator_t generator = {NULL, NULL};
    h2o_start_response(req, &generator);
    h2o_send(req, bufs, 2, H2O_SEND_STATE_FINAL);
}

json_t *gw_lxd_error_json(int status, const char *msg)
{
    char *clean = gw_text_clean(msg != NULL ? msg : "", msg != NULL ? strlen(msg) : 0, GW_TEXT_REPLACE);
    json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s%, s:n}", "type", "error", "status", "", "status_code", 0, "operation", "",
                          "error_code", status, "error", clean, strlen(clean), "metadata");
    free(clean);
    return j;
}

void gw_lxd_send_error(h2o_req_t *req, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = gw_text_vformat(fmt, ap);
    va_end(ap);
    gw_lxd_send_json(req, status, gw_lxd_error_json(status, msg));
    free(msg);
}

void gw_lxd_send_sync(h2o_req_t *req, json_t *metadata)
{
    json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:o}", "type", "sync", "status", "Success", "status_code", 200,
                          "operation", "", "error_code", 0, "error", "", "metadata", metadata != NULL ? metadata : json_null());
    gw_lxd_send_json(req, 200, j);
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

const char *gw_lxd_query(h2o_req_t *req, const char *name)
{
    if (req->query_at == SIZE_MAX)
        return NULL;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', end - p), *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - p) >= nlen && memcmp(p, name, nlen) == 0 && (p + nlen == stop || p[nlen] == '=')) {
            const char *v = p + nlen + (p + nlen < stop);
            char *out = h2o_mem_alloc_pool(&req->pool, stop - v + 1), *o = out;
            for (; v < stop; ++v) {
                /* %00 stays as it is: a C string cannot hold the NUL, and cutting the value there would make
                 * "default%00x" name the project "default" */
                if (*v == '%' && stop - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0 && (v[1] != '0' || v[2] != '0')) {
                    *o++ = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                    v += 2;
                } else {
                    *o++ = *v == '+' ? ' ' : *v;
                }
            }
            *o = '\0';
            return out;
        }
        p = stop + 1;
    }
    return NULL;
}

char *gw_lxd_volume_path(const char *pool, const char *name, const char *project, const char *member)
{
    char *p = curl_easy_escape(NULL, pool, 0), *n = name != NULL ? curl_easy_escape(NULL, name, 0) : NULL,
         *pr = curl_easy_escape(NULL, project, 0), *m = curl_easy_escape(NULL, member, 0), *path;
    if (asprintf(&path, "/1.0/storage-pools/%s/volumes/custom%s%s?project=%s&target=%s", p, n != NULL ? "/" : "",
                 n != NULL ? n : "", pr, m) < 0)
        abort();
    curl_free(p), curl_free(n), curl_free(pr), curl_free(m);
    return path;
}

int gw_lxd_list_has(const char *list, const char *item)
{
    size_t len = strlen(item);
    for (const char *p = list; *p != '\0';) {
        const char *comma = strchr(p, ','), *end = comma != NULL ? comma : p + strlen(p);
        if ((size_t)(end - p) == len && memcmp(p, item, len) == 0)
            return 1;
        p = comma != NULL ? comma + 1 : end;
    }
    return 0;
}

long long gw_lxd_time(const char *s)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return -1;
    if (*p == '.')
        for (++p; *p >= '0' && *p <= '9'; ++p)
            ;
    long long t = (long long)timegm(&tm);
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0' ? t : -1;
#define D(c) ((c) >= '0' && (c) <= '9')
    if ((*p != '+' && *p != '-') || !D(p[1]) || !D(p[2]) || p[3] != ':' || !D(p[4]) || !D(p[5]) || p[6] != '\0')
        return -1;
#undef D
    int hh = (p[1] - '0') * 10 + p[2] - '0', mm = (p[4] - '0') * 10 + p[5] - '0';
    if (hh > 23 || mm > 59)
        return -1;
    long long offset = (hh * 60LL + mm) * 60; /* local = UTC + offset */
    return *p == '+' ? t - offset : t + offset;
}
