/*
 * fuzz_req.h: what every libFuzzer harness of tests/fuzz/ shares: a fake h2o request that the gateway's code can read
 * (path, query, method, headers, body) and answer (h2o_start_response/h2o_send end in an output stream that keeps the
 * answer), and a little text format for inputs, so that seeds are readable:
 *
 *     METHOD\n PATH\n (name: value\n)* \n BODY
 *
 * The pseudo-header "x-fuzz-caller: <kind>" sets the caller's trust (0 none, 1 client, 2 restricted, 3 metrics,
 * 4 server; a restricted caller has no project) instead of being a header. Bytes the HTTP/1 parser (picohttpparser) refuses in a
 * request target or a header are replaced, so that a finding is one a client could cause.
 *
 * Run: `make fuzz` (FUZZ_SECONDS each, default 60), `make fuzz-smoke` (10 s each), `make fuzz-replay` (the kept
 * crash inputs); seeds in tests/fuzz/corpus/<target>/, crash inputs in tests/fuzz/crashes/<target>/.
 */
#ifndef GW_FUZZ_REQ_H
#define GW_FUZZ_REQ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <h2o.h>
#include <jansson.h>
#include "trust.h"

/* a contract check: unlike assert, never compiled out */
#define FUZZ_CHECK(cond, ...)                                                                                                      \
    do {                                                                                                                           \
        if (!(cond)) {                                                                                                             \
            fprintf(stderr, "FUZZ CONTRACT VIOLATED (%s:%d): %s: ", __FILE__, __LINE__, #cond);                                    \
            fprintf(stderr, __VA_ARGS__);                                                                                          \
            fputc('\n', stderr);                                                                                                   \
            abort();                                                                                                               \
        }                                                                                                                          \
    } while (0)

typedef struct st_fuzz_req_t {
    h2o_req_t req;
    h2o_pathconf_t pathconf; /* no filters: h2o_start_response leaves _ostr_top as ours */
    h2o_ostream_t out;
    int sends;  /* h2o_send calls */
    int final;  /* the final one came */
    int status; /* req->res.status at the final send */
    char *body; /* the answer's body (malloc'd, NUL-terminated) */
    size_t body_len;
    gw_caller_t caller;
} fuzz_req_t;

static void fuzz_req_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    fuzz_req_t *f = H2O_STRUCT_FROM_MEMBER(fuzz_req_t, out, self);
    FUZZ_CHECK(!f->final, "h2o_send after the final send");
    ++f->sends;
    for (size_t i = 0; i != bufcnt; ++i) {
        f->body = realloc(f->body, f->body_len + bufs[i].len + 1);
        memcpy(f->body + f->body_len, bufs[i].base, bufs[i].len);
        f->body_len += bufs[i].len;
        f->body[f->body_len] = '\0';
    }
    if (!h2o_send_state_is_in_progress(state)) {
        f->final = 1;
        f->status = req->res.status;
    }
}

/* a byte picohttpparser lets through in a request target (and h2o then hands to handlers) */
static inline char fuzz_target_byte(unsigned char c)
{
    return c <= ' ' || c == 0x7f ? '_' : (char)c;
}

/* a byte of a header value h2o hands to handlers (no CR, LF, NUL) */
static inline char fuzz_value_byte(unsigned char c)
{
    return c == '\r' || c == '\n' || c == '\0' ? ' ' : (char)c;
}

static inline void fuzz_req_init(fuzz_req_t *f, const char *method, size_t method_len, const char *path, size_t path_len)
{
    memset(f, 0, sizeof(*f));
    h2o_mem_init_pool(&f->req.pool);
    f->req.pathconf = &f->pathconf;
    f->out.do_send = fuzz_req_do_send;
    f->req._ostr_top = &f->out;
    f->req.version = 0x101;
    f->req.method = h2o_strdup(&f->req.pool, method, method_len);
    char *p = h2o_mem_alloc_pool(&f->req.pool, path_len + 2), *o = p;
    if (path_len == 0 || path[0] != '/')
        *o++ = '/';
    for (size_t i = 0; i != path_len; ++i)
        *o++ = fuzz_target_byte((unsigned char)path[i]);
    *o = '\0';
    f->req.path = h2o_iovec_init(p, o - p);
    f->req.input.path = f->req.path;
    f->req.path_normalized =
        h2o_url_normalize_path(&f->req.pool, f->req.path.base, f->req.path.len, &f->req.query_at, &f->req.norm_indexes);
    f->req.authority = h2o_iovec_init(H2O_STRLIT("gateway.test:8443"));
    f->req.scheme = &H2O_URL_SCHEME_HTTPS;
    f->caller.kind = GW_TRUST_CLIENT;
    f->caller.identity = NULL;
}

/* adds header `name` (lower-cased by h2o's token lookup for known ones) with `value` (sanitised) */
static inline void fuzz_req_header(fuzz_req_t *f, const char *name, size_t name_len, const char *value, size_t value_len)
{
    char *n = h2o_mem_alloc_pool(&f->req.pool, name_len + 1), *v = h2o_mem_alloc_pool(&f->req.pool, value_len + 1);
    for (size_t i = 0; i != name_len; ++i) /* h2o lower-cases names (HTTP/1) or refuses upper case (HTTP/2) */
        n[i] = (char)h2o_tolower(fuzz_target_byte((unsigned char)name[i]) == ':' ? '_' : fuzz_target_byte((unsigned char)name[i]));
    n[name_len] = '\0';
    for (size_t i = 0; i != value_len; ++i)
        v[i] = fuzz_value_byte((unsigned char)value[i]);
    v[value_len] = '\0';
    if (name_len == 0)
        return;
    h2o_add_header_by_str(&f->req.pool, &f->req.headers, n, name_len, 1, NULL, v, value_len);
    if (h2o_lcstris(n, name_len, H2O_STRLIT("upgrade"))) /* h2o's HTTP/1 layer sets this */
        f->req.upgrade = h2o_iovec_init(v, value_len);
}

/* next line of [*p, end) (without its \n); 0 at the end */
static inline int fuzz_next_line(const char **p, const char *end, const char **line, size_t *len)
{
    if (*p >= end)
        return 0;
    const char *nl = memchr(*p, '\n', end - *p);
    *line = *p;
    *len = (nl != NULL ? nl : end) - *p;
    *p = nl != NULL ? nl + 1 : end;
    return 1;
}

/* builds `f` from the text format above */
static inline void fuzz_req_parse(fuzz_req_t *f, const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size, *method = "GET", *path = "/";
    size_t mlen = 3, plen = 1;
    fuzz_next_line(&p, end, &method, &mlen);
    if (mlen > 16)
        mlen = 16;
    fuzz_next_line(&p, end, &path, &plen);
    fuzz_req_init(f, method, mlen, path, plen);
    const char *line;
    size_t len;
    while (fuzz_next_line(&p, end, &line, &len) && len != 0) {
        const char *colon = memchr(line, ':', len);
        if (colon == NULL)
            continue;
        const char *v = colon + 1, *lend = line + len;
        while (v < lend && *v == ' ')
            ++v;
        if ((size_t)(colon - line) == 13 && memcmp(line, "x-fuzz-caller", 13) == 0) {
            f->caller.kind = v < lend ? (gw_trust_kind_t)((unsigned char)(*v - '0') % 5) : GW_TRUST_NONE;
            continue;
        }
        fuzz_req_header(f, line, colon - line, v, lend - v);
    }
    if (p < end)
        f->req.entity = h2o_strdup(&f->req.pool, p, end - p);
}

/* a request that was answered got one whole answer, in LXD's JSON envelope when it is an error */
static inline void fuzz_req_check_answered(fuzz_req_t *f, const char *who)
{
    FUZZ_CHECK(f->final, "%s: claimed the request but sent no final answer", who);
    if (f->status >= 400) {
        json_t *j = json_loads(f->body != NULL ? f->body : "", 0, NULL);
        FUZZ_CHECK(json_is_object(j) && json_integer_value(json_object_get(j, "error_code")) == f->status,
                   "%s: error answer %d is not LXD's envelope: %s", who, f->status, f->body != NULL ? f->body : "(none)");
        json_decref(j);
    }
}

static inline void fuzz_req_dispose(fuzz_req_t *f)
{
    h2o_mem_clear_pool(&f->req.pool);
    free(f->body);
    f->body = NULL;
}

/* a NUL-terminated malloc'd copy */
static inline char *fuzz_strndup(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

#endif
