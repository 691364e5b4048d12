/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the translation fast path (mg_x_shrink and
 * mg_x_expand).  An input the gateway would accept (mg_json_scan) is
 * translated to Anthropic and to Gemini twice: whole, and shrunk with the
 * result expanded.  Both must fail alike, or both succeed with the same
 * JSON (compared as values, since texts keep their original escaping);
 * the expanded output must itself be valid JSON.  It also runs on the
 * input taken as an Anthropic answer, which the gateway validates first
 * in the same way.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_shrink.c src/mg_*.c -ljansson -lcrypto -lm -o /tmp/fs
 *     mkdir -p /tmp/fs-corpus
 *     /tmp/fs -max_total_time=20 /tmp/fs-corpus t/fixtures/shrink/
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_anthropic.h"
#include "mg_gemini.h"
#include "mg_json.h"
#include "mg_translate.h"


typedef int (*mg_fz_translate_pt)(const char *body, size_t len,
    mg_buf_t *out);


static int
mg_fz_anthropic(const char *body, size_t len, mg_buf_t *out)
{
    int                  stream, usage;
    mg_xerror_t          err;
    mg_anthropic_opts_t  o = { "claude-x", 8, 0, 0, 0 };

    return mg_anthropic_request(body, len, &o, out, &stream, &usage, &err);
}


static int
mg_fz_gemini(const char *body, size_t len, mg_buf_t *out)
{
    int          stream, usage;
    mg_xerror_t  err;

    return mg_gemini_request(body, len, NULL, out, &stream, &usage, &err);
}


static int
mg_fz_answer(const char *body, size_t len, mg_buf_t *out)
{
    mg_xerror_t  err;

    return mg_anthropic_response(body, len, "m", 1, 1700000000, out, &err);
}


static void
mg_fz_same(mg_fz_translate_pt translate, const char *s, size_t size,
    const mg_x_shrink_t *sh)
{
    int       rc1, rc2, rc3;
    json_t   *a, *c;
    mg_buf_t  whole, small, expanded;

    memset(&whole, 0, sizeof(mg_buf_t));
    memset(&small, 0, sizeof(mg_buf_t));
    memset(&expanded, 0, sizeof(mg_buf_t));

    rc1 = translate(s, size, &whole);
    rc2 = translate(sh->body.data, sh->body.len, &small);

    if (rc1 != rc2) {
        abort();
    }

    if (rc1 == MG_X_OK) {
        rc3 = mg_x_expand(sh, s, small.data, small.len, &expanded);

        if (rc3 != MG_X_OK) {
            abort();
        }

        a = json_loadb(whole.data, whole.len, JSON_ALLOW_NUL, NULL);
        c = json_loadb(expanded.data, expanded.len, JSON_ALLOW_NUL, NULL);

        if (a == NULL || c == NULL || !json_equal(a, c)) {
            abort();
        }

        json_decref(a);
        json_decref(c);
    }

    mg_buf_free(&whole);
    mg_buf_free(&small);
    mg_buf_free(&expanded);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char     *s;
    mg_x_shrink_t   sh;

    s = (const char *) data;

    if (mg_json_scan(s, size, NULL, 0, 64, NULL) != MG_JSON_OK) {
        return 0;
    }

    if (mg_x_shrink(s, size, 1 + size % 16, &sh) != MG_X_OK) {
        abort();
    }

    if (sh.n) {
        mg_fz_same(mg_fz_anthropic, s, size, &sh);
        mg_fz_same(mg_fz_gemini, s, size, &sh);
        mg_fz_same(mg_fz_answer, s, size, &sh);
    }

    mg_x_shrink_free(&sh);

    return 0;
}
