/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the usage of an OpenAI-shaped answer (mg_usage.c).
 * Of a document jansson reads as an object, a usage found from the end
 * must be its top-level "usage" object, with the counts jansson reads;
 * every tail of it, a stream chunk and a Responses event are searched
 * too (they must not crash or read out of bounds).  The request edit of a
 * body the gateway accepts must give valid JSON whose stream_options asks
 * for the usage chunk, and change nothing else.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_usage.c src/mg_usage.c src/mg_json.c -ljansson \
 *         -o /tmp/fu
 *     /tmp/fu -max_total_time=20
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_json.h"
#include "mg_usage.h"


/* what mg_usage_object() reads of one count, as jansson sees it */

static long long
mg_fz_count(json_t *u, const char *name, int *valid)
{
    json_int_t  v;
    json_t     *n;

    n = json_object_get(u, name);

    if (!json_is_integer(n) || json_integer_value(n) < 0) {
        return 0;
    }

    *valid = 1;
    v = json_integer_value(n);

    return (v > MG_USAGE_MAX) ? MG_USAGE_MAX : (long long) v;
}


static void
mg_fz_check_usage(const char *p, size_t len)
{
    int          rc, valid;
    size_t       n;
    json_t      *j, *u;
    long long    prompt, completion;
    mg_usage_t   got;

    rc = mg_usage_tail(p, len, &got);

    /* a name written with \u escapes is not looked for: not compared */

    for (n = 0; n + 1 < len; n++) {
        if (p[n] == '\\' && p[n + 1] == 'u') {
            return;
        }
    }

    j = json_loadb(p, len, 0, NULL);

    if (rc != MG_USAGE_FOUND || !json_is_object(j)) {
        json_decref(j);
        return;
    }

    /* found: then it is the top-level usage object, its counts read */

    u = json_object_get(j, "usage");

    if (!json_is_object(u)) {
        abort();
    }

    valid = 0;

    prompt = json_object_get(u, "prompt_tokens")
             ? mg_fz_count(u, "prompt_tokens", &valid)
             : mg_fz_count(u, "input_tokens", &valid);
    completion = json_object_get(u, "completion_tokens")
                 ? mg_fz_count(u, "completion_tokens", &valid)
                 : mg_fz_count(u, "output_tokens", &valid);

    (void) mg_fz_count(u, "prompt_tokens", &valid);
    (void) mg_fz_count(u, "completion_tokens", &valid);
    (void) mg_fz_count(u, "input_tokens", &valid);
    (void) mg_fz_count(u, "output_tokens", &valid);

    if (!valid || got.prompt != prompt || got.completion != completion) {
        abort();
    }

    json_decref(j);
}


static void
mg_fz_check_edit(const char *p, size_t len)
{
    int               rc;
    char             *out;
    size_t            n;
    json_t           *a, *b, *so;
    mg_usage_edit_t   e;
    mg_json_field_t   f;

    memset(&f, 0, sizeof(f));
    f.name = "stream_options";
    f.name_len = sizeof("stream_options") - 1;

    if (mg_json_scan(p, len, &f, 1, 64, NULL) != MG_JSON_OK || len == 0) {
        return;
    }

    a = json_loadb(p, len, 0, NULL);

    if (!json_is_object(a) || f.dup) {
        json_decref(a);
        return;
    }

    rc = mg_usage_stream_options(p, len, &f, &e);

    if (rc != MG_USAGE_EDIT) {
        json_decref(a);
        return;
    }

    if (e.at > len || e.cut > len - e.at) {
        abort();
    }

    n = len - e.cut + e.len;
    out = malloc(n);
    if (out == NULL) {
        abort();
    }

    memcpy(out, p, e.at);
    memcpy(out + e.at, e.text, e.len);
    memcpy(out + e.at + e.len, p + e.at + e.cut, len - e.at - e.cut);

    if (mg_json_scan(out, n, NULL, 0, 64, NULL) != MG_JSON_OK) {
        abort();
    }

    b = json_loadb(out, n, 0, NULL);
    so = json_object_get(b, "stream_options");

    if (!json_is_object(so)
        || !json_is_true(json_object_get(so, "include_usage")))
    {
        abort();
    }

    /* nothing else changed */

    json_object_del(json_object_get(a, "stream_options"), "include_usage");
    json_object_del(so, "include_usage");

    if (json_is_null(json_object_get(a, "stream_options"))
        || json_object_get(a, "stream_options") == NULL)
    {
        json_object_set_new(a, "stream_options", json_object());
    }

    if (!json_equal(a, b)) {
        abort();
    }

    json_decref(a);
    json_decref(b);
    free(out);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          only;
    char        *p;
    size_t       i, step;
    mg_usage_t   u;

    /* a copy of its own size, so that a read past the end is seen */

    p = malloc(size ? size : 1);
    if (p == NULL) {
        return 0;
    }

    memcpy(p, data, size);

    mg_fz_check_usage(p, size);

    step = size / 16 + 1;

    for (i = 0; i <= size; i += step) {
        (void) mg_usage_tail(p + i, size - i, &u);
    }

    (void) mg_usage_chunk(p, size, &u, &only);
    (void) mg_usage_responses_event(p, size, &u);

    mg_fz_check_edit(p, size);

    free(p);

    return 0;
}
