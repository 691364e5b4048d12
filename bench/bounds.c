/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Worst cases of the request translators: for each provider, the bodies
 * built here are translated once, and the input size, the output size (or
 * the error), the wall time and the time per MB of input are printed.  It
 * measures, it asserts nothing (the bounds are asserted by t/unit and the
 * fuzz targets); README's "Bounds" quotes what it prints.
 *
 *     make bench-bounds     (bench-bounds [MAX [SHAPE]] for one shape)
 *
 * The shapes:
 *   ref      one 256 KB description in $defs, referenced by N properties
 *            (the amplification of issue 10)
 *   chain    per tool, $defs d0..d9 where each holds two $refs to the
 *            next: 2^10 expansions (just under Gemini's node cap) from
 *            under 1 KB, many tools
 *   names    one tool call with a 64 KB name, answered by N tool messages
 *   results  one tool call, then N short tool messages answering it (the
 *            Gemini name lookup walks back to the call)
 *   text     N short messages, what the tree-free path takes
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"


#define MB  (1024.0 * 1024.0)


typedef int (*mg_bb_translate_pt)(const char *body, size_t len,
    size_t max, mg_buf_t *out, mg_xerror_t *err);


static int
mg_bb_anthropic(const char *body, size_t len, size_t max, mg_buf_t *out,
    mg_xerror_t *err)
{
    int                  stream, usage;
    mg_anthropic_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.model = "claude";
    o.model_len = 6;
    o.max_out = max;

    return mg_anthropic_request(body, len, &o, out, &stream, &usage, err);
}


static int
mg_bb_bedrock(const char *body, size_t len, size_t max, mg_buf_t *out,
    mg_xerror_t *err)
{
    int                stream, usage;
    mg_bedrock_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.max_out = max;

    return mg_bedrock_request(body, len, &o, out, &stream, &usage, err);
}


static int
mg_bb_gemini(const char *body, size_t len, size_t max, mg_buf_t *out,
    mg_xerror_t *err)
{
    int               stream, usage;
    mg_gemini_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.max_out = max;

    return mg_gemini_request(body, len, &o, out, &stream, &usage, err);
}


static void
mg_bb_fill(mg_buf_t *b, char c, size_t n)
{
    if (mg_buf_reserve(b, n) != MG_X_OK) {
        exit(1);
    }

    memset(b->data + b->len, c, n);
    b->len += n;
}


static void
mg_bb_ref(mg_buf_t *b, size_t n)
{
    size_t  i;

    mg_buf_printf(b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
                  "\"function\":{\"name\":\"f\",\"parameters\":{\"$defs\":"
                  "{\"big\":{\"type\":\"string\",\"description\":\"");
    mg_bb_fill(b, 'x', 256 * 1024);
    mg_buf_printf(b, "\"}},\"type\":\"object\",\"properties\":{");

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, "%s\"p%zu\":{\"$ref\":\"#/$defs/big\"}",
                      i ? "," : "", i);
    }

    mg_buf_printf(b, "}}}}]}");
}


static void
mg_bb_chain(mg_buf_t *b, size_t n)
{
    size_t  i, k;

    mg_buf_printf(b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"hi\"}],\"tools\":[");

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, "%s{\"type\":\"function\",\"function\":{\"name\":"
                      "\"f%zu\",\"parameters\":{\"$defs\":{", i ? "," : "",
                      i);

        for (k = 0; k < 9; k++) {
            mg_buf_printf(b, "\"d%zu\":{\"properties\":{\"a\":{\"$ref\":"
                          "\"#/$defs/d%zu\"},\"b\":{\"$ref\":"
                          "\"#/$defs/d%zu\"}}},", k, k + 1, k + 1);
        }

        mg_buf_printf(b, "\"d9\":{\"type\":\"string\"}},\"$ref\":"
                      "\"#/$defs/d0\"}}}");
    }

    mg_buf_printf(b, "]}");
}


static void
mg_bb_names(mg_buf_t *b, size_t n)
{
    size_t  i;

    mg_buf_printf(b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"hi\"},{\"role\":\"assistant\","
                  "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
                  "\"function\":{\"name\":\"");
    mg_bb_fill(b, 'n', 64 * 1024);
    mg_buf_printf(b, "\",\"arguments\":\"{}\"}}]}");

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, ",{\"role\":\"tool\",\"tool_call_id\":\"c\","
                      "\"content\":\"\"}");
    }

    mg_buf_printf(b, "]}");
}


static void
mg_bb_results(mg_buf_t *b, size_t n)
{
    size_t  i;

    mg_buf_printf(b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"hi\"},{\"role\":\"assistant\","
                  "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
                  "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}");

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, ",{\"role\":\"tool\",\"tool_call_id\":\"c\","
                      "\"content\":\"r\"}");
    }

    mg_buf_printf(b, "]}");
}


static void
mg_bb_text(mg_buf_t *b, size_t n)
{
    size_t  i;

    mg_buf_printf(b, "{\"model\":\"m\",\"messages\":[");

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, "%s{\"role\":\"%s\",\"content\":\"a\"}",
                      i ? "," : "", (i & 1) ? "assistant" : "user");
    }

    mg_buf_printf(b, "]}");
}


static double
mg_bb_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}


int
main(int argc, char **argv)
{
    int          rc;
    size_t       i, j, n, max;
    double       t0, ms;
    mg_buf_t     in, out;
    mg_xerror_t  err;

    static const struct {
        const char  *name;
        void       (*make)(mg_buf_t *b, size_t n);
        size_t       n;
    } shapes[] = {
        { "ref", mg_bb_ref, 1000 },
        { "chain", mg_bb_chain, 5000 },
        { "names", mg_bb_names, 60000 },
        { "results", mg_bb_results, 60000 },
        { "text", mg_bb_text, 120000 },
    };

    static const struct {
        const char          *name;
        mg_bb_translate_pt   translate;
    } xs[] = {
        { "anthropic", mg_bb_anthropic },
        { "bedrock", mg_bb_bedrock },
        { "gemini", mg_bb_gemini },
    };

    /* the bound the glue passes with the default 4m body limit */

    max = (argc > 1) ? (size_t) strtoul(argv[1], NULL, 10)
                     : 4 * 1024 * 1024 + 64 * 1024;

    printf("%-10s %-8s %10s %11s %9s %9s  %s\n", "provider", "shape",
           "in", "out", "ms", "ms/MB", "result");

    for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        if (argc > 2 && strcmp(argv[2], shapes[i].name) != 0) {
            continue;
        }

        memset(&in, 0, sizeof(mg_buf_t));
        shapes[i].make(&in, shapes[i].n);

        for (j = 0; j < sizeof(xs) / sizeof(xs[0]); j++) {
            memset(&out, 0, sizeof(mg_buf_t));
            memset(&err, 0, sizeof(mg_xerror_t));

            t0 = mg_bb_now();
            rc = xs[j].translate(in.data, in.len, max, &out, &err);
            ms = mg_bb_now() - t0;

            n = out.len;

            printf("%-10s %-8s %10zu %11zu %9.1f %9.1f  %s\n", xs[j].name,
                   shapes[i].name, in.len, n, ms, ms / (in.len / MB),
                   rc == MG_X_OK ? "ok" : err.message);

            mg_buf_free(&out);
        }

        mg_buf_free(&in);
    }

    return 0;
}
