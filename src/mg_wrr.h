/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Smooth weighted round robin (the algorithm of nginx's upstream module)
 * over a subset of peers, so that skipping a tried backend keeps the
 * sequence smooth for the others.
 */

#ifndef _MG_WRR_H_INCLUDED_
#define _MG_WRR_H_INCLUDED_

#include <stddef.h>


typedef struct {
    long         weight;        /* configured, > 0 */
    long         current;       /* state, starts at 0 */
} mg_wrr_peer_t;


/*
 * Picks among peers[i] with eligible[i] != 0 (eligible may be NULL: all).
 * Returns the index, or -1 if none is eligible.
 */
int mg_wrr_pick(mg_wrr_peer_t *peers, size_t n, const unsigned char *eligible);


#endif /* _MG_WRR_H_INCLUDED_ */
