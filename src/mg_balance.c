/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include "mg_balance.h"


/* compares a1 / b1 with a2 / b2 (positive b) without division */

static int
mg_balance_cmp(uint64_t a1, uint64_t b1, uint64_t a2, uint64_t b2)
{
#if defined(__SIZEOF_INT128__)
    unsigned __int128  l, r;

    l = (unsigned __int128) a1 * b2;
    r = (unsigned __int128) a2 * b1;
#else
    long double        l, r;

    l = (long double) a1 * b2;
    r = (long double) a2 * b1;
#endif

    return (l < r) ? -1 : (l > r);
}


static int
mg_balance_pick(const mg_balance_peer_t *peers, size_t n,
    const unsigned char *eligible, size_t start, int ewma)
{
    int        best;
    size_t     i, k;
    uint64_t   cost, best_cost;
    long       best_weight;

    best = -1;
    best_cost = 0;
    best_weight = 1;

    for (k = 0; k < n; k++) {
        i = (start + k) % n;

        if (eligible && !eligible[i]) {
            continue;
        }

        cost = peers[i].outstanding + 1;

        if (ewma) {
            /* saturate instead of wrapping on absurd values */
            if (peers[i].ewma_us + 1 > UINT64_MAX / cost) {
                cost = UINT64_MAX;

            } else {
                cost *= peers[i].ewma_us + 1;
            }
        }

        if (best < 0
            || mg_balance_cmp(cost, (uint64_t) peers[i].weight, best_cost,
                              (uint64_t) best_weight) < 0)
        {
            best = (int) i;
            best_cost = cost;
            best_weight = peers[i].weight;
        }
    }

    return best;
}


int
mg_lor_pick(const mg_balance_peer_t *peers, size_t n,
    const unsigned char *eligible, size_t start)
{
    return mg_balance_pick(peers, n, eligible, start, 0);
}


int
mg_ewma_pick(const mg_balance_peer_t *peers, size_t n,
    const unsigned char *eligible, size_t start)
{
    return mg_balance_pick(peers, n, eligible, start, 1);
}


uint64_t
mg_ewma_update(uint64_t ewma_us, uint64_t sample_us, uint64_t dt_ms,
    uint64_t decay_ms)
{
    long double  w;

    if (ewma_us == 0 || sample_us >= ewma_us) {
        return sample_us;
    }

    if (decay_ms == 0) {
        return sample_us;
    }

    w = (long double) dt_ms / (long double) (dt_ms + decay_ms);

    return (uint64_t) ((long double) ewma_us * (1 - w)
                       + (long double) sample_us * w);
}


size_t
mg_priority_filter(const mg_balance_peer_t *peers, size_t n,
    unsigned char *eligible)
{
    size_t    i, left;
    unsigned  best;
    int       found;

    found = 0;
    best = 0;

    for (i = 0; i < n; i++) {
        if (eligible[i] && (!found || peers[i].priority < best)) {
            best = peers[i].priority;
            found = 1;
        }
    }

    left = 0;

    for (i = 0; i < n; i++) {
        if (eligible[i] && peers[i].priority != best) {
            eligible[i] = 0;
        }

        left += eligible[i] != 0;
    }

    return left;
}
