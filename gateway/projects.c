/*
 * projects.c: see projects.h.
 */
#include <stdlib.h>
#include <string.h>
#include "projects.h"

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

gw_projects_t *gw_projects_from_json(json_t *array)
{
    gw_projects_t *set = calloc(1, sizeof(*set));
    size_t n = json_array_size(array), i;
    json_t *v;
    set->refs = 1;
    set->names = calloc(n + 1, sizeof(*set->names));
    json_array_foreach(array, i, v)
    {
        if (json_is_string(v))
            set->names[set->num++] = strdup(json_string_value(v));
    }
    qsort(set->names, set->num, sizeof(*set->names), cmp_name);
    size_t kept = 0; /* drop duplicates: a set */
    for (i = 0; i != set->num; ++i) {
        if (kept != 0 && strcmp(set->names[kept - 1], set->names[i]) == 0)
            free(set->names[i]);
        else
            set->names[kept++] = set->names[i];
    }
    set->num = kept;
    return set;
}

json_t *gw_projects_to_json(const gw_projects_t *set)
{
    json_t *a = json_array();
    for (size_t i = 0; set != NULL && i != set->num; ++i)
        json_array_append_new(a, json_string(set->names[i]));
    return a;
}

gw_projects_t *gw_projects_ref(const gw_projects_t *set)
{
    gw_projects_t *s = (gw_projects_t *)set; /* the count is the one mutable part of a set */
    if (s != NULL)
        ++s->refs;
    return s;
}

void gw_projects_unref(gw_projects_t *set)
{
    if (set == NULL || --set->refs != 0)
        return;
    for (size_t i = 0; i != set->num; ++i)
        free(set->names[i]);
    free(set->names);
    free(set);
}

static void on_pool_dispose(void *data)
{
    gw_projects_unref(*(gw_projects_t **)data);
}

const gw_projects_t *gw_projects_ref_in_pool(h2o_mem_pool_t *pool, gw_projects_t *set)
{
    if (set == NULL)
        return NULL;
    gw_projects_t **holder = h2o_mem_alloc_shared(pool, sizeof(*holder), on_pool_dispose);
    *holder = gw_projects_ref(set);
    return set;
}

int gw_projects_has(const gw_projects_t *set, const char *name)
{
    return set != NULL && bsearch(&name, set->names, set->num, sizeof(*set->names), cmp_name) != NULL;
}

int gw_projects_equal(const gw_projects_t *a, const gw_projects_t *b)
{
    size_t na = a != NULL ? a->num : 0, nb = b != NULL ? b->num : 0;
    if (na != nb)
        return 0;
    for (size_t i = 0; i != na; ++i)
        if (strcmp(a->names[i], b->names[i]) != 0)
            return 0;
    return 1;
}

char *gw_projects_key(const gw_projects_t *set)
{
    json_t *a = gw_projects_to_json(set);
    char *key = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (key == NULL)
        abort();
    return key;
}
