/*
 * unit.h: a minimal test harness: CHECK records a failure and goes on; main prints "N passed, N failed".
 */
#ifndef GW_UNIT_H
#define GW_UNIT_H

#include <stdio.h>

extern int unit_passed, unit_failed;
extern const char *unit_data_dir; /* tests/unit/data */

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        if (cond) {                                                                                                                \
            ++unit_passed;                                                                                                         \
        } else {                                                                                                                   \
            ++unit_failed;                                                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                                        \
        }                                                                                                                          \
    } while (0)

void test_config(void);
void test_tls(void);
void test_plugins(void);
void test_plugins_move(void);
void test_hygiene(void);
void test_hold(void);
void test_path(void);
void test_members(void);
void test_log(void);
void test_volumes_all(void);
void test_api10(void);
void test_replica(void);
void test_operations(void);

#endif
