/*
 * main.c: runs every unit test group. usage: unit-tests DATA_DIR
 */
#include "unit.h"

int unit_passed, unit_failed;
const char *unit_data_dir = "tests/unit/data";

int main(int argc, char **argv)
{
    if (argc > 1)
        unit_data_dir = argv[1];
    test_config();
    test_tls();
    test_plugins();
    test_plugins_move();
    test_hygiene();
    test_hold();
    test_path();
    test_members();
    test_log();
    test_api10();
    test_volumes_all();
    test_replica();
    test_operations();
    printf("%d passed, %d failed\n", unit_passed, unit_failed);
    return unit_failed != 0;
}
