/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, the request: a Responses request's checks,
 * model, tools, tool_choice, parameters, text and reasoning -> a chat
 * completions request, and what a response object echoes of it (see
 * mg_responses.h; the items are mg_responses_items.c's).
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
const char  *mg_r_echo_keys[] = {
    "instructions", "max_output_tokens", "parallel_tool_calls",
    "previous_response_id", "reasoning", "store", "temperature", "text",
    "tool_choice", "tools", "top_p", "truncation", "user", "metadata",
    "service_tier", NULL
};


static int mg_r_check(json_t *in, mg_xerror_t *err);
static int mg_r_input_ids(json_t *items, const mg_resp_opts_t *o);
static int mg_r_model(json_t *in, const mg_resp_opts_t *o, json_t *chat,
    mg_xerror_t *err);
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

    rc = mg_r_messages(in, hist, req, items, o ? o->replay : NULL, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (items && o && o->input_id) {
        rc = mg_r_input_ids(items, o);
        if (rc != MG_X_OK) {
            goto done;
        }
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


/* the input items, as they will be stored, given ids */

static int
mg_r_input_ids(json_t *items, const mg_resp_opts_t *o)
{
    char         buf[MG_RESP_ID_SIZE];
    size_t       i;
    json_t      *it;
    const char  *type, *prefix;

    json_array_foreach(items, i, it) {
        if (json_is_string(json_object_get(it, "id"))) {
            continue;
        }

        type = json_string_value(json_object_get(it, "type"));

        prefix = (type == NULL || strcmp(type, "message") == 0)
                 ? "msg_"
                 : (strcmp(type, "function_call_output") == 0)
                   ? "fco_" : "item_";

        if (o->input_id(o->data, prefix, buf, sizeof(buf)) != 0
            || json_object_set_new(it, "id", json_string(buf)) != 0)
        {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}
