/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster's key to slot mapping: CRC16 (XMODEM) of the key, or of
 * its hash tag (the bytes between the first "{" and the next "}", when
 * there are any), modulo 16384.  The same on every client and node.
 */

#ifndef _MG_KEYSLOT_H_INCLUDED_
#define _MG_KEYSLOT_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>


#define MG_KEYSLOTS  16384


uint16_t mg_crc16(const unsigned char *p, size_t len);
unsigned mg_keyslot(const unsigned char *key, size_t len);


#endif /* _MG_KEYSLOT_H_INCLUDED_ */
