/*
 * journal.h: the record of every move's steps in state_dir, so that a crash at any step loses no volume.
 *
 * An append-only file of JSON lines, `{"move": <id>, "step": <step>, ...}`, each written and fsync'd BEFORE the
 * step that touches a member. At start the records of each move are merged (later fields win); a move whose last
 * step is not "end" was interrupted and is finished or rolled back by its owner (plugins/volume_move.c). Once read,
 * the file is rewritten with only those unfinished moves (atomically: temporary file, fsync, rename).
 *
 * A full disk or a failing one: an append that fails is cut back off the file (a later record never follows a torn
 * one) and the caller does not take its step; an "end" that fails is kept and written again until it is; a journal
 * that exists but cannot be read stops start-up (it is never rewritten empty).
 */
#ifndef GW_JOURNAL_H
#define GW_JOURNAL_H

#include <jansson.h>
#include <h2o.h>

/* opens state_dir/moves.journal (creating it if it does not exist); `loop` runs the retries of "end" records (NULL:
 * they are retried at the next write only); returns NULL or an error */
const char *gw_journal_open(const char *state_dir, h2o_loop_t *loop);
/* appends a record of move `id` at `step` with `fields` (borrowed, may be NULL) and fsyncs it; NULL or an error
 * (then nothing of it is left in the file) */
const char *gw_journal_write(const char *id, const char *step, json_t *fields);
/* gw_journal_write of step "end"; if it fails, the record is kept and written again every few seconds until it is
 * (returns the first error, for the log; the move is over either way) */
const char *gw_journal_end(const char *id, json_t *fields);
/* "end" records not written yet */
size_t gw_journal_pending(void);
/* the moves left unfinished by the previous run: an array of merged records (a new reference) */
json_t *gw_journal_unfinished(void);

#endif
