/*
 * journal.c: see journal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "journal.h"

static int fd = -1;
static json_t *unfinished; /* array of merged records */

/* the records of the file, merged per move: {id: merged} */
static json_t *read_moves(const char *path)
{
    json_t *moves = json_object();
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return moves;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) > 0) {
        json_t *rec = json_loads(line, 0, NULL); /* a torn last line (crash while writing) is not a record */
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
    free(line);
    fclose(fp);
    return moves;
}

static const char *write_all(int f, const char *buf, size_t len)
{
    while (len != 0) {
        ssize_t n = write(f, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return strerror(errno);
        buf += n, len -= n;
    }
    return NULL;
}

const char *gw_journal_open(const char *state_dir)
{
    char path[4096], tmp[4096];
    snprintf(path, sizeof(path), "%s/moves.journal", state_dir);
    snprintf(tmp, sizeof(tmp), "%s/moves.journal.tmp", state_dir);
    json_t *moves = read_moves(path);
    unfinished = json_array();
    const char *id, *err = NULL;
    json_t *m;
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        json_decref(moves);
        return "cannot write the move journal in state_dir";
    }
    json_object_foreach(moves, id, m)
    {
        const char *step = json_string_value(json_object_get(m, "step"));
        if (step != NULL && strcmp(step, "end") == 0)
            continue;
        json_array_append(unfinished, m);
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
    if (err != NULL)
        return "cannot write the move journal in state_dir";
    int dir = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* the rename itself must survive a crash */
    if (dir >= 0) {
        fsync(dir);
        close(dir);
    }
    if ((fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)) < 0)
        return "cannot open the move journal in state_dir";
    return NULL;
}

const char *gw_journal_write(const char *id, const char *step, json_t *fields)
{
    json_t *rec = fields != NULL ? json_deep_copy(fields) : json_object();
    json_object_set_new(rec, "move", json_string(id));
    json_object_set_new(rec, "step", json_string(step));
    char *line = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    size_t len = strlen(line);
    line = realloc(line, len + 2);
    line[len] = '\n';
    line[len + 1] = '\0';
    const char *err = fd < 0 ? "the move journal is not open" : write_all(fd, line, len + 1);
    free(line);
    if (err == NULL && fdatasync(fd) != 0)
        err = strerror(errno);
    return err;
}

json_t *gw_journal_unfinished(void)
{
    return json_incref(unfinished);
}
