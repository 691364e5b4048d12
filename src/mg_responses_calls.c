/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses: the tool calls of a chat completions stream ->
 * their function_call items and argument events (mg_responses_stream.c
 * does the rest of the stream).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_responses.h"
#include "mg_responses_int.h"


/*
 * A tool call's delta: the first one of a call opens its item (and ends
 * the message before it); its arguments follow as they come.
 */

int
mg_rs_call(mg_resp_stream_t *st, mg_buf_t *out, json_t *tc, size_t pos)
{
    int              rc;
    size_t           k, n;
    json_t          *fn, *item, *ev, *v;
    long long        index;
    mg_resp_ids_t    ids;
    mg_resp_call_t  *c;

    v = json_object_get(tc, "index");
    index = json_is_integer(v) ? json_integer_value(v) : (long long) pos;
    fn = json_object_get(tc, "function");

    /* a delta mostly goes on with the last call: that one first */

    k = st->ncalls;

    if (k && st->calls[k - 1].index == index) {
        k--;

    } else {
        for (k = 0; k < st->ncalls; k++) {
            if (st->calls[k].index == index) {
                break;
            }
        }
    }

    if (k == st->ncalls) {
        rc = mg_rs_close_message(st, out, "completed");
        if (rc != MG_X_OK) {
            return rc;
        }

        if (st->ncalls == st->calls_cap) {
            n = st->calls_cap ? st->calls_cap * 2 : 4;
            c = realloc(st->calls, n * sizeof(mg_resp_call_t));

            if (c == NULL) {
                return MG_X_NOMEM;
            }

            st->calls = c;
            st->calls_cap = n;
        }

        item = json_pack("{s:s}", "type", "function_call");

        if (item == NULL || json_array_append_new(st->output, item) != 0) {
            return MG_X_NOMEM;
        }

        c = &st->calls[st->ncalls++];
        memset(c, 0, sizeof(mg_resp_call_t));
        c->index = index;
        c->output = json_array_size(st->output) - 1;

        ids.o = &st->o;
        ids.n = st->ids;

        if (mg_resp_item_id(&ids, "fc_", item) != MG_X_OK
            || mg_x_set_str(item, "status", "in_progress") != MG_X_OK
            || mg_x_set_str(item, "arguments", "") != MG_X_OK
            || mg_resp_call_id(item, json_object_get(tc, "id")) != MG_X_OK
            || mg_x_set(item, "name",
                        json_is_string(json_object_get(fn, "name"))
                        ? json_incref(json_object_get(fn, "name"))
                        : json_string(""))
               != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        st->ids = ids.n;

        ev = mg_rs_event(st, "response.output_item.added");

        if (ev == NULL
            || mg_x_set(ev, "output_index", json_integer(c->output))
               != MG_X_OK
            || json_object_set(ev, "item", item) != 0)
        {
            json_decref(ev);
            return MG_X_NOMEM;
        }

        rc = mg_rs_put(st, out, ev);
        if (rc != MG_X_OK) {
            return rc;
        }

    } else {
        c = &st->calls[k];
        item = json_array_get(st->output, c->output);

        /*
         * a backend may name the function after its first delta; a call
         * id it sends late is not taken: the client has been told one
         */

        v = json_object_get(fn, "name");

        if (json_is_string(v) && json_string_length(v)
            && json_string_length(json_object_get(item, "name")) == 0
            && json_object_set(item, "name", v) != 0)
        {
            return MG_X_NOMEM;
        }
    }

    /* provider-only state, for the stored item alone */

    v = json_object_get(tc, "extra_content");

    if (st->o.origin && c->extra == NULL && json_is_object(v)) {
        c->extra = json_incref(v);
    }

    v = json_object_get(fn, "arguments");

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return MG_X_OK;
    }

    ev = mg_rs_item_event(st, "response.function_call_arguments.delta",
                          c->output);

    if (ev == NULL || json_object_set(ev, "delta", v) != 0) {
        json_decref(ev);
        return MG_X_NOMEM;
    }

    rc = mg_rs_put(st, out, ev);
    if (rc != MG_X_OK) {
        return rc;
    }

    return mg_buf_append(&c->args, json_string_value(v),
                         json_string_length(v));
}


int
mg_rs_close_calls(mg_resp_stream_t *st, mg_buf_t *out, const char *status)
{
    int              rc;
    size_t           k;
    json_t          *item, *ev, *args;
    mg_resp_call_t  *c;

    for (k = 0; k < st->ncalls; k++) {
        c = &st->calls[k];
        item = json_array_get(st->output, c->output);

        args = json_stringn(c->args.data ? c->args.data : "", c->args.len);

        if (mg_x_set(item, "arguments", args) != MG_X_OK
            || mg_x_set_str(item, "status", status) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        ev = mg_rs_item_event(st, "response.function_call_arguments.done",
                              c->output);

        if (ev == NULL
            || json_object_set(ev, "name", json_object_get(item, "name"))
               != 0
            || json_object_set(ev, "arguments", args) != 0)
        {
            json_decref(ev);
            return MG_X_NOMEM;
        }

        rc = mg_rs_put(st, out, ev);
        if (rc != MG_X_OK) {
            return rc;
        }

        ev = mg_rs_event(st, "response.output_item.done");

        if (ev == NULL
            || mg_x_set(ev, "output_index", json_integer(c->output))
               != MG_X_OK
            || json_object_set(ev, "item", item) != 0)
        {
            json_decref(ev);
            return MG_X_NOMEM;
        }

        rc = mg_rs_put(st, out, ev);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    return MG_X_OK;
}
