/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Converse answer -> OpenAI chat completion, and Bedrock errors and
 * exceptions -> OpenAI errors.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "mg_bedrock.h"
#include "mg_bedrock_int.h"
#include "mg_json.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


/* how an exception or error code is answered */

typedef enum {
    MG_B_E_UNKNOWN = 0,
    MG_B_E_THROTTLED,
    MG_B_E_QUOTA,
    MG_B_E_NOT_READY,
    MG_B_E_UNAVAILABLE,
    MG_B_E_FAILED,
    MG_B_E_AUTH,
    MG_B_E_NOT_FOUND,
    MG_B_E_INVALID
} mg_b_ekind_t;


static json_t *mg_b_usage_json(json_t *u);
static const char *mg_b_exception(const char *s, size_t len, size_t *n);
static mg_b_ekind_t mg_b_ekind(const char *name, size_t len);
static void mg_b_error_json(int status, const char *errortype,
    size_t errortype_len, json_t *body, mg_xerror_t *err);


/* helpers */

/*
 * Converse answers carry no id, and the x-amzn-RequestId header is not
 * ours to see: "chatcmpl-" with the time, the process and a counter is
 * unique among the gateway's workers.  nginx runs one thread per worker,
 * so the counter needs no lock.
 */

void
mg_bedrock_make_id(char *buf, size_t size, long created)
{
    int              i, k;
    char             id[sizeof("chatcmpl-") - 1 + 24];
    uint32_t         v[3];
    static unsigned  seq;

    static const char  hex[] = "0123456789abcdef";

    v[0] = (uint32_t) created;
    v[1] = (uint32_t) getpid();
    v[2] = (uint32_t) ++seq;

    /* as "chatcmpl-%08x%08x%08x", without printf on every answer */

    memcpy(id, "chatcmpl-", sizeof("chatcmpl-") - 1);

    for (k = 0; k < 3; k++) {
        for (i = 0; i < 8; i++) {
            id[sizeof("chatcmpl-") - 1 + 8 * k + i] =
                hex[(v[k] >> (28 - 4 * i)) & 0xf];
        }
    }

    if (size == 0) {
        return;
    }

    size = (size - 1 < sizeof(id)) ? size - 1 : sizeof(id);
    memcpy(buf, id, size);
    buf[size] = '\0';
}


/* the response */

int
mg_bedrock_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc;
    char          id[48];
    char         *args;
    size_t        i;
    json_t       *in, *output, *content, *b, *tu, *calls, *call, *msg, *res;
    json_t       *u, *v, *tid;
    mg_buf_t      text;
    const char   *reason, *finish;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(in)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    output = json_object_get(in, "output");

    if (!json_is_object(output)) {

        /* an error answered with a 200, as a wrong operation path is */

        if (json_object_get(in, "__type") || json_object_get(in, "message")
            || json_object_get(in, "Message"))
        {
            mg_b_error_json(0, NULL, 0, in, err);
            json_decref(in);
            return MG_X_ERROR;
        }

        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    content = json_object_get(json_object_get(output, "message"), "content");

    if (!json_is_array(content)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    reason = json_string_value(json_object_get(in, "stopReason"));
    finish = mg_b_finish(reason);

    if (finish == NULL) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model produced malformed output (%s).", reason);
        json_decref(in);
        return MG_X_ERROR;
    }

    memset(&text, 0, sizeof(mg_buf_t));
    msg = NULL;
    res = NULL;
    rc = MG_X_NOMEM;

    calls = json_array();
    if (calls == NULL) {
        goto done;
    }

    /* reasoning, citations and other blocks have no chat completions
     * shape */

    json_array_foreach(content, i, b) {
        v = json_object_get(b, "text");

        if (json_is_string(v)) {
            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        tu = json_object_get(b, "toolUse");

        if (!json_is_object(tu)) {
            continue;
        }

        v = json_object_get(tu, "input");

        args = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
                 : strdup("{}");
        if (args == NULL) {
            goto done;
        }

        tid = json_object_get(tu, "toolUseId");
        v = json_object_get(tu, "name");

        /* json_string_value() of a non-string is NULL, its length 0 */

        call = json_pack("{s:s%,s:s,s:{s:s%,s:s}}",
                         "id",
                         json_is_string(tid) ? json_string_value(tid) : "",
                         json_string_length(tid),
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
        || mg_x_set(msg, "role", json_string("assistant")) != MG_X_OK
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

    mg_bedrock_make_id(id, sizeof(id), created);

    res = json_object();

    if (res == NULL
        || mg_x_set(res, "id", json_string(id)) != MG_X_OK
        || mg_x_set(res, "object", json_string("chat.completion"))
           != MG_X_OK
        || mg_x_set(res, "created", json_integer(created)) != MG_X_OK
        || mg_x_set(res, "model",
                    json_stringn(model ? model : "", model ? model_len : 0))
           != MG_X_OK
        || mg_x_set(res, "choices",
                    json_pack("[{s:i,s:O,s:n,s:s}]", "index", 0,
                              "message", msg, "logprobs",
                              "finish_reason", finish))
           != MG_X_OK)
    {
        goto done;
    }

    u = json_object_get(in, "usage");

    if (json_is_object(u)
        && mg_x_set(res, "usage", mg_b_usage_json(u)) != MG_X_OK)
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


/*
 * table 10.2; NULL for the reasons that say the output is broken (an
 * error beats a tool call with bad arguments); a new or unknown reason is
 * a normal stop
 */

const char *
mg_b_finish(const char *reason)
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

    if (strcmp(reason, "guardrail_intervened") == 0
        || strcmp(reason, "content_filtered") == 0)
    {
        return "content_filter";
    }

    if (strcmp(reason, "malformed_model_output") == 0
        || strcmp(reason, "malformed_tool_use") == 0)
    {
        return NULL;
    }

    return "stop";
}


/*
 * table 10.3.  Bedrock's inputTokens leave out the tokens read from or
 * written to the prompt cache, and totalTokens counts them all; should a
 * model count them in inputTokens instead, totalTokens (then input plus
 * output) says so and they are not added twice.  total < 0: not sent.
 */

void
mg_bedrock_usage(long long input, long long output, long long total,
    long long cache_read, long long cache_write, mg_x_usage_t *u)
{
    u->prompt = input + cache_read + cache_write;

    if (cache_read + cache_write && total == input + output) {
        u->prompt = input;
    }

    u->completion = output;
    u->cached = cache_read;
    u->cache_write = cache_write;
}


json_t *
mg_b_usage(long long input, long long output, long long total,
    long long cache_read, long long cache_write)
{
    mg_x_usage_t  u;

    mg_bedrock_usage(input, output, total, cache_read, cache_write, &u);

    return mg_x_usage_json(&u);
}


static json_t *
mg_b_usage_json(json_t *u)
{
    return mg_b_usage(mg_x_tokens(u, "inputTokens", 0),
                      mg_x_tokens(u, "outputTokens", 0),
                      mg_x_tokens(u, "totalTokens", -1),
                      mg_x_tokens(u, "cacheReadInputTokens", 0),
                      mg_x_tokens(u, "cacheWriteInputTokens", 0));
}


/* errors */

void
mg_bedrock_error(int status, const char *errortype, size_t errortype_len,
    const char *body, size_t len, mg_xerror_t *err)
{
    json_t  *j;

    j = (body && len) ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;

    mg_b_error_json(status, errortype, errortype ? errortype_len : 0, j, err);

    json_decref(j);
}


/*
 * "ThrottlingException:http://internal.amazon.com/coral/..." or
 * "com.amazon.coral.service#UnrecognizedClientException": the name alone
 */

static const char *
mg_b_exception(const char *s, size_t len, size_t *n)
{
    const char  *p, *end, *e;

    *n = 0;

    if (s == NULL) {
        return NULL;
    }

    end = s + len;

    e = memchr(s, ':', len);
    if (e) {
        end = e;
    }

    for (p = end; p > s; p--) {
        if (p[-1] == '#') {
            s = p;
            break;
        }
    }

    while (s < end && (*s == ' ' || *s == '\t')) {
        s++;
    }

    while (end > s && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    *n = end - s;

    return *n ? s : NULL;
}


/* by name, case-insensitively: streams send "throttlingException" */

static mg_b_ekind_t
mg_b_ekind(const char *name, size_t len)
{
    size_t  k;

    static const struct {
        const char    *name;
        mg_b_ekind_t   kind;
    } kinds[] = {
        { "ThrottlingException", MG_B_E_THROTTLED },
        { "Throttling", MG_B_E_THROTTLED },
        { "ThrottledException", MG_B_E_THROTTLED },
        { "RequestThrottledException", MG_B_E_THROTTLED },
        { "RequestThrottled", MG_B_E_THROTTLED },
        { "TooManyRequestsException", MG_B_E_THROTTLED },
        { "ProvisionedThroughputExceededException", MG_B_E_THROTTLED },
        { "RequestLimitExceeded", MG_B_E_THROTTLED },
        { "BandwidthLimitExceeded", MG_B_E_THROTTLED },
        { "LimitExceededException", MG_B_E_THROTTLED },
        { "SlowDown", MG_B_E_THROTTLED },
        { "ServiceQuotaExceededException", MG_B_E_QUOTA },
        { "ModelNotReadyException", MG_B_E_NOT_READY },
        { "ServiceUnavailableException", MG_B_E_UNAVAILABLE },
        { "ServiceUnavailable", MG_B_E_UNAVAILABLE },
        { "InternalServerException", MG_B_E_FAILED },
        { "InternalFailure", MG_B_E_FAILED },
        { "InternalServerError", MG_B_E_FAILED },
        { "ModelStreamErrorException", MG_B_E_FAILED },
        { "ModelErrorException", MG_B_E_FAILED },
        { "ModelTimeoutException", MG_B_E_FAILED },
        { "RequestTimeout", MG_B_E_FAILED },
        { "RequestTimeoutException", MG_B_E_FAILED },
        { "PriorRequestNotComplete", MG_B_E_FAILED },
        { "TransactionInProgressException", MG_B_E_FAILED },
        { "UnknownOperationException", MG_B_E_FAILED },
        { "AccessDeniedException", MG_B_E_AUTH },
        { "AccessDenied", MG_B_E_AUTH },
        { "UnrecognizedClientException", MG_B_E_AUTH },
        { "InvalidSignatureException", MG_B_E_AUTH },
        { "SignatureDoesNotMatch", MG_B_E_AUTH },
        { "IncompleteSignature", MG_B_E_AUTH },
        { "IncompleteSignatureException", MG_B_E_AUTH },
        { "ExpiredTokenException", MG_B_E_AUTH },
        { "ExpiredToken", MG_B_E_AUTH },
        { "InvalidClientTokenId", MG_B_E_AUTH },
        { "MissingAuthenticationToken", MG_B_E_AUTH },
        { "MissingAuthenticationTokenException", MG_B_E_AUTH },
        { "NotAuthorized", MG_B_E_AUTH },
        { "ResourceNotFoundException", MG_B_E_NOT_FOUND },
        { "ValidationException", MG_B_E_INVALID }
    };

    for (k = 0; name && k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        if (len == strlen(kinds[k].name)
            && strncasecmp(name, kinds[k].name, len) == 0)
        {
            return kinds[k].kind;
        }
    }

    return MG_B_E_UNKNOWN;
}


static void
mg_b_error_json(int status, const char *errortype, size_t errortype_len,
    json_t *body, mg_xerror_t *err)
{
    size_t       n;
    json_t      *v;
    const char  *name, *msg;

    name = mg_b_exception(errortype, errortype_len, &n);

    if (name == NULL) {
        v = json_object_get(body, "__type");

        if (!json_is_string(v)) {
            v = json_object_get(body, "code");
        }

        if (json_is_string(v)) {
            name = mg_b_exception(json_string_value(v), json_string_length(v),
                                  &n);
        }
    }

    v = json_object_get(body, "message");

    if (!json_is_string(v)) {
        v = json_object_get(body, "Message");
    }

    msg = json_string_value(v);

    mg_b_error_map(status, name, n, msg, err);
}


/*
 * status: the HTTP status, or one outside 400..599 for an error that came
 * inside a 200 (a body or a stream message): the name then decides.
 */

void
mg_b_error_map(int status, const char *name, size_t name_len,
    const char *msg, mg_xerror_t *err)
{
    int            http;
    char           what[96];
    const char    *code;
    mg_b_ekind_t   kind;

    if (msg && msg[0] == '\0') {
        msg = NULL;
    }

    if (name_len > 64) {
        name_len = 64;
    }

    http = (status >= 400 && status <= 599);

    kind = mg_b_ekind(name, name_len);

    if (kind == MG_B_E_UNKNOWN) {
        if (status == 429) {
            kind = MG_B_E_THROTTLED;

        } else if (status == 401 || status == 403) {
            kind = MG_B_E_AUTH;

        } else if (status == 404) {
            kind = MG_B_E_NOT_FOUND;

        } else if (status == 503) {
            kind = MG_B_E_UNAVAILABLE;

        } else if (status == 413) {
            mg_xerror_set(err, 413, 0, "invalid_request_error",
                          "request_too_large", NULL, "%s",
                          msg ? msg : "The request is too large for the "
                                      "model backend.");
            goto done;

        } else if (!http || status >= 500 || status == 408 || status == 409
                   || status == 424)
        {
            kind = MG_B_E_FAILED;

        } else {
            kind = MG_B_E_INVALID;
        }
    }

    /* "HTTP 500 InternalServerException", or either alone */

    if (http && name) {
        (void) snprintf(what, sizeof(what), "HTTP %d %.*s", status,
                        (int) name_len, name);

    } else if (http) {
        (void) snprintf(what, sizeof(what), "HTTP %d", status);

    } else if (name) {
        (void) snprintf(what, sizeof(what), "%.*s", (int) name_len, name);

    } else {
        what[0] = '\0';
    }

    switch (kind) {

    case MG_B_E_THROTTLED:
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend is rate limited%s%s",
                      msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_QUOTA:
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend's quota is exceeded%s%s",
                      msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_NOT_READY:
        mg_xerror_set(err, 429, 1, "server_error", "model_not_ready", NULL,
                      "The model is not ready yet%s%s", msg ? ": " : ".",
                      msg ? msg : "");
        break;

    case MG_B_E_UNAVAILABLE:
        mg_xerror_set(err, 503, 1, "server_error", "overloaded", NULL,
                      "The model backend is unavailable%s%s",
                      msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_AUTH:
        mg_xerror_set(err, 502, 1, "server_error", "backend_auth_failed",
                      NULL, "backend authentication failed");
        break;

    case MG_B_E_NOT_FOUND:
        mg_xerror_set(err, 404, 0, "invalid_request_error", "model_not_found",
                      "model", "The model backend does not know the "
                      "model%s%s", msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_INVALID:

        /* the client's request, as Bedrock judged it */

        code = (msg && (strstr(msg, "too long")
                        || strstr(msg, "context limit")
                        || strstr(msg, "context window")
                        || strstr(msg, "context length")))
               ? "context_length_exceeded" : NULL;

        if (msg) {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "%s", msg);

        } else {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "The model backend rejected the request (%s).",
                          what[0] ? what : "no details");
        }

        break;

    default: /* MG_B_E_FAILED */
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed%s%s%s%s%s",
                      what[0] ? " (" : "", what, what[0] ? ")" : "",
                      msg ? ": " : ".", msg ? msg : "");
        break;
    }

done:

    /* a label must label a statement (clang refuses one before "}") */
    return;
}
