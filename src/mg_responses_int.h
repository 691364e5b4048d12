/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the parts of gateway-held Responses share (mg_responses_request.c,
 * mg_responses_items.c, mg_responses_answer.c, mg_responses_stream.c).
 */

#ifndef _MG_RESPONSES_INT_H_INCLUDED_
#define _MG_RESPONSES_INT_H_INCLUDED_

#include "mg_responses.h"


/* the request's fields a response object repeats, in its order; NULL ends */
extern const char  *mg_r_echo_keys[];


/*
 * chat's "messages": in's instructions, then the stored items hist, then
 * in's input, whose items are appended to items (mg_responses_items.c)
 */
int mg_r_messages(json_t *in, json_t *hist, json_t *chat, json_t *items,
    const char *replay, mg_xerror_t *err);

/*
 * The items' MG_RESP_STATE members taken out (into *saved, a new array;
 * NULL when none had one) and put back: what the client gets goes
 * without them.
 */
int mg_resp_state_take(json_t *output, json_t **saved);
void mg_resp_state_put(json_t *output, json_t *saved);

/* item's MG_RESP_STATE: {"origin": origin, "extra_content": extra} */
int mg_resp_state_set(json_t *item, const char *origin, json_t *extra);


typedef struct {
    const mg_resp_answer_opts_t  *o;
    unsigned                      n;      /* ids made so far */
} mg_resp_ids_t;


/* item gets a new "id" beginning with prefix */
int mg_resp_item_id(mg_resp_ids_t *ids, const char *prefix, json_t *item);

/*
 * item's "call_id": id when it is a non-empty string, else one made up,
 * "call_" and the item's id (unique as that is): a call without one could
 * not be answered, nor told from another in the history
 */
int mg_resp_call_id(json_t *item, json_t *id);

/* a chat usage object -> Responses' usage, or NULL (out of memory) */
json_t *mg_resp_usage(json_t *usage);

/*
 * The response object: status, incomplete_details {reason} (NULL: null),
 * the request's fields from echo (may be NULL) or their defaults, output
 * and usage (NULL: left out); NULL when out of memory.
 */
json_t *mg_resp_object(const mg_resp_answer_opts_t *o, json_t *echo,
    const char *status, const char *reason, json_t *output, json_t *usage);

/* o->echo parsed into *echo (NULL when none); a bad one is a 500 */
int mg_resp_echo(const mg_resp_answer_opts_t *o, json_t **echo,
    mg_xerror_t *err);


/*
 * The stream's events (mg_responses_stream.c): a new event with its
 * sequence number, written out and released; one about an output item;
 * the open message ended.  And its tool calls (mg_responses_calls.c):
 * a call's delta, the calls ended.
 */
json_t *mg_rs_event(mg_resp_stream_t *st, const char *type);
int mg_rs_put(mg_resp_stream_t *st, mg_buf_t *out, json_t *ev);
json_t *mg_rs_item_event(mg_resp_stream_t *st, const char *type,
    size_t index);
int mg_rs_close_message(mg_resp_stream_t *st, mg_buf_t *out,
    const char *status);
int mg_rs_call(mg_resp_stream_t *st, mg_buf_t *out, json_t *tc, size_t pos);
int mg_rs_close_calls(mg_resp_stream_t *st, mg_buf_t *out,
    const char *status);


#endif /* _MG_RESPONSES_INT_H_INCLUDED_ */
