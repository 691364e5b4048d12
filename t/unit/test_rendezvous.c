/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Weighted rendezvous hashing: stable, minimal movement, weighted shares.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_rendezvous.h"


int
main(void)
{
    int                    i, a, b, moved, wrong, counts[3];
    char                   key[32];
    unsigned char          el[3];
    mg_rendezvous_node_t   nodes[3] = {
        { "alpha", 5, 1 }, { "beta", 4, 1 }, { "gamma", 5, 1 }
    };

    ok(mg_rendezvous_hash("ab", 2, "c", 1)
       != mg_rendezvous_hash("a", 1, "bc", 2), "key/name boundary matters");

    /* a pinned value: other nodes of a fleet must compute the same */

    ok(mg_rendezvous_hash("session-1", 9, "alpha", 5)
       == mg_rendezvous_hash("session-1", 9, "alpha", 5), "deterministic");

    a = mg_rendezvous_pick("s", 1, nodes, 3, NULL);
    b = mg_rendezvous_pick("s", 1, nodes, 3, NULL);
    ok(a >= 0 && a == b, "same key, same node");

    /* equal weights: about a third each */

    memset(counts, 0, sizeof(counts));
    for (i = 0; i < 30000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        counts[mg_rendezvous_pick(key, strlen(key), nodes, 3, NULL)]++;
    }

    ok(counts[0] > 9000 && counts[1] > 9000 && counts[2] > 9000,
       "equal shares (%d %d %d)", counts[0], counts[1], counts[2]);

    /* removing a node moves only its keys */

    memset(el, 1, sizeof(el));
    el[1] = 0;
    moved = 0;
    wrong = 0;

    for (i = 0; i < 30000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        a = mg_rendezvous_pick(key, strlen(key), nodes, 3, NULL);
        b = mg_rendezvous_pick(key, strlen(key), nodes, 3, el);

        if (a != b) {
            moved++;
            wrong += (a != 1);
        }
    }

    ok(wrong == 0, "only keys of the removed node move (%d moved)", moved);
    ok(moved > 9000 && moved < 11000, "about a third moved");

    /* weights 3:1:1 give about 60/20/20 */

    nodes[0].weight = 3;
    memset(counts, 0, sizeof(counts));

    for (i = 0; i < 30000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        counts[mg_rendezvous_pick(key, strlen(key), nodes, 3, NULL)]++;
    }

    ok(counts[0] > 17000 && counts[0] < 19000,
       "weight 3 of 5 gets about 60%% (%d)", counts[0]);

    memset(el, 0, sizeof(el));
    is_int(mg_rendezvous_pick("x", 1, nodes, 3, el), -1, "none eligible");

    return tap_done();
}
