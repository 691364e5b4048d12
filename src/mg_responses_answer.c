/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, the answer: a chat completion -> a Responses
 * object and the items to store, and what the stream shares with it
 * (see mg_responses.h).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_responses.h"
#include "mg_responses_int.h"


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
    json_t       *in, *echo, *choice, *msg, *output, *usage, *res, *saved;
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

    /* the client's response goes without provider-only state */

    rc = mg_resp_state_take(output, &saved);

    if (rc == MG_X_OK) {
        rc = mg_x_dump(res, response, 0);
        mg_resp_state_put(output, saved);
    }

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
    json_t  *content, *refusal, *calls, *parts, *part, *item, *fn, *v, *id,
            *extra;

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

        extra = json_object_get(v, "extra_content");
        v = json_object_get(fn, "arguments");

        if (mg_x_set(item, "arguments", json_is_string(v)
                                        ? json_incref(v) : json_string(""))
               != MG_X_OK
            || mg_x_set_str(item, "status", status) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        if (ids->o->origin && json_is_object(extra)
            && mg_resp_state_set(item, ids->o->origin, extra) != MG_X_OK)
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


int
mg_resp_state_set(json_t *item, const char *origin, json_t *extra)
{
    return mg_x_set(item, MG_RESP_STATE,
                    json_pack("{s:s,s:O}", "origin", origin,
                              "extra_content", extra));
}


int
mg_resp_state_take(json_t *output, json_t **saved)
{
    size_t   i;
    json_t  *item, *st;

    *saved = NULL;

    json_array_foreach(output, i, item) {
        st = json_object_get(item, MG_RESP_STATE);

        if (st == NULL) {
            continue;
        }

        if (*saved == NULL) {
            *saved = json_array();

            if (*saved == NULL) {
                return MG_X_NOMEM;
            }
        }

        if (json_array_append_new(*saved,
                                  json_pack("[I,O]", (json_int_t) i, st))
            != 0)
        {
            mg_resp_state_put(output, *saved);
            *saved = NULL;
            return MG_X_NOMEM;
        }

        json_object_del(item, MG_RESP_STATE);
    }

    return MG_X_OK;
}


void
mg_resp_state_put(json_t *output, json_t *saved)
{
    size_t   i;
    json_t  *e;

    json_array_foreach(saved, i, e) {
        (void) json_object_set(json_array_get(output,
                                   json_integer_value(json_array_get(e, 0))),
                               MG_RESP_STATE, json_array_get(e, 1));
    }

    json_decref(saved);
}
