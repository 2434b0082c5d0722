/*
 * fuzz_envelope.c: LXD's error envelope, for any message bytes. Input: 2 bytes of status, then the message.
 * Contract: gw_lxd_error_json always makes an envelope that json_dumps can write (a message is often a client's
 * own bytes: "?target=%ff" reached it through gw_lxd_send_error); gw_lxd_send_error always sends it, whole, with the
 * status; gw_lxd_send_sync always answers.
 */
#include "fuzz_req.h"
#include "lxd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int status = 400 + (data[0] << 8 | data[1]) % 200;
    char *msg = fuzz_strndup(data + 2, size - 2);

    json_t *j = gw_lxd_error_json(status, msg);
    FUZZ_CHECK(j != NULL, "gw_lxd_error_json(%d, <%zu bytes>) made no envelope", status, size - 2);
    char *text = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "the envelope cannot be written");
    json_t *back = json_loads(text, 0, NULL);
    FUZZ_CHECK(json_is_string(json_object_get(back, "error")) && json_integer_value(json_object_get(back, "error_code")) == status,
               "the envelope lost its error: %s", text);
    json_decref(back);
    free(text);
    json_decref(j);

    fuzz_req_t f;
    fuzz_req_init(&f, H2O_STRLIT("POST"), H2O_STRLIT("/1.0/storage-pools/default/volumes/custom?target=x"));
    gw_lxd_send_error(&f.req, status, "Cluster member not found: \"%s\" (target)", msg);
    fuzz_req_check_answered(&f, "gw_lxd_send_error");
    FUZZ_CHECK(f.status == status, "sent status %d for %d", f.status, status);
    fuzz_req_dispose(&f);

    /* any JSON value as the metadata of a sync answer */
    fuzz_req_init(&f, H2O_STRLIT("GET"), H2O_STRLIT("/1.0"));
    gw_lxd_send_sync(&f.req, json_loadb((const char *)data + 2, size - 2, JSON_DECODE_ANY, NULL));
    fuzz_req_check_answered(&f, "gw_lxd_send_sync");
    fuzz_req_dispose(&f);
    free(msg);
    return 0;
}
