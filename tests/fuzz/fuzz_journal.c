/*
 * fuzz_journal.c: the move journal's reader (gateway/journal.c, included for its state): the input is written as
 * state_dir/moves.journal, opened, read.
 * Contract: opening never fails on content (a torn or foreign line is not a record); every unfinished move is an
 * object with its "move" id whose step is not "end"; the rewritten file reads back to the same moves.
 */
#include <unistd.h>
#include "fuzz_req.h"
#include "../../gateway/journal.c"

static char dir[] = "/dev/shm/gw-fuzz-journal-XXXXXX"; /* tmpfs: fsync is cheap */

static void reset(void)
{
    if (J.fd >= 0)
        close(J.fd);
    J.fd = -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dir[sizeof(dir) - 2] == 'X' && mkdtemp(dir) == NULL) {
        memcpy(dir, "/tmp/gw-fuzz-journal-XXXXXX", sizeof("/tmp/gw-fuzz-journal-XXXXXX"));
        if (mkdtemp(dir) == NULL)
            abort();
    }
    char path[256];
    snprintf(path, sizeof(path), "%s/moves.journal", dir);
    FILE *fp = fopen(path, "w");
    fwrite(data, 1, size, fp);
    fclose(fp);

    reset();
    const char *err = gw_journal_open(dir, NULL);
    FUZZ_CHECK(err == NULL, "gw_journal_open: %s", err);
    json_t *first = gw_journal_unfinished(), *m;
    size_t i;
    json_array_foreach(first, i, m)
    {
        const char *step = json_string_value(json_object_get(m, "step"));
        FUZZ_CHECK(json_is_object(m) && json_is_string(json_object_get(m, "move")), "unfinished move without an id");
        FUZZ_CHECK(step == NULL || strcmp(step, "end") != 0, "a finished move is unfinished");
    }
    /* a record written now is read back at the next start */
    err = gw_journal_write("fuzz-move", "begin", json_array_size(first) != 0 ? json_array_get(first, 0) : NULL);
    FUZZ_CHECK(err == NULL, "gw_journal_write: %s", err);
    err = gw_journal_write("fuzz-move", "end", NULL);
    FUZZ_CHECK(err == NULL, "gw_journal_write: %s", err);

    reset();
    err = gw_journal_open(dir, NULL);
    FUZZ_CHECK(err == NULL, "gw_journal_open again: %s", err);
    json_t *second = gw_journal_unfinished();
    FUZZ_CHECK(json_array_size(second) == json_array_size(first), "rewritten journal: %zu moves, was %zu", json_array_size(second),
               json_array_size(first));
    json_array_foreach(first, i, m)
    {
        int found = 0;
        size_t j;
        json_t *n;
        json_array_foreach(second, j, n) found |= json_equal(m, n);
        FUZZ_CHECK(found, "a move changed when the journal was rewritten");
    }
    json_decref(first);
    json_decref(second);
    reset();
    return 0;
}
