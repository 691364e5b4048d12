/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the admin record (mg_admin.c), which a node reads
 * from Redis and does not trust: whatever the bytes, parsing must not read
 * out of bounds, a refused record must read as all zero, and an accepted
 * one must be within its bounds and format back to the same bytes when
 * they are canonical.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_admin.c src/mg_admin.c -o /tmp/fa
 *     /tmp/fa -max_total_time=20
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mg_admin.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             zeros;
    char            buf[MG_ADMIN_REC_LEN], *copy;
    size_t          n, i;
    mg_admin_rec_t  rec, back;

    /* exactly size bytes: no NUL after them to lean on */

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    if (mg_admin_parse(copy, size, &rec) != 0) {
        if (rec.weight || rec.drain || rec.forced_until || rec.clear) {
            abort();
        }

        free(copy);
        return 0;
    }

    if (rec.weight < 0 || rec.weight > MG_ADMIN_WEIGHT_MAX
        || (rec.drain != 0 && rec.drain != 1) || rec.forced_until < 0)
    {
        abort();
    }

    n = mg_admin_format(&rec, buf);

    if (n == 0 || mg_admin_parse(buf, n, &back) != 0
        || memcmp(&rec, &back, sizeof(rec)) != 0)
    {
        abort();
    }

    /* canonical input (no leading zeros) formats back to itself */

    if (n == size && memcmp(buf, copy, n) != 0) {
        zeros = 0;

        for (i = 0; i + 1 < size; i++) {
            if ((i == 0 || copy[i - 1] == '|') && copy[i] == '0'
                && copy[i + 1] != '|')
            {
                zeros = 1;
            }
        }

        if (!zeros) {
            abort();
        }
    }

    free(copy);

    return 0;
}
