/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gemini generateContent answer -> OpenAI chat completion, and Gemini
 * errors -> OpenAI errors.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_gemini.h"
#include "mg_gemini_int.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


static json_t *mg_g_call_id(uint64_t seed, size_t cand, size_t k);
static int mg_g_choice(json_t *c, size_t index, uint64_t seed,
    json_t **choice, int *unusable);
static int mg_g_api_key_error(json_t *e);


/* the response */

int
mg_gemini_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc, unusable, all;
    size_t        i;
    json_t       *in, *e, *cands, *c, *choices, *choice, *res, *u, *rid;
    const char   *block, *reason;
    uint64_t      seed;
    json_error_t  jerr;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    e = mg_g_error_body(in);

    if (e) {
        mg_g_error_map(0, e, err);
        json_decref(in);
        return MG_X_ERROR;
    }

    cands = json_object_get(in, "candidates");

    if (!json_is_object(in) || (cands && !json_is_array(cands))) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    rid = json_object_get(in, "responseId");
    seed = mg_g_seed(rid, created);

    choices = NULL;
    res = NULL;
    rc = MG_X_NOMEM;

    choices = json_array();
    if (choices == NULL) {
        goto done;
    }

    if (json_array_size(cands) == 0) {

        /* the prompt was blocked: an answer, not an error */

        block = json_string_value(json_object_get(json_object_get(in,
                                      "promptFeedback"), "blockReason"));

        if (block == NULL) {
            rc = mg_x_bad_backend(err, "response (no candidates)");
            goto done;
        }

        choice = json_pack("{s:i,s:{s:s,s:s,s:n},s:n,s:s}", "index", 0,
                           "message", "role", "assistant", "content", "",
                           "refusal", "logprobs", "finish_reason",
                           "content_filter");

        if (choice == NULL || json_array_append_new(choices, choice) != 0) {
            goto done;
        }
    }

    all = 1;
    reason = NULL;

    json_array_foreach(cands, i, c) {
        rc = mg_g_choice(c, i, seed, &choice, &unusable);
        if (rc != MG_X_OK) {
            goto done;
        }

        rc = MG_X_NOMEM;

        if (json_array_append_new(choices, choice) != 0) {
            goto done;
        }

        if (unusable) {
            reason = json_string_value(json_object_get(c, "finishReason"));

        } else {
            all = 0;
        }
    }

    /* a malformed function call (and the like) with nothing else: another
     * try, maybe on another backend, may well do better */

    if (json_array_size(cands) && all) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend gave no usable answer (%s).",
                      reason);

        rc = MG_X_ERROR;
        goto done;
    }

    res = json_object();

    if (res == NULL
        || mg_x_set(res, "id",
                    mg_x_prefixed("chatcmpl-",
                                  json_is_string(rid) ? json_string_value(rid)
                                                      : "",
                                  json_string_length(rid)))
           != MG_X_OK
        || mg_x_set_str(res, "object", "chat.completion") != MG_X_OK
        || mg_x_set(res, "created", json_integer(created)) != MG_X_OK
        || mg_x_set(res, "model",
                    json_stringn(model ? model : "", model ? model_len : 0))
           != MG_X_OK
        || json_object_set(res, "choices", choices) != 0)
    {
        goto done;
    }

    u = json_object_get(in, "usageMetadata");

    if (json_is_object(u)
        && mg_x_set(res, "usage",
                    mg_g_usage(mg_x_tokens(u, "promptTokenCount", 0),
                               mg_x_tokens(u, "candidatesTokenCount", 0),
                               mg_x_tokens(u, "thoughtsTokenCount", 0),
                               mg_x_tokens(u, "toolUsePromptTokenCount", 0),
                               mg_x_tokens(u, "cachedContentTokenCount", 0),
                               mg_x_tokens(u, "totalTokenCount", -1)))
           != MG_X_OK)
    {
        goto done;
    }

    rc = mg_x_dump(res, out, 0);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(res);
    json_decref(choices);
    json_decref(in);

    return rc;
}


/*
 * Tool call ids: Gemini's own when it gives one, else made up, the same
 * for the same response in a stream and whole.  They must not repeat
 * within a conversation (clients pair results by id), so they hash the
 * response id and the time with the call's place.
 */

uint64_t
mg_g_seed(json_t *rid, long created)
{
    size_t          i, n;
    uint64_t        h;
    unsigned long   t;
    const char     *s;

    h = 0xcbf29ce484222325ULL;

    s = json_string_value(rid);
    n = s ? json_string_length(rid) : 0;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char) s[i]) * 0x100000001b3ULL;
    }

    t = (unsigned long) created;

    for (i = 0; i < sizeof(t); i++) {
        h = (h ^ ((t >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
    }

    return h;
}


static json_t *
mg_g_call_id(uint64_t seed, size_t cand, size_t k)
{
    char      buf[32];
    uint64_t  h;

    /* splitmix64's finalizer over the place */

    h = seed ^ ((uint64_t) cand << 40) ^ (uint64_t) k;
    h += 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    h ^= h >> 31;

    (void) snprintf(buf, sizeof(buf), "call_%016llx", (unsigned long long) h);

    return json_string(buf);
}


/*
 * A functionCall part -> an OpenAI tool call (with "index" for a stream
 * delta); the arguments go as a JSON string, a thought signature where
 * Google's OpenAI-compatible endpoint puts it.  A new reference.
 */

json_t *
mg_g_tool_call(json_t *part, uint64_t seed, size_t cand, size_t k,
    int with_index)
{
    char    *args;
    json_t  *fc, *v, *id, *call, *sig;

    fc = json_object_get(part, "functionCall");
    v = json_object_get(fc, "args");

    args = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    if (args == NULL) {
        return NULL;
    }

    v = json_object_get(fc, "id");

    id = (json_is_string(v) && json_string_length(v))
         ? json_incref(v) : mg_g_call_id(seed, cand, k);

    call = json_object();

    if (id == NULL || call == NULL
        || (with_index
            && mg_x_set(call, "index", json_integer(k)) != MG_X_OK)
        || json_object_set(call, "id", id) != 0
        || mg_x_set_str(call, "type", "function") != MG_X_OK
        || mg_x_set(call, "function",
                    json_pack("{s:o,s:s}",
                              "name",
                              mg_g_string(json_object_get(fc, "name")),
                              "arguments", args))
           != MG_X_OK)
    {
        goto failed;
    }

    sig = json_object_get(part, "thoughtSignature");

    if (json_is_string(sig)
        && mg_x_set(call, "extra_content",
                    json_pack("{s:{s:O}}", "google", "thought_signature",
                              sig))
           != MG_X_OK)
    {
        goto failed;
    }

    free(args);
    json_decref(id);

    return call;

failed:

    free(args);
    json_decref(id);
    json_decref(call);

    return NULL;
}


/* one candidate -> one choice; *unusable: it ended malformed, empty */

static int
mg_g_choice(json_t *c, size_t index, uint64_t seed, json_t **choice,
    int *unusable)
{
    int           rc;
    size_t        i;
    json_t       *parts, *p, *v, *calls, *call, *msg;
    mg_buf_t      text;
    const char   *reason;

    *choice = NULL;
    *unusable = 0;

    memset(&text, 0, sizeof(mg_buf_t));
    msg = NULL;
    rc = MG_X_NOMEM;

    calls = json_array();
    if (calls == NULL) {
        goto done;
    }

    parts = json_object_get(json_object_get(c, "content"), "parts");

    /* thoughts (when asked for) and code execution have no chat shape */

    json_array_foreach(parts, i, p) {
        if (json_is_true(json_object_get(p, "thought"))) {
            continue;
        }

        v = json_object_get(p, "text");

        if (json_is_string(v)) {
            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        if (!json_is_object(json_object_get(p, "functionCall"))) {
            continue;
        }

        call = mg_g_tool_call(p, seed, index, json_array_size(calls), 0);

        if (call == NULL || json_array_append_new(calls, call) != 0) {
            goto done;
        }
    }

    reason = json_string_value(json_object_get(c, "finishReason"));

    *unusable = text.len == 0 && json_array_size(calls) == 0
                && mg_g_malformed(reason);

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

    *choice = json_pack("{s:I,s:O,s:n,s:s}", "index", (json_int_t) index,
                        "message", msg, "logprobs", "finish_reason",
                        mg_gemini_finish(reason, json_array_size(calls) != 0));

    rc = *choice ? MG_X_OK : MG_X_NOMEM;

done:

    mg_buf_free(&text);
    json_decref(msg);
    json_decref(calls);

    return rc;
}


/* table 10.2; a new or unknown reason is a normal stop */

const char *
mg_gemini_finish(const char *reason, int calls)
{
    size_t  k;

    static const char  *filtered[] = {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
        "LANGUAGE", "MODEL_ARMOR"
    };

    if (reason == NULL) {
        return calls ? "tool_calls" : "stop";
    }

    if (strcmp(reason, "MAX_TOKENS") == 0) {
        return "length";
    }

    for (k = 0; k < sizeof(filtered) / sizeof(filtered[0]); k++) {
        if (strcmp(reason, filtered[k]) == 0) {
            return "content_filter";
        }
    }

    if (strncmp(reason, "IMAGE_", 6) == 0) {
        return "content_filter";
    }

    /* Gemini says STOP after function calls too */

    return calls ? "tool_calls" : "stop";
}


/* reasons that leave nothing worth answering when nothing came before */

int
mg_g_malformed(const char *reason)
{
    size_t  k;

    static const char  *malformed[] = {
        "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE",
        "MISSING_THOUGHT_SIGNATURE", "OTHER"
    };

    for (k = 0; reason && k < sizeof(malformed) / sizeof(malformed[0]); k++)
    {
        if (strcmp(reason, malformed[k]) == 0) {
            return 1;
        }
    }

    return 0;
}


/* whether a candidate has text or a function call for the client */

int
mg_g_usable(json_t *c)
{
    size_t   i;
    json_t  *p;

    json_array_foreach(json_object_get(json_object_get(c, "content"),
                                       "parts"), i, p)
    {
        if (json_is_true(json_object_get(p, "thought"))) {
            continue;
        }

        if (json_string_length(json_object_get(p, "text"))
            || json_is_object(json_object_get(p, "functionCall")))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * table 10.3: thoughts are not in candidatesTokenCount but are billed as
 * output; a tool-use prompt is input.  total < 0: not given, summed.
 */

void
mg_gemini_usage(long long prompt, long long candidates, long long thoughts,
    long long tool_prompt, long long cached, mg_x_usage_t *u)
{
    u->prompt = prompt + tool_prompt;
    u->completion = candidates + thoughts;
    u->cached = cached;
    u->cache_write = 0;
}


json_t *
mg_g_usage(long long prompt, long long candidates, long long thoughts,
    long long tool_prompt, long long cached, long long total)
{
    long long     in, out;
    mg_x_usage_t  u;

    mg_gemini_usage(prompt, candidates, thoughts, tool_prompt, cached, &u);

    in = u.prompt;
    out = u.completion;

    return json_pack("{s:I,s:I,s:I,s:{s:I},s:{s:I}}",
                     "prompt_tokens", (json_int_t) in,
                     "completion_tokens", (json_int_t) out,
                     "total_tokens", (json_int_t) (total < 0 ? in + out
                                                             : total),
                     "prompt_tokens_details",
                     "cached_tokens", (json_int_t) cached,
                     "completion_tokens_details",
                     "reasoning_tokens", (json_int_t) thoughts);
}


/* errors */

void
mg_gemini_error(int status, const char *body, size_t len,
    mg_xerror_t *err)
{
    json_t  *j;

    j = (body && len) ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;

    mg_g_error_map(status, mg_g_error_body(j), err);

    json_decref(j);
}


/* {"error": ...}, or that as the first of an array (as some proxies and
 * the stream endpoint without alt=sse send it); borrowed */

json_t *
mg_g_error_body(json_t *j)
{
    if (json_is_array(j)) {
        j = json_array_get(j, 0);
    }

    return mg_x_get(j, "error") ? j : NULL;
}


/*
 * status: the HTTP status, or 0 for an error that came inside a 200 (a
 * body or a stream chunk): error.code, else error.status, stands for it.
 */

void
mg_g_error_map(int status, json_t *body, mg_xerror_t *err)
{
    size_t       k;
    json_t      *e, *v;
    const char  *gs, *msg, *code;

    static const struct {
        const char  *status;
        int          http;
    } codes[] = {
        { "INVALID_ARGUMENT", 400 },
        { "FAILED_PRECONDITION", 400 },
        { "OUT_OF_RANGE", 400 },
        { "UNAUTHENTICATED", 401 },
        { "PERMISSION_DENIED", 403 },
        { "NOT_FOUND", 404 },
        { "ABORTED", 409 },
        { "ALREADY_EXISTS", 409 },
        { "RESOURCE_EXHAUSTED", 429 },
        { "CANCELLED", 499 },
        { "INTERNAL", 500 },
        { "UNKNOWN", 500 },
        { "DATA_LOSS", 500 },
        { "UNIMPLEMENTED", 501 },
        { "UNAVAILABLE", 503 },
        { "DEADLINE_EXCEEDED", 504 }
    };

    e = json_object_get(body, "error");
    gs = json_string_value(json_object_get(e, "status"));
    msg = json_string_value(json_object_get(e, "message"));

    if (msg == NULL || msg[0] == '\0') {
        msg = NULL;
    }

    if (status < 400 || status > 599) {
        v = json_object_get(e, "code");
        status = 500;

        if (json_is_integer(v) && json_integer_value(v) >= 400
            && json_integer_value(v) <= 599)
        {
            status = (int) json_integer_value(v);

        } else {
            for (k = 0; gs && k < sizeof(codes) / sizeof(codes[0]); k++) {
                if (strcmp(gs, codes[k].status) == 0) {
                    status = codes[k].http;
                    break;
                }
            }
        }
    }

    if (status == 429) {
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend is rate limited%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 401 || status == 403
               || (status == 400 && mg_g_api_key_error(e)))
    {
        /* the gateway's key, not the client's: another may be good */

        mg_xerror_set(err, 502, 1, "server_error", "backend_auth_failed",
                      NULL, "backend authentication failed");

    } else if (status == 503) {
        mg_xerror_set(err, 503, 1, "server_error", "overloaded", NULL,
                      "The model backend is unavailable%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 504) {
        mg_xerror_set(err, 504, 1, "server_error", "backend_timeout", NULL,
                      "The model backend timed out%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 404) {
        mg_xerror_set(err, 404, 0, "invalid_request_error", "model_not_found",
                      "model", "The model backend does not know the "
                      "model%s%s", msg ? ": " : ".", msg ? msg : "");

    } else if (status == 413) {
        mg_xerror_set(err, 413, 0, "invalid_request_error",
                      "request_too_large", NULL, "%s",
                      msg ? msg : "The request is too large for the model "
                                  "backend.");

    } else if (status >= 500 || status == 408 || status == 409) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed (HTTP %d%s%s)%s%s", status,
                      gs ? " " : "", gs ? gs : "", msg ? ": " : ".",
                      msg ? msg : "");

    } else {
        /* the client's request, as Gemini judged it */

        code = (msg && strstr(msg, "input token count")
                && strstr(msg, "exceeds the maximum"))
               ? "context_length_exceeded" : NULL;

        if (msg) {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "%s", msg);

        } else {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "The model backend rejected the request (HTTP "
                          "%d%s%s).", status, gs ? " " : "", gs ? gs : "");
        }
    }
}


/* "API key not valid" is a 400 INVALID_ARGUMENT with an ErrorInfo reason
 * API_KEY_INVALID (or API_KEY_EXPIRED, ...) */

static int
mg_g_api_key_error(json_t *e)
{
    size_t       i;
    json_t      *d;
    const char  *reason;

    json_array_foreach(json_object_get(e, "details"), i, d) {
        reason = json_string_value(json_object_get(d, "reason"));

        if (reason && strncmp(reason, "API_KEY_", 8) == 0) {
            return 1;
        }
    }

    return 0;
}
