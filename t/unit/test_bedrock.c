/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Bedrock Converse translator against the golden fixtures in
 * t/fixtures/bedrock (MG_BEDROCK_FIXTURES overrides the directory):
 *
 *   request/NAME.openai.json    -> request/NAME.bedrock.json (as trees)
 *   request-400.json            bodies that must be refused with a 400
 *   response/NAME.bedrock.json  -> response/NAME.openai.json (as trees;
 *                                  the generated id is checked, then
 *                                  compared as "chatcmpl-ID")
 *   errors.json                 status, x-amzn-ErrorType and body -> the
 *                               error to answer
 *   stream/NAME.bedrock         decoded eventstream messages, one a line:
 *                               "<message-type> <event-type> <payload>"
 *                               ("-" for an absent field; # comments),
 *                               fed one by one, then
 *                               mg_bedrock_stream_finish() unless the
 *                               stream ended or failed ->
 *                               stream/NAME.openai.sse (without usage),
 *                               stream/NAME.usage.sse (include_usage),
 *                               byte for byte with the id as
 *                               "chatcmpl-ID"; stream/NAME.error.json: the
 *                               stream ends in that error instead of
 *                               [DONE]; an expected output without [DONE]
 *                               (and no error) is a truncated stream
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "fixture.h"
#include "mg_bedrock.h"


#define CLIENT      "gpt-4o"
#define CREATED     1700000000L
#define MAX_MSGS    256

#define S(s)  s, sizeof(s) - 1


/* "chatcmpl-" and 24 lower-case hex digits */

static int
id_ok(const char *id, size_t len)
{
    size_t  i;

    if (id == NULL || len != 9 + 24 || memcmp(id, "chatcmpl-", 9) != 0) {
        return 0;
    }

    for (i = 9; i < len; i++) {
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


/* the ids made for Converse answers: time, process, counter */

static void
test_make_id(void)
{
    char  a[64], b[64], pid[9], small[12];

    mg_bedrock_make_id(a, sizeof(a), 0x5f5e1000L);
    mg_bedrock_make_id(b, sizeof(b), 0x5f5e1000L);
    snprintf(pid, sizeof(pid), "%08x", (unsigned) getpid());

    ok(id_ok(a, strlen(a)) && memcmp(a, "chatcmpl-5f5e1000", 17) == 0
       && memcmp(a + 17, pid, 8) == 0,
       "make_id: chatcmpl-, the time, the process, in hex");
    ok(strcmp(a, b) != 0 && memcmp(a, b, 25) == 0,
       "make_id: the counter tells two ids of one second apart");

    mg_bedrock_make_id(small, sizeof(small), 0x5f5e1000L);
    ok(strcmp(small, "chatcmpl-5f") == 0, "make_id: cut to the buffer");
}


/* requests */

static int
translate(const char *body, size_t len, int full, int no_model,
    long default_max_tokens, mg_buf_t *out, int *stream, int *include_usage,
    mg_xerror_t *err)
{
    mg_bedrock_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.default_max_tokens = default_max_tokens;
    o.full = full;

    return mg_bedrock_request(body, len, &o, out, stream, include_usage,
                              err);
}


static void
test_requests(void)
{
    check_request_fixtures(".bedrock.json", "Converse", 12, translate);
}


static void
test_request_errors(void)
{
    check_request_400(50, translate);
}


static void
test_request_misc(void)
{
    int                  rc, stream, usage;
    json_t              *j;
    mg_buf_t             out;
    mg_xerror_t          err;
    mg_bedrock_opts_t    o;

    static const char  body[] =
        "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}";

    /* no default: no inferenceConfig at all, and no model in the body */

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_bedrock_request(S(body), &o, &out, &stream, &usage, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    ok(rc == MG_X_OK && json_object_size(j) == 1
       && json_object_get(j, "messages") != NULL,
       "request: no default max tokens: only messages");

    json_decref(j);

    o.default_max_tokens = -5;
    mg_buf_reset(&out);

    rc = mg_bedrock_request(S(body), &o, &out, &stream, &usage, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    ok(rc == MG_X_OK && json_object_get(j, "inferenceConfig") == NULL,
       "request: a negative default sends none");

    json_decref(j);

    /* NULL options are the defaults */

    mg_buf_reset(&out);

    rc = mg_bedrock_request(S(body), NULL, &out, &stream, &usage, &err);

    ok(rc == MG_X_OK && out.len > 0, "request: NULL options");

    check_request_common(translate);

    /* the same id twice pairs; the long ones are hashed apart */

    mg_buf_reset(&out);

    rc = mg_bedrock_request(S("{\"messages\":[{\"role\":\"user\",\"content\":"
        "\"x\"},{\"role\":\"assistant\",\"tool_calls\":["
        "{\"id\":\"call_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaa1\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{}\"}},"
        "{\"id\":\"call_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaa2\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{}\"}}]}]}"), &o, &out, &stream, &usage, &err);
    j = json_loadb(out.data, out.len, 0, NULL);

    {
        json_t      *c;
        const char  *a, *b;

        c = json_object_get(json_array_get(json_object_get(j, "messages"),
                                           1), "content");
        a = json_string_value(json_object_get(json_object_get(
                json_array_get(c, 0), "toolUse"), "toolUseId"));
        b = json_string_value(json_object_get(json_object_get(
                json_array_get(c, 1), "toolUse"), "toolUseId"));

        ok(rc == MG_X_OK && a && b && strlen(a) == 64 && strlen(b) == 64
           && strcmp(a, b) != 0 && strncmp(a, b, 47) == 0,
           "request: long tool ids are cut to 64, and kept apart");
    }

    json_decref(j);
    mg_buf_free(&out);
}


/* responses */

static void
test_responses(void)
{
    int           rc;
    char         *names[MAX_NAMES], path[1200], *body;
    size_t        i, n, len;
    json_t       *exp, *got, *id;
    mg_buf_t      out;
    mg_xerror_t   err;

    n = list("response", ".bedrock.json", names);

    ok(n >= 8, "response fixtures: %zu", n);

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/response/%s.bedrock.json",
                 fixdir, names[i]);

        body = slurp(path, &len);
        exp = load("response", names[i], ".openai.json");

        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = body ? mg_bedrock_response(body, len, S(CLIENT), CREATED, &out,
                                        &err)
                  : MG_X_ERROR;

        if (!is_int(rc, MG_X_OK, "response %s: translated", names[i])) {
            tap_diag("%d %s", err.status, err.message);
        }

        got = out.len ? json_loadb(out.data, out.len, JSON_ALLOW_NUL, NULL)
                      : NULL;
        id = json_object_get(got, "id");

        ok(id_ok(json_string_value(id), json_string_length(id)),
           "response %s: a generated id", names[i]);

        json_object_set_new(got, "id", json_string("chatcmpl-ID"));

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
    json_t       *a, *b;
    mg_buf_t      out, out2;
    mg_xerror_t   err;

    static const struct {
        const char  *body;
        int          status;
        int          retryable;
        const char  *code;
        const char  *name;
    } cases[] = {
        { "", 502, 1, "backend_error", "empty body" },
        { "{\"output\":{\"message\":", 502, 1, "backend_error", "cut JSON" },
        { "[]", 502, 1, "backend_error", "an array" },
        { "{\"stopReason\":\"end_turn\"}", 502, 1, "backend_error",
          "no output" },
        { "{\"output\":{}}", 502, 1, "backend_error", "no message" },
        { "{\"output\":{\"message\":{\"content\":{}}}}", 502, 1,
          "backend_error", "content an object" },
        { "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":"
          "[{\"toolUse\":{\"toolUseId\":\"t\",\"name\":\"f\",\"input\":{}}}]}},"
          "\"stopReason\":\"malformed_tool_use\"}", 502, 1, "backend_error",
          "malformed_tool_use" },
        { "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[]}},"
          "\"stopReason\":\"malformed_model_output\"}", 502, 1,
          "backend_error", "malformed_model_output" },
        { "{\"Output\":{\"__type\":\"com.amazon.coral.service#"
          "UnknownOperationException\"},\"Version\":\"1.0\"}", 502, 1,
          "backend_error", "a 200 that is not a Converse answer" },
        { "{\"__type\":\"com.amazon.coral.service#UnknownOperationException\","
          "\"message\":null}", 502, 1, "backend_error",
          "UnknownOperationException in a 200" },
        { "{\"message\":\"The provided model identifier is invalid.\","
          "\"__type\":\"ValidationException\"}", 400, 0, NULL,
          "ValidationException in a 200" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = mg_bedrock_response(cases[i].body, strlen(cases[i].body),
                                 S(CLIENT), CREATED, &out, &err);

        if (!ok(rc == MG_X_ERROR && err.status == cases[i].status
                && err.retryable == cases[i].retryable && out.len == 0
                && (cases[i].code ? err.code
                                    && strcmp(err.code, cases[i].code) == 0
                                  : err.code == NULL),
                "response error: %s -> %d", cases[i].name, cases[i].status))
        {
            tap_diag("rc %d status %d retryable %d code %s: %s", rc,
                     err.status, err.retryable, err.code ? err.code : "NULL",
                     err.message);
        }

        mg_buf_free(&out);
    }

    /* odd but usable: no usage, a toolUse without input, a text not a
     * string, no stopReason */

    memset(&out, 0, sizeof(mg_buf_t));

    rc = mg_bedrock_response(S("{\"output\":{\"message\":{\"content\":["
                               "{\"toolUse\":{\"name\":\"f\"}},"
                               "{\"text\":7}]}}}"),
                             NULL, 0, 5, &out, &err);

    a = json_loadb(out.data, out.len, 0, NULL);
    json_object_set_new(a, "id", json_string("chatcmpl-ID"));
    b = json_loads("{\"id\":\"chatcmpl-ID\",\"object\":\"chat.completion\","
                   "\"created\":5,\"model\":\"\",\"choices\":[{\"index\":0,"
                   "\"message\":{\"role\":\"assistant\",\"content\":null,"
                   "\"refusal\":null,\"tool_calls\":[{\"id\":\"\",\"type\":"
                   "\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                   "\"{}\"}}]},\"logprobs\":null,\"finish_reason\":\"stop\"}]}",
                   0, NULL);

    if (!ok(rc == MG_X_OK && json_equal(a, b),
            "response: defaults for missing members"))
    {
        diag_json("got", a);
    }

    json_decref(a);
    json_decref(b);

    /* two answers in the same second get two ids */

    memset(&out2, 0, sizeof(mg_buf_t));

    mg_bedrock_response(S("{\"output\":{\"message\":{\"content\":[]}}}"),
                        S(CLIENT), CREATED, &out2, &err);

    a = json_loadb(out.data, out.len, 0, NULL);
    b = json_loadb(out2.data, out2.len, 0, NULL);

    ok(a && b && !json_equal(json_object_get(a, "id"),
                             json_object_get(b, "id")),
       "response: ids differ between answers");

    json_decref(a);
    json_decref(b);
    mg_buf_free(&out);
    mg_buf_free(&out2);
}


/* errors */

static void
test_errors(void)
{
    char          path[1200], *body;
    size_t        i;
    json_t       *cases, *c, *t;
    mg_xerror_t   err;
    const char   *name;

    snprintf(path, sizeof(path), "%s/errors.json", fixdir);

    cases = json_load_file(path, 0, NULL);

    ok(json_array_size(cases) >= 30, "error mapping cases: %zu",
       json_array_size(cases));

    json_array_foreach(cases, i, c) {
        name = json_string_value(json_object_get(c, "name"));
        t = json_object_get(c, "errortype");
        body = case_body(json_object_get(c, "body"));

        memset(&err, 0x5a, sizeof(mg_xerror_t));

        mg_bedrock_error((int) json_integer_value(json_object_get(c,
                                                              "status")),
                         json_string_value(t), json_string_length(t),
                         body, body ? strlen(body) : 0, &err);

        check_error(name, json_object_get(c, "expect"), &err);

        free(body);
    }

    json_decref(cases);
}


/* streams */

typedef struct {
    char        *type;          /* NULL: absent ("-") */
    char        *event;
    char        *payload;
    size_t       payload_len;
} msg_t;


typedef struct {
    mg_bedrock_stream_t   st;
    mg_buf_t              out;
    mg_xerror_t           err;
    int                   rc;
} run_t;


static char *
field(const char *p, size_t n)
{
    return (n == 1 && p[0] == '-') ? NULL : strndup(p, n);
}


/* "<type> <event> <payload>" lines; returns how many messages */

static size_t
parse_msgs(char *s, msg_t *m)
{
    char    *line, *end, *sp, *sp2;
    size_t   n;

    n = 0;

    for (line = s; *line && n < MAX_MSGS; line = end + (*end != '\0')) {
        end = strchr(line, '\n');
        if (end == NULL) {
            end = line + strlen(line);
        }

        if (end == line || line[0] == '#') {
            continue;
        }

        sp = memchr(line, ' ', end - line);
        if (sp == NULL) {
            sp = end;
        }

        sp2 = (sp < end) ? memchr(sp + 1, ' ', end - sp - 1) : NULL;
        if (sp2 == NULL) {
            sp2 = end;
        }

        m[n].type = field(line, sp - line);
        m[n].event = (sp < end) ? field(sp + 1, sp2 - sp - 1) : NULL;
        m[n].payload = (sp2 < end) ? strndup(sp2 + 1, end - sp2 - 1) : NULL;
        m[n].payload_len = m[n].payload ? strlen(m[n].payload) : 0;
        n++;
    }

    return n;
}


static void
free_msgs(msg_t *m, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(m[i].type);
        free(m[i].event);
        free(m[i].payload);
    }
}


/* every occurrence of the stream's id becomes "chatcmpl-ID" */

static void
normalize_id(mg_buf_t *b, const char *id)
{
    size_t     i, from, idlen;
    mg_buf_t   n;

    idlen = strlen(id);

    if (b->len == 0 || idlen == 0) {
        return;
    }

    memset(&n, 0, sizeof(mg_buf_t));
    from = 0;

    for (i = 0; i + idlen <= b->len; i++) {
        if (memcmp(b->data + i, id, idlen) == 0) {
            mg_buf_append(&n, b->data + from, i - from);
            mg_buf_append(&n, S("chatcmpl-ID"));
            i += idlen - 1;
            from = i + 1;
        }
    }

    mg_buf_append(&n, b->data + from, b->len - from);

    mg_buf_free(b);
    *b = n;
}


/* feeds the messages one by one, each from a private copy, so that a
 * read past a payload's end or a pointer kept into it would show */

static void
run_stream(msg_t *m, size_t n, int include_usage, run_t *r)
{
    char    *type, *event, *payload;
    size_t   i;

    memset(r, 0, sizeof(run_t));
    r->rc = MG_X_OK;

    mg_bedrock_stream_init(&r->st, S(CLIENT), CREATED, include_usage);

    for (i = 0; i < n; i++) {
        type = m[i].type ? strdup(m[i].type) : NULL;
        event = m[i].event ? strdup(m[i].event) : NULL;
        payload = m[i].payload ? malloc(m[i].payload_len + 1) : NULL;

        if (payload) {
            memcpy(payload, m[i].payload, m[i].payload_len);
        }

        r->rc = mg_bedrock_stream_event(&r->st, type,
                                        type ? strlen(type) : 0, event,
                                        event ? strlen(event) : 0, payload,
                                        m[i].payload_len, &r->out, &r->err);
        free(type);
        free(event);
        free(payload);

        /* the glue stops at an error; it goes on reading after [DONE] */

        if (r->rc == MG_X_ERROR || r->rc == MG_X_NOMEM) {
            break;
        }
    }

    if (r->rc == MG_X_OK) {
        r->rc = mg_bedrock_stream_finish(&r->st, &r->out);
    }

    normalize_id(&r->out, r->st.id);
}


static void
test_stream_variant(const char *name, msg_t *m, size_t n,
    const char *suffix, int include_usage, json_t *xerr)
{
    int      exp_rc;
    char     path[1200], *exp, what[300];
    size_t   exp_len;
    run_t    r;

    snprintf(path, sizeof(path), "%s/stream/%s%s", fixdir, name, suffix);

    exp = slurp(path, &exp_len);
    if (exp == NULL) {
        return;
    }

    if (xerr) {
        exp_rc = MG_X_ERROR;

    } else if (exp_len >= 14
               && memcmp(exp + exp_len - 14, "data: [DONE]\n\n", 14) == 0)
    {
        exp_rc = MG_X_DONE;

    } else {
        exp_rc = MG_X_OK;
    }

    run_stream(m, n, include_usage, &r);

    if (!ok(same_output(&r.out, r.rc, exp, exp_len, exp_rc),
            "stream %s%s: rc %d and the expected output", name, suffix,
            exp_rc))
    {
        tap_diag("rc %d (expected %d)", r.rc, exp_rc);
        tap_diag_str("got", r.out.data, r.out.len);
        tap_diag_str("expected", exp, exp_len);
    }

    snprintf(what, sizeof(what), "stream %s%s", name, suffix);

    if (xerr) {
        check_error(what, xerr, &r.err);

        ok(mg_bedrock_stream_has_content(&r.st)
           == json_is_true(json_object_get(xerr, "has_content")),
           "%s: has_content %d", what, mg_bedrock_stream_has_content(&r.st));

    } else {
        ok(mg_bedrock_stream_has_content(&r.st),
           "%s: has content", what);
    }

    mg_bedrock_stream_free(&r.st);
    mg_buf_free(&r.out);
    free(exp);
}


/* the fixture's messages, parsed, through test_stream_variant() */

static void
test_stream_fixture(const char *name, const char *in, size_t len,
    const char *suffix, int include_usage, json_t *xerr)
{
    char    *s;
    size_t   n;
    msg_t    m[MAX_MSGS];

    s = malloc(len + 1);
    if (s == NULL) {
        return;
    }

    memcpy(s, in, len);
    s[len] = '\0';

    n = parse_msgs(s, m);

    test_stream_variant(name, m, n, suffix, include_usage, xerr);

    free_msgs(m, n);
    free(s);
}


static void
test_streams(void)
{
    check_stream_fixtures(".bedrock", 10, test_stream_fixture);
}


static int
ev(run_t *r, const char *type, const char *event, const char *payload)
{
    r->rc = mg_bedrock_stream_event(&r->st, type, type ? strlen(type) : 0,
                                    event, event ? strlen(event) : 0,
                                    payload, payload ? strlen(payload) : 0,
                                    &r->out, &r->err);
    return r->rc;
}


static void
test_stream_misc(void)
{
    size_t               len;
    run_t                r;
    mg_bedrock_stream_t  st2;

    memset(&r, 0, sizeof(run_t));
    mg_bedrock_stream_init(&r.st, NULL, 0, 0, 1);

    ok(id_ok(r.st.id, strlen(r.st.id)), "stream: init makes an id");

    mg_bedrock_stream_init(&st2, S(CLIENT), 0, 0);

    ok(strcmp(r.st.id, st2.id) != 0, "stream: two streams, two ids");

    mg_bedrock_stream_free(&st2);

    ok(ev(&r, "event", "brandNewEvent", "{}") == MG_X_OK && r.out.len == 0,
       "stream: an unknown event before messageStart is ignored");

    ok(ev(&r, "initial-response", NULL, "{}") == MG_X_OK && r.out.len == 0,
       "stream: an unknown message type is ignored");

    ok(ev(&r, "event", "messageStart", "[]") == MG_X_ERROR && r.out.len == 0
       && r.err.status == 502 && r.err.retryable,
       "stream: a payload not an object is a retryable 502");

    ok(ev(&r, "event", "contentBlockDelta", "{\"contentBlockIndex\":0,"
          "\"delta\":{\"text\":\"x\"}}") == MG_X_ERROR && r.out.len == 0
       && r.err.status == 502,
       "stream: content before messageStart is an error");

    ok(ev(&r, NULL, "messageStart", NULL) == MG_X_OK && r.out.len > 0
       && !mg_bedrock_stream_has_content(&r.st),
       "stream: no message type is an event; no payload is {}");

    normalize_id(&r.out, r.st.id);

    is_str(r.out.data, r.out.len,
           "data: {\"id\":\"chatcmpl-ID\",\"object\":"
           "\"chat.completion.chunk\",\"created\":0,\"model\":\"\","
           "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
           "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],"
           "\"usage\":null}\n\n",
           "stream: the role chunk, empty model");

    len = r.out.len;

    ok(ev(&r, "event", "messageStart", "{\"role\":\"assistant\"}") == MG_X_OK
       && r.out.len == len,
       "stream: a second messageStart adds nothing");

    ok(ev(&r, "event", "contentBlockStart", "{\"start\":{\"toolUse\":"
          "{\"toolUseId\":\"t\",\"name\":\"f\"}}}") == MG_X_ERROR
       && r.out.len == len,
       "stream: a toolUse block without an index is an error");

    ok(ev(&r, "event", "contentBlockDelta", "{\"contentBlockIndex\":5,"
          "\"delta\":{\"toolUse\":{\"input\":\"{}\"}}}") == MG_X_OK
       && r.out.len == len,
       "stream: arguments of an unknown block are dropped");

    ok(ev(&r, "event", "contentBlockDelta", "{\"contentBlockIndex\":0,"
          "\"delta\":{\"reasoningContent\":{\"text\":\"hmm\"}}}") == MG_X_OK
       && r.out.len == len,
       "stream: reasoning deltas are dropped");

    ok(ev(&r, "exception", NULL, NULL) == MG_X_ERROR && r.err.status == 502
       && r.err.retryable && r.out.len == len,
       "stream: an exception without a name or payload");

    ok(ev(&r, "exception", "validationException", "{\"message\":\"Input is "
          "too long for requested model.\"}") == MG_X_ERROR
       && r.err.status == 400 && !r.err.retryable
       && r.err.code && strcmp(r.err.code, "context_length_exceeded") == 0,
       "stream: validationException is a 400, too long is "
       "context_length_exceeded");

    ok(ev(&r, "error", "InternalFailure", "oops \xff") == MG_X_ERROR
       && r.err.status == 502 && r.err.retryable
       && strcmp(r.err.message, "The model backend failed "
                 "(InternalFailure): oops ?") == 0,
       "stream: an error message's words are its payload");

    ok(ev(&r, "exception", "modelStreamErrorException", "{\"message\":"
          "\"Model stream error\",\"originalStatusCode\":500}") == MG_X_ERROR
       && r.err.status == 502 && r.err.retryable,
       "stream: modelStreamErrorException is a retryable 502");

    /* metadata first, then messageStop: both orders end the stream */

    ok(ev(&r, "event", "metadata", "{\"usage\":{\"inputTokens\":-5,"
          "\"outputTokens\":99999999999999999,\"totalTokens\":3}}") == MG_X_OK
       && r.out.len == len,
       "stream: metadata before messageStop is kept");

    ok(ev(&r, "event", "messageStop", "{\"stopReason\":\"brand_new\"}")
       == MG_X_DONE && r.out.len > len + 14
       && memcmp(r.out.data + r.out.len - 14, "data: [DONE]\n\n", 14) == 0
       && strstr(r.out.data + len, "\"finish_reason\":\"stop\"")
       && strstr(r.out.data + len, "\"usage\":{\"prompt_tokens\":0,"
                 "\"completion_tokens\":1000000000000000,"),
       "stream: then messageStop finishes, with usage; counts clamped");

    len = r.out.len;

    ok(ev(&r, "event", "metadata", "{}") == MG_X_DONE
       && ev(&r, "exception", "throttlingException", "{}") == MG_X_DONE
       && mg_bedrock_stream_finish(&r.st, &r.out) == MG_X_OK
       && r.out.len == len,
       "stream: nothing more after [DONE]");

    mg_bedrock_stream_free(&r.st);
    mg_bedrock_stream_free(&r.st);
    mg_buf_free(&r.out);

    /* finish before messageStop: a truncated stream, nothing to add */

    memset(&r, 0, sizeof(run_t));
    mg_bedrock_stream_init(&r.st, S(CLIENT), CREATED, 0);

    ok(mg_bedrock_stream_finish(&r.st, &r.out) == MG_X_OK && r.out.len == 0,
       "stream: finish before anything adds nothing");

    ev(&r, "event", "messageStart", "{\"role\":\"assistant\"}");
    len = r.out.len;

    ok(mg_bedrock_stream_finish(&r.st, &r.out) == MG_X_OK
       && r.out.len == len,
       "stream: finish without messageStop adds nothing");

    ok(ev(&r, "event", "messageStop", "{\"stopReason\":\"end_turn\"}")
       == MG_X_DONE,
       "stream: without include_usage messageStop ends the stream");

    mg_bedrock_stream_free(&r.st);
    mg_buf_free(&r.out);
}


int
main(void)
{
    fixture_dir("MG_BEDROCK_FIXTURES", "bedrock");

    test_make_id();
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
