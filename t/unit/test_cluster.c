/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster: key slots (the values redis-server's CLUSTER KEYSLOT
 * gives, 7.0, hash tags included) and the redirect replies.
 */

#include <string.h>

#include "tap.h"
#include "mg_cluster.h"


static unsigned
slot(const char *key)
{
    return mg_keyslot((const unsigned char *) key, strlen(key));
}


static int
reply(const char *s, mg_cluster_redirect_t *to)
{
    memset(to, 0, sizeof(*to));

    return mg_cluster_reply((const unsigned char *) s, strlen(s), to);
}


static int
host_is(mg_cluster_redirect_t *to, const char *host)
{
    return to->host_len == strlen(host)
           && memcmp(to->host, host, to->host_len) == 0;
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

    /* redirects */

    {
        mg_cluster_redirect_t  to;

        ok(reply("MOVED 3999 127.0.0.1:6381", &to) == MG_CLUSTER_MOVED
           && to.slot == 3999 && to.port == 6381
           && host_is(&to, "127.0.0.1"), "MOVED");

        ok(reply("ASK 0 10.1.2.3:7000", &to) == MG_CLUSTER_ASK
           && to.slot == 0 && to.port == 7000 && host_is(&to, "10.1.2.3"),
           "ASK");

        ok(reply("MOVED 16383 [::1]:6380", &to) == MG_CLUSTER_MOVED
           && to.slot == 16383 && to.port == 6380 && host_is(&to, "::1"),
           "IPv6 in brackets");

        ok(reply("MOVED 12 fe80::1:6380", &to) == MG_CLUSTER_MOVED
           && to.port == 6380 && host_is(&to, "fe80::1"),
           "IPv6 without brackets: the last colon");

        ok(reply("MOVED 5 :6390", &to) == MG_CLUSTER_MOVED
           && to.port == 6390 && to.host_len == 0,
           "no announced address: the node's own");

        ok(reply("CLUSTERDOWN The cluster is down", &to) == MG_CLUSTER_DOWN,
           "CLUSTERDOWN");
        ok(reply("TRYAGAIN Multiple keys request during rehashing of slot",
                 &to) == MG_CLUSTER_TRYAGAIN, "TRYAGAIN");

        ok(reply("ERR unknown command", &to) == MG_CLUSTER_OTHER
           && reply("NOSCRIPT No matching script", &to) == MG_CLUSTER_OTHER
           && reply("MOVEDX 1 a:1", &to) == MG_CLUSTER_OTHER
           && reply("", &to) == MG_CLUSTER_OTHER,
           "other errors are the command's");

        ok(reply("MOVED 16384 127.0.0.1:6381", &to) == MG_CLUSTER_INVALID,
           "slot 16384");
        ok(reply("MOVED 99999999999999999999 a:1", &to)
           == MG_CLUSTER_INVALID, "a slot that overflows");
        ok(reply("MOVED  127.0.0.1:6381", &to) == MG_CLUSTER_INVALID
           && reply("MOVED x 127.0.0.1:6381", &to) == MG_CLUSTER_INVALID
           && reply("MOVED 12", &to) == MG_CLUSTER_INVALID
           && reply("MOVED 12 ", &to) == MG_CLUSTER_INVALID,
           "no slot, or nothing after it");
        ok(reply("MOVED 12 127.0.0.1", &to) == MG_CLUSTER_INVALID,
           "no port");
        ok(reply("MOVED 12 127.0.0.1:", &to) == MG_CLUSTER_INVALID
           && reply("MOVED 12 127.0.0.1:0", &to) == MG_CLUSTER_INVALID
           && reply("MOVED 12 127.0.0.1:65536", &to) == MG_CLUSTER_INVALID
           && reply("MOVED 12 127.0.0.1:6x", &to) == MG_CLUSTER_INVALID
           && reply("MOVED 12 127.0.0.1:99999999999999999999", &to)
              == MG_CLUSTER_INVALID,
           "a bad port");
        ok(reply("MOVED 12 127.0.0.1:65535", &to) == MG_CLUSTER_MOVED
           && to.port == 65535, "port 65535");
    }

    return tap_done();
}
