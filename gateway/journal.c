/*
 * journal.c: see journal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "journal.h"
#include "log.h"
#include "metrics.h"

#define END_RETRY_MS 5000 /* an "end" record that could not be written is tried again this often */

static struct {
    int fd;             /* the journal, open for appending; -1 before gw_journal_open */
    int torn;           /* a failed append could not be cut off: the next record starts on a new line */
    json_t *unfinished; /* array of merged records */
    json_t *pending;    /* array of "end" records not written yet */
    h2o_loop_t *loop;   /* runs `retry`, or NULL */
    h2o_timeout_t retry_timeout;
    h2o_timeout_entry_t retry;
} J = {.fd = -1};

/* the records of the file, merged per move, into {id: merged}; NULL or an error (a missing file is an empty one) */
static const char *read_moves(const char *path, json_t *moves)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return errno == ENOENT ? NULL : strerror(errno);
    char *line = NULL;
    size_t cap = 0;
    errno = 0;
    while (getline(&line, &cap, fp) > 0) {
        json_t *rec = json_loads(line, 0, NULL); /* a torn line (crash while writing) is not a record */
        const char *id = json_string_value(json_object_get(rec, "move"));
        if (id != NULL) {
            json_t *m = json_object_get(moves, id);
            if (m == NULL)
                json_object_set(moves, id, rec);
            else
                json_object_update(m, rec);
        }
        json_decref(rec);
    }
    const char *err = ferror(fp) ? strerror(errno != 0 ? errno : EIO) : NULL;
    free(line);
    fclose(fp);
    return err;
}

static const char *write_all(int f, const char *buf, size_t len)
{
    while (len != 0) {
        ssize_t n = write(f, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return strerror(errno);
        if (n == 0)
            return strerror(ENOSPC);
        buf += n, len -= n;
    }
    return NULL;
}

static void on_retry(h2o_timeout_entry_t *entry);

const char *gw_journal_open(const char *state_dir, h2o_loop_t *loop)
{
    char path[4096], tmp[4096];
    snprintf(path, sizeof(path), "%s/moves.journal", state_dir);
    snprintf(tmp, sizeof(tmp), "%s/moves.journal.tmp", state_dir);
    if (J.loop == NULL && loop != NULL) {
        J.loop = loop;
        h2o_timeout_init(loop, &J.retry_timeout, END_RETRY_MS);
        J.retry.cb = on_retry;
    }
    if (J.fd >= 0)
        close(J.fd), J.fd = -1;
    json_decref(J.unfinished);
    J.unfinished = json_array();
    if (J.pending == NULL)
        J.pending = json_array();
    json_t *moves = json_object(), *m;
    const char *id, *err = read_moves(path, moves);
    static char why[4096 + 512];
    if (err != NULL) { /* never rewritten empty: its moves would be forgotten */
        json_decref(moves);
        snprintf(why, sizeof(why),
                 "cannot read the move journal %s (%s); it holds the moves a crash interrupted: fix or move it away", path, err);
        return why;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        json_decref(moves);
        snprintf(why, sizeof(why), "cannot write the move journal in state_dir (%s)", strerror(errno));
        return why;
    }
    json_object_foreach(moves, id, m)
    {
        const char *step = json_string_value(json_object_get(m, "step"));
        if (step != NULL && strcmp(step, "end") == 0)
            continue;
        json_array_append(J.unfinished, m);
        char *line = json_dumps(m, JSON_COMPACT);
        if (err == NULL && ((err = write_all(out, line, strlen(line))) == NULL))
            err = write_all(out, "\n", 1);
        free(line);
    }
    json_decref(moves);
    if (err == NULL && fsync(out) != 0)
        err = strerror(errno);
    close(out);
    if (err == NULL && rename(tmp, path) != 0)
        err = strerror(errno);
    if (err != NULL) {
        unlink(tmp);
        snprintf(why, sizeof(why), "cannot write the move journal in state_dir (%s)", err);
        return why;
    }
    int dir = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* the rename itself must survive a crash */
    if (dir >= 0) {
        fsync(dir);
        close(dir);
    }
    if ((J.fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)) < 0) {
        snprintf(why, sizeof(why), "cannot open the move journal in state_dir (%s)", strerror(errno));
        return why;
    }
    J.torn = 0;
    return NULL;
}

/* one line, whole and on disk, or nothing of it */
static const char *append(const char *line, size_t len)
{
    if (J.fd < 0)
        return "the move journal is not open";
    struct stat st;
    if (fstat(J.fd, &st) != 0)
        return strerror(errno);
    const char *err = J.torn ? write_all(J.fd, "\n", 1) : NULL;
    if (err == NULL)
        err = write_all(J.fd, line, len);
    if (err == NULL && fdatasync(J.fd) != 0)
        err = strerror(errno);
    if (err != NULL) /* cut it back off; if even that fails, the reader skips the torn line and the next one starts anew */
        J.torn = ftruncate(J.fd, st.st_size) != 0 ? 1 : J.torn;
    else
        J.torn = 0;
    return err;
}

static const char *write_record(json_t *rec)
{
    char *line = json_dumps(rec, JSON_COMPACT);
    if (line == NULL)
        return "cannot encode the journal record";
    size_t len = strlen(line);
    line = realloc(line, len + 2);
    line[len] = '\n';
    line[len + 1] = '\0';
    const char *err = append(line, len + 1);
    free(line);
    return err;
}

static json_t *make_record(const char *id, const char *step, json_t *fields)
{
    json_t *rec = fields != NULL ? json_deep_copy(fields) : json_object();
    json_object_set_new(rec, "move", json_string(id));
    json_object_set_new(rec, "step", json_string(step));
    return rec;
}

/* writes the "end" records still pending, oldest first; stops at the first failure */
static void flush_pending(void)
{
    while (J.pending != NULL && json_array_size(J.pending) != 0) {
        json_t *rec = json_array_get(J.pending, 0);
        const char *err = write_record(rec);
        if (err != NULL) {
            gw_metrics_retry("journal_end");
            if (J.loop != NULL && !h2o_timeout_is_linked(&J.retry))
                h2o_timeout_link(J.loop, &J.retry_timeout, &J.retry);
            return;
        }
        gw_log(GW_LOG_INFO, "move journal: end record written after all", "move", json_string_value(json_object_get(rec, "move")),
               NULL);
        json_array_remove(J.pending, 0);
    }
}

static void on_retry(h2o_timeout_entry_t *entry)
{
    (void)entry;
    flush_pending();
}

const char *gw_journal_write(const char *id, const char *step, json_t *fields)
{
    flush_pending();
    json_t *rec = make_record(id, step, fields);
    const char *err = write_record(rec);
    json_decref(rec);
    return err;
}

const char *gw_journal_end(const char *id, json_t *fields)
{
    flush_pending();
    json_t *rec = make_record(id, "end", fields);
    const char *err = json_array_size(J.pending) != 0 ? "earlier end records are not written yet" : write_record(rec);
    if (err != NULL) {
        gw_log(GW_LOG_ERROR, "cannot write the end of a move to the journal; writing it again until it is", "move", id, "err", err,
               NULL);
        json_array_append(J.pending, rec);
        gw_metrics_retry("journal_end");
        if (J.loop != NULL && !h2o_timeout_is_linked(&J.retry))
            h2o_timeout_link(J.loop, &J.retry_timeout, &J.retry);
    }
    json_decref(rec);
    return err;
}

size_t gw_journal_pending(void)
{
    return J.pending != NULL ? json_array_size(J.pending) : 0;
}

json_t *gw_journal_unfinished(void)
{
    return json_incref(J.unfinished);
}
