/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Gemini translator against the golden fixtures in t/fixtures/gemini
 * (MG_GEMINI_FIXTURES overrides the directory):
 *
 *   request/NAME.openai.json    -> request/NAME.gemini.json (as trees)
 *   request-400.json            bodies that must be refused with a 400
 *   response/NAME.gemini.json   -> response/NAME.openai.json (as trees)
 *   errors.json                 status and body -> the error to answer
 *   stream/NAME.gemini.sse      -> stream/NAME.openai.sse (without usage),
 *                                  stream/NAME.usage.sse (include_usage),
 *                                  byte for byte, however the input is cut,
 *                                  mg_gemini_stream_finish() called when
 *                                  the input ends; stream/NAME.error.json:
 *                                  the stream ends in that error instead of
 *                                  [DONE] ({"truncated": true}: finish
 *                                  refuses, the stream was cut short)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "fixture.h"
#include "mg_gemini.h"
#include "mg_sse.h"


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
    mg_gemini_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.default_max_tokens = default_max_tokens;
    o.full = full;

    return mg_gemini_request(body, len, &o, out, stream, include_usage, err);
}


static void
test_requests(void)
{
    check_request_fixtures(".gemini.json", "Gemini", 10, translate);
}


static void
test_request_errors(void)
{
    check_request_400(60, translate);
}


static void
test_request_misc(void)
{
    int                rc, stream, usage;
    json_t            *j;
    mg_buf_t           out;
    mg_xerror_t        err;
    mg_gemini_opts_t   o;

    static const char  body[] =
        "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}";

    /* no default: no generationConfig; the model stays out of the body */

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_gemini_request(S(body), &o, &out, &stream, &usage, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    ok(rc == MG_X_OK && json_object_size(j) == 1
       && json_object_get(j, "contents") != NULL,
       "request: no default max tokens, no generationConfig, no model");

    json_decref(j);

    o.default_max_tokens = -5;
    mg_buf_reset(&out);

    rc = mg_gemini_request(S(body), &o, &out, &stream, &usage, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    ok(rc == MG_X_OK && json_object_get(j, "generationConfig") == NULL,
       "request: a negative default sends none");

    json_decref(j);

    /* NULL options are the defaults */

    mg_buf_reset(&out);

    rc = mg_gemini_request(S(body), NULL, &out, &stream, &usage, &err);

    ok(rc == MG_X_OK && out.len > 0, "request: NULL options");

    check_request_common(translate);

    /* a tool result answers the latest call of its id before it */

    mg_buf_reset(&out);

    rc = mg_gemini_request(S("{\"messages\":[{\"role\":\"user\",\"content\":"
                             "\"x\"},{\"role\":\"assistant\",\"tool_calls\":"
                             "[{\"id\":\"c\",\"function\":{\"name\":\"f\"}}]},"
                             "{\"role\":\"tool\",\"tool_call_id\":\"c\","
                             "\"content\":\"{\\\"a\\\":1}\"},{\"role\":"
                             "\"assistant\",\"tool_calls\":[{\"id\":\"c\","
                             "\"function\":{\"name\":\"g\"}}]}]}"),
                           NULL, &out, &stream, &usage, &err);

    is_str(out.data, out.len,
           "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"x\"}]},"
           "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"f\","
           "\"args\":{}}}]},{\"role\":\"user\",\"parts\":[{"
           "\"functionResponse\":{\"name\":\"f\",\"response\":{\"a\":1}}}]},"
           "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"g\","
           "\"args\":{}}}]}]}",
           "request: the call a result answers is the one before it (rc %d)",
           rc);

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

    n = list("response", ".gemini.json", names);

    ok(n >= 8, "response fixtures: %zu", n);

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/response/%s.gemini.json", fixdir,
                 names[i]);

        body = slurp(path, &len);
        exp = load("response", names[i], ".openai.json");

        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = body ? mg_gemini_response(body, len, S(CLIENT), CREATED, &out,
                                       &err)
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
        { "{\"candidates\":[", 502, 1, "cut JSON" },
        { "[]", 502, 1, "an empty array" },
        { "[{\"candidates\":[]}]", 502, 1, "an array of responses" },
        { "{\"usageMetadata\":{}}", 502, 1, "no candidates, not blocked" },
        { "{\"candidates\":[]}", 502, 1, "empty candidates" },
        { "{\"candidates\":{}}", 502, 1, "candidates an object" },
        { "{\"promptFeedback\":{\"blockReason\":7}}", 502, 1,
          "a block reason not a string" },
        { "{\"candidates\":[{\"finishReason\":\"MALFORMED_FUNCTION_CALL\"},"
          "{\"finishReason\":\"OTHER\",\"content\":{\"parts\":[]}}]}", 502,
          1, "only malformed candidates" },
        { "{\"error\":{\"code\":429,\"message\":\"slow down\",\"status\":"
          "\"RESOURCE_EXHAUSTED\"}}", 429, 1, "an error in a 200" },
        { "[{\"error\":{\"code\":400,\"message\":\"bad\",\"status\":"
          "\"INVALID_ARGUMENT\"}}]", 400, 0, "an error in an array" },
        { "{\"error\":{\"status\":\"UNAVAILABLE\"}}", 503, 1,
          "an error with a status only" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = mg_gemini_response(cases[i].body, strlen(cases[i].body),
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

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_gemini_response(NULL, 0, S(CLIENT), CREATED, &out, &err);

    ok(rc == MG_X_ERROR && err.status == 502 && out.len == 0,
       "response error: NULL body");

    /* odd but usable: no id, no usage, no index, a call without args, a
     * text that is not a string */

    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_gemini_response(S("{\"candidates\":[{\"content\":{\"parts\":[{"
                              "\"functionCall\":{\"name\":\"f\",\"id\":7}},"
                              "{\"text\":7},{\"functionCall\":{}}]}}]}"),
                            NULL, 0, 5, &out, &err);

    is_str(out.data, out.len,
           "{\"id\":\"chatcmpl-\",\"object\":\"chat.completion\","
           "\"created\":5,\"model\":\"\",\"choices\":[{\"index\":0,"
           "\"message\":{\"role\":\"assistant\",\"content\":null,"
           "\"refusal\":null,\"tool_calls\":[{\"id\":"
           "\"call_056213b49a61936a\",\"type\":\"function\",\"function\":{"
           "\"name\":\"f\",\"arguments\":\"{}\"}},{\"id\":"
           "\"call_57d4630789f114e3\",\"type\":\"function\",\"function\":{"
           "\"name\":\"\",\"arguments\":\"{}\"}}]},\"logprobs\":null,"
           "\"finish_reason\":\"tool_calls\"}]}",
           "response: defaults for missing members (rc %d)", rc);

    mg_buf_free(&out);
}


/* one response and one stream of the same id and time call the same call
 * by the same id; another id, another call id */

static void
test_call_ids(void)
{
    int                  rc;
    char                 id1[64], id2[64], id3[64];
    json_t              *j;
    mg_buf_t             out;
    mg_xerror_t          err;
    const char          *p;
    mg_gemini_stream_t   st;

    static const char  resp[] =
        "{\"responseId\":\"r-1\",\"candidates\":[{\"content\":{\"parts\":[{"
        "\"functionCall\":{\"name\":\"f\",\"args\":{}}}]}}]}";
    static const char  other[] =
        "{\"responseId\":\"r-2\",\"candidates\":[{\"content\":{\"parts\":[{"
        "\"functionCall\":{\"name\":\"f\",\"args\":{}}}]}}]}";

    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_gemini_response(S(resp), S(CLIENT), CREATED, &out, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    p = json_string_value(json_object_get(json_array_get(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                            "message"), "tool_calls"), 0), "id"));
    snprintf(id1, sizeof(id1), "%s", p ? p : "");

    json_decref(j);
    mg_buf_reset(&out);

    mg_gemini_stream_init(&st, S(CLIENT), CREATED, 0);
    rc |= mg_gemini_stream_event(&st, S(resp), &out, &err);

    p = strstr(out.data ? out.data : "", "\"id\":\"call_");
    snprintf(id2, sizeof(id2), "%.21s", p ? p + 6 : "");

    mg_gemini_stream_free(&st);
    mg_buf_reset(&out);

    rc |= mg_gemini_response(S(other), S(CLIENT), CREATED, &out, &err);

    p = strstr(out.data ? out.data : "", "\"id\":\"call_");
    snprintf(id3, sizeof(id3), "%.21s", p ? p + 6 : "");

    if (!ok(rc == MG_X_OK && strncmp(id1, "call_", 5) == 0
            && strlen(id1) == 21 && strcmp(id1, id2) == 0
            && strcmp(id1, id3) != 0,
            "tool call ids: the same in a stream, another for another id"))
    {
        tap_diag("%s %s %s", id1, id2, id3);
    }

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

    ok(json_array_size(cases) >= 25, "error mapping cases: %zu",
       json_array_size(cases));

    json_array_foreach(cases, i, c) {
        name = json_string_value(json_object_get(c, "name"));
        body = case_body(json_object_get(c, "body"));

        memset(&err, 0x5a, sizeof(mg_xerror_t));

        mg_gemini_error((int) json_integer_value(json_object_get(c,
                                                                 "status")),
                        body, body ? strlen(body) : 0, &err);

        check_error(name, json_object_get(c, "expect"), &err);

        free(body);
    }

    json_decref(cases);

    mg_gemini_error(500, S("{}"), NULL);

    ok(1, "errors: a NULL err is allowed");
}


/* streams */

typedef struct {
    mg_gemini_stream_t   st;
    mg_buf_t             out;
    mg_xerror_t          err;
    int                  rc;
    int                  events;
} run_t;


static int
on_event(void *ctx, const mg_sse_event_t *ev)
{
    run_t  *r = ctx;

    r->events++;

    r->rc = mg_gemini_stream_event(&r->st, ev->data, ev->data_len, &r->out,
                                   &r->err);

    /* the glue stops at an error */

    return r->rc == MG_X_ERROR || r->rc == MG_X_NOMEM;
}


/* feeds the stream cut at the sorted points, then ends it as the glue does
 * when the body ends */

static void
run_stream(const char *s, size_t len, const size_t *cuts, size_t ncuts,
    int include_usage, run_t *r)
{
    int               rc;
    char             *piece;
    size_t            i, from, to, before;
    mg_sse_parser_t   p;
    static char       buf[SSE_CAP], dbuf[SSE_CAP];

    memset(r, 0, sizeof(run_t));
    r->rc = MG_X_OK;

    mg_gemini_stream_init(&r->st, S(CLIENT), CREATED, include_usage);
    mg_sse_init(&p, buf, sizeof(buf), dbuf, sizeof(dbuf));

    from = 0;
    rc = MG_SSE_OK;

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

    if (rc == MG_SSE_OK && r->rc == MG_X_OK) {
        before = r->out.len;
        r->rc = mg_gemini_stream_finish(&r->st, &r->out);

        /* a refused finish appends nothing */

        if (r->rc == MG_X_ERROR && r->out.len != before) {
            r->rc = 99;
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

        if (json_is_true(json_object_get(xerr, "truncated"))) {
            ok(r.err.status == 0, "%s: cut short, no error set", what);

        } else {
            check_error(what, xerr, &r.err);
        }

        ok(mg_gemini_stream_has_content(&r.st)
           == json_is_true(json_object_get(xerr, "has_content")),
           "stream %s%s: has_content %d", name, suffix,
           mg_gemini_stream_has_content(&r.st));

    } else {
        ok(mg_gemini_stream_has_content(&r.st)
           || strcmp(name, "blocked") == 0,
           "stream %s%s: has content (but when blocked)", name, suffix);
    }

    mg_gemini_stream_free(&r.st);
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

        mg_gemini_stream_free(&r.st);
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

            mg_gemini_stream_free(&r.st);
            mg_buf_free(&r.out);
        }
    }

    ok(!bad, "stream %s%s: the same output cut anywhere (%zu bytes)",
       name, suffix, in_len);

    /* byte by byte */

    all = malloc((in_len + 1) * sizeof(size_t));

    for (i = 0; i < in_len; i++) {
        all[i] = i;
    }

    run_stream(in, in_len, all, in_len, include_usage, &r);

    ok(same_run(&r, exp, exp_len, exp_rc), "stream %s%s: byte by byte",
       name, suffix);

    mg_gemini_stream_free(&r.st);
    mg_buf_free(&r.out);
    free(all);
    free(exp);
}


static void
test_streams(void)
{
    check_stream_fixtures(".gemini.sse", 10, test_stream_variant);
}


static int
ev(run_t *r, const char *data)
{
    r->rc = mg_gemini_stream_event(&r->st, data, data ? strlen(data) : 0,
                                   &r->out, &r->err);
    return r->rc;
}


static void
test_stream_misc(void)
{
    size_t  len;
    run_t   r;

    memset(&r, 0, sizeof(run_t));
    mg_gemini_stream_init(&r.st, NULL, 0, 0, 1);

    ok(ev(&r, NULL) == MG_X_OK && r.out.len == 0,
       "stream: a comment-only event is ignored");

    ok(mg_gemini_stream_finish(&r.st, &r.out) == MG_X_ERROR
       && r.out.len == 0,
       "stream: ended before anything: cut short");

    ok(ev(&r, "[]") == MG_X_ERROR && r.out.len == 0 && r.err.status == 502
       && r.err.retryable,
       "stream: data not an object is a retryable 502");

    ok(ev(&r, "\"text\"") == MG_X_ERROR && r.err.status == 502,
       "stream: data a string is a retryable 502");

    ok(ev(&r, "{\"responseId\":\"r\\\"1\",\"usageMetadata\":{"
          "\"promptTokenCount\":-5,\"candidatesTokenCount\":"
          "99999999999999999}}") == MG_X_OK && r.out.len == 0,
       "stream: a chunk without candidates sends nothing");

    ok(ev(&r, "{\"candidates\":[{\"index\":1,\"content\":{\"parts\":[]}}]}")
       == MG_X_OK && !mg_gemini_stream_has_content(&r.st),
       "stream: a candidate without parts: a role chunk, no content");

    is_str(r.out.data, r.out.len,
           "data: {\"id\":\"chatcmpl-r\\\"1\",\"object\":"
           "\"chat.completion.chunk\",\"created\":0,\"model\":\"\","
           "\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\","
           "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],"
           "\"usage\":null}\n\n",
           "stream: the role chunk, the first chunk's escaped id, index 1");

    len = r.out.len;

    ok(ev(&r, "{\"candidates\":[{\"index\":64}]}") == MG_X_ERROR
       && ev(&r, "{\"candidates\":[{\"index\":-1}]}") == MG_X_ERROR
       && r.out.len == len && r.err.status == 502,
       "stream: candidate indexes out of range are errors");

    ok(ev(&r, "{\"candidates\":[{\"index\":1,\"content\":{\"parts\":[{"
          "\"text\":\"a\"}]}},{\"index\":70}]}") == MG_X_ERROR
       && r.out.len == len,
       "stream: nothing is sent from a chunk that fails");

    ok(ev(&r, "{\"candidates\":[{\"index\":1,\"finishReason\":\"OTHER\"}]}")
       == MG_X_ERROR && r.err.status == 502 && r.err.retryable
       && r.out.len == len,
       "stream: OTHER before any content is a retryable 502");

    ok(mg_gemini_stream_finish(&r.st, &r.out) == MG_X_ERROR
       && r.out.len == len,
       "stream: no finishReason yet: cut short");

    ok(ev(&r, "{\"candidates\":[{\"index\":0,\"content\":{\"parts\":[{"
          "\"text\":\"hi\"}]}},{\"index\":1,\"content\":{\"parts\":[{"
          "\"text\":\"yo\"}]},\"finishReason\":\"STOP\"}]}") == MG_X_OK
       && mg_gemini_stream_has_content(&r.st),
       "stream: text for two choices, one finished");

    len = r.out.len;

    ok(mg_gemini_stream_finish(&r.st, &r.out) == MG_X_DONE
       && r.out.len > len + 14
       && memcmp(r.out.data + r.out.len - 14, "data: [DONE]\n\n", 14) == 0
       && strstr(r.out.data + len, "\"choices\":[{\"index\":0,\"delta\":{},"
                 "\"logprobs\":null,\"finish_reason\":\"stop\"}]")
       && strstr(r.out.data + len, "\"usage\":{\"prompt_tokens\":0,"
                 "\"completion_tokens\":1000000000000000,"),
       "stream: finish closes the open choice; counts clamped");

    len = r.out.len;

    ok(mg_gemini_stream_finish(&r.st, &r.out) == MG_X_DONE
       && ev(&r, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
             "\"late\"}]}}]}") == MG_X_DONE
       && r.out.len == len,
       "stream: nothing more after [DONE]");

    mg_gemini_stream_free(&r.st);
    mg_gemini_stream_free(&r.st);
    mg_buf_free(&r.out);

    /* an error object ends a stream however it comes */

    memset(&r, 0, sizeof(run_t));
    mg_gemini_stream_init(&r.st, S(CLIENT), CREATED, 0);

    ok(ev(&r, "{\"error\":{\"code\":400,\"message\":\"no\",\"status\":"
          "\"INVALID_ARGUMENT\"}}") == MG_X_ERROR
       && r.err.status == 400 && !r.err.retryable,
       "stream: an INVALID_ARGUMENT chunk is a 400");

    ok(ev(&r, "{\"error\":\"boom\",\"candidates\":[]}") == MG_X_ERROR
       && r.err.status == 502 && r.err.retryable && r.out.len == 0,
       "stream: any error member is an error");

    mg_gemini_stream_free(&r.st);
    mg_buf_free(&r.out);
}


int
main(void)
{
    fixture_dir("MG_GEMINI_FIXTURES", "gemini");

    test_requests();
    test_request_errors();
    test_request_misc();
    test_responses();
    test_response_errors();
    test_call_ids();
    test_errors();
    test_streams();
    test_stream_misc();

    return tap_done();
}
