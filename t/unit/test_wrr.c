/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Smooth weighted round robin: exact sequences, as nginx produces them.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_wrr.h"


/* picks len times and returns the sequence as letters, "a" for peer 0 */

static const char *
seq(mg_wrr_peer_t *peers, size_t n, const unsigned char *eligible,
    size_t len)
{
    int          i;
    size_t       k;
    static char  out[256];

    for (k = 0; k < len && k < sizeof(out) - 1; k++) {
        i = mg_wrr_pick(peers, n, eligible);
        out[k] = (i < 0) ? '-' : (char) ('a' + i);
    }

    out[k] = '\0';

    return out;
}


static void
init(mg_wrr_peer_t *peers, const long *weights, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        peers[i].weight = weights[i];
        peers[i].current = 0;
    }
}


int
main(void)
{
    int                  i, counts[3];
    const char          *s;
    mg_wrr_peer_t        peers[4];
    unsigned char        el[4];
    static const long    w11[] = { 1, 1 };
    static const long    w31[] = { 3, 1 };
    static const long    w511[] = { 5, 1, 1 };
    static const long    w421[] = { 4, 2, 1 };
    static const long    w1[] = { 7 };

    init(peers, w11, 2);
    s = seq(peers, 2, NULL, 6);
    is_str(s, strlen(s), "ababab", "1:1 alternates");

    init(peers, w31, 2);
    s = seq(peers, 2, NULL, 8);
    is_str(s, strlen(s), "aabaaaba", "3:1 is a a b a, repeated");

    init(peers, w511, 3);
    s = seq(peers, 3, NULL, 14);
    is_str(s, strlen(s), "aabacaaaabacaa", "5:1:1 is nginx's a a b a c a a");

    /* the state returns to zero after each full cycle */
    for (i = 0; i < 3; i++) {
        is_int(peers[i].current, 0, "5:1:1 current[%d] back to 0", i);
    }

    init(peers, w421, 3);
    s = seq(peers, 3, NULL, 7);
    is_str(s, strlen(s), "abacaba", "4:2:1 sequence");

    memset(counts, 0, sizeof(counts));
    init(peers, w421, 3);
    for (i = 0; i < 700; i++) {
        counts[mg_wrr_pick(peers, 3, NULL)]++;
    }
    ok(counts[0] == 400 && counts[1] == 200 && counts[2] == 100,
       "4:2:1 over 700 picks gives 400/200/100 (%d/%d/%d)",
       counts[0], counts[1], counts[2]);

    init(peers, w1, 1);
    s = seq(peers, 1, NULL, 3);
    is_str(s, strlen(s), "aaa", "single peer");
    is_int(peers[0].current, 0, "single peer state stays 0");

    is_int(mg_wrr_pick(peers, 0, NULL), -1, "no peers: -1");

    /* eligibility */

    init(peers, w511, 3);
    el[0] = 0; el[1] = 0; el[2] = 0;
    is_int(mg_wrr_pick(peers, 3, el), -1, "none eligible: -1");
    ok(peers[0].current == 0 && peers[1].current == 0
       && peers[2].current == 0, "none eligible: state untouched");

    init(peers, w511, 3);
    el[0] = 0; el[1] = 1; el[2] = 1;
    s = seq(peers, 3, el, 4);
    is_str(s, strlen(s), "bcbc", "5:1:1 with a ineligible: b c b c");
    is_int(peers[0].current, 0, "ineligible peer's state untouched");

    /*
     * 5:1:1, then a becomes ineligible for two picks (as when it was
     * already tried for this request), then eligible again.
     */

    init(peers, w511, 3);
    s = seq(peers, 3, NULL, 3);
    is_str(s, strlen(s), "aab", "5:1:1 first three");
    ok(peers[0].current == 1 && peers[1].current == -4
       && peers[2].current == 3,
       "state after a a b is 1/-4/3 (%ld/%ld/%ld)",
       peers[0].current, peers[1].current, peers[2].current);

    el[0] = 0; el[1] = 1; el[2] = 1;
    s = seq(peers, 3, el, 2);
    /* b -3 c 4 -> c (c 4-2=2); b -2 c 3 -> c (c 1) */
    is_str(s, strlen(s), "cc", "a skipped: c c");
    ok(peers[0].current == 1 && peers[1].current == -2
       && peers[2].current == 1,
       "state after skipping a is 1/-2/1 (%ld/%ld/%ld)",
       peers[0].current, peers[1].current, peers[2].current);

    s = seq(peers, 3, NULL, 4);
    /* a 6 b -1 c 2 -> a (a -1); a 4 b 0 c 3 -> a (a -3);
       a 2 b 1 c 4 -> c (c -3); a 7 b 2 c -2 -> a (a 0) */
    is_str(s, strlen(s), "aaca", "a eligible again: a a c a");

    /* eligibility of b only in the middle of the 3:1 sequence */

    init(peers, w31, 2);
    el[0] = 1; el[1] = 1;
    is_int(mg_wrr_pick(peers, 2, el), 0, "3:1 pick 1 is a");
    el[0] = 0;
    is_int(mg_wrr_pick(peers, 2, el), 1, "3:1 a ineligible: b");
    is_int(peers[1].current, 1, "b paid only its own weight");
    el[0] = 1;
    s = seq(peers, 2, el, 4);
    /* a 2 b 2 -> a (tie, first); a 1 b 3 -> b; a 4 b 0 -> a; a 3 b 1 -> a */
    is_str(s, strlen(s), "abaa", "3:1 continues smoothly");

    return tap_done();
}
