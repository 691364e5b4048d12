/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, the items: the instructions, the stored
 * history and this request's input -> chat messages, and the input as
 * items to store (see mg_responses.h).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_responses.h"
#include "mg_responses_int.h"


typedef struct {
    json_t         *msgs;       /* the chat messages */
    json_t         *input;      /* this request's input as items, or NULL */
    const char     *where;      /* "input" or "history", for messages */
    const char     *param;      /* what err->param names for items */
    const char     *replay;     /* state of this origin goes back */
    mg_xerror_t    *err;
} mg_r_req_t;


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
static int mg_r_is_text_part(json_t *part);


/*
 * This request's instructions, then the history, then this request's
 * input: OpenAI does not carry instructions over from earlier turns, so
 * a stored system message is one that came as an input item.
 */

int
mg_r_messages(json_t *in, json_t *hist, json_t *chat, json_t *items,
    const char *replay, mg_xerror_t *err)
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
    rq.replay = replay;
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
    rq.replay = NULL;

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
    json_t  *id, *name, *args, *tc, *last, *calls, *m, *st, *extra;

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

    /* a stored call's provider-only state, back to where it came from */

    st = json_object_get(it, MG_RESP_STATE);
    extra = json_object_get(st, "extra_content");

    if (rq->replay && json_is_object(extra)
        && mg_x_streq(json_string_value(json_object_get(st, "origin")),
                      rq->replay)
        && json_object_set(tc, "extra_content", extra) != 0)
    {
        json_decref(tc);
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

        /* provider-only state is the gateway's to keep, never the client's */

        if (json_object_get(it, MG_RESP_STATE)) {
            m = json_copy(it);

            if (m == NULL || json_object_del(m, MG_RESP_STATE) != 0
                || json_array_append_new(rq->input, m) != 0)
            {
                return MG_X_NOMEM;
            }

            return MG_X_OK;
        }

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
