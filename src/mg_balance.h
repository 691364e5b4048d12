/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Load-balancing arithmetic shared by every worker: least outstanding
 * requests, peak-EWMA latency and priority groups.  The state lives in
 * shared memory; these functions only compute on a snapshot of it.
 */

#ifndef _MG_BALANCE_H_INCLUDED_
#define _MG_BALANCE_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>


typedef struct {
    long         weight;        /* > 0 */
    uint64_t     outstanding;   /* requests in flight, all workers */
    uint64_t     ewma_us;       /* peak-EWMA of time to first byte */
    unsigned     priority;      /* lower is preferred */
} mg_balance_peer_t;


/*
 * Least outstanding requests, weighted: the peer with the smallest
 * (outstanding + 1) / weight among eligible ones.  Ties go to the first
 * tied peer at or after index start (callers rotate start), so equal peers
 * share the load.  Returns -1 if none is eligible.
 */
int mg_lor_pick(const mg_balance_peer_t *peers, size_t n,
    const unsigned char *eligible, size_t start);

/*
 * Peak EWMA: the smallest (ewma + 1) * (outstanding + 1) / weight.  A peer
 * never measured (ewma 0) is tried first, so new backends get a sample.
 * Ties as in mg_lor_pick().
 */
int mg_ewma_pick(const mg_balance_peer_t *peers, size_t n,
    const unsigned char *eligible, size_t start);

/*
 * Folds a sample into a peak EWMA: a sample above the average replaces it
 * at once (slowness is believed immediately), a lower one is blended in
 * with weight dt / (dt + decay), a rational stand-in for
 * 1 - exp(-dt / decay).  Times in milliseconds, values in microseconds.
 */
uint64_t mg_ewma_update(uint64_t ewma_us, uint64_t sample_us, uint64_t dt_ms,
    uint64_t decay_ms);

/*
 * Keeps only the eligible peers of the best (lowest) priority present.
 * Returns the number left eligible.
 */
size_t mg_priority_filter(const mg_balance_peer_t *peers, size_t n,
    unsigned char *eligible);


#endif /* _MG_BALANCE_H_INCLUDED_ */
