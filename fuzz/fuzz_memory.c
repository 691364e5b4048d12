/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the JSON of the gateway's memory (mg_memory.c).
 * The textual splitter must agree with jansson: an array jansson writes
 * compactly splits into as many lines as it has elements, each line
 * parsing back to its element.  Stored items read back (a page, the first
 * whole turn, the provider-only state check) and a client's conversation
 * items and metadata must not crash, and what is accepted must be one
 * compact JSON object a line.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_memory.c src/mg_*.c -ljansson -lcrypto -lm -o /tmp/fm
 *     /tmp/fm -max_total_time=20
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_memory.h"


static int
fz_id(void *data, const char *prefix, char *buf, size_t size)
{
    static unsigned  n;

    snprintf(buf, size, "%sfz%u", prefix, n++);

    return 0;
}


static void
fz_lines(json_t *arr)
{
    char     *dump, *p, *nl;
    size_t    n, k;
    json_t   *back;
    mg_buf_t  out;

    dump = json_dumps(arr, JSON_COMPACT | JSON_ENCODE_ANY);
    if (dump == NULL) {
        return;
    }

    memset(&out, 0, sizeof(mg_buf_t));

    if (mg_mem_lines(dump, strlen(dump), &out, &n) != MG_X_OK) {
        abort();
    }

    if (n != json_array_size(arr)
        || mg_mem_count(dump, strlen(dump)) != n)
    {
        abort();
    }

    mg_buf_append(&out, "", 1);

    for (p = out.data, k = 0; n && p; k++) {
        nl = strchr(p, '\n');
        back = json_loadb(p, nl ? (size_t) (nl - p) : strlen(p),
                          JSON_DECODE_ANY, NULL);

        if (back == NULL || !json_equal(back, json_array_get(arr, k))) {
            abort();
        }

        json_decref(back);
        p = nl ? nl + 1 : NULL;
    }

    if (k != n) {
        abort();
    }

    mg_buf_free(&out);
    free(dump);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t        i, n, lens[64];
    json_t       *j;
    mg_buf_t      out;
    mg_xerror_t   err;
    const char   *p, *items[64];

    j = json_loadb((const char *) data, size, JSON_DECODE_ANY, NULL);

    if (json_is_array(j)) {
        fz_lines(j);
    }

    json_decref(j);

    /* stored items, one a line, read back */

    n = 0;
    p = (const char *) data;

    for (i = 0; i < size && n < 64; i++) {
        if (data[i] == '\n') {
            items[n] = p;
            lens[n] = (const char *) data + i - p;
            n++;
            p = (const char *) data + i + 1;
        }
    }

    memset(&out, 0, sizeof(mg_buf_t));
    memset(&err, 0, sizeof(mg_xerror_t));

    (void) mg_mem_turn_start(items, lens, n);
    (void) mg_mem_has_state((const char *) data, size);
    (void) mg_mem_page(items, lens, n, 1, &out);
    mg_buf_reset(&out);
    (void) mg_mem_list(items, lens, n, "asc", 3, "3", 1,
                       n ? items[0] : NULL, n ? lens[0] : 0, &out, &err);
    mg_buf_reset(&out);

    /* a client's items and metadata */

    if (mg_mem_items((const char *) data, size, fz_id, NULL, &out, &n, &err)
        == MG_X_OK)
    {
        mg_buf_append(&out, "\n", 1);

        for (p = out.data; n && p < out.data + out.len; n--) {
            const char  *nl = memchr(p, '\n', out.data + out.len - p);

            j = json_loadb(p, nl - p, 0, NULL);
            if (!json_is_object(j)) {
                abort();
            }

            json_decref(j);
            p = nl + 1;
        }
    }

    mg_buf_reset(&out);
    (void) mg_mem_metadata((const char *) data, size, &out, &err);

    mg_buf_free(&out);

    return 0;
}
