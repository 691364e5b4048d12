/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the SSE tokenizer: the same bytes fed whole, cut
 * once, cut twice and (when short) byte by byte must give the same events
 * (name, data, raw bytes), the same result and the same pending count;
 * every event's raw bytes must be the next piece of the input (a leading
 * UTF-8 BOM is skipped), ending with its blank line, and its data must
 * hold no "\r".
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_sse.c src/mg_sse.c src/mg_json.c -o /tmp/fss
 *     /tmp/fss -max_total_time=20 /tmp/fss-corpus t/fixtures/sse/
 *
 * Input: 5 control bytes, then the stream.
 *     byte 0   bits 0-2: the event cap; bits 3-5: the handler stops at
 *              that event (0: never)
 *     1-2, 3-4 the cut points (little-endian, modulo the stream length + 1)
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mg_sse.h"
#include "fuzz_common.h"


#define MG_FZ_BYTEWISE_MAX  512


typedef struct {
    uint64_t          hash;
    size_t            n;
    int               rc;
    size_t            pending;
    size_t            consumed;     /* raw bytes of the events so far */
    int               stop_at;
    const char       *in;           /* the whole stream, after a BOM */
    size_t            in_len;
} mg_fz_rec_t;


static const size_t  mg_fz_caps[8] = {
    8, 16, 64, 256, 1024, 4096, 16384, 65536
};


static int
mg_fz_event(void *ctx, const mg_sse_event_t *ev)
{
    mg_fz_rec_t *r = ctx;

    /* the raw bytes are the next piece of the input, ending an event */

    if (ev->raw_len == 0 || r->consumed > r->in_len
        || ev->raw_len > r->in_len - r->consumed
        || memcmp(ev->raw, r->in + r->consumed, ev->raw_len) != 0)
    {
        abort();
    }

    if (ev->raw[ev->raw_len - 1] != '\n' && ev->raw[ev->raw_len - 1] != '\r')
    {
        abort();
    }

    if (ev->data && memchr(ev->data, '\r', ev->data_len)) {
        abort();
    }

    r->consumed += ev->raw_len;

    r->hash = mg_fz_mix(r->hash, ev->raw, ev->raw_len);
    r->hash = mg_fz_mix(r->hash, ev->event ? ev->event : "",
                        ev->event ? ev->event_len : 0);
    r->hash = mg_fz_mix(r->hash, ev->data ? ev->data : "",
                        ev->data ? ev->data_len + 1 : 0);

    r->n++;

    return (r->stop_at && r->n == (size_t) r->stop_at) ? 7 : 0;
}


static void
mg_fz_run(mg_fz_rec_t *r, const char *s, size_t len, size_t cap,
    const size_t *cuts, size_t ncuts)
{
    int               rc;
    char             *buf, *dbuf;
    size_t            i, at, next;
    mg_sse_parser_t   p;

    buf = malloc(cap);
    dbuf = malloc(cap);

    if (buf == NULL || dbuf == NULL) {
        abort();
    }

    mg_sse_init(&p, buf, cap, dbuf, cap);

    rc = 0;
    at = 0;

    for (i = 0; i <= ncuts && rc == 0; i++) {
        next = (i < ncuts) ? cuts[i] : len;

        if (next < at) {
            next = at;
        }

        rc = mg_sse_feed(&p, s + at, next - at, mg_fz_event, r);
        at = next;
    }

    r->rc = rc;
    r->pending = (rc == 0) ? mg_sse_pending(&p) : 0;

    free(buf);
    free(dbuf);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t         i, len, cap, cuts[2], *each;
    const char    *s;
    mg_fz_rec_t    a, b, c, d;

    if (size < 5) {
        return 0;
    }

    s = (const char *) data + 5;
    len = size - 5;
    cap = mg_fz_caps[data[0] & 7];

    cuts[0] = (data[1] | (data[2] << 8)) % (len + 1);
    cuts[1] = (data[3] | (data[4] << 8)) % (len + 1);

    if (cuts[1] < cuts[0]) {
        i = cuts[0];
        cuts[0] = cuts[1];
        cuts[1] = i;
    }

    memset(&a, 0, sizeof(a));
    a.stop_at = (data[0] >> 3) & 7;
    a.in = s;
    a.in_len = len;

    if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
        a.in += 3;
        a.in_len -= 3;
    }
    b = a;
    c = a;
    d = a;

    mg_fz_run(&a, s, len, cap, NULL, 0);
    mg_fz_run(&b, s, len, cap, cuts, 1);
    mg_fz_run(&c, s, len, cap, cuts, 2);

#define mg_fz_same(x, y)                                                      \
    ((x).hash == (y).hash && (x).n == (y).n && (x).rc == (y).rc               \
     && (x).pending == (y).pending)

    if (!mg_fz_same(a, b) || !mg_fz_same(a, c)) {
        abort();
    }

    if (len <= MG_FZ_BYTEWISE_MAX) {
        each = malloc((len ? len : 1) * sizeof(size_t));
        if (each == NULL) {
            abort();
        }

        for (i = 0; i < len; i++) {
            each[i] = i + 1;
        }

        mg_fz_run(&d, s, len, cap, each, len);
        free(each);

        if (!mg_fz_same(a, d)) {
            abort();
        }
    }

    /* without a stop or an error, every byte is an event or pending */

    if (a.rc == 0 && a.consumed + a.pending != a.in_len) {
        abort();
    }

    return 0;
}
