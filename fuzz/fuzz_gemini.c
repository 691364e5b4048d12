/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the Gemini translator.  Every input is used four
 * ways: as a client's request body, as a response body, as an error body
 * (the status chosen by the input's length) and as an SSE stream split into
 * events by mg_sse and ended with mg_gemini_stream_finish(), fed whole and,
 * every chunk through the tree (no tree-free path), cut in two places: the
 * same events must come out, texts maybe escaped differently.  What comes
 * out must be what the API promises: JSON where JSON is due, complete
 * "data: ...\n\n" events, [DONE] only from finish, messages in valid
 * UTF-8, nothing appended on failure.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_gemini.c src/*.c -ljansson -lcrypto -lm -o /tmp/fg
 *     mkdir -p /tmp/fg-corpus
 *     /tmp/fg -max_total_time=20 /tmp/fg-corpus t/fixtures/gemini/
 *
 * (libFuzzer writes new inputs into the first directory: keep the fixtures
 * second.)
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_gemini.h"
#include "fuzz_common.h"


/*
 * The request written is at most MG_FZ_K times the body plus MG_FZ_C.
 * What is copied from a value sent once ($ref targets, function names in
 * tool results) may take 4 times the body plus 64 KB (MG_G_COPY_RATIO and
 * MG_G_COPY_SLACK in mg_gemini_int.h); the rest is copied once, with less
 * than three times the shortest input around each value
 * ({"functionResponse":{"name":..,"response":{"content":..}}}), and the
 * fixed members fit in the remaining 4 KB.
 */
#define MG_FZ_K  8
#define MG_FZ_C  (68 * 1024)


typedef struct {
    mg_gemini_stream_t      st;
    mg_buf_t                out;
    mg_xerror_t             err;
    int                     rc;
} mg_fz_run_t;


static int
mg_fz_event(void *ctx, const mg_sse_event_t *ev)
{
    size_t        before;
    mg_fz_run_t  *r = ctx;

    before = r->out.len;

    r->rc = mg_gemini_stream_event(&r->st, ev->data, ev->data_len, &r->out,
                                   &r->err);

    if (r->rc == MG_X_ERROR || r->rc == MG_X_NOMEM) {
        if (r->out.len != before) {
            abort();
        }

        mg_fz_check_error(&r->err);

        return 1;
    }

    /* only finish sends [DONE] */

    if (r->rc != MG_X_OK) {
        abort();
    }

    if (mg_gemini_stream_has_content(&r->st) && r->out.len == 0) {
        abort();
    }

    return 0;
}


/* the HTTP body ended */

static void
mg_fz_finish(mg_fz_run_t *r)
{
    size_t  before;

    before = r->out.len;

    r->rc = mg_gemini_stream_finish(&r->st, &r->out);

    if (r->rc == MG_X_DONE) {
        if (r->out.len < before + 14
            || memcmp(r->out.data + r->out.len - 14, "data: [DONE]\n\n", 14)
               != 0)
        {
            abort();
        }

        /* a second call adds nothing */

        before = r->out.len;

        if (mg_gemini_stream_finish(&r->st, &r->out) != MG_X_DONE
            || r->out.len != before)
        {
            abort();
        }

        return;
    }

    if ((r->rc != MG_X_ERROR && r->rc != MG_X_NOMEM)
        || r->out.len != before)
    {
        abort();
    }
}


static void
mg_fz_stream(const char *s, size_t len, size_t c1, size_t c2, int full,
    mg_fz_run_t *r)
{
    int  rc;

    memset(r, 0, sizeof(mg_fz_run_t));

    mg_gemini_stream_init(&r->st, "gpt-4o", 6, 1700000000L,
                          (int) (len & 1));
    r->st.full = full;

    rc = mg_fz_feed_sse(s, len, c1, c2, mg_fz_event, r);

    if (rc == MG_SSE_OK && r->rc == MG_X_OK) {
        mg_fz_finish(r);
    }

    mg_fz_check_sse(r->out.data, r->out.len);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                   rc, stream, usage;
    uint64_t              h;
    const char           *s;
    mg_buf_t              out;
    mg_xerror_t           err;
    mg_fz_run_t           a, b;
    mg_gemini_opts_t      o;

    static const int  statuses[] = {
        400, 401, 403, 404, 408, 409, 413, 422, 429, 499, 500, 501, 502,
        503, 504, 520, 0, 200, 302, 418, 600, -1
    };

    s = (const char *) data;

    /* the client's request */

    memset(&o, 0, sizeof(o));
    o.full = (size & 4) != 0;
    o.default_max_tokens = (long) (size % 3) * 1000 - 1000;
    /* now and then a bound the translation may pass: then a 400 */

    o.max_out = (size & 8) ? 2 * size + 64 : 0;

    memset(&out, 0, sizeof(mg_buf_t));
    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_gemini_request(s, size, (size & 2) ? &o : NULL, &out, &stream,
                           &usage, &err);

    mg_fz_check_result(rc, &out, &err, 400);
    mg_fz_check_bound(rc, &out, size, MG_FZ_K, MG_FZ_C,
                      (size & 2) ? o.max_out : 0);

    mg_buf_free(&out);

    /* a response */

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_gemini_response(s, size, "gpt-4o", 6, 1700000000L, &out, &err);

    mg_fz_check_result(rc, &out, &err, 0);

    mg_buf_free(&out);

    /* an error */

    memset(&err, 0, sizeof(mg_xerror_t));

    mg_gemini_error(statuses[size % (sizeof(statuses) / sizeof(int))], s,
                    size, &err);

    mg_fz_check_error(&err);

    /* a stream, whole and cut twice where a hash of the input says */

    h = mg_fz_hash(data, size);

    mg_fz_stream(s, size, 0, 0, 0, &a);
    mg_fz_stream(s, size, (size_t) (h % (size + 1)),
                 (size_t) ((h >> 32) % (size + 1)), 1, &b);

    if (!mg_fz_same_events(a.rc, &a.out, b.rc, &b.out)
        || mg_gemini_stream_has_content(&a.st)
           != mg_gemini_stream_has_content(&b.st))
    {
        abort();
    }

    mg_gemini_stream_free(&a.st);
    mg_gemini_stream_free(&b.st);
    mg_buf_free(&a.out);
    mg_buf_free(&b.out);

    return 0;
}
