/*
 * journal.h: the record of every move's steps in state_dir, so that a crash at any step loses no volume.
 *
 * An append-only file of JSON lines, `{"move": <id>, "step": <step>, ...}`, each written and fsync'd BEFORE the
 * step that touches a member. At start the records of each move are merged (later fields win); a move whose last
 * step is not "end" was interrupted and is finished or rolled back by its owner (plugins/volume_move.c). Once read,
 * the file is rewritten with only those unfinished moves (atomically: temporary file, fsync, rename).
 */
#ifndef GW_JOURNAL_H
#define GW_JOURNAL_H

#include <jansson.h>

/* opens state_dir/moves.journal (creating it); returns NULL or an error */
const char *gw_journal_open(const char *state_dir);
/* appends a record of move `id` at `step` with `fields` (borrowed, may be NULL) and fsyncs it; NULL or an error */
const char *gw_journal_write(const char *id, const char *step, json_t *fields);
/* the moves left unfinished by the previous run: an array of merged records (a new reference) */
json_t *gw_journal_unfinished(void);

#endif
