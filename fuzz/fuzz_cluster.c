/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for Redis Cluster's replies (mg_cluster.c): an error
 * reply comes from the network and is not trusted.  Whatever the bytes,
 * parsing must stay within them; a redirect understood must have a slot
 * below 16384, a port of 1 to 65535 and a host inside the reply; and the
 * key slot of any bytes must be below 16384, equal to that of its hash tag
 * when it has one.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_cluster.c src/mg_cluster.c -o /tmp/fc
 *     /tmp/fc -max_total_time=20
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mg_cluster.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                     kind;
    unsigned char          *copy;
    const unsigned char    *open, *close;
    mg_cluster_redirect_t   to;

    /* exactly size bytes: no NUL after them to lean on */

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    kind = mg_cluster_reply(copy, size, &to);

    if (kind < MG_CLUSTER_OTHER || kind > MG_CLUSTER_INVALID) {
        abort();
    }

    if (kind == MG_CLUSTER_MOVED || kind == MG_CLUSTER_ASK) {
        if (to.slot >= MG_KEYSLOTS || to.port < 1 || to.port > 65535
            || to.host < copy || to.host + to.host_len > copy + size)
        {
            abort();
        }
    }

    if (mg_keyslot(copy, size) >= MG_KEYSLOTS) {
        abort();
    }

    open = memchr(copy, '{', size);

    if (open) {
        close = memchr(open + 1, '}', size - (open + 1 - copy));

        if (close && close > open + 1
            && mg_keyslot(copy, size)
               != mg_keyslot(open + 1, close - open - 1))
        {
            abort();
        }
    }

    free(copy);

    return 0;
}
