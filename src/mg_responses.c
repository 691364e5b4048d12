/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses: a Responses request and its history -> a chat
 * completions request; a chat completion -> a Responses object (see
 * mg_responses.h).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_responses.h"
#include "mg_responses_int.h"


/* what a request's top-level member asks of the translation */
#define MG_R_OWN      0         /* read by the translation itself */
#define MG_R_PASS     1         /* the same member in chat completions */
#define MG_R_CALLER   2         /* the caller's: accepted, not sent */
#define MG_R_REFUSE   3         /* cannot be served: refused unless null */

typedef struct {
    const char  *name;
    int          what;
} mg_r_key_t;


static const mg_r_key_t  mg_r_keys[] = {
    { "model", MG_R_OWN },
    { "input", MG_R_OWN },
    { "instructions", MG_R_OWN },
    { "tools", MG_R_OWN },
    { "tool_choice", MG_R_OWN },
    { "max_output_tokens", MG_R_OWN },
    { "text", MG_R_OWN },
    { "reasoning", MG_R_OWN },
    { "stream", MG_R_OWN },
    { "background", MG_R_OWN },
    { "include", MG_R_OWN },
    { "temperature", MG_R_PASS },
    { "top_p", MG_R_PASS },
    { "parallel_tool_calls", MG_R_PASS },
    { "user", MG_R_PASS },
    { "service_tier", MG_R_PASS },
    { "safety_identifier", MG_R_PASS },
    { "prompt_cache_key", MG_R_PASS },
    { "prompt_cache_retention", MG_R_PASS },
    /* the gateway stores, chains and trims; metadata is only echoed */
    { "store", MG_R_CALLER },
    { "previous_response_id", MG_R_CALLER },
    { "conversation", MG_R_CALLER },
    { "truncation", MG_R_CALLER },
    { "metadata", MG_R_CALLER },
    { "stream_options", MG_R_CALLER },
    /* it counts built-in tool calls, of which there are none here */
    { "max_tool_calls", MG_R_CALLER },
    { "prompt", MG_R_REFUSE },
    { "top_logprobs", MG_R_REFUSE },
    { "context_management", MG_R_REFUSE },
    { NULL, 0 }
};


/* the request's fields a response object repeats, in its order */
static const char  *mg_r_echo_keys[] = {
    "instructions", "max_output_tokens", "parallel_tool_calls",
    "previous_response_id", "reasoning", "store", "temperature", "text",
    "tool_choice", "tools", "top_p", "truncation", "user", "metadata",
    "service_tier", NULL
};


typedef struct {
    json_t         *msgs;       /* the chat messages */
    json_t         *input;      /* this request's input as items, or NULL */
    const char     *where;      /* "input" or "history", for messages */
    const char     *param;      /* what err->param names for items */
    mg_xerror_t    *err;
} mg_r_req_t;


static int mg_r_check(json_t *in, mg_xerror_t *err);
static int mg_r_model(json_t *in, const mg_resp_opts_t *o, json_t *chat,
    mg_xerror_t *err);
static int mg_r_messages(json_t *in, json_t *hist, json_t *chat,
    json_t *items, mg_xerror_t *err);
static int mg_r_item(mg_r_req_t *rq, json_t *it, size_t i);
static int mg_r_message(mg_r_req_t *rq, json_t *it, size_t i);
static int mg_r_part(mg_r_req_t *rq, const char *role, json_t *part,
    size_t i, size_t j, json_t *parts);
static int mg_r_image(mg_r_req_t *rq, json_t *part, size_t i, size_t j,
    json_t **p);
static int mg_r_file(mg_r_req_t *rq, json_t *part, size_t i, size_t j,
    json_t **p);
static int mg_r_call(mg_r_req_t *rq, json_t *it, size_t i);
static int mg_r_call_output(mg_r_req_t *rq, json_t *it, size_t i);
static int mg_r_order(json_t *msgs);
static int mg_r_calls_block(json_t *msgs, size_t *i, json_t *first,
    json_t *out);
static int mg_r_input_item(mg_r_req_t *rq, json_t *it);
static int mg_r_tools(json_t *in, json_t *chat, mg_xerror_t *err);
static json_t *mg_r_named(json_t *name);
static int mg_r_tool_choice(json_t *in, json_t *chat, mg_xerror_t *err);
static int mg_r_tool_choice_set(json_t *in, json_t *chat, mg_xerror_t *err);
static int mg_r_params(json_t *in, json_t *chat, int *stream,
    mg_xerror_t *err);
static int mg_r_text(json_t *in, json_t *chat, mg_xerror_t *err);
static int mg_r_reasoning(json_t *in, json_t *chat, mg_xerror_t *err);
static json_t *mg_r_echo(json_t *in);
static int mg_r_dump(json_t *j, mg_buf_t *out, size_t max,
    mg_xerror_t *err);
static int mg_r_is_text_part(json_t *part);


/* the request */

int
mg_resp_request(const char *body, size_t len, const char *history,
    size_t history_len, const mg_resp_opts_t *o, mg_buf_t *chat,
    mg_buf_t *echo, mg_buf_t *input, int *stream, mg_xerror_t *err)
{
    int           rc;
    size_t        max, chat_len, echo_len, input_len;
    json_t       *in, *hist, *req, *items, *ec;
    json_error_t  jerr;

    *stream = 0;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    if (in == NULL) {
        return mg_x_bad(err, NULL, "The request body is not valid JSON: %s",
                        jerr.text);
    }

    hist = NULL;
    req = NULL;
    items = NULL;
    ec = NULL;

    chat_len = chat->len;
    echo_len = echo ? echo->len : 0;
    input_len = input ? input->len : 0;

    if (!json_is_object(in)) {
        rc = mg_x_bad(err, NULL, "The request body must be a JSON object.");
        goto done;
    }

    if (history && history_len) {
        hist = json_loadb(history, history_len, JSON_ALLOW_NUL, &jerr);

        /* the gateway's own store wrote it: not the client's fault */

        if (!json_is_array(hist)) {
            mg_xerror_set(err, 500, 0, "server_error", NULL, NULL,
                          "The stored items of the previous turns cannot "
                          "be read.");
            rc = MG_X_ERROR;
            goto done;
        }
    }

    rc = mg_r_check(in, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    req = json_object();
    items = input ? json_array() : NULL;

    if (req == NULL || (input && items == NULL)) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_r_model(in, o, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_r_messages(in, hist, req, items, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_r_tools(in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_r_params(in, req, stream, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    /* after the parameters: it drops parallel_tool_calls without tools */

    rc = mg_r_tool_choice(in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    max = mg_x_out_max(o ? o->max_out : 0);

    rc = mg_r_dump(req, chat, max, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (echo) {
        ec = mg_r_echo(in);
        if (ec == NULL) {
            rc = MG_X_NOMEM;
            goto done;
        }

        rc = mg_r_dump(ec, echo, max, err);
        if (rc != MG_X_OK) {
            goto done;
        }
    }

    if (input) {
        rc = mg_r_dump(items, input, max, err);
    }

done:

    if (rc != MG_X_OK) {
        chat->len = chat_len;

        if (echo) {
            echo->len = echo_len;
        }

        if (input) {
            input->len = input_len;
        }

        *stream = 0;
    }

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(ec);
    json_decref(items);
    json_decref(req);
    json_decref(hist);
    json_decref(in);

    return rc;
}


/*
 * Every member is known and servable: OpenAI answers an unknown parameter
 * with a 400 too, and one the gateway cannot honour must not be dropped.
 */

static int
mg_r_check(json_t *in, mg_xerror_t *err)
{
    size_t             k, n;
    json_t            *v, *s;
    const char        *key, *inc;
    const mg_r_key_t  *rk;

    json_object_foreach(in, key, v) {

        for (rk = mg_r_keys; rk->name; rk++) {
            if (strcmp(rk->name, key) == 0) {
                break;
            }
        }

        if (rk->name == NULL) {
            return mg_x_bad(err, NULL, "Unknown parameter: '%s'.", key);
        }

        /* top_logprobs 0 asks for nothing */

        if (rk->what == MG_R_REFUSE && !json_is_null(v)
            && !(json_is_integer(v) && json_integer_value(v) == 0))
        {
            return mg_x_bad(err, rk->name, "%s is not supported when the "
                            "gateway serves the Responses API over a chat "
                            "completions backend.", rk->name);
        }
    }

    v = mg_x_get(in, "background");

    if (v && !json_is_boolean(v)) {
        return mg_x_bad(err, "background", "background must be a boolean.");
    }

    if (json_is_true(v)) {
        return mg_x_bad(err, "background", "background responses are not "
                        "supported when the gateway serves the Responses API "
                        "over a chat completions backend.");
    }

    v = mg_x_get(in, "include");

    if (v && !json_is_array(v)) {
        return mg_x_bad(err, "include", "include must be an array.");
    }

    n = json_array_size(v);

    for (k = 0; k < n; k++) {
        s = json_array_get(v, k);
        inc = json_string_value(s);

        if (inc == NULL) {
            return mg_x_bad(err, "include", "include[%zu] must be a string.",
                            k);
        }

        /* image URLs of the input are kept in the stored items anyway */

        if (strcmp(inc, "message.input_image.image_url") == 0) {
            continue;
        }

        if (strcmp(inc, "reasoning.encrypted_content") == 0) {
            return mg_x_bad(err, "include", "include: encrypted reasoning "
                            "(reasoning.encrypted_content) is not available "
                            "from a chat completions backend.");
        }

        return mg_x_bad(err, "include", "include: \"%s\" is not supported "
                        "when the gateway serves the Responses API over a "
                        "chat completions backend.", inc);
    }

    return MG_X_OK;
}


static int
mg_r_model(json_t *in, const mg_resp_opts_t *o, json_t *chat,
    mg_xerror_t *err)
{
    json_t  *v;

    if (o && o->model && o->model_len) {
        return mg_x_set(chat, "model", json_stringn(o->model, o->model_len));
    }

    v = json_object_get(in, "model");

    if (!json_is_string(v)) {
        return mg_x_bad(err, "model", "model must be a string.");
    }

    return json_object_set(chat, "model", v) == 0 ? MG_X_OK : MG_X_NOMEM;
}


/*
 * This request's instructions, then the history, then this request's
 * input: OpenAI does not carry instructions over from earlier turns, so
 * a stored system message is one that came as an input item.
 */

static int
mg_r_messages(json_t *in, json_t *hist, json_t *chat, json_t *items,
    mg_xerror_t *err)
{
    int          rc;
    size_t       i, base;
    json_t      *msgs, *v, *it;
    mg_r_req_t   rq;

    msgs = json_array();

    if (msgs == NULL || mg_x_set(chat, "messages", msgs) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    rq.msgs = msgs;
    rq.input = NULL;
    rq.err = err;

    v = mg_x_get(in, "instructions");

    if (v) {
        if (!json_is_string(v)) {
            return mg_x_bad(err, "instructions", "instructions must be a "
                            "string.");
        }

        it = json_pack("{s:s,s:O}", "role", "system", "content", v);

        if (it == NULL || json_array_append_new(msgs, it) != 0) {
            return MG_X_NOMEM;
        }
    }

    base = json_array_size(msgs);

    rq.where = "history";
    rq.param = "previous_response_id";

    json_array_foreach(hist, i, it) {
        rc = mg_r_item(&rq, it, i);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    rq.where = "input";
    rq.param = "input";
    rq.input = items;

    v = mg_x_get(in, "input");

    if (json_is_string(v)) {
        it = json_pack("{s:s,s:s,s:[{s:s,s:O}]}", "type", "message",
                       "role", "user", "content", "type", "input_text",
                       "text", v);

        if (it == NULL) {
            return MG_X_NOMEM;
        }

        rc = mg_r_item(&rq, it, 0);
        json_decref(it);

        if (rc != MG_X_OK) {
            return rc;
        }

    } else if (json_is_array(v)) {

        json_array_foreach(v, i, it) {
            rc = mg_r_item(&rq, it, i);
            if (rc != MG_X_OK) {
                return rc;
            }
        }

    } else if (v) {
        return mg_x_bad(err, "input", "input must be a string or an array "
                        "of items.");
    }

    /* instructions alone ask nothing */

    if (json_array_size(msgs) == base) {
        return mg_x_bad(err, "input", "input is required: there is nothing "
                        "to answer.");
    }

    return mg_r_order(msgs);
}


/*
 * Chat completions wants an assistant message's tool_calls followed
 * directly by their tool messages.  Text the model said after its calls
 * (stored as [message, function_call, message]) goes after their
 * outputs; calls of a later assistant message that come before the
 * outputs join the first message's calls, their text going after the
 * outputs too.  The block ends at a message of another role, a tool
 * message of another call, or when every call has its output.
 */

static int
mg_r_order(json_t *msgs)
{
    int      rc;
    size_t   i, n;
    json_t  *out, *m;

    n = json_array_size(msgs);
    out = json_array();

    if (out == NULL) {
        return MG_X_NOMEM;
    }

    i = 0;

    while (i < n) {
        m = json_array_get(msgs, i++);

        if (json_array_append(out, m) != 0) {
            json_decref(out);
            return MG_X_NOMEM;
        }

        if (json_object_get(m, "tool_calls") == NULL) {
            continue;
        }

        rc = mg_r_calls_block(msgs, &i, m, out);

        if (rc != MG_X_OK) {
            json_decref(out);
            return rc;
        }
    }

    rc = (json_array_clear(msgs) == 0 && json_array_extend(msgs, out) == 0)
         ? MG_X_OK : MG_X_NOMEM;

    json_decref(out);

    return rc;
}


static int
mg_r_item(mg_r_req_t *rq, json_t *it, size_t i)
{
    int          rc;
    const char  *type;

    if (!json_is_object(it)) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu] must be an object.",
                        rq->where, i);
    }

    /* a message may leave its type out (EasyInputMessage) */

    type = json_string_value(mg_x_get(it, "type"));

    if (type == NULL && mg_x_get(it, "type")) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].type must be a string.",
                        rq->where, i);
    }

    if (type == NULL || strcmp(type, "message") == 0) {
        rc = mg_r_message(rq, it, i);

    } else if (strcmp(type, "function_call") == 0) {
        rc = mg_r_call(rq, it, i);

    } else if (strcmp(type, "function_call_output") == 0) {
        rc = mg_r_call_output(rq, it, i);

    } else {
        return mg_x_bad(rq->err, rq->param, "%s[%zu]: items of type \"%s\" "
                        "cannot be sent to a chat completions backend.",
                        rq->where, i, type);
    }

    if (rc != MG_X_OK || rq->input == NULL) {
        return rc;
    }

    return mg_r_input_item(rq, it);
}


static int
mg_r_message(mg_r_req_t *rq, json_t *it, size_t i)
{
    int          rc;
    size_t       j;
    json_t      *content, *parts, *part, *m;
    const char  *role;

    role = json_string_value(json_object_get(it, "role"));

    if (role == NULL
        || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0
            && strcmp(role, "system") != 0 && strcmp(role, "developer") != 0))
    {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].role must be user, "
                        "assistant, system or developer.", rq->where, i);
    }

    content = json_object_get(it, "content");

    if (json_is_string(content)) {
        m = json_pack("{s:s,s:O}", "role", role, "content", content);
        goto append;
    }

    if (!json_is_array(content)) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content must be a "
                        "string or an array of parts.", rq->where, i);
    }

    parts = json_array();
    if (parts == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(content, j, part) {
        rc = mg_r_part(rq, role, part, i, j, parts);

        if (rc != MG_X_OK) {
            json_decref(parts);
            return rc;
        }
    }

    /* one text is sent as a string: not every chat backend takes parts
     * in every role */

    if (json_array_size(parts) == 1
        && mg_r_is_text_part(json_array_get(parts, 0)))
    {
        m = json_pack("{s:s,s:O}", "role", role, "content",
                      json_object_get(json_array_get(parts, 0), "text"));
        json_decref(parts);

    } else {
        m = json_pack("{s:s,s:o}", "role", role, "content", parts);
    }

append:

    if (m == NULL || json_array_append_new(rq->msgs, m) != 0) {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


static int
mg_r_is_text_part(json_t *part)
{
    return mg_x_streq(json_string_value(json_object_get(part, "type")),
                      "text");
}


/* which part a role may carry follows chat completions' own rules */

static int
mg_r_part(mg_r_req_t *rq, const char *role, json_t *part, size_t i,
    size_t j, json_t *parts)
{
    int          user, assistant;
    json_t      *v, *p;
    const char  *type;

    type = json_string_value(json_object_get(part, "type"));

    if (type == NULL) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu].type must "
                        "be a string.", rq->where, i, j);
    }

    user = (strcmp(role, "user") == 0);
    assistant = (strcmp(role, "assistant") == 0);
    p = NULL;

    if (strcmp(type, "input_text") == 0
        || (assistant && strcmp(type, "output_text") == 0))
    {
        v = json_object_get(part, "text");

        if (!json_is_string(v)) {
            return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu].text "
                            "must be a string.", rq->where, i, j);
        }

        p = json_pack("{s:s,s:O}", "type", "text", "text", v);

    } else if (assistant && strcmp(type, "refusal") == 0) {
        v = json_object_get(part, "refusal");

        if (!json_is_string(v)) {
            return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]."
                            "refusal must be a string.", rq->where, i, j);
        }

        p = json_pack("{s:s,s:O}", "type", "refusal", "refusal", v);

    } else if (user && strcmp(type, "input_image") == 0) {
        if (mg_r_image(rq, part, i, j, &p) != MG_X_OK) {
            return MG_X_ERROR;
        }

    } else if (user && strcmp(type, "input_file") == 0) {
        if (mg_r_file(rq, part, i, j, &p) != MG_X_OK) {
            return MG_X_ERROR;
        }

    } else if (user && strcmp(type, "input_audio") == 0) {
        v = json_object_get(part, "input_audio");

        if (!json_is_object(v)) {
            return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]."
                            "input_audio must be an object.", rq->where, i,
                            j);
        }

        p = json_pack("{s:s,s:O}", "type", "input_audio", "input_audio", v);

    } else {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]: a %s "
                        "message cannot hold a part of type \"%s\".",
                        rq->where, i, j, role, type);
    }

    if (p == NULL || json_array_append_new(parts, p) != 0) {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/* *p NULL after MG_X_OK: out of memory */

static int
mg_r_image(mg_r_req_t *rq, json_t *part, size_t i, size_t j, json_t **p)
{
    json_t      *url, *detail;
    const char  *d;

    if (mg_x_get(part, "file_id")) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]: "
                        "input_image file_id is not supported over a chat "
                        "completions backend; send image_url.", rq->where,
                        i, j);
    }

    url = json_object_get(part, "image_url");
    detail = mg_x_get(part, "detail");
    d = json_string_value(detail);

    if (!json_is_string(url)) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]."
                        "image_url must be a string.", rq->where, i, j);
    }

    if (detail
        && !(mg_x_streq(d, "auto") || mg_x_streq(d, "low")
             || mg_x_streq(d, "high")))
    {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu].detail "
                        "must be auto, low or high over a chat completions "
                        "backend.", rq->where, i, j);
    }

    if (detail) {
        *p = json_pack("{s:s,s:{s:O,s:O}}", "type", "image_url",
                       "image_url", "url", url, "detail", detail);

    } else {
        *p = json_pack("{s:s,s:{s:O}}", "type", "image_url", "image_url",
                       "url", url);
    }

    return MG_X_OK;
}


static int
mg_r_file(mg_r_req_t *rq, json_t *part, size_t i, size_t j, json_t **p)
{
    json_t  *data, *name, *file;

    if (mg_x_get(part, "file_id") || mg_x_get(part, "file_url")) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]: "
                        "input_file file_id and file_url are not supported "
                        "over a chat completions backend; send file_data.",
                        rq->where, i, j);
    }

    data = json_object_get(part, "file_data");
    name = mg_x_get(part, "filename");

    if (!json_is_string(data) || (name && !json_is_string(name))) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].content[%zu]."
                        "file_data and filename must be strings.", rq->where,
                        i, j);
    }

    file = json_pack("{s:O}", "file_data", data);

    if (file && name && json_object_set(file, "filename", name) != 0) {
        json_decref(file);
        file = NULL;
    }

    *p = file ? json_pack("{s:s,s:o}", "type", "file", "file", file) : NULL;

    return MG_X_OK;
}


/*
 * Calls in a row are one assistant turn in chat completions, with the
 * text the model said before them when there was one.
 */

static int
mg_r_call(mg_r_req_t *rq, json_t *it, size_t i)
{
    size_t   n;
    json_t  *id, *name, *args, *tc, *last, *calls, *m;

    id = json_object_get(it, "call_id");
    name = json_object_get(it, "name");
    args = json_object_get(it, "arguments");

    if (!json_is_string(id) || !json_is_string(name)
        || !json_is_string(args))
    {
        return mg_x_bad(rq->err, rq->param, "%s[%zu]: a function_call needs "
                        "call_id, name and arguments, strings.", rq->where,
                        i);
    }

    tc = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", id, "type", "function",
                   "function", "name", name, "arguments", args);
    if (tc == NULL) {
        return MG_X_NOMEM;
    }

    n = json_array_size(rq->msgs);
    last = n ? json_array_get(rq->msgs, n - 1) : NULL;

    if (mg_x_streq(json_string_value(json_object_get(last, "role")),
                   "assistant"))
    {
        calls = json_object_get(last, "tool_calls");

        if (calls == NULL) {
            calls = json_array();

            if (mg_x_set(last, "tool_calls", calls) != MG_X_OK) {
                json_decref(tc);
                return MG_X_NOMEM;
            }
        }

        return json_array_append_new(calls, tc) == 0 ? MG_X_OK
                                                      : MG_X_NOMEM;
    }

    m = json_pack("{s:s,s:n,s:[o]}", "role", "assistant", "content",
                  "tool_calls", tc);

    if (m == NULL || json_array_append_new(rq->msgs, m) != 0) {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


static int
mg_r_call_output(mg_r_req_t *rq, json_t *it, size_t i)
{
    size_t   j;
    json_t  *id, *out, *content, *part, *p, *m;

    id = json_object_get(it, "call_id");
    out = json_object_get(it, "output");

    if (!json_is_string(id)) {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].call_id must be a "
                        "string.", rq->where, i);
    }

    if (json_is_string(out)) {
        content = json_incref(out);

    } else if (json_is_array(out)) {
        content = json_array();
        if (content == NULL) {
            return MG_X_NOMEM;
        }

        json_array_foreach(out, j, part) {

            /* a chat tool message holds text only */

            if (!mg_x_streq(json_string_value(json_object_get(part, "type")),
                            "input_text")
                || !json_is_string(json_object_get(part, "text")))
            {
                json_decref(content);
                return mg_x_bad(rq->err, rq->param, "%s[%zu].output[%zu]: "
                                "a function_call_output can send only "
                                "input_text parts to a chat completions "
                                "backend.", rq->where, i, j);
            }

            p = json_pack("{s:s,s:O}", "type", "text", "text",
                          json_object_get(part, "text"));

            if (p == NULL || json_array_append_new(content, p) != 0) {
                json_decref(content);
                return MG_X_NOMEM;
            }
        }

    } else {
        return mg_x_bad(rq->err, rq->param, "%s[%zu].output must be a string "
                        "or an array of parts.", rq->where, i);
    }

    m = json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id", id,
                  "content", content);

    if (m == NULL || json_array_append_new(rq->msgs, m) != 0) {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/*
 * The input item as it is stored: a message always with its type and its
 * content an array of parts, as OpenAI lists input items; other items as
 * they came.
 */

static int
mg_r_input_item(mg_r_req_t *rq, json_t *it)
{
    json_t      *content, *m;
    const char  *role, *type;

    content = json_object_get(it, "content");
    type = json_string_value(json_object_get(it, "type"));

    /* only a message is rewritten: a call may carry a "content" too */

    if (type && (strcmp(type, "message") != 0 || !json_is_string(content))) {
        return json_array_append(rq->input, it) == 0 ? MG_X_OK : MG_X_NOMEM;
    }

    role = json_string_value(json_object_get(it, "role"));

    if (!json_is_string(content)) {
        m = json_pack("{s:s,s:s,s:O}", "type", "message", "role", role,
                      "content", content);

    } else if (strcmp(role, "assistant") == 0) {
        m = json_pack("{s:s,s:s,s:[{s:s,s:O,s:[]}]}", "type", "message",
                      "role", role, "content", "type", "output_text",
                      "text", content, "annotations");

    } else {
        m = json_pack("{s:s,s:s,s:[{s:s,s:O}]}", "type", "message",
                      "role", role, "content", "type", "input_text",
                      "text", content);
    }

    if (m == NULL || json_array_append_new(rq->input, m) != 0) {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/*
 * The messages from *i on that belong to first's calls, appended to out:
 * the tool messages of its calls in their order, then the assistant text
 * that came between; *i is moved past them.
 */

static int
mg_r_calls_block(json_t *msgs, size_t *i, json_t *first, json_t *out)
{
    int          rc;
    size_t       n, k;
    json_t      *pending, *later, *calls, *more, *m, *tc, *c, *text;
    const char  *role, *id;

    calls = json_object_get(first, "tool_calls");
    pending = json_object();
    later = json_array();
    rc = MG_X_NOMEM;

    if (pending == NULL || later == NULL) {
        goto done;
    }

    json_array_foreach(calls, k, tc) {
        id = json_string_value(json_object_get(tc, "id"));

        if (id && json_object_set(pending, id, json_true()) != 0) {
            goto done;
        }
    }

    n = json_array_size(msgs);

    for ( /* void */ ; *i < n && json_object_size(pending); (*i)++) {
        m = json_array_get(msgs, *i);
        role = json_string_value(json_object_get(m, "role"));
        id = json_string_value(json_object_get(m, "tool_call_id"));

        if (mg_x_streq(role, "tool") && id && json_object_get(pending, id))
        {
            if (json_object_del(pending, id) != 0
                || json_array_append(out, m) != 0)
            {
                goto done;
            }

            continue;
        }

        if (!mg_x_streq(role, "assistant")) {
            break;
        }

        more = json_object_get(m, "tool_calls");

        json_array_foreach(more, k, tc) {
            id = json_string_value(json_object_get(tc, "id"));

            if (json_array_append(calls, tc) != 0
                || (id && json_object_set(pending, id, json_true()) != 0))
            {
                goto done;
            }
        }

        c = json_object_get(m, "content");

        if (more == NULL) {
            text = json_incref(m);

        } else if (json_string_length(c) || json_array_size(c)) {
            text = json_pack("{s:s,s:O}", "role", "assistant", "content", c);

            if (text == NULL) {
                goto done;
            }

        } else {
            continue;
        }

        if (json_array_append_new(later, text) != 0) {
            goto done;
        }
    }

    rc = (json_array_extend(out, later) == 0) ? MG_X_OK : MG_X_NOMEM;

done:

    json_decref(later);
    json_decref(pending);

    return rc;
}


/* Responses' flat function tools -> chat's nested ones; nothing else */

static int
mg_r_tools(json_t *in, json_t *chat, mg_xerror_t *err)
{
    size_t       i;
    json_t      *tools, *t, *name, *fn, *ct, *out, *v;
    const char  *type;

    static const char  *copy[] = {
        "description", "parameters", "strict", NULL
    };
    const char  **k;

    tools = mg_x_get(in, "tools");

    if (tools == NULL) {
        return MG_X_OK;
    }

    if (!json_is_array(tools)) {
        return mg_x_bad(err, "tools", "tools must be an array.");
    }

    if (json_array_size(tools) == 0) {
        return MG_X_OK;
    }

    out = json_array();

    if (out == NULL || mg_x_set(chat, "tools", out) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    json_array_foreach(tools, i, t) {
        type = json_string_value(json_object_get(t, "type"));

        if (type == NULL) {
            return mg_x_bad(err, "tools", "tools[%zu].type must be a "
                            "string.", i);
        }

        if (strcmp(type, "function") != 0) {
            return mg_x_bad(err, "tools", "tools[%zu]: the tool \"%s\" is "
                            "not supported over a chat completions backend; "
                            "only function tools are.", i, type);
        }

        name = json_object_get(t, "name");

        if (!json_is_string(name)) {
            return mg_x_bad(err, "tools", "tools[%zu].name must be a "
                            "string.", i);
        }

        fn = json_pack("{s:O}", "name", name);
        ct = json_pack("{s:s,s:o}", "type", "function", "function", fn);

        if (ct == NULL || json_array_append_new(out, ct) != 0) {
            return MG_X_NOMEM;
        }

        for (k = copy; *k; k++) {
            v = mg_x_get(t, *k);

            if (v && json_object_set(fn, *k, v) != 0) {
                return MG_X_NOMEM;
            }
        }
    }

    return MG_X_OK;
}


/* {"type": "function", "function": {"name": name}} */

static json_t *
mg_r_named(json_t *name)
{
    return json_pack("{s:s,s:{s:O}}", "type", "function", "function",
                     "name", name);
}


/*
 * Chat completions refuses tool_choice (and parallel_tool_calls) without
 * tools: with none sent, "auto" and "none" ask nothing and are left out;
 * "required", a function or allowed tools cannot be served.
 */

static int
mg_r_tool_choice(json_t *in, json_t *chat, mg_xerror_t *err)
{
    int          rc;
    json_t      *tc;
    const char  *s;

    rc = mg_r_tool_choice_set(in, chat, err);

    if (rc != MG_X_OK || json_object_get(chat, "tools")) {
        return rc;
    }

    json_object_del(chat, "parallel_tool_calls");

    tc = json_object_get(chat, "tool_choice");

    if (tc == NULL) {
        return MG_X_OK;
    }

    s = json_string_value(tc);

    if (mg_x_streq(s, "auto") || mg_x_streq(s, "none")) {
        json_object_del(chat, "tool_choice");
        return MG_X_OK;
    }

    return mg_x_bad(err, "tool_choice", "tool_choice %s%s%s needs tools: "
                    "the request has none.", s ? "\"" : "", s ? s : "of a "
                    "function or allowed tools", s ? "\"" : "");
}


static int
mg_r_tool_choice_set(json_t *in, json_t *chat, mg_xerror_t *err)
{
    size_t       i;
    json_t      *tc, *name, *tools, *t, *list, *c;
    const char  *s;

    tc = mg_x_get(in, "tool_choice");

    if (tc == NULL) {
        return MG_X_OK;
    }

    if (json_is_string(tc)) {
        s = json_string_value(tc);

        if (strcmp(s, "none") != 0 && strcmp(s, "auto") != 0
            && strcmp(s, "required") != 0)
        {
            return mg_x_bad(err, "tool_choice", "tool_choice must be none, "
                            "auto, required or an object.");
        }

        return json_object_set(chat, "tool_choice", tc) == 0 ? MG_X_OK
                                                             : MG_X_NOMEM;
    }

    s = json_string_value(json_object_get(tc, "type"));

    if (mg_x_streq(s, "function")) {
        name = json_object_get(tc, "name");

        if (!json_is_string(name)) {
            return mg_x_bad(err, "tool_choice", "tool_choice.name must be a "
                            "string.");
        }

        return mg_x_set(chat, "tool_choice", mg_r_named(name));
    }

    if (!mg_x_streq(s, "allowed_tools")) {
        return mg_x_bad(err, "tool_choice", "tool_choice of type \"%s\" is "
                        "not supported over a chat completions backend.",
                        s ? s : "(none)");
    }

    tools = json_object_get(tc, "tools");

    if (!json_is_array(tools)
        || !json_is_string(json_object_get(tc, "mode")))
    {
        return mg_x_bad(err, "tool_choice", "tool_choice allowed_tools needs "
                        "mode and tools.");
    }

    list = json_array();
    c = json_pack("{s:s,s:{s:O,s:o}}", "type", "allowed_tools",
                  "allowed_tools", "mode", json_object_get(tc, "mode"),
                  "tools", list);

    if (c == NULL || mg_x_set(chat, "tool_choice", c) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    json_array_foreach(tools, i, t) {
        name = json_object_get(t, "name");

        if (!mg_x_streq(json_string_value(json_object_get(t, "type")),
                        "function")
            || !json_is_string(name))
        {
            return mg_x_bad(err, "tool_choice", "tool_choice.tools[%zu]: "
                            "only function tools with a name are supported "
                            "over a chat completions backend.", i);
        }

        if (json_array_append_new(list, mg_r_named(name)) != 0) {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


static int
mg_r_params(json_t *in, json_t *chat, int *stream, mg_xerror_t *err)
{
    int                rc;
    json_t            *v;
    const mg_r_key_t  *rk;

    v = mg_x_get(in, "max_output_tokens");

    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            return mg_x_bad(err, "max_output_tokens", "max_output_tokens "
                            "must be a positive integer.");
        }

        if (json_object_set(chat, "max_completion_tokens", v) != 0) {
            return MG_X_NOMEM;
        }
    }

    /* the same in both APIs: the backend judges the values */

    for (rk = mg_r_keys; rk->name; rk++) {
        v = mg_x_get(in, rk->name);

        if (rk->what == MG_R_PASS && v
            && json_object_set(chat, rk->name, v) != 0)
        {
            return MG_X_NOMEM;
        }
    }

    rc = mg_r_text(in, chat, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    rc = mg_r_reasoning(in, chat, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    v = mg_x_get(in, "stream");

    if (v && !json_is_boolean(v)) {
        return mg_x_bad(err, "stream", "stream must be a boolean.");
    }

    if (json_is_true(v)) {
        *stream = 1;

        /* the usage ends the stream: response.completed carries it */

        if (mg_x_set(chat, "stream", json_true()) != MG_X_OK
            || mg_x_set(chat, "stream_options",
                        json_pack("{s:b}", "include_usage", 1)) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


/* text.format -> response_format; text.verbosity -> verbosity */

static int
mg_r_text(json_t *in, json_t *chat, mg_xerror_t *err)
{
    json_t      *text, *fmt, *v, *js;
    const char  *key, *type;

    static const char  *copy[] = {
        "name", "description", "schema", "strict", NULL
    };
    const char  **k;

    text = mg_x_get(in, "text");

    if (text == NULL) {
        return MG_X_OK;
    }

    if (!json_is_object(text)) {
        return mg_x_bad(err, "text", "text must be an object.");
    }

    json_object_foreach(text, key, v) {
        if (strcmp(key, "format") != 0 && strcmp(key, "verbosity") != 0) {
            return mg_x_bad(err, "text", "text.%s is not supported over a "
                            "chat completions backend.", key);
        }
    }

    v = mg_x_get(text, "verbosity");

    if (v && json_object_set(chat, "verbosity", v) != 0) {
        return MG_X_NOMEM;
    }

    fmt = mg_x_get(text, "format");

    if (fmt == NULL) {
        return MG_X_OK;
    }

    type = json_string_value(json_object_get(fmt, "type"));

    if (mg_x_streq(type, "text")) {
        return MG_X_OK;
    }

    if (mg_x_streq(type, "json_object")) {
        return mg_x_set(chat, "response_format",
                        json_pack("{s:s}", "type", "json_object"));
    }

    if (!mg_x_streq(type, "json_schema")) {
        return mg_x_bad(err, "text.format", "text.format must be of type "
                        "text, json_object or json_schema.");
    }

    if (!json_is_string(json_object_get(fmt, "name"))
        || !json_is_object(json_object_get(fmt, "schema")))
    {
        return mg_x_bad(err, "text.format", "text.format json_schema needs "
                        "a name and a schema.");
    }

    js = json_object();

    if (js == NULL
        || mg_x_set(chat, "response_format",
                    json_pack("{s:s,s:o}", "type", "json_schema",
                              "json_schema", js))
           != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    for (k = copy; *k; k++) {
        v = mg_x_get(fmt, *k);

        if (v && json_object_set(js, *k, v) != 0) {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


/* reasoning.effort -> reasoning_effort; a chat answer has no summary */

static int
mg_r_reasoning(json_t *in, json_t *chat, mg_xerror_t *err)
{
    json_t      *r, *v;
    const char  *key;

    r = mg_x_get(in, "reasoning");

    if (r == NULL) {
        return MG_X_OK;
    }

    if (!json_is_object(r)) {
        return mg_x_bad(err, "reasoning", "reasoning must be an object.");
    }

    json_object_foreach(r, key, v) {
        if (json_is_null(v) || strcmp(key, "effort") == 0) {
            continue;
        }

        if (strcmp(key, "summary") == 0
            || strcmp(key, "generate_summary") == 0)
        {
            return mg_x_bad(err, "reasoning.summary", "reasoning summaries "
                            "are not available from a chat completions "
                            "backend.");
        }

        return mg_x_bad(err, "reasoning", "reasoning.%s is not supported "
                        "over a chat completions backend.", key);
    }

    v = mg_x_get(r, "effort");

    if (v && json_object_set(chat, "reasoning_effort", v) != 0) {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/* what the client set of the echoed fields; the answer fills the rest */

static json_t *
mg_r_echo(json_t *in)
{
    json_t       *ec, *v;
    const char  **k;

    ec = json_object();
    if (ec == NULL) {
        return NULL;
    }

    for (k = mg_r_echo_keys; *k; k++) {
        v = mg_x_get(in, *k);

        if (v && json_object_set(ec, *k, v) != 0) {
            json_decref(ec);
            return NULL;
        }
    }

    /* "conv_..." or {"id": ...}: a response names it {"id": ...} */

    v = mg_x_get(in, "conversation");

    if (json_is_string(v)) {
        v = json_pack("{s:O}", "id", v);

    } else if (json_is_string(json_object_get(v, "id"))) {
        v = json_pack("{s:O}", "id", json_object_get(v, "id"));

    } else {
        return ec;
    }

    if (mg_x_set(ec, "conversation", v) != MG_X_OK) {
        json_decref(ec);
        return NULL;
    }

    return ec;
}


/* j dumped, never longer than max */

static int
mg_r_dump(json_t *j, mg_buf_t *out, size_t max, mg_xerror_t *err)
{
    int  rc;

    rc = mg_x_dump_max(j, out, 0, max, "chat", err);

    if (rc == MG_X_ERROR) {
        mg_xerror_set(err, 400, 0, "invalid_request_error",
                      "request_too_large", NULL, "The chat request made "
                      "from this Responses request and the previous turns "
                      "would exceed %zu bytes.", max);
    }

    return rc;
}


/* the answer */

static int mg_r_output(mg_resp_ids_t *ids, json_t *msg, const char *status,
    json_t *output);


int
mg_resp_answer(const char *body, size_t len,
    const mg_resp_answer_opts_t *o, mg_buf_t *response, mg_buf_t *items,
    mg_xerror_t *err)
{
    int           rc;
    size_t        response_len;
    json_t       *in, *echo, *choice, *msg, *output, *usage, *res;
    mg_resp_ids_t    ids;
    const char   *finish, *status, *reason;
    json_error_t  jerr;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);
    choice = json_array_get(json_object_get(in, "choices"), 0);
    msg = json_object_get(choice, "message");

    if (!json_is_object(msg)) {
        json_decref(in);
        return mg_x_bad_backend(err, "answer");
    }

    echo = NULL;
    output = NULL;
    usage = NULL;
    res = NULL;
    response_len = response->len;

    rc = mg_resp_echo(o, &echo, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    finish = json_string_value(json_object_get(choice, "finish_reason"));
    status = "completed";
    reason = NULL;

    if (mg_x_streq(finish, "length")) {
        status = "incomplete";
        reason = "max_output_tokens";

    } else if (mg_x_streq(finish, "content_filter")) {
        status = "incomplete";
        reason = "content_filter";
    }

    ids.o = o;
    ids.n = 0;

    output = json_array();
    if (output == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_r_output(&ids, msg, status, output);
    if (rc != MG_X_OK) {
        if (rc == MG_X_ERROR) {
            (void) mg_x_bad_backend(err, "answer");
        }

        goto done;
    }

    if (json_is_object(json_object_get(in, "usage"))) {
        usage = mg_resp_usage(json_object_get(in, "usage"));

        if (usage == NULL) {
            rc = MG_X_NOMEM;
            goto done;
        }
    }

    res = mg_resp_object(o, echo, status, reason, output, usage);
    if (res == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_x_dump(res, response, 0);

    if (rc == MG_X_OK && items) {
        rc = mg_x_dump(output, items, 0);

        if (rc != MG_X_OK) {
            response->len = response_len;
        }
    }

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(res);
    json_decref(usage);
    json_decref(output);
    json_decref(echo);
    json_decref(in);

    return rc;
}


/*
 * The caller's id, or one made from the response's: "resp_X" gives
 * "msg_X_0", "fc_X_1", ..., unique as the response id is.
 */

int
mg_resp_item_id(mg_resp_ids_t *ids, const char *prefix, json_t *item)
{
    int          n;
    char         buf[MG_RESP_ID_SIZE];
    const char  *id;

    if (ids->o->item_id) {
        buf[0] = '\0';

        if (ids->o->item_id(ids->o->data, prefix, buf, sizeof(buf)) != 0) {
            return MG_X_NOMEM;
        }

        buf[sizeof(buf) - 1] = '\0';

    } else {
        id = ids->o->id ? ids->o->id : "";

        if (strncmp(id, "resp_", 5) == 0) {
            id += 5;
        }

        n = snprintf(buf, sizeof(buf), "%s%s_%u", prefix, id, ids->n);

        if (n < 0 || (size_t) n >= sizeof(buf)) {
            return MG_X_NOMEM;
        }
    }

    ids->n++;

    return mg_x_set(item, "id", json_string(buf));
}


/*
 * The assistant's text and refusal are one message item (a message is
 * made when there is nothing else, so that an answer is never empty);
 * each tool call is a function_call item after it.
 */

static int
mg_r_output(mg_resp_ids_t *ids, json_t *msg, const char *status,
    json_t *output)
{
    size_t   i;
    json_t  *content, *refusal, *calls, *parts, *part, *item, *fn, *v, *id;

    content = mg_x_get(msg, "content");
    refusal = mg_x_get(msg, "refusal");
    calls = mg_x_get(msg, "tool_calls");

    if ((content && !json_is_string(content) && !json_is_array(content))
        || (refusal && !json_is_string(refusal))
        || (calls && !json_is_array(calls)))
    {
        return MG_X_ERROR;
    }

    /* "" (or []) beside calls says nothing, as in the stream */

    if (json_array_size(calls)
        && ((json_is_string(content) && json_string_length(content) == 0)
            || (json_is_array(content) && json_array_size(content) == 0)))
    {
        content = NULL;
    }

    if (content || refusal || json_array_size(calls) == 0) {
        item = json_pack("{s:s}", "type", "message");
        parts = json_array();

        if (item == NULL || json_array_append_new(output, item) != 0
            || parts == NULL)
        {
            json_decref(parts);
            return MG_X_NOMEM;
        }

        /* parts is the item's once set, freed with it; until then ours */

        /*
         * the message ended when the calls began: "completed", as the
         * stream closes it; only the items open at the end (the calls,
         * or the message alone) take the response's status
         */

        if (mg_resp_item_id(ids, "msg_", item) != MG_X_OK
            || mg_x_set_str(item, "status", json_array_size(calls)
                                            ? "completed" : status)
               != MG_X_OK
            || mg_x_set_str(item, "role", "assistant") != MG_X_OK)
        {
            json_decref(parts);
            return MG_X_NOMEM;
        }

        if (mg_x_set(item, "content", parts) != MG_X_OK) {
            return MG_X_NOMEM;
        }

        if (json_is_string(content)) {
            part = json_pack("{s:s,s:O,s:[]}", "type", "output_text",
                             "text", content, "annotations");

            if (part == NULL || json_array_append_new(parts, part) != 0) {
                return MG_X_NOMEM;
            }
        }

        /* some backends answer with text parts */

        json_array_foreach(content, i, v) {
            v = json_object_get(v, "text");

            if (!json_is_string(v)) {
                continue;
            }

            part = json_pack("{s:s,s:O,s:[]}", "type", "output_text",
                             "text", v, "annotations");

            if (part == NULL || json_array_append_new(parts, part) != 0) {
                return MG_X_NOMEM;
            }
        }

        if (refusal) {
            part = json_pack("{s:s,s:O}", "type", "refusal", "refusal",
                             refusal);

            if (part == NULL || json_array_append_new(parts, part) != 0) {
                return MG_X_NOMEM;
            }
        }

        if (json_array_size(parts) == 0) {
            part = json_pack("{s:s,s:s,s:[]}", "type", "output_text",
                             "text", "", "annotations");

            if (part == NULL || json_array_append_new(parts, part) != 0) {
                return MG_X_NOMEM;
            }
        }
    }

    json_array_foreach(calls, i, v) {
        fn = json_object_get(v, "function");

        id = json_object_get(v, "id");

        if ((id && !json_is_null(id) && !json_is_string(id))
            || !json_is_string(json_object_get(fn, "name")))
        {
            return MG_X_ERROR;
        }

        item = json_pack("{s:s}", "type", "function_call");

        if (item == NULL || json_array_append_new(output, item) != 0) {
            return MG_X_NOMEM;
        }

        if (mg_resp_item_id(ids, "fc_", item) != MG_X_OK
            || mg_resp_call_id(item, id) != MG_X_OK
            || json_object_set(item, "name", json_object_get(fn, "name"))
               != 0)
        {
            return MG_X_NOMEM;
        }

        v = json_object_get(fn, "arguments");

        if (mg_x_set(item, "arguments", json_is_string(v)
                                        ? json_incref(v) : json_string(""))
               != MG_X_OK
            || mg_x_set_str(item, "status", status) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


int
mg_resp_call_id(json_t *item, json_t *id)
{
    char         buf[MG_RESP_ID_SIZE + 8];
    const char  *s;

    if (json_is_string(id) && json_string_length(id)) {
        return json_object_set(item, "call_id", id) == 0 ? MG_X_OK
                                                          : MG_X_NOMEM;
    }

    s = json_string_value(json_object_get(item, "id"));

    (void) snprintf(buf, sizeof(buf), "call_%s", s ? s : "");

    return mg_x_set(item, "call_id", json_string(buf));
}


/* chat's usage in Responses' names */

json_t *
mg_resp_usage(json_t *usage)
{
    long long  in, out, total;

    in = mg_x_tokens(usage, "prompt_tokens", 0);
    out = mg_x_tokens(usage, "completion_tokens", 0);
    total = mg_x_tokens(usage, "total_tokens", in + out);

    return json_pack("{s:I,s:{s:I},s:I,s:{s:I},s:I}",
                     "input_tokens", (json_int_t) in,
                     "input_tokens_details", "cached_tokens",
                     (json_int_t) mg_x_tokens(json_object_get(usage,
                                              "prompt_tokens_details"),
                                              "cached_tokens", 0),
                     "output_tokens", (json_int_t) out,
                     "output_tokens_details", "reasoning_tokens",
                     (json_int_t) mg_x_tokens(json_object_get(usage,
                                              "completion_tokens_details"),
                                              "reasoning_tokens", 0),
                     "total_tokens", (json_int_t) total);
}


/*
 * The response object, its members in OpenAI's order; what the request
 * left out has OpenAI's defaults, but temperature and top_p are null: the
 * backend's own defaults are not known here.
 */

json_t *
mg_resp_object(const mg_resp_answer_opts_t *o, json_t *echo,
    const char *status, const char *reason, json_t *output, json_t *usage)
{
    json_t       *r, *v, *dflt;
    const char  **k;

    r = json_pack("{s:s,s:s,s:I,s:s,s:n}", "id", o->id ? o->id : "",
                  "object", "response", "created_at",
                  (json_int_t) o->created_at, "status", status, "error");

    if (r == NULL) {
        return NULL;
    }

    v = reason ? json_pack("{s:s}", "reason", reason) : json_null();

    if (mg_x_set(r, "incomplete_details", v) != MG_X_OK) {
        goto failed;
    }

    for (k = mg_r_echo_keys; *k; k++) {

        /* the answer's own members go where OpenAI puts them */

        if (strcmp(*k, "parallel_tool_calls") == 0) {
            if (mg_x_set_str(r, "model", o->model ? o->model : "")
                != MG_X_OK
                || json_object_set(r, "output", output) != 0)
            {
                goto failed;
            }

        } else if (strcmp(*k, "user") == 0 && usage) {
            if (json_object_set(r, "usage", usage) != 0) {
                goto failed;
            }
        }

        v = mg_x_get(echo, *k);

        if (v) {
            if (json_object_set(r, *k, v) != 0) {
                goto failed;
            }

            continue;
        }

        if (strcmp(*k, "parallel_tool_calls") == 0
            || strcmp(*k, "store") == 0)
        {
            dflt = json_true();

        } else if (strcmp(*k, "reasoning") == 0) {
            dflt = json_pack("{s:n,s:n}", "effort", "summary");

        } else if (strcmp(*k, "text") == 0) {
            dflt = json_pack("{s:{s:s}}", "format", "type", "text");

        } else if (strcmp(*k, "tool_choice") == 0) {
            dflt = json_string("auto");

        } else if (strcmp(*k, "tools") == 0) {
            dflt = json_array();

        } else if (strcmp(*k, "truncation") == 0) {
            dflt = json_string("disabled");

        } else if (strcmp(*k, "metadata") == 0) {
            dflt = json_object();

        } else if (strcmp(*k, "user") == 0
                   || strcmp(*k, "service_tier") == 0)
        {
            continue;

        } else {
            dflt = json_null();
        }

        if (mg_x_set(r, *k, dflt) != MG_X_OK) {
            goto failed;
        }
    }

    v = mg_x_get(echo, "conversation");

    if (v && json_object_set(r, "conversation", v) != 0) {
        goto failed;
    }

    return r;

failed:

    json_decref(r);

    return NULL;
}


/* the fields to repeat, parsed; NULL when there are none */

int
mg_resp_echo(const mg_resp_answer_opts_t *o, json_t **echo,
    mg_xerror_t *err)
{
    *echo = NULL;

    if (o->echo == NULL || o->echo_len == 0) {
        return MG_X_OK;
    }

    *echo = json_loadb(o->echo, o->echo_len, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(*echo)) {
        json_decref(*echo);
        *echo = NULL;

        /* the caller's own, from mg_resp_request() */

        mg_xerror_set(err, 500, 0, "server_error", NULL, NULL,
                      "The request's fields to repeat cannot be read.");
        return MG_X_ERROR;
    }

    return MG_X_OK;
}
