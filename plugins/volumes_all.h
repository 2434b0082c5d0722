/*
 * volumes_all.h: what volumes_all.c's plugin computes without a member, for the unit tests.
 */
#ifndef GW_PLUGIN_VOLUMES_ALL_H
#define GW_PLUGIN_VOLUMES_ALL_H

#include <jansson.h>

/* LXD's order of volume types: container 0, image 1, custom 2, virtual-machine 3; 4 for any other name */
int gw_volumes_all_type_rank(const char *type);
/* the pool named by "/1.0/storage-pools/<name>", decoded (malloc'd); NULL when `url` is not one, or the name is not
 * text */
char *gw_volumes_all_pool_name(const char *url);
/* the per-pool lists (`lists[i]`, of pool `pool_names[i]`; NULL: none) as one array, as native answers it: sorted by
 * type then name (stably); with recursion, each volume a copy with its `pool`. Entries that are not volumes (not an
 * object, not a volume URL) are left out. A new reference */
json_t *gw_volumes_all_merge(char *const *pool_names, json_t *const *lists, size_t num_pools, int recursion);

#endif
