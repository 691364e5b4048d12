/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the Anthropic translator.  Every input is used four
 * ways: as a client's request body, as a response body, as an error body
 * (the status chosen by the input's length) and as an SSE stream split into
 * events by mg_sse, fed whole and cut in two places (the outputs must be
 * the same).  What comes out must be what the API promises: JSON where JSON
 * is due, complete "data: ...\n\n" events, messages in valid UTF-8, nothing
 * appended on failure.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_anthropic.c src/*.c -ljansson -lcrypto -lm -o /tmp/fa
 *     mkdir -p /tmp/fa-corpus
 *     /tmp/fa -max_total_time=20 /tmp/fa-corpus t/fixtures/anthropic/
 *
 * (libFuzzer writes new inputs into the first directory: keep the fixtures
 * second.)
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_anthropic.h"
#include "fuzz_common.h"


/*
 * The request written is at most MG_FZ_K times the body plus MG_FZ_C:
 * every value is copied once; what a message, part or tool call adds
 * around its values ({"type":"text","text":..}, a tool_use block for a
 * call, "additionalProperties":false in a response schema's objects) is
 * less than three times the shortest input that makes it, and the fixed
 * members (model, max_tokens) fit in the constant.
 */
#define MG_FZ_K  4
#define MG_FZ_C  (4 * 1024)


typedef struct {
    mg_anthropic_stream_t   st;
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

    r->rc = mg_anthropic_stream_event(&r->st, ev->event, ev->event_len,
                                      ev->data, ev->data_len, &r->out,
                                      &r->err);

    if (r->rc == MG_X_ERROR || r->rc == MG_X_NOMEM) {
        if (r->out.len != before) {
            abort();
        }

        mg_fz_check_error(&r->err);

        return 1;
    }

    if (r->rc != MG_X_OK && r->rc != MG_X_DONE) {
        abort();
    }

    if (r->rc == MG_X_DONE
        && (r->out.len < 14
            || memcmp(r->out.data + r->out.len - 14, "data: [DONE]\n\n", 14)
               != 0))
    {
        abort();
    }

    if (mg_anthropic_stream_has_content(&r->st) && r->out.len == 0) {
        abort();
    }

    return 0;
}


static void
mg_fz_stream(const char *s, size_t len, size_t c1, size_t c2, int full,
    mg_fz_run_t *r)
{
    memset(r, 0, sizeof(mg_fz_run_t));

    mg_anthropic_stream_init(&r->st, "gpt-4o", 6, 1700000000L,
                             (int) (len & 1));
    r->st.full = full;

    (void) mg_fz_feed_sse(s, len, c1, c2, mg_fz_event, r);

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
    mg_anthropic_opts_t   o;

    static const int  statuses[] = {
        400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503,
        504, 520, 529, 0, 200, 302, 418, 600, -1
    };

    s = (const char *) data;

    /* the client's request */

    memset(&o, 0, sizeof(o));
    o.full = (size & 4) != 0;
    o.model = "claude-sonnet-4-5";
    o.model_len = sizeof("claude-sonnet-4-5") - 1;
    o.default_max_tokens = (long) (size % 3) * 1000;
    /* now and then a bound the translation may pass: then a 400 */

    o.max_out = (size & 8) ? 2 * size + 64 : 0;

    memset(&out, 0, sizeof(mg_buf_t));
    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_anthropic_request(s, size, (size & 2) ? &o : NULL, &out,
                              &stream, &usage, &err);

    mg_fz_check_result(rc, &out, &err, 400);
    mg_fz_check_bound(rc, &out, size, MG_FZ_K, MG_FZ_C,
                      (size & 2) ? o.max_out : 0);

    mg_buf_free(&out);

    /* a response */

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_anthropic_response(s, size, "gpt-4o", 6, 1700000000L, &out,
                               &err);

    mg_fz_check_result(rc, &out, &err, 0);

    mg_buf_free(&out);

    /* an error */

    memset(&err, 0, sizeof(mg_xerror_t));

    mg_anthropic_error(statuses[size % (sizeof(statuses) / sizeof(int))], s,
                       size, &err);

    mg_fz_check_error(&err);

    /* a stream, whole and cut twice where a hash of the input says */

    h = mg_fz_hash(data, size);

    mg_fz_stream(s, size, 0, 0, 0, &a);
    mg_fz_stream(s, size, (size_t) (h % (size + 1)),
                 (size_t) ((h >> 32) % (size + 1)), 0, &b);

    if (!mg_fz_same_out(a.rc, &a.out, b.rc, &b.out)
        || mg_anthropic_stream_has_content(&a.st)
           != mg_anthropic_stream_has_content(&b.st))
    {
        abort();
    }

    mg_anthropic_stream_free(&b.st);
    mg_buf_free(&b.out);

    /* and every event through the tree: the same events */

    mg_fz_stream(s, size, 0, 0, 1, &b);

    if (!mg_fz_same_events(a.rc, &a.out, b.rc, &b.out)
        || mg_anthropic_stream_has_content(&a.st)
           != mg_anthropic_stream_has_content(&b.st))
    {
        abort();
    }

    mg_anthropic_stream_free(&a.st);
    mg_anthropic_stream_free(&b.st);
    mg_buf_free(&a.out);
    mg_buf_free(&b.out);

    return 0;
}
