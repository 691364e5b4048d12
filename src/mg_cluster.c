/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster's key slots (the cluster specification's HASH_SLOT) and
 * its redirect replies.
 */

#include <string.h>

#include "mg_cluster.h"


/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial 0, computed bitwise */

uint16_t
mg_crc16(const unsigned char *p, size_t len)
{
    int       b;
    size_t    i;
    uint16_t  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) (p[i] << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


/*
 * Only the first "{" counts, and only when a "}" follows it with at least
 * one byte between: "{}" or an unclosed brace hash the whole key.
 */

unsigned
mg_keyslot(const unsigned char *key, size_t len)
{
    const unsigned char  *open, *close;

    open = memchr(key, '{', len);

    if (open) {
        close = memchr(open + 1, '}', len - (open + 1 - key));

        if (close && close > open + 1) {
            return mg_crc16(open + 1, close - open - 1) & (MG_KEYSLOTS - 1);
        }
    }

    return mg_crc16(key, len) & (MG_KEYSLOTS - 1);
}


static int
mg_cluster_prefix(const unsigned char *s, size_t len, const char *word)
{
    size_t  n;

    n = strlen(word);

    return len >= n && memcmp(s, word, n) == 0;
}


/*
 * "MOVED 3999 127.0.0.1:6381", "ASK 3999 [::1]:6381", "MOVED 3999 :6381"
 * (no announced address): the port is after the last colon, the slot below
 * 16384, the port 1 to 65535; anything else is MG_CLUSTER_INVALID.
 */

int
mg_cluster_reply(const unsigned char *s, size_t len,
    mg_cluster_redirect_t *to)
{
    int                   kind;
    size_t                n;
    unsigned long         v;
    const unsigned char  *p, *last, *colon, *host;

    if (mg_cluster_prefix(s, len, "CLUSTERDOWN")) {
        return MG_CLUSTER_DOWN;
    }

    if (mg_cluster_prefix(s, len, "TRYAGAIN")) {
        return MG_CLUSTER_TRYAGAIN;
    }

    if (mg_cluster_prefix(s, len, "MOVED ")) {
        kind = MG_CLUSTER_MOVED;
        n = 6;

    } else if (mg_cluster_prefix(s, len, "ASK ")) {
        kind = MG_CLUSTER_ASK;
        n = 4;

    } else {
        return MG_CLUSTER_OTHER;
    }

    p = s + n;
    last = s + len;

    for (v = 0, n = 0; p < last && *p >= '0' && *p <= '9'; p++, n++) {
        v = v * 10 + (*p - '0');

        if (v >= MG_KEYSLOTS) {
            return MG_CLUSTER_INVALID;
        }
    }

    if (n == 0 || p == last || *p++ != ' ') {
        return MG_CLUSTER_INVALID;
    }

    to->slot = (unsigned) v;

    for (colon = last; colon > p && colon[-1] != ':'; colon--) {
        /* void */
    }

    if (colon == p) {
        return MG_CLUSTER_INVALID;     /* no colon */
    }

    for (v = 0, n = 0; colon + n < last; n++) {
        if (colon[n] < '0' || colon[n] > '9') {
            return MG_CLUSTER_INVALID;
        }

        v = v * 10 + (colon[n] - '0');

        if (v > 65535) {
            return MG_CLUSTER_INVALID;
        }
    }

    if (v == 0) {
        return MG_CLUSTER_INVALID;
    }

    to->port = (unsigned) v;

    host = p;
    n = (size_t) (colon - 1 - p);

    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }

    to->host = host;
    to->host_len = n;

    return kind;
}
