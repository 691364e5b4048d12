/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Usage from OpenAI-shaped answers: the backwards search for the
 * top-level "usage" (whole bodies, tails cut anywhere, nested and escaped
 * look-alikes), stream chunks and Responses events, and the request edit
 * that asks for the usage chunk.
 */

#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "mg_usage.h"
#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"


#define S(s)  s, sizeof(s) - 1


static int
tail(const char *s, long long *prompt, long long *completion)
{
    int         rc;
    mg_usage_t  u;

    u.prompt = -1;
    u.completion = -1;

    rc = mg_usage_tail(s, strlen(s), &u);

    *prompt = u.prompt;
    *completion = u.completion;

    return rc;
}


static void
test_tail(void)
{
    size_t       i, len;
    long long    p, c;
    const char  *body;
    mg_usage_t   u;

    body = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
           "\"content\":\"say \\\"usage\\\":{\\\"prompt_tokens\\\":7}\"},"
           "\"finish_reason\":\"stop\"}],"
           "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,"
           "\"total_tokens\":46,\"prompt_tokens_details\":"
           "{\"cached_tokens\":0}},"
           "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_1\"}\n";

    is_int(tail(body, &p, &c), MG_USAGE_FOUND, "chat completion");
    is_int(p, 12, "chat completion: prompt");
    is_int(c, 34, "chat completion: completion");

    /* every tail that still holds the usage member finds it */

    len = strlen(body);

    for (i = 0; i < len; i++) {
        u.prompt = -1;
        u.completion = -1;

        if (mg_usage_tail(body + i, len - i, &u) == MG_USAGE_FOUND) {
            if (u.prompt != 12 || u.completion != 34) {
                break;
            }

        } else if (strstr(body + i, "\"usage\":{\"prompt") != NULL) {
            break;
        }
    }

    ok(i == len, "every tail: the usage, or none once it is cut off (%zu)",
       i);

    is_int(tail("{\"object\":\"list\",\"data\":[{\"embedding\":[0.1,-2e-3],"
                "\"index\":0}],\"model\":\"e\",\"usage\":{\"prompt_tokens\":8,"
                "\"total_tokens\":8}}", &p, &c),
           MG_USAGE_FOUND, "embeddings");
    is_int(p, 8, "embeddings: prompt");
    is_int(c, 0, "embeddings: no completion, 0");

    is_int(tail("{\"id\":\"resp_1\",\"object\":\"response\",\"tools\":[{"
                "\"parameters\":{\"properties\":{\"usage\":{\"type\":"
                "\"object\"}}}}],\"usage\":{\"input_tokens\":5,"
                "\"output_tokens\":6,\"output_tokens_details\":"
                "{\"reasoning_tokens\":2}},\"user\":null,\"metadata\":"
                "{\"k\":\"v\"}}", &p, &c),
           MG_USAGE_FOUND, "responses object");
    is_int(p, 5, "responses: input_tokens");
    is_int(c, 6, "responses: output_tokens");

    is_int(tail("{\"tools\":[{\"parameters\":{\"properties\":{\"usage\":{"
                "\"type\":\"object\"}}}}],\"usage\":null}", &p, &c),
           MG_USAGE_NONE, "usage null: none, not a nested one");

    is_int(tail("{\"tools\":[{\"usage\":{\"prompt_tokens\":1}}],"
                "\"status\":\"in_progress\"}", &p, &c),
           MG_USAGE_NONE, "only a nested usage: none");

    is_int(tail("{\"a\":{\"usage\":{\"prompt_tokens\":1}},\"b\":1}", &p, &c),
           MG_USAGE_NONE, "nested in an object: none");

    is_int(tail("{\"x\":\"\\\"usage\\\": {\\\"prompt_tokens\\\": 3}\"}",
                &p, &c),
           MG_USAGE_NONE, "inside a string: none");

    is_int(tail("{\"say \\\"usage\":{\"prompt_tokens\":3}}", &p, &c),
           MG_USAGE_NONE, "a name ending in an escaped quote: none");

    is_int(tail("{ \"usage\" : { \"prompt_tokens\" : 3 ,"
                " \"completion_tokens\" : 4 } }\r\n", &p, &c),
           MG_USAGE_FOUND, "whitespace everywhere");
    is_int(p + c, 7, "whitespace everywhere: counts");

    is_int(tail("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}",
                &p, &c),
           MG_USAGE_NONE, "not closed: none");

    is_int(tail("{\"usage\":{\"prompt_tokens\":3}}}", &p, &c),
           MG_USAGE_NONE, "closed twice: none");

    is_int(tail("{\"usage\":{\"prompt_tokens\":-3,\"completion_tokens\":"
                "1.5}}", &p, &c),
           MG_USAGE_NONE, "no non-negative integer: none");

    is_int(tail("{\"usage\":{\"prompt_tokens\":99999999999999999999999}}",
                &p, &c),
           MG_USAGE_FOUND, "huge count");
    is_int(p, MG_USAGE_MAX, "huge count: clamped");

    is_int(tail("{\"usage\":{\"prompt_tokens\":-0}}", &p, &c),
           MG_USAGE_FOUND, "-0 is a count");
    is_int(p, 0, "-0: 0");

    is_int(tail("{\"usage\":{\"prompt_tokens\":1,}}", &p, &c),
           MG_USAGE_NONE, "invalid usage object: none");

    is_int(tail("[{\"usage\":{\"prompt_tokens\":1}}]", &p, &c),
           MG_USAGE_NONE, "an array: none");

    is_int(tail("", &p, &c), MG_USAGE_NONE, "empty");
    is_int(tail("}", &p, &c), MG_USAGE_NONE, "a brace");
    is_int(tail("usage\":{}}", &p, &c), MG_USAGE_NONE, "cut in the name");
}


static void
test_chunks(void)
{
    int         only;
    mg_usage_t  u;

    memset(&u, 0, sizeof(u));

    is_int(mg_usage_chunk(S("{\"id\":\"c\",\"choices\":[{\"index\":0,"
                            "\"delta\":{\"content\":\"hi\"}}],"
                            "\"usage\":null}"), &u, &only),
           MG_USAGE_NONE, "content chunk with usage null");
    is_int(only, 0, "content chunk: not usage only");

    is_int(mg_usage_chunk(S("{\"id\":\"c\",\"choices\":[],\"usage\":{"
                            "\"prompt_tokens\":9,\"completion_tokens\":6,"
                            "\"total_tokens\":15}}"), &u, &only),
           MG_USAGE_FOUND, "usage chunk");
    is_int(only, 1, "usage chunk: usage only");
    is_int(u.prompt, 9, "usage chunk: prompt");
    is_int(u.completion, 6, "usage chunk: completion");

    is_int(mg_usage_chunk(S("{\"choices\":[ \n ],\"usage\":{"
                            "\"prompt_tokens\":1}}"), &u, &only),
           MG_USAGE_FOUND, "usage chunk, spaced choices");
    is_int(only, 1, "spaced empty choices: usage only");

    is_int(mg_usage_chunk(S("{\"choices\":[{\"index\":0,\"delta\":{},"
                            "\"finish_reason\":\"stop\"}],\"usage\":{"
                            "\"prompt_tokens\":2,\"completion_tokens\":3}}"),
                          &u, &only),
           MG_USAGE_FOUND, "finish chunk with usage (some servers)");
    is_int(only, 0, "finish chunk with usage: not usage only");

    is_int(mg_usage_chunk(S("{\"usage\":{\"prompt_tokens\":2}}"), &u, &only),
           MG_USAGE_FOUND, "no choices at all");
    is_int(only, 0, "no choices: not usage only");

    is_int(mg_usage_chunk(S("[DONE]"), &u, &only), MG_USAGE_NONE, "[DONE]");
}


static void
test_responses(void)
{
    mg_usage_t  u;

    memset(&u, 0, sizeof(u));

    is_int(mg_usage_responses_event(S("{\"type\":\"response.completed\","
               "\"sequence_number\":9,\"response\":{\"id\":\"resp_1\","
               "\"output\":[],\"usage\":{\"input_tokens\":21,"
               "\"output_tokens\":13,\"total_tokens\":34},\"user\":null,"
               "\"metadata\":{}}}"), &u),
           MG_USAGE_FOUND, "response.completed");
    is_int(u.prompt, 21, "response.completed: input");
    is_int(u.completion, 13, "response.completed: output");

    is_int(mg_usage_responses_event(S("{\"response\":{\"usage\":{"
               "\"input_tokens\":1,\"output_tokens\":2}},"
               "\"type\":\"response.incomplete\"}"), &u),
           MG_USAGE_FOUND, "response.incomplete, type last");
    is_int(u.completion, 2, "response.incomplete: output");

    is_int(mg_usage_responses_event(S("{\"type\":\"response.created\","
               "\"response\":{\"usage\":null}}"), &u),
           MG_USAGE_NONE, "response.created");

    is_int(mg_usage_responses_event(S("{\"type\":\"response.output_text"
               ".delta\",\"delta\":\"\\\"usage\\\":{}\"}"), &u),
           MG_USAGE_NONE, "a delta");

    is_int(mg_usage_responses_event(S("{\"type\":\"response.completed\","
               "\"response\":{\"usage\":{\"input_tokens\":1}}"), &u),
           MG_USAGE_NONE, "invalid JSON");
}


static const char *
edit(const char *body, mg_json_type_t type, int *rc)
{
    size_t           len;
    const char      *p;
    mg_usage_edit_t  e;
    mg_json_field_t  f;
    static char      out[512];

    len = strlen(body);

    memset(&f, 0, sizeof(f));
    f.name = "stream_options";
    f.name_len = sizeof("stream_options") - 1;

    if (mg_json_scan(body, len, &f, 1, 64, NULL) != MG_JSON_OK
        || f.type != type)
    {
        *rc = -1;
        return "";
    }

    *rc = mg_usage_stream_options(body, len, &f, &e);

    if (*rc != MG_USAGE_EDIT) {
        return body;
    }

    p = body;
    memcpy(out, p, e.at);
    memcpy(out + e.at, e.text, e.len);
    strcpy(out + e.at + e.len, p + e.at + e.cut);

    if (mg_json_scan(out, strlen(out), NULL, 0, 64, NULL) != MG_JSON_OK) {
        *rc = -2;
    }

    return out;
}


static void
test_request(void)
{
    int          rc;
    size_t       i;
    const char  *got;

    static const struct {
        const char      *body;
        mg_json_type_t   type;
        int              rc;
        const char      *want;
    } cases[] = {

        { "{\"model\":\"m\",\"stream\":true}", MG_JSON_NONE, MG_USAGE_EDIT,
          "{\"model\":\"m\",\"stream\":true,"
          "\"stream_options\":{\"include_usage\":true}}" },

        { "{\"model\":\"m\",\"stream\":true}\n  ", MG_JSON_NONE,
          MG_USAGE_EDIT,
          "{\"model\":\"m\",\"stream\":true,"
          "\"stream_options\":{\"include_usage\":true}}\n  " },

        { "{ }", MG_JSON_NONE, MG_USAGE_EDIT,
          "{ \"stream_options\":{\"include_usage\":true}}" },

        { "{\"stream_options\":null,\"model\":\"m\"}", MG_JSON_NULL,
          MG_USAGE_EDIT,
          "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\"}" },

        { "{\"stream_options\":{},\"model\":\"m\"}", MG_JSON_OBJECT,
          MG_USAGE_EDIT,
          "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\"}" },

        { "{\"stream_options\":{ },\"model\":\"m\"}", MG_JSON_OBJECT,
          MG_USAGE_EDIT,
          "{\"stream_options\":{\"include_usage\":true },\"model\":\"m\"}" },

        { "{\"stream_options\":{\"include_obfuscation\":false}}",
          MG_JSON_OBJECT, MG_USAGE_EDIT,
          "{\"stream_options\":{\"include_usage\":true,"
          "\"include_obfuscation\":false}}" },

        { "{\"stream_options\":{\"a\":1,\"include_usage\":false}}",
          MG_JSON_OBJECT, MG_USAGE_EDIT,
          "{\"stream_options\":{\"a\":1,\"include_usage\":true}}" },

        { "{\"stream_options\":{\"include_usage\" : null }}",
          MG_JSON_OBJECT, MG_USAGE_EDIT,
          "{\"stream_options\":{\"include_usage\" : true }}" },

        { "{\"stream_options\":{\"include_usage\":true}}",
          MG_JSON_OBJECT, MG_USAGE_ASKED,
          "{\"stream_options\":{\"include_usage\":true}}" },

        { "{\"stream_options\":\"x\"}", MG_JSON_STRING, MG_USAGE_DECLINED,
          "{\"stream_options\":\"x\"}" },

        { "{\"stream_options\":[]}", MG_JSON_ARRAY, MG_USAGE_DECLINED,
          "{\"stream_options\":[]}" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        got = edit(cases[i].body, cases[i].type, &rc);

        is_int(rc, cases[i].rc, "request %zu: result", i);
        is_str(got, strlen(got), cases[i].want, "request %zu: body", i);
    }
}


/* translated streams count whether the client asked for usage or not */

static void
test_translated(void)
{
    int                    i, rc;
    mg_buf_t               out;
    mg_xerror_t            err;
    mg_x_usage_t           u;
    mg_gemini_stream_t     g;
    mg_bedrock_stream_t    b;
    mg_anthropic_stream_t  a;

    memset(&out, 0, sizeof(out));

    for (i = 0; i < 2; i++) {
        memset(&u, 0, sizeof(u));

        mg_anthropic_stream_init(&a, S("m"), 1, i);
        is_int(mg_anthropic_stream_usage(&a, &u), 0,
               "anthropic %d: none before message_start", i);

        rc = mg_anthropic_stream_event(&a, S("message_start"),
                 S("{\"type\":\"message_start\",\"message\":{\"id\":"
                   "\"msg_1\",\"usage\":{\"input_tokens\":11,"
                   "\"cache_read_input_tokens\":4,\"output_tokens\":1}}}"),
                 &out, &err);
        is_int(rc, MG_X_OK, "anthropic %d: message_start", i);
        is_int(mg_anthropic_stream_usage(&a, &u), 1,
               "anthropic %d: known after message_start", i);
        is_int(u.prompt, 15, "anthropic %d: prompt with cache reads", i);

        rc = mg_anthropic_stream_event(&a, S("message_delta"),
                 S("{\"type\":\"message_delta\",\"delta\":{"
                   "\"stop_reason\":\"end_turn\"},\"usage\":{"
                   "\"output_tokens\":22}}"), &out, &err);
        is_int(rc, MG_X_OK, "anthropic %d: message_delta", i);
        (void) mg_anthropic_stream_usage(&a, &u);
        is_int(u.completion, 22, "anthropic %d: completion", i);
        mg_anthropic_stream_free(&a);

        mg_bedrock_stream_init(&b, S("m"), 1, i);
        rc = mg_bedrock_stream_event(&b, S("event"), S("messageStart"),
                                     S("{\"role\":\"assistant\"}"), &out,
                                     &err);
        is_int(rc, MG_X_OK, "bedrock %d: messageStart", i);
        rc = mg_bedrock_stream_event(&b, S("event"), S("messageStop"),
                                     S("{\"stopReason\":\"end_turn\"}"),
                                     &out, &err);
        is_int(rc, i ? MG_X_OK : MG_X_DONE, "bedrock %d: messageStop", i);
        is_int(mg_bedrock_stream_usage(&b, &u), 0,
               "bedrock %d: none before metadata", i);
        rc = mg_bedrock_stream_event(&b, S("event"), S("metadata"),
                 S("{\"usage\":{\"inputTokens\":7,\"outputTokens\":8,"
                   "\"totalTokens\":15}}"), &out, &err);
        is_int(rc, MG_X_DONE, "bedrock %d: metadata", i);
        is_int(mg_bedrock_stream_usage(&b, &u), 1,
               "bedrock %d: metadata counted, even after the end", i);
        is_int(u.prompt * 100 + u.completion, 708, "bedrock %d: counts", i);
        mg_bedrock_stream_free(&b);

        mg_gemini_stream_init(&g, S("m"), 1, i);
        is_int(mg_gemini_stream_usage(&g, &u), 0,
               "gemini %d: none before usageMetadata", i);
        rc = mg_gemini_stream_event(&g,
                 S("{\"candidates\":[{\"content\":{\"role\":\"model\","
                   "\"parts\":[{\"text\":\"hi\"}]},\"index\":0}],"
                   "\"usageMetadata\":{\"promptTokenCount\":3,"
                   "\"candidatesTokenCount\":2,\"thoughtsTokenCount\":5,"
                   "\"totalTokenCount\":10}}"), &out, &err);
        is_int(rc, MG_X_OK, "gemini %d: chunk", i);
        is_int(mg_gemini_stream_usage(&g, &u), 1,
               "gemini %d: known after usageMetadata", i);
        is_int(u.prompt * 100 + u.completion, 307,
               "gemini %d: thoughts are output", i);
        mg_gemini_stream_free(&g);
    }

    mg_buf_free(&out);
}


/* the input read from a cache, in either API's details */

static void
test_cached(void)
{
    mg_usage_t   u;
    const char  *chat, *resp, *none;

    chat = "{\"prompt_tokens\":10,\"completion_tokens\":2,"
           "\"prompt_tokens_details\":{\"audio_tokens\":0,"
           "\"cached_tokens\":4}}";
    resp = "{\"input_tokens\":7,\"input_tokens_details\":"
           "{\"cached_tokens\":3},\"output_tokens\":1}";
    none = "{\"prompt_tokens\":5,\"completion_tokens\":1,"
           "\"prompt_tokens_details\":{\"cached_tokens\":\"x\"}}";

    memset(&u, 0xff, sizeof(u));
    ok(mg_usage_object(chat, strlen(chat), &u) == MG_USAGE_FOUND
       && u.prompt == 10 && u.completion == 2 && u.cached == 4,
       "cached: chat's prompt_tokens_details");

    memset(&u, 0xff, sizeof(u));
    ok(mg_usage_object(resp, strlen(resp), &u) == MG_USAGE_FOUND
       && u.prompt == 7 && u.completion == 1 && u.cached == 3,
       "cached: Responses' input_tokens_details");

    memset(&u, 0xff, sizeof(u));
    ok(mg_usage_object(none, strlen(none), &u) == MG_USAGE_FOUND
       && u.prompt == 5 && u.cached == 0, "cached: not a count, none");
}


int
main(void)
{
    test_cached();
    test_tail();
    test_chunks();
    test_responses();
    test_request();
    test_translated();

    return tap_done();
}
