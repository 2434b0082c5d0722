/*
 * fuzz_audit.c: the audit log and the access log, for any field bytes. Input: fingerprint \n identity \n method \n
 * operation \n path (the path is the rest: a client's bytes).
 * Contract: gw_log_audit writes exactly one JSON line per call, naming the path (log.h: "Written for every request
 * that may change something"); gw_log_access writes exactly one line (values are escaped, never split).
 */
#include "fuzz_req.h"
#include "log.h"

static char *next_field(const char **p, const char *end)
{
    const char *nl = memchr(*p, '\n', end - *p), *stop = nl != NULL ? nl : end;
    char *s = fuzz_strndup(*p, stop - *p);
    *p = nl != NULL ? nl + 1 : end;
    return s;
}

static size_t count_lines(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i != len; ++i)
        n += s[i] == '\n';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    char *fp = next_field(&p, end), *identity = next_field(&p, end), *method = next_field(&p, end), *op = next_field(&p, end),
         *path = fuzz_strndup(p, end - p);

    char *buf = NULL;
    size_t len = 0;
    gw_log_audit_fp = open_memstream(&buf, &len);
    gw_log_audit(fp, identity, method, path, 202, op);
    fclose(gw_log_audit_fp);
    gw_log_audit_fp = NULL;
    FUZZ_CHECK(count_lines(buf, len) == 1 && len > 0 && buf[len - 1] == '\n', "audit: %zu lines for one request (path %s)",
               count_lines(buf, len), path);
    json_t *j = json_loads(buf, 0, NULL);
    FUZZ_CHECK(json_is_string(json_object_get(j, "path")) && json_is_string(json_object_get(j, "method")) &&
                   json_integer_value(json_object_get(j, "status")) == 202,
               "audit line incomplete: %s", buf);
    json_decref(j);
    free(buf);

    buf = NULL, len = 0;
    gw_log_access_fp = open_memstream(&buf, &len);
    gw_log_access("method", method, "path", path, "fingerprint", fp, "identity", identity, "operation", op, NULL);
    fclose(gw_log_access_fp);
    gw_log_access_fp = NULL;
    FUZZ_CHECK(count_lines(buf, len) == 1 && buf[len - 1] == '\n', "access log: %zu lines for one request", count_lines(buf, len));
    free(buf);

    free(fp), free(identity), free(method), free(op), free(path);
    return 0;
}
