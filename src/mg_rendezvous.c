/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <math.h>

#include "mg_rendezvous.h"


/* FNV-1a over both strings, then a splitmix64 finalizer for avalanche */

uint64_t
mg_rendezvous_hash(const char *key, size_t key_len, const char *name,
    size_t name_len)
{
    size_t    i;
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    for (i = 0; i < key_len; i++) {
        h ^= (unsigned char) key[i];
        h *= 0x100000001b3ULL;
    }

    /* a separator, so that ("ab", "c") and ("a", "bc") differ */

    h ^= 0xff;
    h *= 0x100000001b3ULL;

    for (i = 0; i < name_len; i++) {
        h ^= (unsigned char) name[i];
        h *= 0x100000001b3ULL;
    }

    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;

    return h;
}


int
mg_rendezvous_pick(const char *key, size_t key_len,
    const mg_rendezvous_node_t *nodes, size_t n,
    const unsigned char *eligible)
{
    int      best;
    size_t   i;
    double   u, score, best_score;

    best = -1;
    best_score = 0;

    for (i = 0; i < n; i++) {
        if (eligible && !eligible[i]) {
            continue;
        }

        /* the top 53 bits as a double strictly inside (0, 1) */

        u = ((double) (mg_rendezvous_hash(key, key_len, nodes[i].name,
                                          nodes[i].len) >> 11) + 0.5)
            / 9007199254740992.0;

        score = -(double) nodes[i].weight / log(u);

        if (best < 0 || score > best_score) {
            best = (int) i;
            best_score = score;
        }
    }

    return best;
}
