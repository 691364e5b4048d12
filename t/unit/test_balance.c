/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Least outstanding, peak EWMA and priority groups.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_balance.h"


int
main(void)
{
    int                i, counts[3];
    size_t             left;
    uint64_t           e;
    unsigned char      el[4];
    mg_balance_peer_t  p[4];

    /* least outstanding */

    memset(p, 0, sizeof(p));
    p[0].weight = 1; p[1].weight = 1; p[2].weight = 1;
    p[0].outstanding = 3; p[1].outstanding = 1; p[2].outstanding = 2;

    is_int(mg_lor_pick(p, 3, NULL, 0), 1, "fewest in flight wins");

    p[1].outstanding = 2;
    is_int(mg_lor_pick(p, 3, NULL, 0), 1, "tie: first at start");
    is_int(mg_lor_pick(p, 3, NULL, 2), 2, "tie: rotation moves the start");

    p[0].weight = 4;
    is_int(mg_lor_pick(p, 3, NULL, 0), 0,
           "weight 4 with 3 in flight beats weight 1 with 2");

    memset(el, 0, sizeof(el));
    el[2] = 1;
    is_int(mg_lor_pick(p, 3, el, 0), 2, "only the eligible one");

    memset(el, 0, sizeof(el));
    is_int(mg_lor_pick(p, 3, el, 0), -1, "none eligible");

    /* equal peers with rotating start share the load */

    memset(p, 0, sizeof(p));
    p[0].weight = 1; p[1].weight = 1; p[2].weight = 1;
    memset(counts, 0, sizeof(counts));

    for (i = 0; i < 300; i++) {
        counts[mg_lor_pick(p, 3, NULL, (size_t) i)]++;
    }

    ok(counts[0] == 100 && counts[1] == 100 && counts[2] == 100,
       "idle equal peers share evenly (%d %d %d)",
       counts[0], counts[1], counts[2]);

    /* peak EWMA */

    memset(p, 0, sizeof(p));
    p[0].weight = 1; p[1].weight = 1;
    p[0].ewma_us = 500000; p[1].ewma_us = 50000;

    is_int(mg_ewma_pick(p, 2, NULL, 0), 1, "fast peer wins");

    p[1].outstanding = 20;
    is_int(mg_ewma_pick(p, 2, NULL, 0), 0,
           "a fast peer loaded 21x loses to an idle slow one");

    p[1].outstanding = 0;
    p[0].ewma_us = 0;
    is_int(mg_ewma_pick(p, 2, NULL, 0), 0, "an unmeasured peer goes first");

    p[0].ewma_us = UINT64_MAX - 1;
    p[0].outstanding = UINT64_MAX - 1;
    is_int(mg_ewma_pick(p, 2, NULL, 0), 1, "no overflow on absurd values");

    is_int((long long) mg_ewma_update(0, 1234, 10, 1000), 1234,
           "first sample is the average");
    is_int((long long) mg_ewma_update(1000, 5000, 10, 1000), 5000,
           "a peak replaces the average at once");

    e = mg_ewma_update(10000, 2000, 1000, 1000);
    is_int((long long) e, 6000, "dt == decay blends half way");

    e = mg_ewma_update(10000, 2000, 0, 1000);
    is_int((long long) e, 10000, "dt 0 keeps the average");

    e = 100000;
    for (i = 0; i < 50; i++) {
        e = mg_ewma_update(e, 1000, 1000, 1000);
    }

    ok(e < 2000, "a run of fast samples pulls the average down (%llu)",
       (unsigned long long) e);

    /* priority groups */

    memset(p, 0, sizeof(p));
    p[0].priority = 2; p[1].priority = 1; p[2].priority = 1;
    p[3].priority = 3;
    memset(el, 1, sizeof(el));

    left = mg_priority_filter(p, 4, el);
    ok(left == 2 && !el[0] && el[1] && el[2] && !el[3],
       "only the best priority stays");

    memset(el, 1, sizeof(el));
    el[1] = 0; el[2] = 0;

    left = mg_priority_filter(p, 4, el);
    ok(left == 1 && el[0] && !el[3], "next priority when the best is out");

    memset(el, 0, sizeof(el));
    is_int((long long) mg_priority_filter(p, 4, el), 0, "nothing eligible");

    return tap_done();
}
