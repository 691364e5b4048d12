/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster's key slots (the cluster specification's HASH_SLOT).
 */

#include <string.h>

#include "mg_keyslot.h"


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
