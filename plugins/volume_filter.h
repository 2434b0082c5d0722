/*
 * volume_filter.h: the `filter=` of GET /1.0/storage-volumes, for members that do not know a volume's pool.
 *
 * LXD 5.0.2 filters each per-pool list itself (lxd/filter: whitespace-separated "[not] field op value" clauses joined
 * by and/or, read left to right, a value in double quotes may hold spaces), but its volumes have no `pool` field: a
 * clause on `pool` never matches there. The gateway reads the filter as 5.0.2 reads it and, for each pool, replaces
 * every clause on `pool` by a clause whose outcome the member computes to what the native server computes for that
 * pool ("pool ne _" is always true on 5.0.2, "pool eq _" always false). Every other clause goes to the member as it
 * came. A pool is compared as LXD 6.1 compares a string field (shared/filter): the value a regular expression, without
 * case, anchored at both ends unless it holds a '^' or '$'. The gateway runs it with POSIX extended regular
 * expressions where they read it as Go's RE2 does (characters, '.', [...] with ranges and the common classes, ( | ),
 * * + ? {n,m}, ^ $, \ before punctuation) and refuses the rest (400), rather than guess; a value without pattern
 * syntax is a name, compared without case (ASCII letters; other characters exactly).
 */
#ifndef GW_PLUGIN_VOLUME_FILTER_H
#define GW_PLUGIN_VOLUME_FILTER_H

typedef struct st_gw_vfilter_t gw_vfilter_t;

/* reads `s` (valid UTF-8); NULL on an error, with the HTTP status (500: a syntax error, as LXD answers "Invalid
 * filter: ..."; 400: a clause on `pool` the gateway cannot evaluate) and the message (*msg, malloc'd) */
gw_vfilter_t *gw_vfilter_parse(const char *s, int *status, char **msg);
/* 1 if a clause is on `pool` (otherwise the filter goes to members unchanged) */
int gw_vfilter_has_pool(const gw_vfilter_t *f);
/* the filter a member applies to its list of pool `pool` (malloc'd) */
char *gw_vfilter_for_pool(const gw_vfilter_t *f, const char *pool);
/* 1 if the clause value `pattern` selects pool `name` (as native matches a string field; `pattern` accepted by parse) */
int gw_vfilter_pool_matches(const char *pattern, const char *name);
void gw_vfilter_free(gw_vfilter_t *f);

#endif
