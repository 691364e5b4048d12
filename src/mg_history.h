/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The history limiter of gateway-held Responses: the items of a Responses
 * chain (the stored history followed by this turn's input) held to a
 * number of items and a number of bytes, as the request's truncation asks.
 * No nginx in here.
 *
 * A turn starts at a message item of role "user" (or at the very first
 * item) and runs to the next one.  The size of the items is the sum of
 * each item's length as compact JSON (as jansson writes it: what the
 * output holds, without the array's brackets and commas).
 *
 * truncation "disabled" (or absent, or JSON null): items over either limit
 * are refused.  truncation "auto": the oldest whole turns are dropped, one
 * at a time, until both limits hold, with two exceptions and one rule:
 *
 *   - system and developer messages before the first user message are
 *     kept (the client's instructions at the start of the chain);
 *   - the turn this request's first input item is in (for a request with
 *     no input, the last turn) is never dropped, and neither is any item
 *     that shares a call_id with one of this request's input items;
 *   - items sharing a call_id (a function_call and its
 *     function_call_output; any item with a string call_id but messages)
 *     stay or go together: once one of them is dropped, the others are
 *     dropped too, wherever their turn is.
 *
 * When even then the limits cannot hold (this request's input is too
 * large by itself), that is the refusal, in either mode.  A refusal is a
 * 400 invalid_request_error, code "context_length_exceeded", param
 * "input", whose message names the limit and its value.
 *
 * The work is O(n log n) in the number of items (one parse, one dump per
 * item, one sort of the call_ids, and linear passes).
 */

#ifndef _MG_HISTORY_H_INCLUDED_
#define _MG_HISTORY_H_INCLUDED_

#include <stddef.h>

#include "mg_translate.h"


typedef struct {
    size_t          max_items;  /* 0: no limit */
    size_t          max_bytes;  /* 0: no limit */
    const char     *truncation; /* "disabled", "auto"; NULL: "disabled" */
    size_t          truncation_len;
} mg_history_opts_t;


typedef struct {
    size_t          items;      /* kept */
    size_t          bytes;      /* their size, as above */
    size_t          history;    /* how many of the kept items are from the
                                   history (they come first) */
    size_t          dropped;    /* items dropped */
    size_t          turns;      /* whole turns dropped */
    size_t          steps;      /* item visits of all the passes (the
                                   sort's aside), at most 8 per item: the
                                   unit tests check the work is linear */
} mg_history_result_t;


/*
 * items: a JSON array of Responses items, the history followed by this
 * request's ninput input items.  The kept items, in their order, are
 * appended to kept as a JSON array (may be NULL); the kept items of the
 * history alone (what mg_resp_request() takes as its history) to history
 * (may be NULL).  Both are written even when nothing was dropped.
 *
 * Returns MG_X_OK, MG_X_ERROR (err set: a refusal as above; items not an
 * array of objects, or ninput larger than it, is a 400 with param
 * "input"; an unknown truncation a 400 with param "truncation") or
 * MG_X_NOMEM (err set to a 500); on an error nothing is appended and res
 * holds what the refused items counted (after the drops auto could make).
 */
int mg_history_limit(const char *items, size_t len, size_t ninput,
    const mg_history_opts_t *o, mg_buf_t *kept, mg_buf_t *history,
    mg_history_result_t *res, mg_xerror_t *err);


#endif /* _MG_HISTORY_H_INCLUDED_ */
