/*
 * test_replica.c: state_dir/replica-id: made once (8 lowercase hex digits), read back unchanged at later starts, never
 * replaced; a file of any other form stops start-up with a line naming it.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "replica.h"
#include "unit.h"

static char *path_in(const char *dir)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/replica-id", dir);
    return path;
}

static void put(const char *dir, const char *text, size_t len)
{
    FILE *fp = fopen(path_in(dir), "w");
    fwrite(text, 1, len, fp);
    fclose(fp);
}

static size_t read_back(const char *dir, char *buf, size_t size)
{
    FILE *fp = fopen(path_in(dir), "r");
    if (fp == NULL)
        return 0;
    size_t n = fread(buf, 1, size, fp);
    fclose(fp);
    return n;
}

static int is_id(const char *s)
{
    return strlen(s) == 8 && strspn(s, "0123456789abcdef") == 8;
}

/* files in `dir` (a left-over temporary file would be counted) */
static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d != NULL)
        closedir(d);
    return n;
}

static void clean(const char *dir)
{
    unlink(path_in(dir));
    rmdir(dir);
}

void test_replica(void)
{
    char dir[] = "/tmp/gw-unit-replica.XXXXXX", other[] = "/tmp/gw-unit-replica.XXXXXX", buf[32], first[9];
    CHECK(mkdtemp(dir) != NULL && mkdtemp(other) != NULL);

    /* first start: made, and what is in the file */
    CHECK(gw_replica_init(dir) == NULL);
    CHECK(is_id(gw_replica_id()));
    snprintf(first, sizeof(first), "%s", gw_replica_id());
    size_t n = read_back(dir, buf, sizeof(buf));
    CHECK(n == 9 && memcmp(buf, first, 8) == 0 && buf[8] == '\n');
    CHECK(count_files(dir) == 1); /* no temporary file left */
    struct stat st;
    CHECK(stat(path_in(dir), &st) == 0 && (st.st_mode & 0022) == 0);

    /* later starts: the same id, the file untouched */
    CHECK(gw_replica_init(dir) == NULL && strcmp(gw_replica_id(), first) == 0);
    CHECK(read_back(dir, buf, sizeof(buf)) == 9 && memcmp(buf, first, 8) == 0);

    /* another state_dir: another id (random: 1 in 2^32 to collide) */
    CHECK(gw_replica_init(other) == NULL && is_id(gw_replica_id()) && strcmp(gw_replica_id(), first) != 0);

    /* an id written by hand, without the newline: taken as it is */
    put(other, "0123abcd", 8);
    CHECK(gw_replica_init(other) == NULL && strcmp(gw_replica_id(), "0123abcd") == 0);

    /* anything else stops start-up, naming the file, and is left as it was */
    static const struct {
        const char *text;
        size_t len;
    } bad[] = {
        {"", 0},          {"0123abc", 7},       {"0123abcd\n\n", 10}, {"0123ABCD", 8},
        {"0123abcg", 8},  {" 0123abcd", 9},     {"0123abcd \n", 10},  {"0123abcd0", 9},
        {"0123\0bcd", 8}, {"0123abcd\r\n", 10}, {"0123abcdx", 9},     {"0123abcd0123abcd", 16},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        put(other, bad[i].text, bad[i].len);
        const char *err = gw_replica_init(other);
        CHECK(err != NULL && strstr(err, path_in(other)) != NULL && strstr(err, "8 lowercase hex digits") != NULL);
        CHECK(strcmp(gw_replica_id(), "") == 0);
        CHECK(read_back(other, buf, sizeof(buf)) == bad[i].len && memcmp(buf, bad[i].text, bad[i].len) == 0);
        if (err == NULL)
            fprintf(stderr, "FAIL: replica-id %zu accepted\n", i);
    }

    /* a state_dir that cannot be written: an error naming the file, not an id */
    const char *err = gw_replica_init("/nonexistent-gw-unit");
    CHECK(err != NULL && strstr(err, "/nonexistent-gw-unit/replica-id") != NULL && strcmp(gw_replica_id(), "") == 0);
    clean(dir);
    clean(other);
}
