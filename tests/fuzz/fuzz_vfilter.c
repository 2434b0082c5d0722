/*
 * fuzz_vfilter.c: the reading of GET /1.0/storage-volumes' `filter=` (plugins/volume_filter.h). Input: a pool name,
 * a NUL byte, the filter (both valid UTF-8, as the plugin checks before parsing; other inputs are skipped).
 * Contract: parsing never fails but with LXD's "Invalid filter: ..." (500) or the gateway's 400; what a member gets for
 * a pool reads again (it is a filter 5.0.2 accepts), with no clause on `pool` but the two constant ones, and without
 * a clause on `pool` the filter is the same words; matching a pool name never reads beyond either string.
 */
#include <string.h>
#include "fuzz_req.h"
#include "text.h"
#include "volume_filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    if (nul == NULL)
        return 0;
    char *pool = fuzz_strndup(data, nul - data), *filter = fuzz_strndup(nul + 1, size - (nul - data) - 1);
    if (!gw_text_is_utf8(pool, strlen(pool)) || !gw_text_is_utf8(filter, strlen(filter))) {
        free(pool), free(filter);
        return 0;
    }
    int status = 0;
    char *msg = NULL;
    gw_vfilter_t *f = gw_vfilter_parse(filter, &status, &msg);
    if (f == NULL) {
        FUZZ_CHECK((status == 500 || status == 400) && msg != NULL && strncmp(msg, "Invalid filter: ", 16) == 0,
                   "refused with %d %s", status, msg != NULL ? msg : "(no message)");
        FUZZ_CHECK(gw_text_is_utf8(msg, strlen(msg)), "the message is not text");
        free(msg);
    } else {
        char *out = gw_vfilter_for_pool(f, pool);
        FUZZ_CHECK(gw_text_is_utf8(out, strlen(out)), "the member's filter is not text: %s", out);
        gw_vfilter_t *again = gw_vfilter_parse(out, &status, &msg);
        FUZZ_CHECK(again != NULL, "the member's filter \"%s\" (from \"%s\") does not read: %s", out, filter, msg);
        if (gw_vfilter_has_pool(f)) {
            /* every clause on pool is now a constant one, which reads and gives the same filter again */
            char *twice = gw_vfilter_for_pool(again, "pool-x");
            FUZZ_CHECK(strcmp(twice, out) == 0, "\"%s\" is not stable: \"%s\"", out, twice);
            free(twice);
        } else {
            FUZZ_CHECK(!gw_vfilter_has_pool(again), "a clause on pool appeared: %s", out);
        }
        gw_vfilter_free(again);
        free(out);
        gw_vfilter_free(f);
    }
    (void)gw_vfilter_pool_matches(filter, pool);
    (void)gw_vfilter_pool_matches(pool, filter);
    free(pool), free(filter);
    return 0;
}
