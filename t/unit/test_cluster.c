/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster key slots: the values redis-server's CLUSTER KEYSLOT
 * gives (7.0), hash tags included.
 */

#include <string.h>

#include "tap.h"
#include "mg_keyslot.h"


static unsigned
slot(const char *key)
{
    return mg_keyslot((const unsigned char *) key, strlen(key));
}


int
main(void)
{
    /* the CRC16 check value of the specification */

    ok(mg_crc16((const unsigned char *) "123456789", 9) == 0x31c3,
       "crc16 check value");

    ok(slot("foo") == 12182, "foo");
    ok(slot("bar") == 5061, "bar");
    ok(slot("hello") == 866, "hello");
    ok(slot("123456789") == 12739, "123456789");
    ok(slot("") == 0, "the empty key");

    /* hash tags */

    ok(slot("{user1000}.following") == 3443, "a tag");
    ok(slot("{user1000}.following") == slot("user1000"), "the tag's slot");
    ok(slot("foo{bar}{zap}") == 5061, "only the first tag");
    ok(slot("foo{}{bar}") == 8363, "an empty tag: the whole key");
    ok(slot("foo{{bar}}zap") == 4015, "the first { and the next }");
    ok(slot("{}") == 15257, "{} alone");
    ok(slot("a{b") == 13340, "an unclosed brace");

    /* the gateway's layout: a tenant's keys share one slot */

    ok(slot("mg:{acme}:pin:s1:gpt") == slot("mg:{acme}:rl:rpm")
       && slot("mg:{acme}:gw:r:resp_1") == slot("acme"),
       "a tenant's keys, one slot");

    return tap_done();
}
