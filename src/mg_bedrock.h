/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI chat completions <-> Amazon Bedrock Converse / ConverseStream.
 * Requests go from the client's OpenAI body to a Converse body; responses,
 * stream messages and errors come back as OpenAI shapes.  No nginx in here:
 * the glue owns the I/O, the URL (the model id goes in the path, with
 * /converse or /converse-stream), the SigV4 or bearer headers, the
 * eventstream decoding (mg_eventstream.h) and the retries.
 */

#ifndef _MG_BEDROCK_H_INCLUDED_
#define _MG_BEDROCK_H_INCLUDED_

#include <stddef.h>

#include "mg_translate.h"


typedef struct {
    long         default_max_tokens;    /* when the client sent none;
                                           <= 0: no maxTokens is sent and
                                           the model's own limit applies */
    size_t       max_out;       /* the longest request to write; 0:
                                   MG_X_OUT_MAX */
    int          full;          /* tests: never the tree-free path */
} mg_bedrock_opts_t;


/*
 * OpenAI chat request body -> Converse request body, appended to out.  The
 * client's "model" is not looked at: the glue puts its Bedrock model id in
 * the URL.  Bedrock has no "stream" member (streaming is the
 * /converse-stream operation): *stream and *include_usage report what the
 * client asked for.  A feature that cannot be honoured (n > 1, logprobs,
 * penalties, logit_bias, audio, response_format json_object,
 * reasoning_effort, parallel_tool_calls false, image URLs Bedrock cannot
 * fetch, OpenAI file ids, ...) is a 400 with err->param naming the field:
 * never silently dropped.  Returns MG_X_OK, MG_X_ERROR (err set) or
 * MG_X_NOMEM (err set to a 500).
 */
int mg_bedrock_request(const char *body, size_t len,
    const mg_bedrock_opts_t *o, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err);

/*
 * Converse response -> OpenAI chat.completion, appended to out.  model is
 * what the client asked for (echoed).  Converse responses carry no id: the
 * completion's is "chatcmpl-" and 24 hex digits made of created, the
 * process id and a per-process counter (unique per process and second).
 * An unparsable body, or stopReason malformed_model_output or
 * malformed_tool_use (the answer is broken; another attempt may not be),
 * is a 502 (retryable); an error body in a 200 is mapped as
 * mg_bedrock_error() does.
 */
int mg_bedrock_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err);

/*
 * A non-2xx Converse response -> the OpenAI error to answer with.
 * errortype is the x-amzn-ErrorType header's value (may be NULL: the
 * body's "__type", then its "code", are used); the text before the first
 * ':' (and after a '#') is the exception name.  The message is the body's
 * "message" or "Message".
 *
 *   ThrottlingException (and the AWS throttling codes), 429   429 retryable
 *   ServiceQuotaExceededException                            429 retryable
 *   ModelNotReadyException                                   429 retryable
 *   ServiceUnavailableException, 503                         503 retryable
 *   InternalServerException, ModelStreamErrorException,
 *   ModelErrorException, ModelTimeoutException, other 5xx,
 *   408, 409, 424                                            502 retryable
 *   AccessDenied, UnrecognizedClient, InvalidSignature,
 *   ExpiredToken..., 401, 403          502 "backend authentication failed",
 *                                      retryable: another backend may work
 *   ResourceNotFoundException, 404                 404 model_not_found
 *   413                                            413
 *   ValidationException, other 4xx                 400 with Bedrock's words
 *                                    (code context_length_exceeded when
 *                                    they say the input is too long)
 *
 * An unknown exception name falls back on the status; status 0 (or any
 * outside 400..599) means an error that came inside a 200.  Messages are
 * valid UTF-8.  errortype and body may be anything (or NULL).
 */
/*
 * Converse's counts -> OpenAI's: the cached ones are added to the prompt
 * unless totalTokens (< 0: not sent) shows they are already in it.
 */
void mg_bedrock_usage(long long input, long long output, long long total,
    long long cache_read, long long cache_write, mg_x_usage_t *u);

/* "chatcmpl-" and 24 hex digits, unique per process and second */
void mg_bedrock_make_id(char *buf, size_t size, long created);

void mg_bedrock_error(int status, const char *errortype,
    size_t errortype_len, const char *body, size_t len, mg_xerror_t *err);


/* private state of one streamed response; zero it with init, free it */
typedef struct {
    char        *model;         /* the client's model, copied */
    size_t       model_len;
    char        *prefix;        /* {"id":..,"object":..,"created":..,"model":..
                                   without its closing brace */
    size_t       prefix_len;
    long         created;
    char         id[48];        /* "chatcmpl-...", made by init */

    long long   *tools;         /* contentBlockIndex of each OpenAI tool
                                   call: the position is its index */
    size_t       ntools;
    size_t       tools_cap;

    long long    input_tokens;  /* from metadata */
    long long    output_tokens;
    long long    total_tokens;  /* -1: not sent */
    long long    cache_read_tokens;
    long long    cache_write_tokens;

    /* not a bit: mg_x_text_chunk() sets it through a pointer */
    unsigned     content;       /* text or a tool call was sent */

    unsigned     include_usage:1;
    unsigned     started:1;     /* messageStart seen, role chunk sent */
    unsigned     stopped:1;     /* messageStop seen, finish chunk sent */
    unsigned     usage:1;       /* metadata with usage seen */
    unsigned     done:1;        /* [DONE] sent */
    unsigned     nomem:1;       /* init could not copy the model */
    unsigned     full:1;        /* tests: every event through the tree */
} mg_bedrock_stream_t;


void mg_bedrock_stream_init(mg_bedrock_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage);

/*
 * One decoded eventstream message -> zero or more complete OpenAI SSE
 * events ("data: {...}\n\n") appended to out.  message_type is the
 * :message-type header ("event", "exception" or "error"; NULL is taken as
 * "event"); event_type is the :event-type for events, the :exception-type
 * for exceptions and the :error-code for errors; payload is the message's
 * payload (JSON; the :error-message for errors; may be NULL or empty).
 *
 * Returns MG_X_OK; MG_X_DONE once the stream is complete: after
 * messageStop when include_usage is off, after messageStop and metadata
 * (whichever comes last) when it is on, out then ending with the usage
 * chunk and "data: [DONE]\n\n"; MG_X_ERROR for an exception or error
 * message (throttlingException 429, serviceUnavailableException 503,
 * validationException 400, others 502; err->retryable as
 * mg_bedrock_error() says), an unparsable payload, content before
 * messageStart, or a stopReason that says the output is malformed;
 * MG_X_NOMEM.  Nothing is appended to out by a call that does not return
 * MG_X_OK or MG_X_DONE; after MG_X_DONE every call returns MG_X_DONE and
 * appends nothing.
 */
int mg_bedrock_stream_event(mg_bedrock_stream_t *st,
    const char *message_type, size_t message_type_len,
    const char *event_type, size_t event_type_len, const char *payload,
    size_t payload_len, mg_buf_t *out, mg_xerror_t *err);

/* nonzero once an event carrying content (text, a tool call) was emitted */
int mg_bedrock_stream_has_content(const mg_bedrock_stream_t *st);

/*
 * The counts in OpenAI's terms: 1 once a metadata message gave them, else
 * 0.  A metadata message that comes after the end (the client did not ask
 * for the usage chunk, so the stream ended at messageStop) still counts.
 */
int mg_bedrock_stream_usage(const mg_bedrock_stream_t *st, mg_x_usage_t *u);

/*
 * At the end of the HTTP stream.  A stream that ended after messageStop
 * but without the metadata include_usage waits for gets its
 * "data: [DONE]\n\n" here (without a usage chunk: there are no counts to
 * send): MG_X_DONE.  MG_X_OK, with nothing appended, when [DONE] was
 * already sent or messageStop never came (a truncated stream: the glue's
 * error to report).  MG_X_NOMEM.
 */
int mg_bedrock_stream_finish(mg_bedrock_stream_t *st, mg_buf_t *out);

void mg_bedrock_stream_free(mg_bedrock_stream_t *st);


#endif /* _MG_BEDROCK_H_INCLUDED_ */
