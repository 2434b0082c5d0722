/*
 * volumes_all.c: every storage volume in one call (API extension `storage_volumes_all`, LXD 5.21), for LXD 5.0.2
 * clusters, which list volumes one pool at a time.
 *
 * Claims `GET /1.0/storage-volumes` and `GET /1.0/storage-volumes/<type>` (custom, image, container,
 * virtual-machine), with recursion, project, all-projects, target and filter as natively. The answer is built from the
 * per-pool lists: GET /1.0/storage-pools, then GET /1.0/storage-pools/<pool>/volumes[/<type>] for every pool, at most
 * MAX_IN_FLIGHT at a time, each sent to a healthy member (the ?target= member first) AS THE CALLER with the caller's
 * query, so LXD applies its own rules to each (projects, restrictions, an unknown member or project). One pool's
 * refusal is the whole answer (natively one query answers or fails); a pool deleted since it was listed is left out.
 * The lists are merged as natively: sorted by type (container, image, custom, virtual-machine) then name, and with
 * recursion each volume gets its `pool` (5.0.2's volumes have none; volume URLs already name their pool).
 * A filter clause on `pool` is decided by the gateway for each pool (volume_filter.h); all else members filter.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "hold.h"
#include "lxd.h"
#include "members.h"
#include "metrics.h"
#include "plugin.h"
#include "text.h"
#include "volume_filter.h"
#include "volumes.h"
#include "volumes_all.h"

#define MAX_IN_FLIGHT 8    /* per-pool calls at once, per request */
#define CALL_TIMEOUT 30000 /* ms, each call */

typedef struct st_pool_t {
    char *name;
    json_t *list;     /* the member's `metadata` (an array), once answered; NULL: skipped (gone) or not yet */
    gw_mcall_t *call; /* in flight, or NULL */
    struct st_all_t *all;
} pool_t;

typedef struct st_all_t {
    gw_hold_t hold;
    const gw_identity_t *id;
    gw_member_t *first; /* the ?target= member, asked first (gw_members_usable), or NULL */
    char *type;         /* the path's type, or NULL: every type */
    char *query;        /* what every per-pool call carries but its filter: "recursion=1&project=p&..." */
    int recursion;      /* objects rather than URLs */
    char *filter;       /* ?filter= (NULL: none) */
    gw_vfilter_t *vf;   /* its reading, when a clause is on `pool` (else NULL: it goes as it came) */
    gw_mcall_t *list;   /* GET /1.0/storage-pools in flight */
    pool_t *pools;
    size_t num_pools, next, pending;
    int failed; /* answered already (an error): what is still in flight is cancelled */
} all_t;

int gw_volumes_all_type_rank(const char *type)
{
    static const char *const order[] = {"container", "image", "custom", "virtual-machine"}; /* LXD's type numbers */
    for (int i = 0; i != 4; ++i)
        if (strcmp(type, order[i]) == 0)
            return i;
    return 4;
}

/* the path's type: "" for /1.0/storage-volumes, the type for /1.0/storage-volumes/<type>, NULL when not ours */
static const char *type_of(h2o_req_t *req)
{
    static const char prefix[] = "/1.0/storage-volumes";
    h2o_iovec_t p = req->path_normalized;
    if (p.len < sizeof(prefix) - 1 || memcmp(p.base, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    if (p.len == sizeof(prefix) - 1)
        return "";
    if (p.base[sizeof(prefix) - 1] != '/' || p.len == sizeof(prefix) ||
        memchr(p.base + sizeof(prefix), '/', p.len - sizeof(prefix)) != NULL)
        return NULL;
    return h2o_strdup(&req->pool, p.base + sizeof(prefix), p.len - sizeof(prefix)).base;
}

static int claims(h2o_req_t *req, const gw_caller_t *caller)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) || type_of(req) == NULL)
        return 0;
    (void)caller; /* (handle() refuses a caller who is not a client, as natively) */
    return 1;
}

static void all_free(all_t *a)
{
    gw_hold_take(&a->hold);
    if (a->list != NULL)
        gw_members_call_cancel(a->list);
    for (size_t i = 0; i != a->num_pools; ++i) {
        if (a->pools[i].call != NULL)
            gw_members_call_cancel(a->pools[i].call);
        free(a->pools[i].name);
        json_decref(a->pools[i].list);
    }
    free(a->pools), free(a->type), free(a->query), free(a->filter);
    gw_vfilter_free(a->vf);
    free(a);
}

static void on_gone(gw_hold_t *hold)
{
    all_free((all_t *)hold); /* (the hold is the first member) */
}

/* answers `status` with `json` (borrowed) and ends */
static void answer(all_t *a, long status, json_t *json)
{
    gw_metrics_single_call("volumes_all", status == 200 ? "listed" : "refused");
    h2o_req_t *req = gw_hold_take(&a->hold);
    if (req != NULL)
        gw_lxd_send_json(req, (int)status, json_incref(json));
    all_free(a);
}

static void refuse(all_t *a, int status, const char *msg)
{
    json_t *j = gw_lxd_error_json(status, msg);
    answer(a, status, j);
    json_decref(j);
}

/* a member's answer that is not a list: the caller gets it (its error as LXD wrote it), or 502 */
static void relay_error(all_t *a, const char *err, long status, json_t *json)
{
    if (err != NULL || !json_is_object(json) || status == 200) {
        char *msg = gw_text_format("Cluster member did not answer: %s", err != NULL ? err : "not LXD's answer");
        refuse(a, 502, msg);
        free(msg);
        return;
    }
    answer(a, status, json);
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* the percent-decoded `s[0..len)` (malloc'd); a %00 stays as it is (a C string cannot hold the NUL) */
static char *decode(const char *s, size_t len)
{
    char *out = malloc(len + 1), *o = out;
    for (size_t i = 0; i != len; ++i) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0 && (s[i + 1] != '0' || s[i + 2] != '0')) {
            *o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

char *gw_volumes_all_pool_name(const char *url)
{
    static const char prefix[] = "/1.0/storage-pools/";
    if (url == NULL || strncmp(url, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    const char *name = url + sizeof(prefix) - 1;
    size_t len = strcspn(name, "/?");
    if (len == 0 || name[len] != '\0')
        return NULL;
    char *out = decode(name, len);
    if (!gw_text_is_utf8(out, strlen(out))) {
        free(out);
        return NULL;
    }
    return out;
}

/* the type and the name of a volume URL ("/1.0/storage-pools/<pool>/volumes/<type>/<name>[?...]"), decoded
 * (malloc'd); 0 when it is not one */
static int url_parts(const char *url, char **type, char **name)
{
    static const char prefix[] = "/1.0/storage-pools/";
    if (strncmp(url, prefix, sizeof(prefix) - 1) != 0)
        return 0;
    const char *p = url + sizeof(prefix) - 1, *end = p + strcspn(p, "?");
    const char *s1 = memchr(p, '/', end - p);
    if (s1 == NULL || (size_t)(end - s1) < sizeof("/volumes/") || memcmp(s1, "/volumes/", 9) != 0)
        return 0;
    const char *t = s1 + 9, *s2 = memchr(t, '/', end - t);
    if (s2 == NULL)
        return 0;
    *type = decode(t, s2 - t), *name = decode(s2 + 1, end - s2 - 1);
    return 1;
}

typedef struct st_entry_t {
    int rank;
    char *name;
    size_t seq; /* order of arrival: the sort is stable, as native's */
    json_t *value;
} entry_t;

static int entry_cmp(const void *x, const void *y)
{
    const entry_t *a = x, *b = y;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    int c = strcmp(a->name, b->name);
    if (c != 0)
        return c;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

json_t *gw_volumes_all_merge(char *const *pool_names, json_t *const *lists, size_t num_pools, int recursion)
{
    size_t total = 0, n = 0;
    for (size_t i = 0; i != num_pools; ++i)
        total += json_array_size(lists[i]);
    entry_t *entries = calloc(total + 1, sizeof(*entries));
    for (size_t i = 0; i != num_pools; ++i) {
        size_t j;
        json_t *v;
        json_array_foreach(lists[i], j, v)
        {
            entry_t *e = &entries[n];
            char *type = NULL;
            if (recursion && json_is_object(v)) {
                json_t *copy = json_copy(v);
                json_object_set_new(copy, "pool", json_string(pool_names[i]));
                e->value = copy;
                type = strdup(gw_vol_str(v, "type"));
                e->name = strdup(gw_vol_str(v, "name"));
            } else if (!recursion && json_is_string(v) && url_parts(json_string_value(v), &type, &e->name)) {
                e->value = json_incref(v);
            } else {
                continue; /* not a volume: not passed on */
            }
            e->rank = gw_volumes_all_type_rank(type);
            e->seq = n++;
            free(type);
        }
    }
    qsort(entries, n, sizeof(*entries), entry_cmp);
    json_t *out = json_array();
    for (size_t i = 0; i != n; ++i) {
        json_array_append_new(out, entries[i].value);
        free(entries[i].name);
    }
    free(entries);
    return out;
}

static void finish(all_t *a)
{
    char **names = malloc((a->num_pools + 1) * sizeof(*names));
    json_t **lists = malloc((a->num_pools + 1) * sizeof(*lists));
    for (size_t i = 0; i != a->num_pools; ++i)
        names[i] = a->pools[i].name, lists[i] = a->pools[i].list;
    json_t *merged = gw_volumes_all_merge(names, lists, a->num_pools, a->recursion);
    free(names), free(lists);
    json_t *body = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:o}", "type", "sync", "status", "Success", "status_code", 200,
                             "operation", "", "error_code", 0, "error", "", "metadata", merged);
    answer(a, 200, body);
    json_decref(body);
}

static void launch(all_t *a);

static void on_pool(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    pool_t *p = data;
    all_t *a = p->all;
    p->call = NULL;
    --a->pending;
    if (err == NULL && status == 200 && json_is_array(json_object_get(json, "metadata"))) {
        p->list = json_incref(json_object_get(json, "metadata"));
    } else if (err == NULL && status == 404 && json_is_object(json) &&
               strcmp(gw_vol_str(json, "error"), "Storage pool not found") == 0) {
        /* deleted since it was listed: natively it would not be there */
    } else {
        relay_error(a, err, status, json); /* frees `a`, cancelling the other calls */
        return;
    }
    launch(a);
}

/* starts per-pool calls up to MAX_IN_FLIGHT; answers when all have ended */
static void launch(all_t *a)
{
    while (a->next < a->num_pools && a->pending < MAX_IN_FLIGHT) {
        pool_t *p = &a->pools[a->next++];
        char *ep = curl_easy_escape(NULL, p->name, 0), *et = a->type != NULL ? curl_easy_escape(NULL, a->type, 0) : NULL,
             *ef = NULL;
        if (a->filter != NULL) {
            char *f = a->vf != NULL ? gw_vfilter_for_pool(a->vf, p->name) : strdup(a->filter);
            ef = curl_easy_escape(NULL, f, 0);
            free(f);
        }
        char *path = gw_text_dupf("/1.0/storage-pools/%s/volumes%s%s?%s%s%s", ep, et != NULL ? "/" : "", et != NULL ? et : "",
                                  a->query, ef != NULL ? "&filter=" : "", ef != NULL ? ef : "");
        curl_free(ep), curl_free(et), curl_free(ef);
        ++a->pending;
        p->call = gw_members_call_first(a->first, a->id, "GET", path, NULL, CALL_TIMEOUT, on_pool, p);
        free(path);
        if (p->call == NULL) {
            --a->pending;
            refuse(a, 503, "No cluster member is reachable through the gateway");
            return;
        }
    }
    if (a->pending == 0 && a->next == a->num_pools)
        finish(a);
}

static void on_pools(void *data, const char *err, long status, json_t *json, const gw_call_t *call)
{
    (void)call;
    all_t *a = data;
    a->list = NULL;
    json_t *urls = json_object_get(json, "metadata");
    if (err != NULL || status != 200 || !json_is_array(urls))
        return relay_error(a, err, status, json);
    a->pools = calloc(json_array_size(urls) + 1, sizeof(*a->pools));
    size_t i;
    json_t *u;
    json_array_foreach(urls, i, u)
    {
        char *name = gw_volumes_all_pool_name(json_string_value(u));
        if (name == NULL)
            continue; /* not a pool's URL: nothing to ask */
        a->pools[a->num_pools++] = (pool_t){name, NULL, NULL, a};
    }
    launch(a);
}

/* LXD's reading of ?recursion= (strconv.Atoi, then != 0): "1x", " 1" or a number past 64 bits is no recursion, "-1" and
 * "+2" are recursion */
static int is_recursion(const char *v)
{
    if (v == NULL)
        return 0;
    int negative = *v == '-';
    if (*v == '+' || *v == '-')
        ++v;
    size_t n = strspn(v, "0123456789");
    if (n == 0 || v[n] != '\0')
        return 0;
    v += strspn(v, "0"); /* leading zeros count for nothing */
    n = strlen(v);
    if (n == 0)
        return 0; /* zero */
    /* Atoi's range, int64: -9223372036854775808 ... 9223372036854775807 */
    return n < 19 || (n == 19 && strcmp(v, negative ? "9223372036854775808" : "9223372036854775807") <= 0);
}

/* Go's strconv.ParseBool-like test LXD applies to all-projects (shared.IsTrue) */
static int is_true(const char *v)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    for (size_t i = 0; v != NULL && i != 4; ++i)
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
    return 0;
}

static void handle(h2o_req_t *req, const gw_caller_t *caller)
{
    all_t *a = calloc(1, sizeof(*a));
    gw_hold_attach(&a->hold, req, on_gone);
    a->id = caller->identity;
    const char *type = type_of(req), *project = gw_lxd_query(req, "project"), *all = gw_lxd_query(req, "all-projects"),
               *target = gw_lxd_query(req, "target"), *filter = gw_lxd_query(req, "filter"),
               *recursion = gw_lxd_query(req, "recursion");
    static const char *const names[] = {"type", "project", "all-projects", "target", "filter", NULL};
    const char *values[] = {type, project, all, target, filter}, *bad = gw_vol_bad_text(names, values);
    char *msg = NULL;
    int status = 0;
    if (!gw_trust_is_client(caller)) {
        refuse(a, 403, "not authorized"); /* natively, as for every list (LXD 5.0.2 would say 404: it has no such path) */
    } else if (bad != NULL) {
        msg = gw_text_format("The %s in the request is not valid UTF-8", bad);
        refuse(a, 400, msg);
    } else if (*type != '\0' && gw_volumes_all_type_rank(type) == 4) {
        refuse(a, 400, "Invalid storage volume type name"); /* (LXD's VolumeTypeNameToDBType, as on a pool's list) */
    } else if (filter != NULL && *filter != '\0' && (a->vf = gw_vfilter_parse(filter, &status, &msg)) == NULL) {
        refuse(a, status, msg);
    } else if (is_true(all) && project != NULL && *project != '\0') {
        refuse(a, 400, "Cannot specify a project when requesting all projects");
    } else {
        if (a->vf != NULL && !gw_vfilter_has_pool(a->vf)) {
            gw_vfilter_free(a->vf);
            a->vf = NULL;
        }
        a->type = *type != '\0' ? strdup(type) : NULL;
        a->filter = filter != NULL && *filter != '\0' ? strdup(filter) : NULL;
        a->recursion = is_recursion(recursion);
        char *ep = project != NULL && *project != '\0' ? curl_easy_escape(NULL, project, 0) : NULL;
        char *ea = all != NULL ? curl_easy_escape(NULL, all, 0) : NULL;
        char *em = target != NULL && *target != '\0' ? curl_easy_escape(NULL, target, 0) : NULL;
        a->query = gw_text_dupf("recursion=%d%s%s%s%s%s%s", a->recursion, ep != NULL ? "&project=" : "", ep != NULL ? ep : "",
                                ea != NULL ? "&all-projects=" : "", ea != NULL ? ea : "", em != NULL ? "&target=" : "",
                                em != NULL ? em : "");
        curl_free(ep), curl_free(ea), curl_free(em);
        a->first = gw_members_usable(target);
        if (a->first != NULL)
            gw_member_note(req, a->first);
        if ((a->list = gw_members_call_first(a->first, a->id, "GET", "/1.0/storage-pools", NULL, CALL_TIMEOUT, on_pools, a)) ==
            NULL)
            refuse(a, 503, "No cluster member is reachable through the gateway");
    }
    free(msg);
}

const gw_plugin_t gw_plugin_volumes_all = {"volumes_all", "storage_volumes_all", NULL, claims, handle};
