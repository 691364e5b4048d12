/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses: the OpenAI Responses API served over any chat
 * completions backend, the gateway converting both ways itself.  A
 * Responses request (with the stored items of the turns before it) becomes
 * a chat completions request; the chat completion that answers it becomes
 * a Responses object, and a chat stream becomes the Responses events.
 * Nothing here stores anything: previous_response_id, conversation, store
 * and truncation are the caller's, which passes the history in and keeps
 * the items handed back.  No nginx in here.
 */

#ifndef _MG_RESPONSES_H_INCLUDED_
#define _MG_RESPONSES_H_INCLUDED_

#include <stddef.h>

#include "mg_translate.h"


/* the longest item id an id function may write, NUL included */
#define MG_RESP_ID_SIZE  128

/*
 * Writes a new item id beginning with prefix ("msg_", "fc_") into buf, NUL
 * terminated, at most size bytes; returns 0, or -1 (out of memory).
 */
typedef int (*mg_resp_id_pt)(void *data, const char *prefix, char *buf,
    size_t size);


typedef struct {
    const char     *model;      /* the provider's model to send; NULL or
                                   empty: the client's "model" */
    size_t          model_len;
    size_t          max_out;    /* the longest output to write; 0:
                                   MG_X_OUT_MAX */
    const char     *replay;     /* the origin whose provider-only state
                                   the history's calls carry to the chat
                                   request; NULL: none's */
    mg_resp_id_pt   input_id;   /* gives the input items an id when they
                                   have none ("msg_", "fco_", "item_");
                                   NULL: they are left without */
    void           *data;       /* input_id's */
} mg_resp_opts_t;


/*
 * Provider-only state: what a chat backend attaches to a tool call for
 * itself (Gemini's thought signature, as "extra_content" of the call) is
 * kept on the stored function_call item, as MG_RESP_STATE: {"origin":
 * ORIGIN, "extra_content": {...}}, ORIGIN naming the provider and model
 * that made it (mg_resp_answer_opts_t.origin).  It never reaches the
 * client: the response object and its events go without it.  A later
 * turn sends it back only to the same origin (mg_resp_opts_t.replay);
 * one that crosses clouds goes without it.  An input item that carries
 * the member has it dropped: only the gateway's own items carry state.
 */
#define MG_RESP_STATE  "x_mgw_state"


/*
 * A Responses request body -> a chat completions request body, appended
 * to chat.  history (may be NULL) is a JSON array of the items stored for
 * the turns before this one, as Responses items; its messages come after
 * this request's instructions (a system message: those of earlier turns
 * are not carried over) and before this request's input.
 *
 * echo, when not NULL, gets a JSON object of the request's fields a
 * response object repeats (instructions, tools, tool_choice, temperature,
 * ...), defaults filled in: give it to mg_resp_answer() and the stream.
 * input, when not NULL, gets this request's input as a JSON array of
 * items (a string input is one user message; message contents are arrays
 * of parts), what the caller stores with the output items.  *stream says
 * whether the client asked for a stream.
 *
 * What the gateway cannot serve is refused with a 400 whose err->param
 * names the parameter (built-in tools, background, prompt, encrypted
 * reasoning, reasoning summaries, file ids, unknown item types, ...),
 * never dropped.  Each output is bounded by o->max_out: a longer one is a
 * 400 request_too_large.  Returns MG_X_OK, MG_X_ERROR (err set) or
 * MG_X_NOMEM (err set to a 500); on an error nothing is appended.
 */
int mg_resp_request(const char *body, size_t len, const char *history,
    size_t history_len, const mg_resp_opts_t *o, mg_buf_t *chat,
    mg_buf_t *echo, mg_buf_t *input, int *stream, mg_xerror_t *err);


/* what a response object is made of besides the answer */
typedef struct {
    const char     *id;         /* the response's id, "resp_..." */
    const char     *model;      /* the model the client asked for */
    long long       created_at;
    const char     *echo;       /* from mg_resp_request(); NULL: defaults */
    size_t          echo_len;
    mg_resp_id_pt   item_id;    /* NULL: "<prefix><id after resp_>_<n>" */
    void           *data;       /* item_id's */
    const char     *origin;     /* the answer's provider and model: its
                                   calls' provider-only state is kept in
                                   the items; NULL: none is */
} mg_resp_answer_opts_t;


/*
 * A non-streamed chat completion (OpenAI's shape) -> a Responses object,
 * appended to response; its output items also to items (a JSON array; may
 * be NULL), for the caller to store.  finish_reason "length" makes the
 * response "incomplete" (reason max_output_tokens), "content_filter"
 * likewise (reason content_filter); its items open at the end are then
 * "incomplete" too: the calls, or a message without calls (a message
 * with calls ended when they began: "completed", as in the stream).
 * Empty content beside calls is no message, as in the stream.
 * An answer that is not a chat completion is a 502.  Returns MG_X_OK,
 * MG_X_ERROR or MG_X_NOMEM; on an error nothing is appended.
 */
int mg_resp_answer(const char *body, size_t len,
    const mg_resp_answer_opts_t *o, mg_buf_t *response, mg_buf_t *items,
    mg_xerror_t *err);


/*
 * The stream: chat completion chunks in, Responses events out, each
 * "event: NAME\ndata: JSON\n\n" with "type" NAME and a sequence_number
 * counting from 0.  response.created and response.in_progress come before
 * the first item; text is a message item (output_item.added,
 * content_part.added, output_text.delta ..., and at its end
 * output_text.done, content_part.done, output_item.done; a refusal the
 * same with refusal events); each tool call a function_call item
 * (output_item.added, function_call_arguments.delta ...; .done and
 * output_item.done at the end).  A message ends when the first call
 * starts; calls end, in their order, at the stream's end, so deltas of
 * calls that interleave are still theirs.  The end is response.completed,
 * or response.incomplete for finish_reason length or content_filter, with
 * the whole response and its usage.
 */
typedef struct {
    long long    index;         /* the chat tool call's index */
    size_t       output;        /* its item's output_index */
    mg_buf_t     args;          /* its arguments so far */
    json_t      *extra;         /* its provider-only state, or NULL */
} mg_resp_call_t;

typedef struct {
    mg_resp_answer_opts_t   o;  /* id and model copied, echo parsed */
    json_t                 *echo;
    json_t                 *output;     /* the items as they will end */
    json_t                 *usage;      /* Responses' usage, once seen */
    mg_buf_t                part;       /* the open part's text so far */
    mg_resp_call_t         *calls;
    size_t                  ncalls;
    size_t                  calls_cap;
    long long               seq;        /* the next sequence_number */
    unsigned                ids;        /* item ids made */
    long                    msg;        /* the open message's output
                                           index, -1: none */
    int                     kind;       /* its open part: 0 none,
                                           1 output_text, 2 refusal */
    size_t                  content;    /* that part's content_index */
    const char             *reason;     /* incomplete: its reason */
    int                     failed;     /* 0, or what a failed call
                                           returned: every later one
                                           returns it, error too */
    mg_xerror_t             error;
    unsigned                started:1;  /* created, in_progress sent */
    unsigned                done:1;     /* the final event sent */
} mg_resp_stream_t;

/* o's strings are copied; an unreadable echo is a 500 */
int mg_resp_stream_init(mg_resp_stream_t *st,
    const mg_resp_answer_opts_t *o, mg_xerror_t *err);

/*
 * One chat chunk (a parsed chat.completion.chunk) -> its events, appended
 * to out.  A chunk that is not one is a 502, and so is an error object
 * ({"error": {...}}), its message the provider's when it is a string.
 * Returns MG_X_OK, MG_X_ERROR or MG_X_NOMEM; nothing is appended by a
 * call that fails.  A failure is final: every later mg_resp_stream_chunk()
 * and mg_resp_stream_end() returns the same, err set the same, and
 * writes nothing; mg_resp_stream_fail() still ends the stream.  After
 * the final event every chunk is ignored (MG_X_OK, nothing written).
 */
int mg_resp_stream_chunk(mg_resp_stream_t *st, json_t *chunk,
    mg_buf_t *out, mg_xerror_t *err);

/*
 * The chat stream ended ([DONE]): what is open is closed and the final
 * event written; MG_X_DONE, or MG_X_NOMEM.  items, when not NULL, gets
 * the output items (a JSON array) for the caller to store.
 */
int mg_resp_stream_end(mg_resp_stream_t *st, mg_buf_t *out,
    mg_buf_t *items, mg_xerror_t *err);

/*
 * The stream cut short (a failed chunk, a backend gone): what was sent
 * is left as it is and the final event written, response.failed, the
 * response "failed" with error {"code": "server_error", "message":
 * message} (NULL: a generic one) and the output items so far, numbered
 * after the last event written.  MG_X_DONE (nothing written when the
 * final event was already sent), or MG_X_NOMEM.
 */
int mg_resp_stream_fail(mg_resp_stream_t *st, const char *message,
    mg_buf_t *out, mg_xerror_t *err);

/*
 * After mg_resp_stream_end(): the response object its final event held,
 * appended to out, for the caller to store.  MG_X_OK or MG_X_NOMEM.
 */
int mg_resp_stream_object(mg_resp_stream_t *st, mg_buf_t *out);

void mg_resp_stream_free(mg_resp_stream_t *st);


#endif /* _MG_RESPONSES_H_INCLUDED_ */
