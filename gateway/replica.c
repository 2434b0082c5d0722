/*
 * replica.c: see replica.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/rand.h>
#include "replica.h"

#define FILE_NAME "replica-id"

static char id[GW_REPLICA_ID_LEN + 1];
static char error[4200]; /* what gw_replica_init returns on failure */

__attribute__((format(printf, 1, 2))) static const char *fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, sizeof(error), fmt, ap);
    va_end(ap);
    return error;
}

/* `buf` (`len` bytes) is exactly 8 lowercase hex digits, with or without one newline after them */
static int well_formed(const char *buf, size_t len)
{
    if (len != GW_REPLICA_ID_LEN && !(len == GW_REPLICA_ID_LEN + 1 && buf[GW_REPLICA_ID_LEN] == '\n'))
        return 0;
    for (size_t i = 0; i != GW_REPLICA_ID_LEN; ++i)
        if (!((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f')))
            return 0;
    return 1;
}

/* reads the id from `path`: 1 when read, 0 when there is no such file, -1 on an error (in `error`) */
static int read_id(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        fail("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char buf[GW_REPLICA_ID_LEN + 2]; /* one byte more than the longest good content: a longer file is seen as such */
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            fail("cannot read %s: %s", path, strerror(e));
            return -1;
        }
        len += (size_t)n;
    }
    close(fd);
    if (!well_formed(buf, len)) {
        fail("%s is not this replica's id (exactly 8 lowercase hex digits); remove it to have a new one made, or restore it", path);
        return -1;
    }
    memcpy(id, buf, GW_REPLICA_ID_LEN);
    id[GW_REPLICA_ID_LEN] = '\0';
    return 1;
}

/* makes `path` with a new random id: a temporary file, written and synced, renamed into place unless one is there by
 * then (another process made it: that one is read) */
static const char *make_id(const char *dir, const char *path)
{
    unsigned char r[GW_REPLICA_ID_LEN / 2];
    char text[GW_REPLICA_ID_LEN + 2];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return fail("cannot make %s: no random bytes", path);
    for (size_t i = 0; i != sizeof(r); ++i)
        sprintf(text + 2 * i, "%02x", r[i]);
    strcat(text, "\n");
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return fail("cannot make %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    int e = 0;
    if (write(fd, text, len) != (ssize_t)len)
        e = errno != 0 ? errno : EIO;
    else if (fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    /* never replaces an existing file (renameat2 RENAME_NOREPLACE; a hard link where the file system lacks it) */
    if (e == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
        e = errno;
        if (e == EINVAL || e == ENOSYS)
            e = link(tmp, path) == 0 ? 0 : errno;
        unlink(tmp);
    }
    if (e == EEXIST)
        return read_id(path) == 1 ? NULL : error;
    if (e != 0) {
        unlink(tmp);
        return fail("cannot make %s: %s", path, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* the rename itself survives a crash */
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    memcpy(id, text, GW_REPLICA_ID_LEN);
    id[GW_REPLICA_ID_LEN] = '\0';
    return NULL;
}

const char *gw_replica_init(const char *state_dir)
{
    char path[4096];
    id[0] = '\0';
    if ((size_t)snprintf(path, sizeof(path), "%s/" FILE_NAME, state_dir) >= sizeof(path))
        return fail("state_dir too long for %s", FILE_NAME);
    switch (read_id(path)) {
    case 1:
        return NULL;
    case 0:
        return make_id(state_dir, path);
    default:
        return error;
    }
}

const char *gw_replica_id(void)
{
    return id;
}
