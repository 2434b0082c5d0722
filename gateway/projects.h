/*
 * projects.h: a set of LXD project names, as a restricted certificate carries it.
 *
 * Kept as a set, never joined into one string: LXD 5.0 allows commas (and most other characters) in project names,
 * so "pa,pb" is ONE project, not two. Sets are immutable once made and reference-counted, so a request, an event
 * stream or a shadow identity can keep the one it was decided with after the trust mirror has moved on.
 */
#ifndef GW_PROJECTS_H
#define GW_PROJECTS_H

#include <stddef.h>
#include <jansson.h>
#include <h2o.h>

typedef struct st_gw_projects_t {
    size_t refs;  /* references; freed at 0 */
    size_t num;   /* names in the set */
    char **names; /* sorted by strcmp, distinct, each valid UTF-8 (as LXD's JSON carries them) */
} gw_projects_t;

/* the set of the strings in JSON array `array` (other values are skipped; NULL or not an array: the empty set);
 * one reference */
gw_projects_t *gw_projects_from_json(json_t *array);
/* a new JSON array of the names, sorted */
json_t *gw_projects_to_json(const gw_projects_t *set);
/* one more reference (returns `set`; NULL stays NULL): sets are immutable, only their count changes */
gw_projects_t *gw_projects_ref(const gw_projects_t *set);
/* drops a reference (NULL: nothing) */
void gw_projects_unref(gw_projects_t *set);
/* the same reference, dropped when `pool`'s owner (a request) ends */
const gw_projects_t *gw_projects_ref_in_pool(h2o_mem_pool_t *pool, gw_projects_t *set);
/* `name` is in the set */
int gw_projects_has(const gw_projects_t *set, const char *name);
/* both sets hold the same names (NULL is the empty set) */
int gw_projects_equal(const gw_projects_t *a, const gw_projects_t *b);
/* an unambiguous text for the set (its sorted JSON array, compact: ["a,b","c"]), for keys and file names; malloc'd */
char *gw_projects_key(const gw_projects_t *set);

#endif
