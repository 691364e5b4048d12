/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The tree-free path must equal the full translators: thousands of
 * generated plain-text chats (roles in any order, system and developer
 * messages anywhere, empty and null contents, escapes, every parameter
 * present, absent, null, in and out of range) are translated both ways
 * for Anthropic and Bedrock and compared as JSON, with the stream flags.
 * Each generated case must also take the tree-free path, or the
 * comparison would prove nothing; near misses must be declined.
 */

#define _GNU_SOURCE  1

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "same_events.h"
#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"
#include "mg_xfast.h"


static unsigned long long  seed = 88172645463325252ULL;


/* xorshift64 */

static unsigned
rnd(unsigned n)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;

    return (unsigned) (seed % n);
}


static const char *
pick(const char **a, size_t n)
{
    return a[rnd(n)];
}


#define PICK(a)  pick(a, sizeof(a) / sizeof(a[0]))


/* a generated plain-text chat */

static void
gen(mg_buf_t *b)
{
    int          first;
    unsigned     i, n;
    const char  *v;

    static const char  *roles[] = {
        "system", "developer", "user", "user", "user", "assistant",
        "assistant"
    };

    static const char  *texts[] = {
        "\"hi\"", "\"\"", "null", "\"caf\\u00e9 \\\"q\\\" \\\\ \\n\"",
        "\"\xf0\x9f\x98\x80 emoji\"", "\"a longer text, with some words\"",
        "\"\\ud83d\\ude00\"", "\"tab\\there\"", "\"\\u0000nul\""
    };

    static const char  *maxes[] = {
        NULL, "null", "1", "512", "100000"
    };

    static const char  *temps[] = {
        NULL, "null", "0", "0.5", "1", "1.0", "1.5", "2", "-0.5", "0.7e0",
        "-0"
    };

    static const char  *top_ps[] = {
        NULL, "null", "1", "1.0", "0.9", "0", "1e0"
    };

    static const char  *streams[] = {
        NULL, "null", "true", "false"
    };

    static const char  *sos[] = {
        NULL, "null", "{}", "{\"include_usage\":true}",
        "{\"include_usage\":false}", "{\"include_usage\":null,\"x\":[1]}"
    };

    mg_buf_reset(b);
    mg_buf_printf(b, "{ \"model\" : \"gpt-4o\", \"messages\": [");

    n = 1 + rnd(9);

    for (i = 0; i < n; i++) {
        if (rnd(2)) {
            mg_buf_printf(b, "%s{\"role\":\"%s\",\"content\":%s}",
                          i ? "," : "", PICK(roles), PICK(texts));

        } else {
            mg_buf_printf(b, "%s{ \"content\": %s, \"role\": \"%s\" }",
                          i ? ", " : "", PICK(texts), PICK(roles));
        }
    }

    mg_buf_printf(b, "]");

#define member(name, list)                                                  \
    v = PICK(list);                                                         \
    if (v) {                                                                \
        mg_buf_printf(b, ",\"%s\":%s", name, v);                            \
    }

    member("max_tokens", maxes);
    member("max_completion_tokens", maxes);
    member("temperature", temps);
    member("top_p", top_ps);
    member("stream", streams);
    member("stream_options", sos);

#undef member

    first = rnd(2);
    mg_buf_printf(b, first ? "}" : " }\n");
}


typedef int (*translate_pt)(const char *body, size_t len, int full,
    mg_buf_t *out, int *stream, int *usage, mg_xerror_t *err);


static int
anthropic(const char *body, size_t len, int full, mg_buf_t *out,
    int *stream, int *usage, mg_xerror_t *err)
{
    mg_anthropic_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.model = "claude-x \"1\"";
    o.model_len = strlen(o.model);
    o.default_max_tokens = 2048;
    o.full = full;

    return mg_anthropic_request(body, len, &o, out, stream, usage, err);
}


static int
bedrock(const char *body, size_t len, int full, mg_buf_t *out, int *stream,
    int *usage, mg_xerror_t *err)
{
    mg_bedrock_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.default_max_tokens = (len % 2) ? 777 : 0;
    o.full = full;

    return mg_bedrock_request(body, len, &o, out, stream, usage, err);
}


static int
gemini(const char *body, size_t len, int full, mg_buf_t *out, int *stream,
    int *usage, mg_xerror_t *err)
{
    mg_gemini_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.default_max_tokens = (len % 2) ? 0 : 333;
    o.full = full;

    return mg_gemini_request(body, len, &o, out, stream, usage, err);
}


/* one body both ways: the same result; returns 1 if they agreed */

static int
same(translate_pt tr, const char *body, size_t len)
{
    int           rc1, rc2, s1, s2, u1, u2, eq;
    json_t       *j1, *j2;
    mg_buf_t      o1, o2;
    mg_xerror_t   e1, e2;

    memset(&o1, 0, sizeof(o1));
    memset(&o2, 0, sizeof(o2));
    memset(&e1, 0, sizeof(e1));
    memset(&e2, 0, sizeof(e2));

    rc1 = tr(body, len, 0, &o1, &s1, &u1, &e1);
    rc2 = tr(body, len, 1, &o2, &s2, &u2, &e2);

    eq = (rc1 == rc2);

    if (eq && rc1 == MG_X_OK) {
        j1 = json_loadb(o1.data, o1.len, JSON_ALLOW_NUL, NULL);
        j2 = json_loadb(o2.data, o2.len, JSON_ALLOW_NUL, NULL);

        eq = j1 && j2 && json_equal(j1, j2) && s1 == s2 && u1 == u2;

        json_decref(j1);
        json_decref(j2);

    } else if (eq) {
        eq = (e1.status == e2.status);
    }

    if (!eq) {
        tap_diag_str("body", body, len);
        tap_diag_str("fast", o1.data, o1.len);
        tap_diag_str("full", o2.data, o2.len);
        tap_diag("rc %d/%d stream %d/%d usage %d/%d", rc1, rc2, s1, s2, u1,
                 u2);
    }

    mg_buf_free(&o1);
    mg_buf_free(&o2);

    return eq;
}


static int
fast_taken(int provider, const char *body, size_t len)
{
    int           rc, s, u;
    mg_buf_t      out;
    mg_xf_opts_t  o;

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(out));

    o.provider = provider;
    o.model = "m";
    o.model_len = 1;
    o.default_max_tokens = 1;

    rc = mg_xf_request(&o, body, len, &out, &s, &u);

    mg_buf_free(&out);

    return rc;
}


/* a generated text answer of Anthropic (0), Bedrock (1) or Gemini (2) */

static void
gen_gemini_answer(mg_buf_t *b)
{
    unsigned     i, n;
    const char  *v;

    static const char  *texts[] = {
        "\"hi\"", "\"\"", "\"caf\\u00e9 \\\"q\\\" \\\\ \\n\"",
        "\"\xf0\x9f\x98\x80\"", "\"\\ud83d\\ude00 x\"", "\"\\u0000\""
    };

    static const char  *reasons[] = {
        NULL, "null", "\"STOP\"", "\"MAX_TOKENS\"", "\"SAFETY\"",
        "\"RECITATION\"", "\"MALFORMED_FUNCTION_CALL\"", "\"IMAGE_SAFETY\"",
        "\"NEW_REASON\"", "\"ST\\u004fP\"", "7"
    };

    static const char  *counts[] = {
        NULL, "0", "5", "-3", "1.5", "\"7\"", "null", "123456789012345",
        "999999999999999999"
    };

    static const char  *names[] = {
        "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
        "toolUsePromptTokenCount", "cachedContentTokenCount",
        "totalTokenCount"
    };

    static const char  *ids[] = {
        NULL, "\"Il0t\\u0041x\"", "\"r-1\"", "7"
    };

    mg_buf_reset(b);
    mg_buf_printf(b, "{\"candidates\":[{\"content\":{\"role\":\"model\","
                  "\"parts\":[");

    n = rnd(4);

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, "%s{\"text\":%s}", i ? "," : "", PICK(texts));
    }

    mg_buf_printf(b, "]}");

    v = PICK(reasons);
    if (v) {
        mg_buf_printf(b, ",\"finishReason\":%s", v);
    }

    mg_buf_printf(b, ",\"index\":0,\"safetyRatings\":[{\"category\":"
                  "\"HARM_CATEGORY_HARASSMENT\",\"probability\":"
                  "\"NEGLIGIBLE\"}]}");

    if (rnd(8) == 0) {
        mg_buf_printf(b, ",{\"content\":{\"parts\":[{\"text\":\"2\"}]}}");
    }

    mg_buf_printf(b, "]");

    if (rnd(5)) {
        mg_buf_printf(b, ",\"usageMetadata\":{\"x\":1");

        for (i = 0; i < 6; i++) {
            v = PICK(counts);
            if (v) {
                mg_buf_printf(b, ",\"%s\":%s", names[i], v);
            }
        }

        mg_buf_printf(b, "}");

    } else if (rnd(2)) {
        mg_buf_printf(b, ",\"usageMetadata\":null");
    }

    v = PICK(ids);
    if (v) {
        mg_buf_printf(b, ",\"responseId\":%s", v);
    }

    mg_buf_printf(b, ",\"modelVersion\":\"gemini-2.5-flash\"}");
}


static void
gen_answer(mg_buf_t *b, int k)
{
    int          bedrock;
    unsigned     i, n;
    const char  *v;

    static const char  *texts[] = {
        "\"hi\"", "\"\"", "\"caf\\u00e9 \\\"q\\\" \\\\ \\n\"",
        "\"\xf0\x9f\x98\x80\"", "\"\\ud83d\\ude00 x\"", "\"\\u0000\""
    };

    static const char  *reasons[] = {
        NULL, "null", "\"end_turn\"", "\"tool_use\"", "\"max_tokens\"",
        "\"refusal\"", "\"stop_sequence\"", "\"guardrail_intervened\"",
        "\"content_filtered\"", "\"model_context_window_exceeded\"", "7"
    };

    static const char  *counts[] = {
        NULL, "0", "5", "-3", "1.5", "\"7\"", "null", "123456789012345",
        "999999999999999999"
    };

    static const char  *anames[] = {
        "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens"
    };

    static const char  *bnames[] = {
        "inputTokens", "outputTokens", "totalTokens", "cacheReadInputTokens",
        "cacheWriteInputTokens"
    };

    if (k == 2) {
        gen_gemini_answer(b);
        return;
    }

    bedrock = (k == 1);

    mg_buf_reset(b);

    if (bedrock) {
        mg_buf_printf(b, "{\"output\":{\"message\":{\"role\":"
                      "\"assistant\",\"content\":[");
    } else {
        mg_buf_printf(b, "{\"id\":\"msg_01\\u0041bc\",\"type\":\"message\","
                      "\"role\":\"assistant\",\"model\":\"claude\","
                      "\"content\":[");
    }

    n = rnd(4);

    for (i = 0; i < n; i++) {
        mg_buf_printf(b, bedrock ? "%s{\"text\":%s}"
                                 : "%s{\"type\":\"text\",\"text\":%s}",
                      i ? "," : "", PICK(texts));
    }

    mg_buf_printf(b, bedrock ? "]}}" : "]");

    v = PICK(reasons);
    if (v) {
        mg_buf_printf(b, ",\"%s\":%s", bedrock ? "stopReason" : "stop_reason",
                      v);
    }

    if (rnd(5)) {
        mg_buf_printf(b, ",\"usage\":{\"x\":1");

        for (i = 0; i < (bedrock ? 5u : 4u); i++) {
            v = PICK(counts);
            if (v) {
                mg_buf_printf(b, ",\"%s\":%s",
                              bedrock ? bnames[i] : anames[i], v);
            }
        }

        mg_buf_printf(b, "}");

    } else if (rnd(2)) {
        mg_buf_printf(b, ",\"usage\":null");
    }

    mg_buf_printf(b, bedrock ? ",\"metrics\":{\"latencyMs\":5}}" : "}");
}


/*
 * The answer both ways (k: 0 Anthropic, 1 Bedrock, 2 Gemini); Bedrock's
 * ids are made per call: not compared.
 */

static int
same_answer(int k, const char *body, size_t len)
{
    int           rc1, rc2, eq, bedrock;
    json_t       *j1, *j2;
    mg_buf_t      o1, o2;
    mg_xerror_t   e;

    static const int  provider[] = {
        MG_XF_ANTHROPIC, MG_XF_BEDROCK, MG_XF_GEMINI
    };

    memset(&o1, 0, sizeof(o1));
    memset(&o2, 0, sizeof(o2));

    bedrock = (k == 1);

    rc1 = mg_xf_answer(provider[k], body, len, "gpt \"4\"", 7, 1700000000,
                       &o1);

    if (rc1 == MG_XF_DECLINED) {
        return -1;
    }

    rc2 = (k == 0) ? mg_anthropic_response(body, len, "gpt \"4\"", 7,
                                           1700000000, &o2, &e)
          : (k == 1) ? mg_bedrock_response(body, len, "gpt \"4\"", 7,
                                           1700000000, &o2, &e)
          : mg_gemini_response(body, len, "gpt \"4\"", 7, 1700000000, &o2,
                               &e);

    j1 = json_loadb(o1.data, o1.len, JSON_ALLOW_NUL, NULL);
    j2 = json_loadb(o2.data, o2.len, JSON_ALLOW_NUL, NULL);

    if (bedrock && j1 && j2) {
        json_object_del(j1, "id");
        json_object_del(j2, "id");
    }

    eq = (rc1 == rc2) && j1 && j2 && json_equal(j1, j2);

    if (!eq) {
        tap_diag_str("answer", body, len);
        tap_diag_str("fast", o1.data, o1.len);
        tap_diag_str("full", o2.data, o2.len);
    }

    json_decref(j1);
    json_decref(j2);
    mg_buf_free(&o1);
    mg_buf_free(&o2);

    return eq;
}


#define S(s)  s, sizeof(s) - 1


/*
 * The stream translators fed alike by both_ways(): one event (its name,
 * NULL where the provider has none, and its data) into out.
 */

typedef int (*stream_event_pt)(void *st, const char *name, const char *data,
    mg_buf_t *out, mg_xerror_t *err);
typedef int (*stream_finish_pt)(void *st, mg_buf_t *out);


static int
anthropic_event(void *st, const char *name, const char *data, mg_buf_t *out,
    mg_xerror_t *err)
{
    return mg_anthropic_stream_event(st, name, strlen(name), data,
                                     strlen(data), out, err);
}


static int
bedrock_event(void *st, const char *name, const char *data, mg_buf_t *out,
    mg_xerror_t *err)
{
    return mg_bedrock_stream_event(st, "event", 5, name, strlen(name), data,
                                   strlen(data), out, err);
}


static int
gemini_event(void *st, const char *name, const char *data, mg_buf_t *out,
    mg_xerror_t *err)
{
    return mg_gemini_stream_event(st, data, strlen(data), out, err);
}


static int
gemini_finish(void *st, mg_buf_t *out)
{
    return mg_gemini_stream_finish(st, out);
}


/*
 * The events evs[0..n) (name, data) fed to st[0] (fast paths allowed) and
 * st[1] (every event through the tree): each must end alike, with the
 * same events as JSON (ida and idb: each run's own id), and so must the
 * finish when there is one.
 */

static void
both_ways(const char *what, void **st, stream_event_pt event,
    stream_finish_pt finish, const char *const (*evs)[2], size_t n,
    const char *ida, const char *idb)
{
    int          k, rc[2];
    size_t       i, len[2];
    mg_buf_t     out[2];
    mg_xerror_t  err;

    memset(out, 0, sizeof(out));

    for (i = 0; i < n; i++) {
        for (k = 0; k < 2; k++) {
            len[k] = out[k].len;
            memset(&err, 0, sizeof(err));
            rc[k] = event(st[k], evs[i][0], evs[i][1], &out[k], &err);
        }

        ok(rc[0] == rc[1]
           && same_events(out[0].data + len[0], out[0].len - len[0],
                          out[1].data + len[1], out[1].len - len[1], ida,
                          idb),
           "%s, fast and tree alike: %s", what, evs[i][1]);
    }

    if (finish) {
        for (k = 0; k < 2; k++) {
            len[k] = out[k].len;
            rc[k] = finish(st[k], &out[k]);
        }

        ok(rc[0] == rc[1] && rc[0] == MG_X_DONE
           && same_events(out[0].data + len[0], out[0].len - len[0],
                          out[1].data + len[1], out[1].len - len[1], ida,
                          idb),
           "%s: the same finish", what);
    }

    mg_buf_free(&out[0]);
    mg_buf_free(&out[1]);
}


/* the buffer writers the tree-free paths use instead of printf */

static void
check_buf_writers(void)
{
    mg_buf_t  b;
    char      big[300];

    memset(&b, 0, sizeof(b));

    mg_buf_int(&b, 0);
    mg_buf_append(&b, ",", 1);
    mg_buf_int(&b, -7);
    mg_buf_append(&b, ",", 1);
    mg_buf_int(&b, 4096);
    mg_buf_append(&b, ",", 1);
    mg_buf_int(&b, 9223372036854775807LL);
    mg_buf_append(&b, ",", 1);
    mg_buf_int(&b, -9223372036854775807LL - 1);

    ok(b.len == sizeof("0,-7,4096,9223372036854775807,"
                       "-9223372036854775808") - 1
       && memcmp(b.data, "0,-7,4096,9223372036854775807,"
                 "-9223372036854775808", b.len) == 0,
       "mg_buf_int: zero, negatives, the extremes");

    /* printf in place when it fits, and across a growth when it does not */

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';

    b.len = 0;
    mg_buf_printf(&b, "[%d]", 42);
    mg_buf_printf(&b, "%s", big);
    mg_buf_printf(&b, "<%s>", "end");

    ok(b.len == 4 + 299 + 5 && memcmp(b.data, "[42]x", 5) == 0
       && memcmp(b.data + b.len - 6, "x<end>", 6) == 0,
       "mg_buf_printf: in place and after growing");

    mg_buf_free(&b);
}


int
main(void)
{
    int        i, bad, fast, declined;
    mg_buf_t   b;

    check_buf_writers();

    memset(&b, 0, sizeof(b));

    bad = 0;
    fast = 0;
    declined = 0;

    for (i = 0; i < 4000; i++) {
        gen(&b);

        if (fast_taken(MG_XF_ANTHROPIC, b.data, b.len) == MG_X_OK) {
            fast++;

        } else {
            declined++;
        }

        bad += !same(anthropic, b.data, b.len);
        bad += !same(bedrock, b.data, b.len);
        bad += !same(gemini, b.data, b.len);

        if (bad > 5) {
            break;
        }
    }

    is_int(bad, 0, "4000 generated chats: tree-free == full, Anthropic, "
           "Bedrock and Gemini");
    ok(fast > 3000, "most generated chats take the tree-free path (%d)",
       fast);
    ok(declined > 0, "chats without a user or assistant text are declined "
       "(%d)", declined);

    /* answers */

    {
        int  k, rc, taken[3];

        bad = 0;
        taken[0] = taken[1] = taken[2] = 0;

        for (i = 0; i < 6000 && bad < 5; i++) {
            k = i % 3;
            gen_answer(&b, k);

            rc = same_answer(k, b.data, b.len);

            if (rc == 0) {
                bad++;

            } else if (rc == 1) {
                taken[k]++;
            }
        }

        is_int(bad, 0, "6000 generated answers: tree-free == full, "
               "Anthropic, Bedrock and Gemini");
        ok(taken[0] > 1500 && taken[1] > 1000 && taken[2] > 600,
           "most generated answers take the tree-free path (%d, %d, %d)",
           taken[0], taken[1], taken[2]);

        static const char  *amiss[] = {
            "{\"type\":\"error\",\"error\":{\"type\":\"x\"},\"id\":\"m\","
                "\"content\":[]}",
            "{\"id\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\","
                "\"name\":\"f\",\"input\":{}}]}",
            "{\"id\":\"m\",\"content\":[{\"type\":\"text\",\"text\":\"a\","
                "\"citations\":[]}]}",
            "{\"id\":1,\"content\":[]}",
            "{\"id\":\"m\",\"content\":{}}",
            "{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1,"
                "\"input_tokens\":2}}",
            "{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":"
                "12345678901234567890}}",
            "{\"id\":\"m\",\"content\":[],\"usage\":{\"output_t1kens\":"
                "111111111111111111111111111111}}",
            "{\"id\":\"m\",\"content\":[],\"x\":{\"y\":1e999}}",
            "{\"id\":\"m\",\"content\":[],\"x\":{\"a\\u0000\":1}}",
            "[]"
        };

        static const char  *bmiss[] = {
            "{\"message\":\"bad\",\"__type\":\"ValidationException\"}",
            "{\"output\":{\"message\":{\"content\":[{\"toolUse\":{}}]}}}",
            "{\"output\":{\"message\":{\"content\":[{\"text\":\"a\"}]}},"
                "\"stopReason\":\"malformed_tool_use\"}",
            "{\"output\":{\"message\":{\"content\":[{\"reasoningContent\":"
                "{}}]}}}",
            "{\"output\":{\"message\":{\"content\":[]},\"x\":1}}"
        };

        static const char  *gmiss[] = {
            "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\"}}",
            "{\"candidates\":[],\"promptFeedback\":{\"blockReason\":"
                "\"SAFETY\"}}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\","
                "\"thought\":true}]}}]}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":"
                "{\"name\":\"f\",\"args\":{}}}]}}]}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}]},"
                "\"finishReason\":\"MALFORMED_FUNCTION_CALL\"}]}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}},"
                "{\"content\":{\"parts\":[{\"text\":\"b\"}]}}]}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],"
                "\"responseId\":7}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},"
                "\"finishReason\":\"ST\\u004fP\"}]}",
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],"
                "\"usageMetadata\":{\"promptTokenCount\":1,"
                "\"promptTokenCount\":2}}",
            "{\"candidates\":{}}"
        };

        for (i = 0; i < (int) (sizeof(amiss) / sizeof(amiss[0])); i++) {
            ok(same_answer(0, amiss[i], strlen(amiss[i])) == -1,
               "answer declined: %s", amiss[i]);
        }

        for (i = 0; i < (int) (sizeof(bmiss) / sizeof(bmiss[0])); i++) {
            ok(same_answer(1, bmiss[i], strlen(bmiss[i])) == -1,
               "answer declined: %s", bmiss[i]);
        }

        for (i = 0; i < (int) (sizeof(gmiss) / sizeof(gmiss[0])); i++) {
            ok(same_answer(2, gmiss[i], strlen(gmiss[i])) == -1,
               "answer declined: %s", gmiss[i]);
        }
    }

    /* near misses: declined, and the full translator decides */

    {
        static const char  *miss[] = {
            "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":[]}]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\","
                "\"name\":\"n\"}]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"tools\":[]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"stop\":\"s\"}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"n\":1}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"max_tokens\":0}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"max_tokens\":1.0}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"temperature\":\"1\"}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"temperature\":1e999}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"temperature\":123456789012345678901}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"stream\":1}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"stream\":true,\"stream\":false}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"m\\u0061x_tokens\":5}",
            "{\"messages\":[{\"role\":\"us\\u0065r\",\"content\":\"x\"}]}",
            "{\"messages\":[{\"role\":\"user\",\"role\":\"user\","
                "\"content\":\"x\"}]}",
            "{\"messages\":[\"user\"]}",
            "{\"messages\":{}}",
            "{\"messages\":null}",
            "{\"messages\":\"x\"}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"messages\":[{\"role\":\"user\",\"content\":\"y\"}]}",
            "{\"messages\":null,"
                "\"messages\":[{\"role\":\"user\",\"content\":\"y\"}]}",
            "{\"messages\":[]}",
            "{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}",
            "[{\"messages\":[]}]",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"stream_options\":true}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"model\":12345678901234567890123}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"stream_options\":{\"x\":-1e999}}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                "\"model\":{\"\\u0000\":1}}"
        };

        for (i = 0; i < (int) (sizeof(miss) / sizeof(miss[0])); i++) {
            ok(fast_taken(MG_XF_ANTHROPIC, miss[i], strlen(miss[i]))
               == MG_XF_DECLINED, "declined: %s", miss[i]);
            ok(same(anthropic, miss[i], strlen(miss[i]))
               && same(bedrock, miss[i], strlen(miss[i]))
               && same(gemini, miss[i], strlen(miss[i])),
               "declined: the same answer: %s", miss[i]);
        }
    }

    /* stream events the fast paths take must be what jansson reads */

    {
        mg_anthropic_stream_t  ast[2];
        mg_bedrock_stream_t    bst[2];
        mg_gemini_stream_t     gst[2];
        void                  *st[2];

        static const char  *aevs[][2] = {
            { "message_start", "{\"type\":\"message_start\",\"message\":"
              "{\"id\":\"m\",\"usage\":{\"input_tokens\":3}}}" },
            { "content_block_delta", "{\"type\":\"content_block_delta\","
              "\"index\":123456789012345678901234,\"delta\":{\"type\":"
              "\"text_delta\",\"text\":\"x\"}}" },
            { "content_block_delta", "{\"type\":\"content_block_delta\","
              "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"
              "\"y\",\"z\":-1e999}}" },
            { "ping", "{\"type\":\"ping\",\"\\u0000\":1}" },
            { "message_delta", "{\"type\":\"message_delta\",\"delta\":"
              "{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":"
              "2,\"w\":1e400}}" }
        };

        static const char  *bevs[][2] = {
            { "messageStart", "{\"role\":\"assistant\"}" },
            { "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":"
              "{\"text\":\"caf\\u00e9 \\\"x\\\"\"},\"p\":\"abc\"}" },
            { "contentBlockDelta", "{\"contentBlockIndex\":"
              "123456789012345678901234,\"delta\":{\"text\":\"x\"}}" },
            { "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":"
              "{\"text\":\"y\",\"z\":-1e999}}" },
            { "contentBlockDelta", "{\"\\u0000\":1,\"delta\":"
              "{\"text\":\"y\"}}" },
            { "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":"
              "{\"text\":\"\"}}" },
            { "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":"
              "{\"text\":7}}" },
            { "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":"
              "{\"text\":\"a\",\"text\":\"b\"}}" },
            { "contentBlockDelta", "[{\"delta\":{\"text\":\"a\"}}]" },
            { "contentBlockDelta", "{\"delta\":\"text\"}" },
            { "contentBlockDelta", "{\"delta\":{\"text\":\"a\"}" },
            { "messageStop", "{\"stopReason\":\"end_turn\"}" }
        };

        /* Gemini's chunks in the middle of a text answer */

#define GC(parts, rest)                                                       \
    "{\"candidates\":[{\"content\":{\"parts\":[" parts "],\"role\":"         \
    "\"model\"}" rest "}],\"modelVersion\":\"g\",\"responseId\":\"r1\""

        static const char  *gevs[][2] = {
            { NULL,
              GC("{\"text\":\"It is\"}", ",\"index\":0")
                  ",\"usageMetadata\":{\"promptTokenCount\":15,"
                  "\"totalTokenCount\":15}}" },
            { NULL,
              GC("{\"text\":\" caf\\u00e9 \\\"x\\\"\"},{\"text\":\" y\"}",
                 ",\"index\":0")
                  ",\"usageMetadata\":{\"promptTokenCount\":15,"
                  "\"candidatesTokenCount\":3,\"totalTokenCount\":18}}" },
            { NULL,
              GC("{\"text\":\"z\"}", "")
                  ",\"usageMetadata\":{\"candidatesTokenCount\":"
                  "123456789012345678901234}}" },
            { NULL,
              GC("{\"text\":\"\"}", ",\"index\":0") "}" },
            { NULL,
              GC("{\"text\":\"w\"}", ",\"index\":0.0") "}" },
            { NULL,
              GC("{\"text\":\"t\",\"thought\":true},{\"text\":\"u\"}", "")
                  "}" },
            { NULL,
              GC("{\"text\":\"v\"}", "")
                  ",\"usageMetadata\":{\"promptTokenCount\":1.5,"
                  "\"thoughtsTokenCount\":-3,\"cachedContentTokenCount\":4,"
                  "\"toolUsePromptTokenCount\":\"2\"}}" },
            { NULL,
              GC("{\"text\":\"a\"}", ",\"index\":1") "}" },
            { NULL,
              GC("{\"text\":\"b\"}", ",\"finishReason\":null") "}" },
            { NULL,
              "{\"candidates\":[],\"usageMetadata\":{\"totalTokenCount\":9}}" },
            { NULL,
              GC("{\"text\":\"c\"}", "") ",\"x\":{\"\\u0000\":1}}" },
            { NULL,
              GC("{\"text\":\".\"}", ",\"finishReason\":\"STOP\"")
                  ",\"usageMetadata\":{\"promptTokenCount\":15,"
                  "\"candidatesTokenCount\":6}}" }
        };

#undef GC

        for (i = 0; i < 2; i++) {
            mg_anthropic_stream_init(&ast[i], "gpt", 3, 1700000000, 1);
            mg_bedrock_stream_init(&bst[i], "gpt", 3, 1700000000, 1);
            mg_gemini_stream_init(&gst[i], "gpt", 3, 1700000000, 1);
            ast[i].full = i;
            bst[i].full = i;
            gst[i].full = i;
        }

        st[0] = &ast[0];
        st[1] = &ast[1];
        both_ways("anthropic stream event", st, anthropic_event, NULL, aevs,
                  sizeof(aevs) / sizeof(aevs[0]), "", "");

        st[0] = &bst[0];
        st[1] = &bst[1];
        both_ways("bedrock stream message", st, bedrock_event, NULL, bevs,
                  sizeof(bevs) / sizeof(bevs[0]), bst[0].id, bst[1].id);

        st[0] = &gst[0];
        st[1] = &gst[1];
        both_ways("gemini stream chunk", st, gemini_event, gemini_finish,
                  gevs, sizeof(gevs) / sizeof(gevs[0]), "", "");

        for (i = 0; i < 2; i++) {
            mg_anthropic_stream_free(&ast[i]);
            mg_bedrock_stream_free(&bst[i]);
            mg_gemini_stream_free(&gst[i]);
        }
    }

    /* the exact bytes of a simple case, so the shape is pinned down */

    {
        int           s, u;
        mg_buf_t      out;
        mg_xf_opts_t  o;

        static const char  body[] =
            "{\"model\":\"gpt\",\"messages\":[{\"role\":\"system\","
            "\"content\":\"Be \\\"brief\\\".\"},{\"role\":\"user\","
            "\"content\":\"caf\\u00e9\"}],\"temperature\":1.5,"
            "\"stream\":true,\"stream_options\":{\"include_usage\":true}}";

        memset(&out, 0, sizeof(out));
        memset(&o, 0, sizeof(o));
        o.provider = MG_XF_ANTHROPIC;
        o.model = "claude";
        o.model_len = 6;
        o.default_max_tokens = 4096;

        ok(mg_xf_request(&o, S(body), &out, &s, &u) == MG_X_OK
           && s == 1 && u == 1, "anthropic: taken, stream and usage");
        is_str(out.data, out.len,
               "{\"model\":\"claude\",\"max_tokens\":4096,\"system\":"
               "\"Be \\\"brief\\\".\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"caf\\u00e9\"}],\"temperature\":1.0,"
               "\"stream\":true}",
               "anthropic: the texts exactly as the client escaped them");

        mg_buf_reset(&out);
        o.provider = MG_XF_BEDROCK;
        o.default_max_tokens = 0;

        ok(mg_xf_request(&o, S(body), &out, &s, &u) == MG_X_OK,
           "bedrock: taken");
        is_str(out.data, out.len,
               "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":"
               "\"caf\\u00e9\"}]}],\"system\":[{\"text\":\"Be \\\"brief\\\""
               ".\"}],\"inferenceConfig\":{\"temperature\":1.0}}",
               "bedrock: blocks and inferenceConfig");

        mg_buf_free(&out);
    }

    mg_buf_free(&b);

    return tap_done();
}
