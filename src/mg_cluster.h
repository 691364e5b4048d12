/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster's protocol, as a client needs it: the key to slot mapping
 * (CRC16 (XMODEM) of the key, or of its hash tag, the bytes between the
 * first "{" and the next "}" when there are any, modulo 16384: the same
 * on every client and node), and the error replies that redirect a
 * command or say the cluster cannot serve it.
 */

#ifndef _MG_CLUSTER_H_INCLUDED_
#define _MG_CLUSTER_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>


#define MG_KEYSLOTS  16384


uint16_t mg_crc16(const unsigned char *p, size_t len);
unsigned mg_keyslot(const unsigned char *key, size_t len);


/* what an error reply says (mg_cluster_reply) */
#define MG_CLUSTER_OTHER      0     /* none of these: the command's error */
#define MG_CLUSTER_MOVED      1     /* MOVED <slot> <host>:<port> */
#define MG_CLUSTER_ASK        2     /* ASK <slot> <host>:<port> */
#define MG_CLUSTER_TRYAGAIN   3     /* TRYAGAIN ... */
#define MG_CLUSTER_DOWN       4     /* CLUSTERDOWN ... */
#define MG_CLUSTER_INVALID    5     /* MOVED or ASK, not understood */

typedef struct {
    unsigned             slot;
    const unsigned char *host;      /* in the reply; empty: the node's own */
    size_t               host_len;  /* "[...]" of IPv6 taken off */
    unsigned             port;
} mg_cluster_redirect_t;

int mg_cluster_reply(const unsigned char *s, size_t len,
    mg_cluster_redirect_t *to);


#endif /* _MG_CLUSTER_H_INCLUDED_ */
