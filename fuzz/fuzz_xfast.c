/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the tree-free paths (mg_xfast_*.c).  Every input is
 * translated to Anthropic, Bedrock and Gemini twice, by the default path
 * (tree-free where it applies) and by the full translator: both must fail
 * alike, or succeed with the same JSON and the same stream flags.  Taken
 * as an Anthropic, Bedrock or Gemini answer, an input the tree-free path
 * accepts must give what the full translator gives (but Bedrock's made-up
 * id).
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_xfast.c src/mg_*.c -ljansson -lcrypto -lm -o /tmp/fx
 *     mkdir -p /tmp/fx-corpus
 *     /tmp/fx -max_total_time=20 /tmp/fx-corpus t/fixtures/xfast/
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"
#include "mg_translate.h"
#include "mg_xfast.h"


typedef int (*mg_fz_translate_pt)(const char *body, size_t len, int full,
    mg_buf_t *out, int *stream, int *usage);


static int
mg_fz_anthropic(const char *body, size_t len, int full, mg_buf_t *out,
    int *stream, int *usage)
{
    mg_xerror_t          err;
    mg_anthropic_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.model = "claude-x";
    o.model_len = 8;
    o.default_max_tokens = (long) (len % 3) * 100;
    o.full = full;
    o.max_out = (len & 8) ? 2 * len + 64 : 0;

    return mg_anthropic_request(body, len, &o, out, stream, usage, &err);
}


static int
mg_fz_bedrock(const char *body, size_t len, int full, mg_buf_t *out,
    int *stream, int *usage)
{
    mg_xerror_t        err;
    mg_bedrock_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.default_max_tokens = (long) (len % 3) * 100 - 100;
    o.full = full;
    o.max_out = (len & 8) ? 2 * len + 64 : 0;

    return mg_bedrock_request(body, len, &o, out, stream, usage, &err);
}


static int
mg_fz_gemini(const char *body, size_t len, int full, mg_buf_t *out,
    int *stream, int *usage)
{
    mg_xerror_t       err;
    mg_gemini_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.default_max_tokens = (long) (len % 2) * 100;
    o.full = full;
    o.max_out = (len & 8) ? 2 * len + 64 : 0;

    return mg_gemini_request(body, len, &o, out, stream, usage, &err);
}


static void
mg_fz_same(mg_fz_translate_pt translate, const char *s, size_t size)
{
    int       rc1, rc2, s1, s2, u1, u2;
    json_t   *a, *b;
    mg_buf_t  o1, o2;

    memset(&o1, 0, sizeof(mg_buf_t));
    memset(&o2, 0, sizeof(mg_buf_t));

    s1 = s2 = u1 = u2 = -1;

    rc1 = translate(s, size, 0, &o1, &s1, &u1);
    rc2 = translate(s, size, 1, &o2, &s2, &u2);

    if (rc1 != rc2) {
        abort();
    }

    /*
     * both bounded by the input as fuzz_gemini.c says (Gemini's copies
     * are the most a translation adds), and by max_out: past it, both
     * paths refuse alike (the tree-free one declines, the tree says so)
     */

    if (rc1 == MG_X_OK
        && (o1.len > 8 * size + 68 * 1024 || o2.len > 8 * size + 68 * 1024
            || ((size & 8) && o1.len > 2 * size + 64)))
    {
        abort();
    }

    if (rc1 == MG_X_OK) {
        a = json_loadb(o1.data, o1.len, JSON_ALLOW_NUL, NULL);
        b = json_loadb(o2.data, o2.len, JSON_ALLOW_NUL, NULL);

        if (a == NULL || b == NULL || !json_equal(a, b) || s1 != s2
            || u1 != u2)
        {
            abort();
        }

        json_decref(a);
        json_decref(b);
    }

    mg_buf_free(&o1);
    mg_buf_free(&o2);
}


static void
mg_fz_answer(int provider, const char *s, size_t size)
{
    int          rc1, rc2;
    json_t      *a, *b;
    mg_buf_t     o1, o2;
    mg_xerror_t  err;

    memset(&o1, 0, sizeof(mg_buf_t));
    memset(&o2, 0, sizeof(mg_buf_t));

    rc1 = mg_xf_answer(provider, s, size, "m", 1, 1700000000, &o1);

    if (rc1 != MG_XF_DECLINED) {
        rc2 = (provider == MG_XF_ANTHROPIC)
              ? mg_anthropic_response(s, size, "m", 1, 1700000000, &o2, &err)
              : (provider == MG_XF_BEDROCK)
              ? mg_bedrock_response(s, size, "m", 1, 1700000000, &o2, &err)
              : mg_gemini_response(s, size, "m", 1, 1700000000, &o2, &err);

        if (rc1 != rc2) {
            abort();
        }

        a = json_loadb(o1.data, o1.len, JSON_ALLOW_NUL, NULL);
        b = json_loadb(o2.data, o2.len, JSON_ALLOW_NUL, NULL);

        if (a == NULL || b == NULL) {
            abort();
        }

        if (provider == MG_XF_BEDROCK) {
            json_object_del(a, "id");
            json_object_del(b, "id");
        }

        if (!json_equal(a, b)) {
            abort();
        }

        json_decref(a);
        json_decref(b);
    }

    mg_buf_free(&o1);
    mg_buf_free(&o2);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mg_fz_same(mg_fz_anthropic, (const char *) data, size);
    mg_fz_same(mg_fz_bedrock, (const char *) data, size);
    mg_fz_same(mg_fz_gemini, (const char *) data, size);
    mg_fz_answer(MG_XF_ANTHROPIC, (const char *) data, size);
    mg_fz_answer(MG_XF_BEDROCK, (const char *) data, size);
    mg_fz_answer(MG_XF_GEMINI, (const char *) data, size);

    return 0;
}
