/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI chat completions <-> Anthropic Messages.  Requests go from the
 * client's OpenAI body to an Anthropic body; responses, stream events and
 * errors come back as OpenAI shapes.  No nginx in here: the glue owns the
 * I/O, the headers (x-api-key, anthropic-version) and the retries.
 */

#ifndef _MG_ANTHROPIC_H_INCLUDED_
#define _MG_ANTHROPIC_H_INCLUDED_

#include <stddef.h>

#include "mg_translate.h"


/* sent when the client gives neither max_completion_tokens nor max_tokens
 * and the options name no default: Anthropic requires max_tokens */
#define MG_ANTHROPIC_MAX_TOKENS  4096


typedef struct {
    const char  *model;         /* provider model id to send; NULL or empty:
                                   the client's "model" is sent */
    size_t       model_len;
    long         default_max_tokens;    /* when the client sent none;
                                           <= 0: MG_ANTHROPIC_MAX_TOKENS */
    size_t       max_out;       /* the longest request to write; 0:
                                   MG_X_OUT_MAX */
    int          full;          /* tests: never the tree-free path */
} mg_anthropic_opts_t;


/*
 * OpenAI chat request body -> Anthropic Messages request body, appended to
 * out.  "stream" is copied, not decided here; *stream and *include_usage
 * report what the client asked for.  A feature that cannot be honoured
 * (n > 1, logprobs, penalties, logit_bias, audio, response_format
 * json_object, OpenAI file ids, ...) is a 400 with err->param naming the
 * field: never silently dropped.  Returns MG_X_OK, MG_X_ERROR (err set) or
 * MG_X_NOMEM (err set to a 500).
 */
int mg_anthropic_request(const char *body, size_t len,
    const mg_anthropic_opts_t *o, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err);

/*
 * Anthropic non-streaming response -> OpenAI chat.completion, appended to
 * out.  model is what the client asked for (echoed).  An unparsable body is
 * a 502 (retryable); an Anthropic error object is mapped as
 * mg_anthropic_error() does.
 */
int mg_anthropic_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err);

/*
 * A non-2xx Anthropic response (status and body) -> the OpenAI error to
 * answer with.  529 or overloaded_error: 503 retryable; 429: 429 retryable
 * (a spend limit: type insufficient_quota); other 5xx, 402 (billing), 408,
 * 409: 502 retryable; 401/403: 502 "backend authentication failed",
 * retryable since another backend may hold a good key; 404: 404
 * model_not_found; 413: 413; other 4xx: 400 with Anthropic's message
 * (code context_length_exceeded for "prompt is too long").  Messages are
 * valid UTF-8.  body may be anything (or NULL).
 */
/* Anthropic's counts (input_tokens exclude the cached ones) -> OpenAI's */
void mg_anthropic_usage(long long input, long long output,
    long long cache_read, long long cache_creation, mg_x_usage_t *u);

void mg_anthropic_error(int status, const char *body, size_t len,
    mg_xerror_t *err);


/* private state of one streamed response; zero it with init, free it */
typedef struct {
    char        *model;         /* the client's model, copied */
    size_t       model_len;
    char        *prefix;        /* {"id":..,"object":..,"created":..,"model":..
                                   without its closing brace */
    size_t       prefix_len;
    long         created;

    long long   *tools;         /* Anthropic block index of each OpenAI
                                   tool call: the position is its index */
    size_t       ntools;
    size_t       tools_cap;

    long long    input_tokens;
    long long    output_tokens;
    long long    cache_read_tokens;
    long long    cache_creation_tokens;

    /* not a bit: mg_x_text_chunk() sets it through a pointer */
    unsigned     content;       /* text or a tool call was sent */

    unsigned     include_usage:1;
    unsigned     started:1;     /* message_start seen, role chunk sent */
    unsigned     finished:1;    /* the finish_reason chunk was sent */
    unsigned     done:1;        /* message_stop seen, [DONE] sent */
    unsigned     nomem:1;       /* init could not copy the model */
    unsigned     full:1;        /* tests: every event through the tree */
} mg_anthropic_stream_t;


void mg_anthropic_stream_init(mg_anthropic_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage);

/*
 * One Anthropic SSE event (event name may be NULL: the data's "type" is
 * used; data may be NULL: a comment-only event, ignored) -> zero or more
 * complete OpenAI SSE events ("data: {...}\n\n") appended to out.  Returns
 * MG_X_OK; MG_X_DONE after message_stop (out then ends with the usage chunk
 * when include_usage, and "data: [DONE]\n\n"); MG_X_ERROR for an "error"
 * event, unparsable data or events before message_start (err set,
 * err->retryable per the error type); MG_X_NOMEM.  Nothing is appended to
 * out by a call that does not return MG_X_OK or MG_X_DONE.
 */
int mg_anthropic_stream_event(mg_anthropic_stream_t *st, const char *event,
    size_t event_len, const char *data, size_t data_len, mg_buf_t *out,
    mg_xerror_t *err);

/* nonzero once an event carrying content (text, a tool call) was emitted */
int mg_anthropic_stream_has_content(const mg_anthropic_stream_t *st);

/*
 * The counts so far in OpenAI's terms, whether the client asked for the
 * usage chunk or not: 1 once message_start gave them, else 0.
 */
int mg_anthropic_stream_usage(const mg_anthropic_stream_t *st,
    mg_x_usage_t *u);

void mg_anthropic_stream_free(mg_anthropic_stream_t *st);


#endif /* _MG_ANTHROPIC_H_INCLUDED_ */
