/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Anthropic translator against the golden fixtures in
 * t/fixtures/anthropic (MG_ANTHROPIC_FIXTURES overrides the directory):
 *
 *   request/NAME.openai.json    -> request/NAME.anthropic.json (as trees)
 *   request-400.json            bodies that must be refused with a 400
 *   response/NAME.anthropic.json -> response/NAME.openai.json (as trees)
 *   errors.json                 status and body -> the error to answer
 *   stream/NAME.anthropic.sse   -> stream/NAME.openai.sse (without usage),
 *                                  stream/NAME.usage.sse (include_usage),
 *                                  byte for byte, however the input is cut;
 *                                  stream/NAME.error.json: the stream ends
 *                                  in that error instead of [DONE]
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "fixture.h"
#include "mg_anthropic.h"
#include "mg_sse.h"


#define MODEL       "claude-sonnet-4-5-20250929"
#define CLIENT      "gpt-4o"
#define CREATED     1700000000L
#define SSE_CAP     65536

#define S(s)  s, sizeof(s) - 1


/* requests */

static int
translate(const char *body, size_t len, int full, int no_model,
    long default_max_tokens, mg_buf_t *out, int *stream, int *include_usage,
    mg_xerror_t *err)
{
    mg_anthropic_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.model = no_model ? NULL : MODEL;
    o.model_len = no_model ? 0 : sizeof(MODEL) - 1;
    o.default_max_tokens = default_max_tokens;
    o.full = full;

    return mg_anthropic_request(body, len, &o, out, stream, include_usage,
                                err);
}


static void
test_requests(void)
{
    check_request_fixtures(".anthropic.json", "Anthropic", 10, translate);
}


static void
test_request_errors(void)
{
    check_request_400(40, translate);
}


static void
test_request_misc(void)
{
    int                   rc, stream, usage;
    json_t               *j;
    mg_buf_t              out;
    mg_xerror_t           err;
    mg_anthropic_opts_t   o;

    static const char  body[] =
        "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}";

    /* no provider model and no default: the client's model, 4096 */

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_anthropic_request(S(body), &o, &out, &stream, &usage, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    ok(rc == MG_X_OK
       && strcmp(json_string_value(json_object_get(j, "model")),
                 "client-model") == 0
       && json_integer_value(json_object_get(j, "max_tokens"))
          == MG_ANTHROPIC_MAX_TOKENS,
       "request: the client's model and the built-in max_tokens");

    json_decref(j);

    /* NULL options are the defaults */

    mg_buf_reset(&out);

    rc = mg_anthropic_request(S(body), NULL, &out, &stream, &usage, &err);

    ok(rc == MG_X_OK && out.len > 0, "request: NULL options");

    check_request_common(translate);

    mg_buf_free(&out);
}


/* responses */

static void
test_responses(void)
{
    int           rc;
    char         *names[MAX_NAMES], path[1200], *body;
    size_t        i, n, len;
    json_t       *exp, *got;
    mg_buf_t      out;
    mg_xerror_t   err;

    n = list("response", ".anthropic.json", names);

    ok(n >= 6, "response fixtures: %zu", n);

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/response/%s.anthropic.json",
                 fixdir, names[i]);

        body = slurp(path, &len);
        exp = load("response", names[i], ".openai.json");

        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = body ? mg_anthropic_response(body, len, S(CLIENT), CREATED,
                                          &out, &err)
                  : MG_X_ERROR;

        if (!is_int(rc, MG_X_OK, "response %s: translated", names[i])) {
            tap_diag("%d %s", err.status, err.message);
        }

        got = out.len ? json_loadb(out.data, out.len, 0, NULL) : NULL;

        if (!ok(got && exp && json_equal(got, exp),
                "response %s: the expected chat.completion", names[i]))
        {
            diag_json("got", got);
            diag_json("expected", exp);
        }

        json_decref(got);
        json_decref(exp);
        mg_buf_free(&out);
        free(body);
        free(names[i]);
    }
}


static void
test_response_errors(void)
{
    int           rc;
    size_t        i;
    mg_buf_t      out;
    mg_xerror_t   err;

    static const struct {
        const char  *body;
        int          status;
        int          retryable;
        const char  *name;
    } cases[] = {
        { "", 502, 1, "empty body" },
        { "{\"id\":\"msg_1\",\"content\":[", 502, 1, "cut JSON" },
        { "[]", 502, 1, "an array" },
        { "{\"id\":\"msg_1\",\"type\":\"message\"}", 502, 1, "no content" },
        { "{\"id\":\"msg_1\",\"content\":{}}", 502, 1, "content an object" },
        { "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
          "\"message\":\"Overloaded\"}}", 503, 1, "an overloaded error" },
        { "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
          "\"message\":\"bad\"}}", 400, 0, "an invalid request error" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = mg_anthropic_response(cases[i].body, strlen(cases[i].body),
                                   S(CLIENT), CREATED, &out, &err);

        if (!ok(rc == MG_X_ERROR && err.status == cases[i].status
                && err.retryable == cases[i].retryable && out.len == 0,
                "response error: %s -> %d", cases[i].name, cases[i].status))
        {
            tap_diag("rc %d status %d retryable %d: %s", rc, err.status,
                     err.retryable, err.message);
        }

        mg_buf_free(&out);
    }

    /* odd but usable: no id, no usage, a tool_use without input */

    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_anthropic_response(S("{\"content\":[{\"type\":\"tool_use\","
                                 "\"name\":\"f\"},{\"type\":\"text\","
                                 "\"text\":7}],\"stop_reason\":null}"),
                               NULL, 0, 5, &out, &err);

    is_str(out.data, out.len,
           "{\"id\":\"chatcmpl-\",\"object\":\"chat.completion\","
           "\"created\":5,\"model\":\"\",\"choices\":[{\"index\":0,"
           "\"message\":{\"role\":\"assistant\",\"content\":null,"
           "\"refusal\":null,\"tool_calls\":[{\"id\":\"\",\"type\":"
           "\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
           "\"{}\"}}]},\"logprobs\":null,\"finish_reason\":\"stop\"}]}",
           "response: defaults for missing members (rc %d)", rc);

    mg_buf_free(&out);
}


/* errors */

static void
test_errors(void)
{
    char          path[1200], *body;
    size_t        i;
    json_t       *cases, *c;
    mg_xerror_t   err;
    const char   *name;

    snprintf(path, sizeof(path), "%s/errors.json", fixdir);

    cases = json_load_file(path, 0, NULL);

    ok(json_array_size(cases) >= 20, "error mapping cases: %zu",
       json_array_size(cases));

    json_array_foreach(cases, i, c) {
        name = json_string_value(json_object_get(c, "name"));
        body = case_body(json_object_get(c, "body"));

        memset(&err, 0x5a, sizeof(mg_xerror_t));

        mg_anthropic_error((int) json_integer_value(json_object_get(c,
                                                                "status")),
                           body, body ? strlen(body) : 0, &err);

        check_error(name, json_object_get(c, "expect"), &err);

        free(body);
    }

    json_decref(cases);
}


/* streams */

typedef struct {
    mg_anthropic_stream_t   st;
    mg_buf_t                out;
    mg_xerror_t             err;
    int                     rc;
    int                     events;
} run_t;


static int
on_event(void *ctx, const mg_sse_event_t *ev)
{
    run_t  *r = ctx;

    r->events++;

    r->rc = mg_anthropic_stream_event(&r->st, ev->event, ev->event_len,
                                      ev->data, ev->data_len, &r->out,
                                      &r->err);

    /* the glue stops at an error; it goes on reading after [DONE] */

    return r->rc == MG_X_ERROR || r->rc == MG_X_NOMEM;
}


/* feeds the stream cut at the sorted points */

static void
run_stream(const char *s, size_t len, const size_t *cuts, size_t ncuts,
    int include_usage, run_t *r)
{
    int               rc;
    char             *piece;
    size_t            i, from, to;
    mg_sse_parser_t   p;
    static char       buf[SSE_CAP], dbuf[SSE_CAP];

    memset(r, 0, sizeof(run_t));
    r->rc = MG_X_OK;

    mg_anthropic_stream_init(&r->st, S(CLIENT), CREATED, include_usage);
    mg_sse_init(&p, buf, sizeof(buf), dbuf, sizeof(dbuf));

    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        /* a private copy, so that a pointer kept into it would show */

        piece = malloc(to - from + 1);
        memcpy(piece, s + from, to - from);

        rc = mg_sse_feed(&p, piece, to - from, on_event, r);

        free(piece);
        from = to;

        if (rc != MG_SSE_OK) {
            break;
        }
    }
}


static int
same_run(const run_t *r, const char *exp, size_t exp_len, int exp_rc)
{
    return same_output(&r->out, r->rc, exp, exp_len, exp_rc);
}


static void
test_stream_variant(const char *name, const char *in, size_t in_len,
    const char *suffix, int include_usage, json_t *xerr)
{
    int      exp_rc, bad;
    char     path[1200], *exp;
    size_t   exp_len, i, k, cuts[2];
    size_t  *all;
    run_t    r;

    snprintf(path, sizeof(path), "%s/stream/%s%s", fixdir, name, suffix);

    exp = slurp(path, &exp_len);
    if (exp == NULL) {
        return;
    }

    exp_rc = xerr ? MG_X_ERROR : MG_X_DONE;

    /* whole */

    run_stream(in, in_len, NULL, 0, include_usage, &r);

    if (!ok(same_run(&r, exp, exp_len, exp_rc), "stream %s%s: whole",
            name, suffix))
    {
        tap_diag("rc %d (expected %d)", r.rc, exp_rc);
        tap_diag_str("got", r.out.data, r.out.len);
        tap_diag_str("expected", exp, exp_len);
    }

    if (xerr) {
        char  what[300];

        snprintf(what, sizeof(what), "stream %s%s", name, suffix);
        check_error(what, xerr, &r.err);

        ok(mg_anthropic_stream_has_content(&r.st)
           == json_is_true(json_object_get(xerr, "has_content")),
           "stream %s%s: has_content %d", name, suffix,
           mg_anthropic_stream_has_content(&r.st));

    } else {
        ok(mg_anthropic_stream_has_content(&r.st),
           "stream %s%s: has content", name, suffix);
    }

    mg_anthropic_stream_free(&r.st);
    mg_buf_free(&r.out);

    /* cut once at every point, then twice at a sample of pairs */

    bad = 0;

    for (i = 0; i <= in_len && !bad; i++) {
        cuts[0] = i;
        run_stream(in, in_len, cuts, 1, include_usage, &r);

        if (!same_run(&r, exp, exp_len, exp_rc)) {
            tap_diag("cut at %zu: rc %d", i, r.rc);
            tap_diag_str("got", r.out.data, r.out.len);
            bad = 1;
        }

        mg_anthropic_stream_free(&r.st);
        mg_buf_free(&r.out);
    }

    for (i = 0; i <= in_len && !bad; i += in_len / 40 + 1) {
        for (k = i; k <= in_len && !bad; k += in_len / 50 + 1) {
            cuts[0] = i;
            cuts[1] = k;
            run_stream(in, in_len, cuts, 2, include_usage, &r);

            if (!same_run(&r, exp, exp_len, exp_rc)) {
                tap_diag("cuts at %zu, %zu: rc %d", i, k, r.rc);
                bad = 1;
            }

            mg_anthropic_stream_free(&r.st);
            mg_buf_free(&r.out);
        }
    }

    ok(!bad, "stream %s%s: the same output cut anywhere (%zu bytes)",
       name, suffix, in_len);

    /* byte by byte */

    all = malloc(in_len * sizeof(size_t));

    for (i = 0; i < in_len; i++) {
        all[i] = i;
    }

    run_stream(in, in_len, all, in_len, include_usage, &r);

    ok(same_run(&r, exp, exp_len, exp_rc), "stream %s%s: byte by byte",
       name, suffix);

    mg_anthropic_stream_free(&r.st);
    mg_buf_free(&r.out);
    free(all);
    free(exp);
}


static void
test_streams(void)
{
    check_stream_fixtures(".anthropic.sse", 6, test_stream_variant);
}


static int
ev(run_t *r, const char *event, const char *data)
{
    r->rc = mg_anthropic_stream_event(&r->st, event,
                                      event ? strlen(event) : 0, data,
                                      data ? strlen(data) : 0, &r->out,
                                      &r->err);
    return r->rc;
}


static void
test_stream_misc(void)
{
    int     rc;
    size_t  len;
    run_t   r;

    static const char  start[] =
        "{\"type\":\"message_start\",\"message\":{\"id\":\"m\\\"1\","
        "\"usage\":{\"input_tokens\":-5,\"output_tokens\":"
        "99999999999999999}}}";

    memset(&r, 0, sizeof(run_t));
    mg_anthropic_stream_init(&r.st, NULL, 0, 0, 1);

    ok(ev(&r, NULL, NULL) == MG_X_OK && r.out.len == 0,
       "stream: a comment-only event is ignored");

    ok(ev(&r, "brand_new_event", "{\"type\":\"brand_new_event\"}")
       == MG_X_OK && r.out.len == 0,
       "stream: an unknown event before message_start is ignored");

    ok(ev(&r, "message_start", "[]") == MG_X_ERROR && r.out.len == 0
       && r.err.status == 502 && r.err.retryable,
       "stream: data not an object is a retryable 502");

    ok(ev(&r, NULL, start) == MG_X_OK && r.out.len > 0
       && !mg_anthropic_stream_has_content(&r.st),
       "stream: message_start by its data's type; no content yet");

    is_str(r.out.data, r.out.len,
           "data: {\"id\":\"chatcmpl-m\\\"1\",\"object\":"
           "\"chat.completion.chunk\",\"created\":0,\"model\":\"\","
           "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
           "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],"
           "\"usage\":null}\n\n",
           "stream: the role chunk, escaped id, empty model");

    len = r.out.len;

    ok(ev(&r, "message_start", start) == MG_X_OK && r.out.len == len,
       "stream: a second message_start adds nothing");

    ok(ev(&r, "content_block_start", "{\"type\":\"content_block_start\","
          "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\","
          "\"name\":\"f\"}}") == MG_X_ERROR && r.out.len == len,
       "stream: a tool_use block without an index is an error");

    ok(ev(&r, "content_block_delta", "{\"type\":\"content_block_delta\","
          "\"index\":5,\"delta\":{\"type\":\"input_json_delta\","
          "\"partial_json\":\"{}\"}}") == MG_X_OK && r.out.len == len,
       "stream: arguments of an unknown block are dropped");

    ok(ev(&r, "error", NULL) == MG_X_ERROR && r.err.status == 502
       && r.err.retryable && r.out.len == len,
       "stream: an error event without data");

    ok(ev(&r, "error", "{\"type\":\"error\",\"error\":{\"type\":"
          "\"invalid_request_error\",\"message\":\"no\"}}") == MG_X_ERROR
       && r.err.status == 400 && !r.err.retryable,
       "stream: an invalid_request_error event is a 400");

    ok(ev(&r, "message_delta", "{\"type\":\"error\",\"error\":{\"type\":"
          "\"api_error\",\"message\":\"x\"}}") == MG_X_ERROR
       && r.err.status == 502 && r.err.retryable,
       "stream: data of type error under another name is an error");

    rc = ev(&r, "message_stop", "{\"type\":\"message_stop\"}");

    ok(rc == MG_X_DONE && r.out.len > len + 14
       && memcmp(r.out.data + r.out.len - 14, "data: [DONE]\n\n", 14) == 0
       && strstr(r.out.data + len, "\"finish_reason\":\"stop\"")
       && strstr(r.out.data + len, "\"usage\":{\"prompt_tokens\":0,"
                 "\"completion_tokens\":1000000000000000,"),
       "stream: message_stop alone finishes with stop; counts clamped");

    len = r.out.len;

    ok(ev(&r, "ping", "{\"type\":\"ping\"}") == MG_X_DONE
       && ev(&r, "message_stop", "{}") == MG_X_DONE && r.out.len == len,
       "stream: nothing more after [DONE]");

    mg_anthropic_stream_free(&r.st);
    mg_anthropic_stream_free(&r.st);
    mg_buf_free(&r.out);
}


int
main(void)
{
    fixture_dir("MG_ANTHROPIC_FIXTURES", "anthropic");

    test_requests();
    test_request_errors();
    test_request_misc();
    test_responses();
    test_response_errors();
    test_errors();
    test_streams();
    test_stream_misc();

    return tap_done();
}
