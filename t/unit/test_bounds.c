/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Work bounded by the input: what the request translators write is
 * proportional to what they were sent however its values are shared
 * ($ref targets, function names), and never longer than the bound they
 * are given (a 400 naming the provider otherwise, with nothing written).
 * Shrunk texts put back never pass the bound either.  Sizes only: no
 * timing is asserted (bench/bounds.c measures the time).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"


#define S(s)  s, sizeof(s) - 1

/* what the Gemini translator may add by copies: 4 times its input and
 * 64 KB (MG_G_COPY_RATIO, MG_G_COPY_SLACK), and its own writing */
#define LINEAR(len)  (8 * (len) + 128 * 1024)


typedef int (*translate_pt)(const char *body, size_t len, size_t max,
    int full, mg_buf_t *out, mg_xerror_t *err);


static int
anthropic(const char *body, size_t len, size_t max, int full, mg_buf_t *out,
    mg_xerror_t *err)
{
    int                  stream, usage;
    mg_anthropic_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.model = "claude";
    o.model_len = 6;
    o.max_out = max;
    o.full = full;

    return mg_anthropic_request(body, len, &o, out, &stream, &usage, err);
}


static int
bedrock(const char *body, size_t len, size_t max, int full, mg_buf_t *out,
    mg_xerror_t *err)
{
    int                stream, usage;
    mg_bedrock_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.max_out = max;
    o.full = full;

    return mg_bedrock_request(body, len, &o, out, &stream, &usage, err);
}


static int
gemini(const char *body, size_t len, size_t max, int full, mg_buf_t *out,
    mg_xerror_t *err)
{
    int               stream, usage;
    mg_gemini_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.max_out = max;
    o.full = full;

    return mg_gemini_request(body, len, &o, out, &stream, &usage, err);
}


static const struct {
    const char    *name;
    translate_pt   translate;
} xs[] = {
    { "anthropic", anthropic },
    { "bedrock", bedrock },
    { "gemini", gemini },
};


static void
fill(mg_buf_t *b, char c, size_t n)
{
    if (mg_buf_reserve(b, n) != MG_X_OK) {
        abort();
    }

    memset(b->data + b->len, c, n);
    b->len += n;
}


/* a tool whose $defs entry holds member (a big value), used n times */

static void
shared_schema(mg_buf_t *b, const char *member, size_t big, size_t n)
{
    size_t  i;

    mg_buf_printf(b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
                  "\"function\":{\"name\":\"f\",\"parameters\":{\"$defs\":"
                  "{\"big\":{\"type\":\"string\",%s\"", member);
    fill(b, 'x', big);
    mg_buf_printf(b, "\"%s}},\"type\":\"object\",\"properties\":{",
                  member[strlen(member) - 1] == '[' ? "]" : "");

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, "%s\"p%zu\":{\"$ref\":\"#/$defs/big\"}",
                      i ? "," : "", i);
    }

    mg_buf_printf(b, "}}}}]}");
}


static size_t
count(const char *s, size_t len, const char *what)
{
    size_t       n, wlen;
    const char  *p, *end;

    n = 0;
    wlen = strlen(what);
    end = s + len;

    for (p = s; p && p + wlen <= end; p++) {
        p = memmem(p, end - p, what, wlen);

        if (p == NULL) {
            break;
        }

        n++;
    }

    return n;
}


static void
test_shared_values(void)
{
    int          rc;
    size_t       k;
    mg_buf_t     in, out;
    mg_xerror_t  err;

    static const char  *members[] = {
        "\"description\":", "\"default\":", "\"example\":", "\"enum\":[",
        "\"title\":", "\"pattern\":"
    };

    /*
     * one 64 KB value referenced 200 times: shared, not copied, it was
     * written 200 times (12.8 MB from 66 KB)
     */

    for (k = 0; k < sizeof(members) / sizeof(members[0]); k++) {
        memset(&in, 0, sizeof(mg_buf_t));
        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        shared_schema(&in, members[k], 64 * 1024, 200);

        rc = gemini(in.data, in.len, 0, 1, &out, &err);

        ok(rc == MG_X_ERROR && err.status == 400 && out.len == 0
           && mg_x_streq(err.type, "invalid_request_error")
           && strstr(err.message, "too large") != NULL,
           "gemini: %s64 KB referenced 200 times is a 400 (rc %d, "
           "%zu bytes from %zu: %s)", members[k], rc, out.len, in.len,
           err.message);

        mg_buf_free(&in);
        mg_buf_free(&out);
    }

    /* a few small references are still expanded in full */

    memset(&in, 0, sizeof(mg_buf_t));
    memset(&out, 0, sizeof(mg_buf_t));

    shared_schema(&in, "\"description\":", 100, 10);

    rc = gemini(in.data, in.len, 0, 1, &out, &err);

    ok(rc == MG_X_OK && count(out.data, out.len, "xxxxxxxxxx\"") == 10,
       "gemini: a $ref used 10 times is expanded 10 times (rc %d)", rc);

    mg_buf_free(&in);
    mg_buf_free(&out);

    /* what the budget lets through is still proportional */

    memset(&in, 0, sizeof(mg_buf_t));
    memset(&out, 0, sizeof(mg_buf_t));

    shared_schema(&in, "\"description\":", 4000, 15);

    rc = gemini(in.data, in.len, 0, 1, &out, &err);

    ok(rc == MG_X_OK && out.len <= LINEAR(in.len)
       && count(out.data, out.len, "xxxxxxxxxx\"") == 15,
       "gemini: 4 KB used 15 times fits, %zu bytes from %zu (rc %d)",
       out.len, in.len, rc);

    mg_buf_free(&in);
    mg_buf_free(&out);

    /* the other translators send the schema as it came */

    for (k = 0; k < 2; k++) {
        memset(&in, 0, sizeof(mg_buf_t));
        memset(&out, 0, sizeof(mg_buf_t));

        shared_schema(&in, "\"description\":", 64 * 1024, 200);

        rc = xs[k].translate(in.data, in.len, 0, 1, &out, &err);

        ok(rc == MG_X_OK && out.len <= in.len + 1024,
           "%s: a schema with $refs is sent as it came, %zu bytes from %zu",
           xs[k].name, out.len, in.len);

        mg_buf_free(&in);
        mg_buf_free(&out);
    }
}


/* one call with a long name, answered by n tool messages */

static void
test_shared_names(void)
{
    int          rc;
    size_t       i, k;
    mg_buf_t     in, out;
    mg_xerror_t  err;

    memset(&in, 0, sizeof(mg_buf_t));

    mg_buf_printf(&in, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"hi\"},{\"role\":\"assistant\","
                  "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
                  "\"function\":{\"name\":\"");
    fill(&in, 'n', 16 * 1024);
    mg_buf_printf(&in, "\",\"arguments\":\"{}\"}}]}");

    for (i = 0; i < 1000; i++) {
        mg_buf_printf(&in, ",{\"role\":\"tool\",\"tool_call_id\":\"c\","
                      "\"content\":\"\"}");
    }

    mg_buf_printf(&in, "]}");

    /* 16 KB copied 1,000 times was 16 MB from 66 KB */

    for (k = 0; k < sizeof(xs) / sizeof(xs[0]); k++) {
        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = xs[k].translate(in.data, in.len, 0, 1, &out, &err);

        ok((rc == MG_X_OK && out.len <= LINEAR(in.len))
           || (rc == MG_X_ERROR && err.status == 400 && out.len == 0),
           "%s: a name answered 1,000 times: %zu bytes from %zu (rc %d)",
           xs[k].name, out.len, in.len, rc);

        mg_buf_free(&out);
    }

    mg_buf_free(&in);
}


static void
test_max_out(void)
{
    int          rc, full;
    size_t       k;
    mg_buf_t     in, out;
    mg_xerror_t  err;
    char         msg[64];

    memset(&in, 0, sizeof(mg_buf_t));

    mg_buf_printf(&in, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"");
    fill(&in, 'a', 3000);
    mg_buf_printf(&in, "\"}]}");

    snprintf(msg, sizeof(msg), "would exceed 2000 bytes");

    for (k = 0; k < sizeof(xs) / sizeof(xs[0]); k++) {
        for (full = 0; full < 2; full++) {
            memset(&out, 0, sizeof(mg_buf_t));
            memset(&err, 0, sizeof(mg_xerror_t));

            /* something already in out stays as it was */

            mg_buf_printf(&out, "keep");

            rc = xs[k].translate(in.data, in.len, 2000, full, &out, &err);

            ok(rc == MG_X_ERROR && err.status == 400 && !err.retryable
               && mg_x_streq(err.type, "invalid_request_error")
               && strstr(err.message, msg) != NULL
               && strstr(err.message, xs[k].name) != NULL
               && out.len == 4,
               "%s%s: over max_out is a 400 naming it (rc %d: %s)",
               xs[k].name, full ? " (tree)" : "", rc, err.message);

            mg_buf_reset(&out);

            rc = xs[k].translate(in.data, in.len, 4000, full, &out, &err);

            ok(rc == MG_X_OK && out.len > 3000 && out.len <= 4000,
               "%s%s: within max_out it is translated (%zu bytes)",
               xs[k].name, full ? " (tree)" : "", out.len);

            mg_buf_free(&out);
        }
    }

    mg_buf_free(&in);
}


/* a text put back as often as a translator copied its placeholder */

static int
twice(void *data, const char *body, size_t len, mg_buf_t *out)
{
    if (mg_buf_append(out, body, len) != MG_X_OK
        || mg_buf_append(out, body, len) != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


static void
test_expand(void)
{
    int            rc;
    mg_buf_t       in, out;
    mg_x_shrink_t  s;

    memset(&in, 0, sizeof(mg_buf_t));
    memset(&out, 0, sizeof(mg_buf_t));
    memset(&s, 0, sizeof(mg_x_shrink_t));

    mg_buf_printf(&in, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    fill(&in, 'a', 10000);
    mg_buf_printf(&in, "\"}]}");

    rc = mg_x_shrink(in.data, in.len, 128, &s);

    ok(rc == MG_X_OK && s.n == 1, "expand: the text is set aside");

    rc = mg_x_translate_shrunk(&s, in.data, in.len, twice, NULL, &out);

    ok(rc == MG_X_OK && out.len == 2 * in.len,
       "expand: without a bound, put back twice (%zu bytes)", out.len);

    /* bounded: once is within it, twice is not */

    mg_buf_reset(&out);
    s.max = 15000;

    rc = mg_x_expand(&s, in.data, s.body.data, s.body.len, &out);

    ok(rc == MG_X_OK && out.len == in.len,
       "expand: once within the bound (%zu bytes)", out.len);

    mg_buf_reset(&out);
    mg_buf_printf(&out, "%.*s%.*s", (int) s.body.len, s.body.data,
                  (int) s.body.len, s.body.data);

    {
        mg_buf_t  res;

        memset(&res, 0, sizeof(mg_buf_t));

        rc = mg_x_expand(&s, in.data, out.data, out.len, &res);

        ok(rc == MG_X_ERROR && res.len <= 15000,
           "expand: twice would pass the bound: refused (rc %d, %zu bytes)",
           rc, res.len);

        mg_buf_free(&res);
    }

    mg_x_shrink_free(&s);
    mg_buf_free(&in);
    mg_buf_free(&out);
}


int
main(void)
{
    test_shared_values();
    test_shared_names();
    test_max_out();
    test_expand();

    return tap_done();
}
