/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI chat completions <-> Google Gemini generateContent (AI Studio).
 * Requests go from the client's OpenAI body to a Gemini body; responses,
 * stream chunks and errors come back as OpenAI shapes.  No nginx in here:
 * the glue owns the I/O, the URL (models/{model}:generateContent, or
 * :streamGenerateContent?alt=sse), the x-goog-api-key header and the
 * retries.
 */

#ifndef _MG_GEMINI_H_INCLUDED_
#define _MG_GEMINI_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "mg_translate.h"


typedef struct {
    long         default_max_tokens;    /* maxOutputTokens when the client
                                           sent none; <= 0: none sent */
    size_t       max_out;       /* the longest request to write; 0:
                                   MG_X_OUT_MAX */
    int          full;          /* tests: never the tree-free path */
} mg_gemini_opts_t;


/*
 * OpenAI chat request body -> Gemini generateContent request body,
 * appended to out.  The model is not in the body: it goes in the URL.
 * *stream and *include_usage report what the client asked for (the glue
 * picks the endpoint).  n > 1 is sent as candidateCount.  A feature that
 * cannot be honoured (logprobs, logit_bias, audio output, predicted
 * outputs, OpenAI file ids, image URLs that are not Gemini file URIs,
 * ...) is a 400 with err->param naming the field: never silently dropped.
 * Returns MG_X_OK, MG_X_ERROR (err set) or MG_X_NOMEM (err set to a 500).
 */
int mg_gemini_request(const char *body, size_t len, const mg_gemini_opts_t *o,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);

/*
 * Gemini non-streaming response -> OpenAI chat.completion, appended to
 * out.  model is what the client asked for (echoed).  An unparsable body,
 * or one with neither candidates nor a blocked prompt, is a 502
 * (retryable), and so is a response whose only candidates ended in a
 * malformed function call (or the like) with nothing usable; an error
 * object in the body is mapped as mg_gemini_error() does.  A blocked
 * prompt is an answer: one empty choice, finish_reason "content_filter".
 */
int mg_gemini_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err);

/* finishReason (NULL: absent) -> finish_reason; calls: tool calls made */
const char *mg_gemini_finish(const char *reason, int calls);

/*
 * A non-2xx Gemini response (status and body) -> the OpenAI error to
 * answer with.  429 RESOURCE_EXHAUSTED: 429 retryable; 500 INTERNAL (and
 * other 5xx, 408, 409): 502 retryable; 503 UNAVAILABLE: 503 retryable;
 * 504 DEADLINE_EXCEEDED: 504 retryable; 401/403 (UNAUTHENTICATED,
 * PERMISSION_DENIED) and a 400 for an invalid API key: 502 "backend
 * authentication failed", retryable since another backend may hold a good
 * key; 404: 404 model_not_found; 413: 413; other 4xx (INVALID_ARGUMENT,
 * FAILED_PRECONDITION): 400 with Gemini's message (code
 * context_length_exceeded when the input is too long).  The body may be
 * {"error":{...}}, that wrapped in an array, anything else or NULL.
 * Status 0 (an error inside a 200 body or a stream chunk): error.code or
 * error.status stands for it.  Messages are valid UTF-8.
 */
/*
 * usageMetadata's counts -> OpenAI's: thoughts are output, a tool-use
 * prompt is input
 */
void mg_gemini_usage(long long prompt, long long candidates,
    long long thoughts, long long tool_prompt, long long cached,
    mg_x_usage_t *u);

void mg_gemini_error(int status, const char *body, size_t len,
    mg_xerror_t *err);


/* one OpenAI choice of a stream: a Gemini candidate */
typedef struct {
    size_t       ntools;        /* tool calls sent: the next one's index */
    unsigned     started:1;     /* the role chunk was sent */
    unsigned     finished:1;    /* the finish_reason chunk was sent */
} mg_gemini_choice_t;


/* private state of one streamed response; zero it with init, free it */
typedef struct {
    char                *model;     /* the client's model, copied */
    size_t               model_len;
    char                *prefix;    /* {"id":..,"object":..,"created":..,
                                       "model":.. without its closing
                                       brace */
    size_t               prefix_len;
    long                 created;
    uint64_t             seed;      /* of the tool call ids */

    mg_gemini_choice_t  *choices;   /* by candidate index */
    size_t               nchoices;

    long long            prompt_tokens;     /* the last usageMetadata */
    long long            candidates_tokens;
    long long            thoughts_tokens;
    long long            tool_prompt_tokens;
    long long            cached_tokens;
    long long            total_tokens;      /* -1: not given */

    unsigned             include_usage:1;
    unsigned             started:1;     /* the first chunk was seen */
    unsigned             finished:1;    /* a finishReason was seen */
    unsigned             done:1;        /* [DONE] was sent */
    unsigned             content:1;     /* text or a tool call was sent */
    unsigned             nomem:1;       /* init could not copy the model */
    unsigned             full:1;        /* tests: every chunk through the
                                           tree */
} mg_gemini_stream_t;


void mg_gemini_stream_init(mg_gemini_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage);

/*
 * The data of one SSE event of a streamGenerateContent?alt=sse response
 * (a GenerateContentResponse; NULL: a comment-only event, ignored) ->
 * zero or more complete OpenAI SSE events ("data: {...}\n\n") appended to
 * out: a role chunk when a candidate first shows, its text and whole tool
 * calls as deltas, and a finish_reason chunk for the chunk that carries
 * its finishReason.  Gemini sends no end event: the glue calls
 * mg_gemini_stream_finish() when the HTTP body ends.  Returns MG_X_OK;
 * MG_X_DONE once finished; MG_X_ERROR for an error object, unparsable
 * data, or a malformed ending before any content (err set, err->retryable
 * per the error); MG_X_NOMEM.  Nothing is appended to out by a call that
 * does not return MG_X_OK.
 */
int mg_gemini_stream_event(mg_gemini_stream_t *st, const char *data,
    size_t data_len, mg_buf_t *out, mg_xerror_t *err);

/*
 * The HTTP body ended: "stop" for a choice left open, the usage chunk
 * (from the last usageMetadata) when include_usage, and "data: [DONE]\n\n"
 * appended to out; returns MG_X_DONE (again, with nothing appended, when
 * called twice).  A stream that ended before any finishReason was cut
 * short: MG_X_ERROR with nothing appended (the glue answers a retryable
 * 502, or ends a stream already under way with an error).  MG_X_NOMEM.
 */
int mg_gemini_stream_finish(mg_gemini_stream_t *st, mg_buf_t *out);

/* nonzero once an event carrying content (text, a tool call) was emitted */
int mg_gemini_stream_has_content(const mg_gemini_stream_t *st);

/*
 * The counts of the last usageMetadata in OpenAI's terms, whether the
 * client asked for the usage chunk or not: 1 once one gave any, else 0.
 */
int mg_gemini_stream_usage(const mg_gemini_stream_t *st, mg_x_usage_t *u);

void mg_gemini_stream_free(mg_gemini_stream_t *st);


#endif /* _MG_GEMINI_H_INCLUDED_ */
