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
} mg_resp_opts_t;


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
} mg_resp_answer_opts_t;


/*
 * A non-streamed chat completion (OpenAI's shape) -> a Responses object,
 * appended to response; its output items also to items (a JSON array; may
 * be NULL), for the caller to store.  finish_reason "length" makes the
 * response "incomplete" (reason max_output_tokens), "content_filter"
 * likewise (reason content_filter); its items are then "incomplete" too.
 * An answer that is not a chat completion is a 502.  Returns MG_X_OK,
 * MG_X_ERROR or MG_X_NOMEM; on an error nothing is appended.
 */
int mg_resp_answer(const char *body, size_t len,
    const mg_resp_answer_opts_t *o, mg_buf_t *response, mg_buf_t *items,
    mg_xerror_t *err);


#endif /* _MG_RESPONSES_H_INCLUDED_ */
