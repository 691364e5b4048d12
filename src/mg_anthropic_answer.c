/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Anthropic Messages answer -> OpenAI chat completion, and Anthropic
 * errors -> OpenAI errors.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_anthropic.h"
#include "mg_anthropic_int.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"
#include "mg_json.h"


#define MG_A_ERRLEN  200


/* the response */

int
mg_anthropic_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc;
    size_t        i;
    char         *args;
    json_t       *in, *content, *b, *calls, *call, *msg, *res, *u, *v;
    json_t       *id;
    mg_buf_t      text;
    const char   *type;
    json_error_t  jerr;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    if (!json_is_object(in)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    type = json_string_value(json_object_get(in, "type"));

    if (mg_x_streq(type, "error")) {
        mg_a_error_map(0, in, err);
        json_decref(in);
        return MG_X_ERROR;
    }

    content = json_object_get(in, "content");

    if (!json_is_array(content)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    memset(&text, 0, sizeof(mg_buf_t));
    calls = NULL;
    msg = NULL;
    res = NULL;
    rc = MG_X_NOMEM;

    calls = json_array();
    if (calls == NULL) {
        goto done;
    }

    /* thinking and server tool blocks have no chat completions shape */

    json_array_foreach(content, i, b) {
        type = json_string_value(json_object_get(b, "type"));

        if (mg_x_streq(type, "text")) {
            v = json_object_get(b, "text");

            if (json_is_string(v)
                && mg_buf_append(&text, json_string_value(v),
                                 json_string_length(v))
                   != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        if (!mg_x_streq(type, "tool_use")) {
            continue;
        }

        v = json_object_get(b, "input");

        args = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
                 : strdup("{}");
        if (args == NULL) {
            goto done;
        }

        id = json_object_get(b, "id");
        v = json_object_get(b, "name");

        /* json_string_value() of a non-string is NULL, its length 0 */

        call = json_pack("{s:s%,s:s,s:{s:s%,s:s}}",
                         "id", json_is_string(id) ? json_string_value(id) : "",
                         json_string_length(id),
                         "type", "function",
                         "function",
                         "name", json_is_string(v) ? json_string_value(v) : "",
                         json_string_length(v),
                         "arguments", args);
        free(args);

        if (call == NULL || json_array_append_new(calls, call) != 0) {
            goto done;
        }
    }

    msg = json_object();

    if (msg == NULL
        || mg_x_set_str(msg, "role", "assistant") != MG_X_OK
        || mg_x_set(msg, "content",
                    (text.len == 0 && json_array_size(calls))
                    ? json_null()
                    : json_stringn(text.len ? text.data : "", text.len))
           != MG_X_OK
        || mg_x_set(msg, "refusal", json_null()) != MG_X_OK
        || (json_array_size(calls)
            && json_object_set(msg, "tool_calls", calls) != 0))
    {
        goto done;
    }

    v = json_object_get(in, "id");

    res = json_object();

    if (res == NULL
        || mg_x_set(res, "id",
                    mg_x_prefixed("chatcmpl-",
                                  json_is_string(v) ? json_string_value(v)
                                                    : "",
                                  json_string_length(v)))
           != MG_X_OK
        || mg_x_set_str(res, "object", "chat.completion") != MG_X_OK
        || mg_x_set(res, "created", json_integer(created)) != MG_X_OK
        || mg_x_set(res, "model",
                    json_stringn(model ? model : "", model ? model_len : 0))
           != MG_X_OK
        || mg_x_set(res, "choices",
                    json_pack("[{s:i,s:O,s:n,s:s}]", "index", 0,
                              "message", msg, "logprobs",
                              "finish_reason",
                              mg_a_finish(json_string_value(
                                  json_object_get(in, "stop_reason")))))
           != MG_X_OK)
    {
        goto done;
    }

    u = json_object_get(in, "usage");

    if (json_is_object(u)
        && mg_x_set(res, "usage",
                    mg_a_usage(mg_x_tokens(u, "input_tokens", 0),
                               mg_x_tokens(u, "output_tokens", 0),
                               mg_x_tokens(u, "cache_read_input_tokens", 0),
                               mg_x_tokens(u, "cache_creation_input_tokens",
                                           0)))
           != MG_X_OK)
    {
        goto done;
    }

    rc = mg_x_dump(res, out, 0);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    mg_buf_free(&text);
    json_decref(res);
    json_decref(msg);
    json_decref(calls);
    json_decref(in);

    return rc;
}


/* table 10.2; a new or unknown reason is a normal stop */

const char *
mg_a_finish(const char *reason)
{
    if (reason == NULL) {
        return "stop";
    }

    if (strcmp(reason, "tool_use") == 0) {
        return "tool_calls";
    }

    if (strcmp(reason, "max_tokens") == 0
        || strcmp(reason, "model_context_window_exceeded") == 0)
    {
        return "length";
    }

    if (strcmp(reason, "refusal") == 0) {
        return "content_filter";
    }

    return "stop";
}


/* table 10.3: Anthropic's input_tokens exclude the cached ones */

void
mg_anthropic_usage(long long input, long long output, long long cache_read,
    long long cache_creation, mg_x_usage_t *u)
{
    u->prompt = input + cache_read + cache_creation;
    u->completion = output;
    u->cached = cache_read;
    u->cache_write = cache_creation;
}


json_t *
mg_a_usage(long long input, long long output, long long cache_read,
    long long cache_creation)
{
    mg_x_usage_t  u;

    mg_anthropic_usage(input, output, cache_read, cache_creation, &u);

    return mg_x_usage_json(&u);
}


/* errors */

void
mg_anthropic_error(int status, const char *body, size_t len,
    mg_xerror_t *err)
{
    json_t  *j;

    j = (body && len) ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;

    mg_a_error_map(status, j, err);

    json_decref(j);
}


/*
 * status: the HTTP status, or 0 for an error that came inside a 200 (an
 * error body or stream event): its error.type then stands for the status.
 */

void
mg_a_error_map(int status, json_t *body, mg_xerror_t *err)
{
    int          spend;
    size_t       k;
    json_t      *e;
    const char  *type, *msg, *code;

    static const struct {
        const char  *type;
        int          status;
    } types[] = {
        { "invalid_request_error", 400 },
        { "authentication_error", 401 },
        { "billing_error", 402 },
        { "permission_error", 403 },
        { "not_found_error", 404 },
        { "request_too_large", 413 },
        { "rate_limit_error", 429 },
        { "api_error", 500 },
        { "timeout_error", 504 },
        { "overloaded_error", 529 }
    };

    e = json_object_get(body, "error");
    type = json_string_value(json_object_get(e, "type"));
    msg = json_string_value(json_object_get(e, "message"));

    /* a spend limit is this account's, not the model's: say it as OpenAI
     * says an exhausted quota; another backend may still have budget */

    spend = mg_x_streq(json_string_value(json_object_get(
                           json_object_get(e, "details"), "error_code")),
                       "enforced_spend_limit_reached");

    if (msg == NULL || msg[0] == '\0') {
        msg = NULL;
    }

    if (status < 400 || status > 599) {
        status = 500;

        for (k = 0; type && k < sizeof(types) / sizeof(types[0]); k++) {
            if (strcmp(type, types[k].type) == 0) {
                status = types[k].status;
                break;
            }
        }
    }

    if (status == 529 || mg_x_streq(type, "overloaded_error")) {
        mg_xerror_set(err, 503, 1, "server_error", "overloaded", NULL,
                      "The model backend is overloaded%s%s", msg ? ": " : ".",
                      msg ? msg : "");

    } else if (status == 429 && spend) {
        mg_xerror_set(err, 429, 1, "insufficient_quota", "insufficient_quota",
                      NULL, "The model backend's spend limit is reached%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 429) {
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend is rate limited%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 401 || status == 403) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_auth_failed",
                      NULL, "backend authentication failed");

    } else if (status == 404) {
        mg_xerror_set(err, 404, 0, "invalid_request_error", "model_not_found",
                      "model", "The model backend does not know the "
                      "model%s%s", msg ? ": " : ".", msg ? msg : "");

    } else if (status == 413) {
        mg_xerror_set(err, 413, 0, "invalid_request_error",
                      "request_too_large", NULL, "%s",
                      msg ? msg : "The request is too large for the model "
                                  "backend.");

    } else if (status >= 500 || status == 402 || status == 408
               || status == 409)
    {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed (HTTP %d%s%s)%s%s", status,
                      type ? " " : "", type ? type : "", msg ? ": " : ".",
                      msg ? msg : "");

    } else {
        /* the client's request, as Anthropic judged it */

        code = (msg && strstr(msg, "prompt is too long"))
               ? "context_length_exceeded" : NULL;

        if (msg) {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "%s", msg);

        } else {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "The model backend rejected the request (HTTP "
                          "%d).", status);
        }
    }
}
