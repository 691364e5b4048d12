/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The JSON of the gateway's memory (src/mg_memory.c): a turn's items one
 * per line with ids given to input items only, the history array, the
 * first whole turn of a history read in part, and the input_items list
 * with its order, limit and after; provider-only state (mg_responses.h)
 * kept on stored items only, sent back only to its origin, never taken
 * from a client.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "mg_memory.h"


static int  ids;


static int
id_fn(void *data, const char *prefix, char *buf, size_t size)
{
    if (data != NULL) {
        return -1;
    }

    snprintf(buf, size, "%sT%d", prefix, ++ids);

    return 0;
}


/* a buffer's text, NUL-terminated for strstr() */

static const char *
z(mg_buf_t *b)
{
    mg_buf_append(b, "", 1);
    b->len--;

    return b->data ? b->data : "";
}


static int
fail_id(void *data, const char *prefix, char *buf, size_t size)
{
    return -1;
}


static void
test_turn(void)
{
    int           rc;
    size_t        nin, n;
    mg_buf_t      out;
    mg_xerror_t   err;
    const char   *in, *res;

    memset(&out, 0, sizeof(out));
    memset(&err, 0, sizeof(err));

    in = "[{\"type\":\"message\",\"role\":\"user\",\"content\":"
         "[{\"type\":\"input_text\",\"text\":\"a\\nb\"}]},"
         "{\"type\":\"function_call_output\",\"call_id\":\"c1\","
         "\"output\":\"x\"},"
         "{\"type\":\"function_call\",\"id\":\"fc_keep\",\"call_id\":\"c2\","
         "\"name\":\"f\",\"arguments\":\"{}\"},"
         "{\"type\":\"reasoning\",\"summary\":[]},"
         "{\"role\":\"user\",\"content\":[]}]";
    res = "[{\"type\":\"message\",\"id\":\"msg_out\",\"role\":\"assistant\","
          "\"content\":[]}]";

    ids = 0;
    rc = mg_mem_turn(in, strlen(in), res, strlen(res), id_fn, NULL, &out,
                     &nin, &n, &err);

    is_int(rc, MG_X_OK, "turn: ok");
    is_int(nin, 5, "turn: 5 input items");
    is_int(n, 6, "turn: 6 items");
    is_str(out.data, out.len,
           "{\"type\":\"message\",\"role\":\"user\",\"content\":"
           "[{\"type\":\"input_text\",\"text\":\"a\\nb\"}],"
           "\"id\":\"msg_T1\"}\n"
           "{\"type\":\"function_call_output\",\"call_id\":\"c1\","
           "\"output\":\"x\",\"id\":\"fco_T2\"}\n"
           "{\"type\":\"function_call\",\"id\":\"fc_keep\",\"call_id\":\"c2\","
           "\"name\":\"f\",\"arguments\":\"{}\"}\n"
           "{\"type\":\"reasoning\",\"summary\":[],\"id\":\"item_T3\"}\n"
           "{\"role\":\"user\",\"content\":[],\"id\":\"msg_T4\"}\n"
           "{\"type\":\"message\",\"id\":\"msg_out\",\"role\":\"assistant\","
           "\"content\":[]}",
           "turn: one item a line, ids given to input items without one");
    ok(memchr(out.data, '\n', out.len) != NULL
       && strstr(z(&out), "a\\nb") != NULL,
       "turn: a newline inside a text stays escaped");

    /* empty input, empty output */

    mg_buf_reset(&out);
    rc = mg_mem_turn("[]", 2, "[]", 2, id_fn, NULL, &out, &nin, &n, &err);
    ok(rc == MG_X_OK && nin == 0 && n == 0 && out.len == 0,
       "turn: nothing to store");

    /* errors leave out as it was */

    mg_buf_reset(&out);
    mg_buf_append(&out, "keep", 4);

    rc = mg_mem_turn("{}", 2, "[]", 2, id_fn, NULL, &out, &nin, &n, &err);
    ok(rc == MG_X_ERROR && err.status == 500 && out.len == 4,
       "turn: input not an array is a 500, nothing appended");

    rc = mg_mem_turn("[1]", 3, "[]", 2, id_fn, NULL, &out, &nin, &n, &err);
    ok(rc == MG_X_ERROR && out.len == 4, "turn: an item not an object");

    rc = mg_mem_turn("[]", 2, "[{},2]", 6, id_fn, NULL, &out, &nin, &n,
                     &err);
    ok(rc == MG_X_ERROR && out.len == 4, "turn: an output item not an "
       "object");

    rc = mg_mem_turn("[{}]", 4, "[]", 2, fail_id, NULL, &out, &nin, &n,
                     &err);
    ok(rc == MG_X_NOMEM && err.status == 500 && out.len == 4,
       "turn: an id that cannot be made");

    rc = mg_mem_turn(NULL, 0, "[]", 2, id_fn, NULL, &out, &nin, &n, &err);
    ok(rc == MG_X_ERROR && out.len == 4, "turn: no input at all");

    mg_buf_free(&out);
}


static void
test_array(void)
{
    mg_buf_t     out;
    const char  *items[3] = { "{\"a\":1}", "{}", "{\"b\":[2]}" };
    size_t       lens[3] = { 7, 2, 9 };

    memset(&out, 0, sizeof(out));

    is_int(mg_mem_array(items, lens, 3, &out), MG_X_OK, "array: ok");
    is_str(out.data, out.len, "[{\"a\":1},{},{\"b\":[2]}]", "array: three");

    mg_buf_reset(&out);
    mg_mem_array(items, lens, 0, &out);
    is_str(out.data, out.len, "[]", "array: none");

    is_int(mg_mem_count("[1,2,3]", 7), 3, "count: 3");
    is_int(mg_mem_count("{}", 2), 0, "count: not an array");
    is_int(mg_mem_count("[]", 2), 0, "count: empty");
    is_int(mg_mem_count(NULL, 0), 0, "count: nothing");
    is_int(mg_mem_count("[{\"a\":\"x,]\\\",[\"},[1,{}],\"s\"]",
                        strlen("[{\"a\":\"x,]\\\",[\"},[1,{}],\"s\"]")), 3,
           "count: commas, brackets and escaped quotes inside strings");

    {
        size_t      n;
        const char  *a = "[{\"id\":\"a\",\"t\":\"x,\\\"}{\"},{\"id\":\"b\","
                         "\"c\":[1,2]},{\"id\":\"c\"}]";

        mg_buf_reset(&out);
        mg_buf_append(&out, "{\"id\":\"z\"}", 10);
        is_int(mg_mem_lines(a, strlen(a), &out, &n), MG_X_OK, "lines: ok");
        is_int(n, 3, "lines: 3");
        is_str(out.data, out.len,
               "{\"id\":\"z\"}\n{\"id\":\"a\",\"t\":\"x,\\\"}{\"}\n"
               "{\"id\":\"b\",\"c\":[1,2]}\n{\"id\":\"c\"}",
               "lines: appended after what was there, one a line");
        mg_buf_reset(&out);
        mg_mem_lines("[]", 2, &out, &n);
        ok(n == 0 && out.len == 0, "lines: none");
    }

    ok(mg_mem_has_state("{\"a\":1,\"" MG_RESP_STATE "\":{}}", 22
                        + sizeof(MG_RESP_STATE) - 1),
       "has state: yes");
    ok(!mg_mem_has_state("{\"a\":\"x_mgw_stat\"}", 19), "has state: no");
    ok(!mg_mem_has_state("\"x_mgw_sta", 10), "has state: cut short");

    mg_buf_free(&out);
}


static void
test_turn_start(void)
{
    const char  *items[5] = {
        "{\"type\":\"function_call_output\",\"call_id\":\"c\"}",
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}",
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[]}",
        "{\"role\":\"user\",\"content\":\"x\"}",
        "not json"
    };
    size_t  lens[5];
    int     i;

    for (i = 0; i < 5; i++) {
        lens[i] = strlen(items[i]);
    }

    is_int(mg_mem_turn_start(items, lens, 5), 2, "turn start: the first "
           "user message");
    is_int(mg_mem_turn_start(items + 3, lens + 3, 2), 0, "turn start: a "
           "message without a type");
    is_int(mg_mem_turn_start(items, lens, 2), 2, "turn start: none");
    is_int(mg_mem_turn_start(items + 4, lens + 4, 1), 1, "turn start: not "
           "JSON is no turn");
}


static int
list(const char *order, const char *limit, const char *after,
    mg_buf_t *out, mg_xerror_t *err)
{
    static const char  *items[4] = {
        "{\"id\":\"i1\"}", "{\"id\":\"i2\"}", "{\"id\":\"i3\"}",
        "{\"x\":1}"
    };
    static size_t       lens[4] = { 11, 11, 11, 7 };

    mg_buf_reset(out);

    return mg_mem_list(items, lens, 4, order, order ? strlen(order) : 0,
                       limit, limit ? strlen(limit) : 0, after,
                       after ? strlen(after) : 0, out, err);
}


static void
test_list(void)
{
    mg_buf_t     out;
    mg_xerror_t  err;

    memset(&out, 0, sizeof(out));
    memset(&err, 0, sizeof(err));

    is_int(list(NULL, NULL, NULL, &out, &err), MG_X_OK, "list: ok");
    is_str(out.data, out.len,
           "{\"object\":\"list\",\"data\":[{\"x\":1},{\"id\":\"i3\"},"
           "{\"id\":\"i2\"},{\"id\":\"i1\"}],\"first_id\":null,"
           "\"last_id\":\"i1\",\"has_more\":false}",
           "list: newest first by default; an item without an id is null");

    list("asc", "2", NULL, &out, &err);
    is_str(out.data, out.len,
           "{\"object\":\"list\",\"data\":[{\"id\":\"i1\"},{\"id\":\"i2\"}],"
           "\"first_id\":\"i1\",\"last_id\":\"i2\",\"has_more\":true}",
           "list: asc, limit 2, more");

    list("asc", "2", "i2", &out, &err);
    is_str(out.data, out.len,
           "{\"object\":\"list\",\"data\":[{\"id\":\"i3\"},{\"x\":1}],"
           "\"first_id\":\"i3\",\"last_id\":null,\"has_more\":false}",
           "list: asc after i2");

    list("desc", "1", "i2", &out, &err);
    is_str(out.data, out.len,
           "{\"object\":\"list\",\"data\":[{\"id\":\"i1\"}],"
           "\"first_id\":\"i1\",\"last_id\":\"i1\",\"has_more\":false}",
           "list: desc after i2");

    list("asc", NULL, "i3", &out, &err);
    list("desc", "100", "i1", &out, &err);
    is_str(out.data, out.len,
           "{\"object\":\"list\",\"data\":[],\"first_id\":null,"
           "\"last_id\":null,\"has_more\":false}",
           "list: after the last one, empty");

    ok(list("up", NULL, NULL, &out, &err) == MG_X_ERROR
       && err.status == 400 && strcmp(err.param, "order") == 0,
       "list: a bad order is a 400 naming it");
    ok(list(NULL, "0", NULL, &out, &err) == MG_X_ERROR
       && strcmp(err.param, "limit") == 0, "list: limit 0");
    ok(list(NULL, "101", NULL, &out, &err) == MG_X_ERROR, "list: limit 101");
    ok(list(NULL, "5x", NULL, &out, &err) == MG_X_ERROR, "list: limit 5x");
    ok(list(NULL, "123456789", NULL, &out, &err) == MG_X_ERROR,
       "list: a long limit");
    ok(list(NULL, NULL, "nope", &out, &err) == MG_X_ERROR
       && strcmp(err.param, "after") == 0
       && strstr(err.message, "nope") != NULL,
       "list: an unknown after is a 400 naming it");

    mg_buf_free(&out);
}


static void
test_state(void)
{
    int                    rc, stream;
    mg_buf_t               resp, items, chat, echo, input, out;
    mg_xerror_t            err;
    mg_resp_opts_t         ro;
    mg_resp_stream_t       st;
    mg_resp_answer_opts_t  o;
    json_t                *chunk;
    json_error_t           jerr;
    const char            *answer, *hist, *body, *page[1];
    size_t                 lens[1];

    memset(&resp, 0, sizeof(resp));
    memset(&items, 0, sizeof(items));
    memset(&chat, 0, sizeof(chat));
    memset(&echo, 0, sizeof(echo));
    memset(&input, 0, sizeof(input));
    memset(&out, 0, sizeof(out));
    memset(&o, 0, sizeof(o));
    memset(&ro, 0, sizeof(ro));

    o.id = "resp_X";
    o.model = "m";
    o.created_at = 1;
    o.origin = "gemini/g-1";

    answer = "{\"choices\":[{\"index\":0,\"finish_reason\":\"tool_calls\","
             "\"message\":{\"role\":\"assistant\",\"content\":null,"
             "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
             "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"},"
             "\"extra_content\":{\"google\":{\"thought_signature\":"
             "\"SIG\"}}}]}}]}";

    rc = mg_resp_answer(answer, strlen(answer), &o, &resp, &items, &err);
    is_int(rc, MG_X_OK, "state: answer ok");
    ok(strstr(z(&resp), "SIG") == NULL && strstr(z(&resp), MG_RESP_STATE)
       == NULL, "state: not in the client's response");
    ok(strstr(z(&items), "\"" MG_RESP_STATE "\":{\"origin\":\"gemini/g-1\","
              "\"extra_content\":{\"google\":{\"thought_signature\":"
              "\"SIG\"}}}") != NULL,
       "state: kept on the stored item with its origin");

    mg_buf_reset(&resp);
    mg_buf_reset(&items);
    o.origin = NULL;
    mg_resp_answer(answer, strlen(answer), &o, &resp, &items, &err);
    ok(strstr(z(&items), "SIG") == NULL, "state: no origin, nothing kept");

    /* sent back to its origin only */

    hist = "[{\"type\":\"message\",\"role\":\"user\",\"content\":\"q\"},"
           "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"c1\","
           "\"name\":\"f\",\"arguments\":\"{}\",\"status\":\"completed\","
           "\"" MG_RESP_STATE "\":{\"origin\":\"gemini/g-1\",\"extra_content\":"
           "{\"google\":{\"thought_signature\":\"SIG\"}}}}]";
    body = "{\"model\":\"m\",\"input\":[{\"type\":"
           "\"function_call_output\",\"call_id\":\"c1\",\"output\":\"r\"}]}";

    ro.replay = "gemini/g-1";
    rc = mg_resp_request(body, strlen(body), hist, strlen(hist), &ro, &chat,
                         NULL, NULL, &stream, &err);
    is_int(rc, MG_X_OK, "state: request ok");
    ok(strstr(z(&chat), "\"extra_content\":{\"google\":"
              "{\"thought_signature\":\"SIG\"}}") != NULL,
       "state: back to the same origin");
    ok(strstr(z(&chat), MG_RESP_STATE) == NULL, "state: its wrapper not");

    mg_buf_reset(&chat);
    ro.replay = "gemini/g-2";
    mg_resp_request(body, strlen(body), hist, strlen(hist), &ro, &chat, NULL,
                    NULL, &stream, &err);
    ok(strstr(z(&chat), "SIG") == NULL, "state: not to another model");

    mg_buf_reset(&chat);
    ro.replay = NULL;
    mg_resp_request(body, strlen(body), hist, strlen(hist), &ro, &chat, NULL,
                    NULL, &stream, &err);
    ok(strstr(z(&chat), "SIG") == NULL && strstr(z(&chat), MG_RESP_STATE)
       == NULL, "state: not across clouds");

    /* a client's items never carry it */

    body = "{\"model\":\"m\",\"input\":[{\"type\":\"message\","
           "\"role\":\"user\",\"content\":\"q\"},{\"type\":"
           "\"function_call\",\"call_id\":\"c9\",\"name\":\"f\","
           "\"arguments\":\"{}\",\"" MG_RESP_STATE "\":{\"origin\":"
           "\"gemini/g-1\",\"extra_content\":{\"x\":1}}},{\"type\":"
           "\"function_call_output\",\"call_id\":\"c9\",\"output\":\"r\"}]}";

    mg_buf_reset(&chat);
    ro.replay = "gemini/g-1";
    rc = mg_resp_request(body, strlen(body), NULL, 0, &ro, &chat, &echo,
                         &input, &stream, &err);
    is_int(rc, MG_X_OK, "state: a client's item, ok");
    ok(strstr(z(&chat), "extra_content") == NULL,
       "state: a client's is not sent");
    ok(strstr(z(&input), MG_RESP_STATE) == NULL,
       "state: nor stored");

    /* the stream keeps it for the items only */

    o.origin = "gemini/g-1";
    ok(mg_resp_stream_init(&st, &o, &err) == MG_X_OK, "state: stream init");

    chunk = json_loads("{\"object\":\"chat.completion.chunk\",\"choices\":"
                       "[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\""
                       ":0,\"id\":\"c1\",\"type\":\"function\",\"function\":"
                       "{\"name\":\"f\",\"arguments\":\"{}\"},"
                       "\"extra_content\":{\"google\":{\"thought_signature\":"
                       "\"SIG\"}}}]},\"finish_reason\":\"tool_calls\"}]}", 0,
                       &jerr);
    rc = mg_resp_stream_chunk(&st, chunk, &out, &err);
    json_decref(chunk);
    is_int(rc, MG_X_OK, "state: stream chunk");

    mg_buf_reset(&items);
    rc = mg_resp_stream_end(&st, &out, &items, &err);
    is_int(rc, MG_X_DONE, "state: stream end");
    ok(strstr(z(&out), "SIG") == NULL, "state: not in the events");
    ok(strstr(z(&items), "\"thought_signature\":\"SIG\"") != NULL
       && strstr(z(&items), "\"origin\":\"gemini/g-1\"") != NULL,
       "state: in the stream's stored items");

    mg_buf_reset(&resp);
    mg_resp_stream_object(&st, &resp);
    ok(strstr(z(&resp), "SIG") == NULL, "state: not in the stored object");
    mg_resp_stream_free(&st);

    /* a page of items goes without it */

    page[0] = strstr(hist, "{\"type\":\"function_call\"");
    lens[0] = strlen(page[0]) - 1;
    mg_buf_reset(&out);
    is_int(mg_mem_page(page, lens, 1, 0, &out), MG_X_OK, "state: page");
    ok(strstr(z(&out), "SIG") == NULL && strstr(z(&out), "fc_1") != NULL,
       "state: a page shows the item without it");

    mg_buf_free(&resp);
    mg_buf_free(&items);
    mg_buf_free(&chat);
    mg_buf_free(&echo);
    mg_buf_free(&input);
    mg_buf_free(&out);
}


int
main(void)
{
    test_state();
    test_turn();
    test_array();
    test_turn_start();
    test_list();

    return tap_done();
}
