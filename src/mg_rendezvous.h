/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Weighted rendezvous (highest random weight) hashing: every node of a
 * fleet, with no shared state, maps a session key to the same backend, and
 * removing a backend moves only the sessions that were on it.
 */

#ifndef _MG_RENDEZVOUS_H_INCLUDED_
#define _MG_RENDEZVOUS_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>


typedef struct {
    const char  *name;          /* the backend's configured name */
    size_t       len;
    long         weight;        /* > 0 */
} mg_rendezvous_node_t;


/* a 64-bit hash of key and name, the same on every platform */
uint64_t mg_rendezvous_hash(const char *key, size_t key_len,
    const char *name, size_t name_len);

/*
 * Returns the index of the eligible node with the highest weighted score
 * -weight / ln(u), u being the hash mapped into (0, 1), or -1 if none is
 * eligible (eligible may be NULL: all are).
 */
int mg_rendezvous_pick(const char *key, size_t key_len,
    const mg_rendezvous_node_t *nodes, size_t n,
    const unsigned char *eligible);


#endif /* _MG_RENDEZVOUS_H_INCLUDED_ */
