/*
 * fuzz_config.c: gw_config_load on the input as the YAML file (and the size and duration parsers on it).
 * Contract: a configuration or an error, never both nor neither; a loaded one has every required key; an error is
 * one line (config.h: "a malloc'd one-line message naming the key and line").
 */
#include <unistd.h>
#include "fuzz_req.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (path[0] == '\0') {
        snprintf(path, sizeof(path), "/tmp/gw-fuzz-config-%d.yaml", (int)getpid());
        if (access("/dev/shm", W_OK) == 0)
            snprintf(path, sizeof(path), "/dev/shm/gw-fuzz-config-%d.yaml", (int)getpid());
    }
    FILE *fp = fopen(path, "w");
    fwrite(data, 1, size, fp);
    fclose(fp);
    char *err = NULL;
    gw_config_t *conf = gw_config_load(path, &err);
    FUZZ_CHECK((conf != NULL) != (err != NULL), "config: %s and error %s", conf != NULL ? "loaded" : "not loaded", err);
    if (conf != NULL) {
        FUZZ_CHECK(conf->num_listen != 0 && conf->tls_certificate != NULL && conf->tls_key != NULL && conf->num_members != 0 &&
                       conf->cluster_certificate != NULL && conf->identity_certificate != NULL && conf->identity_key != NULL &&
                       conf->state_dir != NULL,
                   "a loaded configuration misses a required key");
        gw_config_free(conf);
    } else {
        FUZZ_CHECK(strchr(err, '\n') == NULL, "the error is not one line: %s", err);
        free(err);
    }
    char *s = fuzz_strndup(data, size);
    uint64_t v;
    gw_config_parse_size(s, &v);
    gw_config_parse_duration(s, &v);
    free(s);
    return 0;
}
