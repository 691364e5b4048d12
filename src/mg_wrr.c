/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include "mg_wrr.h"


/*
 * As in ngx_http_upstream_get_peer(): every eligible peer gains its weight,
 * the one with the most is chosen and pays back the total.  Ties go to the
 * first peer, so that 5:1:1 gives a a b a c a a, nginx's sequence.  Peers
 * that are not eligible keep their state untouched and rejoin smoothly.
 */

int
mg_wrr_pick(mg_wrr_peer_t *peers, size_t n, const unsigned char *eligible)
{
    long            total;
    size_t          i;
    mg_wrr_peer_t  *peer, *best;

    best = NULL;
    total = 0;

    for (i = 0; i < n; i++) {

        if (eligible && !eligible[i]) {
            continue;
        }

        peer = &peers[i];

        peer->current += peer->weight;
        total += peer->weight;

        if (best == NULL || peer->current > best->current) {
            best = peer;
        }
    }

    if (best == NULL) {
        return -1;
    }

    best->current -= total;

    return (int) (best - peers);
}
