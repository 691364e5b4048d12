/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the gateway's memory stores and reads back, as JSON: the items of
 * one turn (ids given to input items), the history handed to
 * mg_resp_request(), and the list object of a response's input items.
 * The storage itself (Redis) is the glue's.  No nginx in here.
 */

#ifndef _MG_MEMORY_H_INCLUDED_
#define _MG_MEMORY_H_INCLUDED_

#include <stddef.h>

#include "mg_responses.h"


/*
 * The items a turn stores, appended to out one per line, compact JSON
 * (no line holds a newline): the input items (a JSON array, as
 * mg_resp_request() gives them), each given an id when it has none
 * ("msg_" for a message, "fco_" for a function call output, "item_"
 * otherwise), then the output items (a JSON array, as the answer gives
 * them).  *ninput gets the number of input items, *nitems all of them.
 * Returns MG_X_OK, MG_X_ERROR (not arrays of objects: a 500) or
 * MG_X_NOMEM; on an error nothing is appended.
 */
int mg_mem_turn(const char *input, size_t ilen, const char *output,
    size_t olen, mg_resp_id_pt id, void *data, mg_buf_t *out,
    size_t *ninput, size_t *nitems, mg_xerror_t *err);

/*
 * The elements of a compact JSON array (as jansson writes it: no
 * whitespace, no newline in a string) appended to out, one a line after
 * what out holds (a newline between); *n gets their number (out NULL:
 * only counted).  No parse: for items that have their ids already.
 * MG_X_OK or MG_X_NOMEM.
 */
int mg_mem_lines(const char *array, size_t len, mg_buf_t *out, size_t *n);

/* n stored items (each a JSON object) -> one JSON array, appended */
int mg_mem_array(const char *const *items, const size_t *lens, size_t n,
    mg_buf_t *out);

/* the number of elements of a compact JSON array (0 if it is none) */
size_t mg_mem_count(const char *array, size_t len);

/* 1 if compact JSON holds provider-only state (MG_RESP_STATE) */
int mg_mem_has_state(const char *p, size_t len);

/*
 * The index of the first of n stored items that starts a turn (a message
 * of role "user"); n when none does.  A history read only in part (its
 * older items left out) starts there, so that no turn is cut in two.
 */
size_t mg_mem_turn_start(const char *const *items, const size_t *lens,
    size_t n);

/*
 * GET /responses/{id}/input_items: the list object of n input items
 * (oldest first), in order "asc" or "desc" (NULL or empty: "desc"), at
 * most limit of them (1..100; 0: 20), those after the item whose id is
 * after (NULL or empty: from the first).  A bad order or limit, or an
 * unknown after, is a 400 naming the parameter.
 */
int mg_mem_list(const char *const *items, const size_t *lens, size_t n,
    const char *order, size_t order_len, const char *limit,
    size_t limit_len, const char *after, size_t after_len, mg_buf_t *out,
    mg_xerror_t *err);


/*
 * Items a client gives a conversation (POST /conversations, .../items):
 * a JSON array of input items, checked and stored as a Responses input
 * is (mg_resp_request()), ids given, appended to out one per line.
 * *n gets their number.  A bad item is a 400 naming "items".
 */
int mg_mem_items(const char *items, size_t len, mg_resp_id_pt id,
    void *data, mg_buf_t *out, size_t *n, mg_xerror_t *err);

/*
 * A conversation's metadata, as OpenAI allows it: an object of at most 16
 * string values, keys of at most 64 characters, values of at most 512;
 * its compact JSON appended to out ("{}" for NULL or JSON null).  Else a
 * 400 naming "metadata".
 */
int mg_mem_metadata(const char *p, size_t len, mg_buf_t *out,
    mg_xerror_t *err);

/* the conversation object, appended */
int mg_mem_conversation(const char *id, size_t id_len, long long created_at,
    const char *metadata, size_t metadata_len, mg_buf_t *out);

/*
 * A page of a list, in its order: {"object": "list", "data": [...],
 * "first_id", "last_id", "has_more"}, appended.
 */
int mg_mem_page(const char *const *items, const size_t *lens, size_t n,
    int has_more, mg_buf_t *out);


#endif /* _MG_MEMORY_H_INCLUDED_ */
