/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses: a chat completions stream -> the Responses
 * events (see mg_responses.h).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_responses.h"
#include "mg_responses_int.h"


#define MG_RS_TEXT     1
#define MG_RS_REFUSAL  2


static int mg_rs_start(mg_resp_stream_t *st, mg_buf_t *out);
static int mg_rs_delta(mg_resp_stream_t *st, mg_buf_t *out, json_t *delta,
    int kind);
static int mg_rs_open_message(mg_resp_stream_t *st, mg_buf_t *out);
static json_t *mg_rs_part(mg_resp_stream_t *st, int kind);
static int mg_rs_open_part(mg_resp_stream_t *st, mg_buf_t *out, int kind);
static int mg_rs_close_part(mg_resp_stream_t *st, mg_buf_t *out);
static int mg_rs_items(mg_resp_stream_t *st, mg_buf_t *items);


int
mg_resp_stream_init(mg_resp_stream_t *st, const mg_resp_answer_opts_t *o,
    mg_xerror_t *err)
{
    memset(st, 0, sizeof(mg_resp_stream_t));

    st->o = *o;
    st->o.echo = NULL;
    st->o.echo_len = 0;
    st->msg = -1;

    /* the caller's strings need not live as long as the stream */

    st->o.id = mg_x_strndup(o->id, o->id ? strlen(o->id) : 0);
    st->o.model = mg_x_strndup(o->model, o->model ? strlen(o->model) : 0);
    st->o.origin = o->origin ? mg_x_strndup(o->origin, strlen(o->origin))
                             : NULL;
    st->output = json_array();

    if (st->o.id == NULL || st->o.model == NULL || st->output == NULL
        || (o->origin && st->o.origin == NULL))
    {
        return mg_x_nomem(err);
    }

    return mg_resp_echo(o, &st->echo, err);
}


int
mg_resp_stream_object(mg_resp_stream_t *st, mg_buf_t *out)
{
    int      rc;
    json_t  *res;

    res = mg_resp_object(&st->o, st->echo,
                         st->reason ? "incomplete" : "completed", st->reason,
                         st->output, st->usage);
    if (res == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_dump(res, out, 0);

    json_decref(res);

    return rc;
}


/* the items to store: the output, with the calls' provider-only state */

static int
mg_rs_items(mg_resp_stream_t *st, mg_buf_t *items)
{
    int      rc;
    size_t   i;
    json_t  *copy;

    for (i = 0; i < st->ncalls; i++) {
        if (st->calls[i].extra) {
            break;
        }
    }

    if (i == st->ncalls) {
        return mg_x_dump(st->output, items, 0);
    }

    copy = json_deep_copy(st->output);
    if (copy == NULL) {
        return MG_X_NOMEM;
    }

    rc = MG_X_OK;

    for (i = 0; i < st->ncalls && rc == MG_X_OK; i++) {
        if (st->calls[i].extra) {
            rc = mg_resp_state_set(json_array_get(copy, st->calls[i].output),
                                   st->o.origin, st->calls[i].extra);
        }
    }

    if (rc == MG_X_OK) {
        rc = mg_x_dump(copy, items, 0);
    }

    json_decref(copy);

    return rc;
}


void
mg_resp_stream_free(mg_resp_stream_t *st)
{
    size_t  i;

    for (i = 0; i < st->ncalls; i++) {
        mg_buf_free(&st->calls[i].args);
        json_decref(st->calls[i].extra);
    }

    free(st->calls);
    free((char *) st->o.id);
    free((char *) st->o.model);
    free((char *) st->o.origin);
    mg_buf_free(&st->part);
    json_decref(st->usage);
    json_decref(st->output);
    json_decref(st->echo);

    memset(st, 0, sizeof(mg_resp_stream_t));
}


int
mg_resp_stream_chunk(mg_resp_stream_t *st, json_t *chunk, mg_buf_t *out,
    mg_xerror_t *err)
{
    int          rc;
    size_t       i, len;
    json_t      *v, *choice, *delta, *calls, *tc, *usage;
    long long    seq;
    const char  *finish;

    if (st->failed) {
        *err = st->error;
        return st->failed;
    }

    if (st->done) {
        return MG_X_OK;
    }

    len = out->len;
    seq = st->seq;

    if (!json_is_object(chunk)) {
        rc = mg_x_bad_backend(err, "stream chunk");
        goto failed;
    }

    /* a provider's error in the stream: no answer, however it ends */

    v = mg_x_get(chunk, "error");

    if (v) {
        v = json_is_string(json_object_get(v, "message"))
            ? json_object_get(v, "message") : v;

        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed%s%s", json_is_string(v)
                      ? ": " : ".", json_is_string(v)
                      ? json_string_value(v) : "");
        rc = MG_X_ERROR;
        goto failed;
    }

    rc = mg_rs_start(st, out);
    if (rc != MG_X_OK) {
        goto failed;
    }

    v = mg_x_get(chunk, "usage");

    if (json_is_object(v)) {
        usage = mg_resp_usage(v);
        if (usage == NULL) {
            rc = MG_X_NOMEM;
            goto failed;
        }

        json_decref(st->usage);
        st->usage = usage;
    }

    /* the first choice only: the request asked for one */

    choice = NULL;

    json_array_foreach(json_object_get(chunk, "choices"), i, v) {
        if (json_integer_value(json_object_get(v, "index")) == 0) {
            choice = v;
            break;
        }
    }

    delta = json_object_get(choice, "delta");

    v = mg_x_get(delta, "content");

    if (json_is_string(v) && json_string_length(v)) {
        rc = mg_rs_delta(st, out, v, MG_RS_TEXT);
        if (rc != MG_X_OK) {
            goto failed;
        }
    }

    v = mg_x_get(delta, "refusal");

    if (json_is_string(v) && json_string_length(v)) {
        rc = mg_rs_delta(st, out, v, MG_RS_REFUSAL);
        if (rc != MG_X_OK) {
            goto failed;
        }
    }

    calls = mg_x_get(delta, "tool_calls");

    json_array_foreach(calls, i, tc) {
        rc = mg_rs_call(st, out, tc, i);
        if (rc != MG_X_OK) {
            goto failed;
        }
    }

    finish = json_string_value(json_object_get(choice, "finish_reason"));

    if (mg_x_streq(finish, "length")) {
        st->reason = "max_output_tokens";

    } else if (mg_x_streq(finish, "content_filter")) {
        st->reason = "content_filter";
    }

    return MG_X_OK;

failed:

    out->len = len;
    st->seq = seq;

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    st->failed = rc;
    st->error = *err;

    return rc;
}


int
mg_resp_stream_end(mg_resp_stream_t *st, mg_buf_t *out, mg_buf_t *items,
    mg_xerror_t *err)
{
    int          rc;
    size_t       len;
    json_t      *ev, *res;
    long long    seq;
    const char  *status;

    if (st->failed) {
        *err = st->error;
        return st->failed;
    }

    if (st->done) {
        return MG_X_DONE;
    }

    len = out->len;
    seq = st->seq;
    status = st->reason ? "incomplete" : "completed";

    rc = mg_rs_start(st, out);
    if (rc != MG_X_OK) {
        goto failed;
    }

    /* an answer is never empty: an empty text, as mg_resp_answer() says */

    if (json_array_size(st->output) == 0) {
        rc = mg_rs_open_message(st, out);
        if (rc != MG_X_OK) {
            goto failed;
        }

        rc = mg_rs_open_part(st, out, MG_RS_TEXT);
        if (rc != MG_X_OK) {
            goto failed;
        }
    }

    rc = mg_rs_close_message(st, out, status);
    if (rc != MG_X_OK) {
        goto failed;
    }

    rc = mg_rs_close_calls(st, out, status);
    if (rc != MG_X_OK) {
        goto failed;
    }

    res = mg_resp_object(&st->o, st->echo, status, st->reason, st->output,
                         st->usage);

    ev = mg_rs_event(st, st->reason ? "response.incomplete"
                                    : "response.completed");

    if (ev == NULL) {
        json_decref(res);
        rc = MG_X_NOMEM;
        goto failed;
    }

    /* res is the event's, or freed, either way */

    if (mg_x_set(ev, "response", res) != MG_X_OK) {
        json_decref(ev);
        rc = MG_X_NOMEM;
        goto failed;
    }

    rc = mg_rs_put(st, out, ev);
    if (rc != MG_X_OK) {
        goto failed;
    }

    if (items) {
        rc = mg_rs_items(st, items);
        if (rc != MG_X_OK) {
            goto failed;
        }
    }

    st->done = 1;

    return MG_X_DONE;

failed:

    out->len = len;
    st->seq = seq;

    st->failed = mg_x_nomem(err);
    st->error = *err;

    return st->failed;
}


int
mg_resp_stream_fail(mg_resp_stream_t *st, const char *message,
    mg_buf_t *out, mg_xerror_t *err)
{
    int           rc;
    size_t        len;
    json_t       *ev, *res;
    long long     seq;

    if (st->done) {
        return MG_X_DONE;
    }

    len = out->len;
    seq = st->seq;

    rc = mg_rs_start(st, out);
    if (rc != MG_X_OK) {
        goto failed;
    }

    res = mg_resp_object(&st->o, st->echo, "failed", NULL, st->output,
                         st->usage);

    if (res == NULL
        || mg_x_set(res, "error",
                    json_pack("{s:s,s:s}", "code", "server_error",
                              "message", message ? message
                              : "The model backend failed."))
           != MG_X_OK)
    {
        json_decref(res);
        goto failed;
    }

    ev = mg_rs_event(st, "response.failed");

    if (ev == NULL) {
        json_decref(res);
        goto failed;
    }

    /* res is the event's, or freed, either way */

    if (mg_x_set(ev, "response", res) != MG_X_OK) {
        json_decref(ev);
        goto failed;
    }

    rc = mg_rs_put(st, out, ev);
    if (rc != MG_X_OK) {
        goto failed;
    }

    st->done = 1;

    return MG_X_DONE;

failed:

    out->len = len;
    st->seq = seq;

    return mg_x_nomem(err);
}


/* {"type": type, "sequence_number": n}, members to follow */

json_t *
mg_rs_event(mg_resp_stream_t *st, const char *type)
{
    return json_pack("{s:s,s:I}", "type", type, "sequence_number",
                     (json_int_t) st->seq);
}


/* ev written out and released; its number is taken */

int
mg_rs_put(mg_resp_stream_t *st, mg_buf_t *out, json_t *ev)
{
    int          rc;
    const char  *type;

    if (ev == NULL) {
        return MG_X_NOMEM;
    }

    type = json_string_value(json_object_get(ev, "type"));

    rc = mg_buf_printf(out, "event: %s\ndata: ", type);

    if (rc == MG_X_OK) {
        rc = mg_x_dump(ev, out, 0);
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(out, "\n\n", 2);
    }

    json_decref(ev);

    st->seq++;

    return rc;
}


static int
mg_rs_start(mg_resp_stream_t *st, mg_buf_t *out)
{
    int           rc;
    json_t       *res, *none, *ev;
    const char  **type;

    static const char  *types[] = {
        "response.created", "response.in_progress", NULL
    };

    if (st->started) {
        return MG_X_OK;
    }

    none = json_array();
    res = none ? mg_resp_object(&st->o, st->echo, "in_progress", NULL,
                                none, NULL)
               : NULL;
    json_decref(none);

    if (res == NULL) {
        return MG_X_NOMEM;
    }

    for (type = types; *type; type++) {
        ev = mg_rs_event(st, *type);

        if (ev == NULL || json_object_set(ev, "response", res) != 0) {
            json_decref(ev);
            json_decref(res);
            return MG_X_NOMEM;
        }

        rc = mg_rs_put(st, out, ev);
        if (rc != MG_X_OK) {
            json_decref(res);
            return rc;
        }
    }

    json_decref(res);

    st->started = 1;

    return MG_X_OK;
}


/* an event about the item at index: output_index, then item_id */

json_t *
mg_rs_item_event(mg_resp_stream_t *st, const char *type, size_t index)
{
    json_t  *ev, *item;

    item = json_array_get(st->output, index);
    ev = mg_rs_event(st, type);

    if (ev == NULL
        || mg_x_set(ev, "output_index", json_integer(index)) != MG_X_OK
        || json_object_set(ev, "item_id", json_object_get(item, "id")) != 0)
    {
        json_decref(ev);
        return NULL;
    }

    return ev;
}


static int
mg_rs_delta(mg_resp_stream_t *st, mg_buf_t *out, json_t *delta, int kind)
{
    int      rc;
    json_t  *ev;

    if (st->msg < 0) {
        rc = mg_rs_open_message(st, out);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (st->kind != kind) {
        rc = mg_rs_close_part(st, out);
        if (rc != MG_X_OK) {
            return rc;
        }

        rc = mg_rs_open_part(st, out, kind);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    ev = mg_rs_item_event(st, kind == MG_RS_TEXT
                              ? "response.output_text.delta"
                              : "response.refusal.delta", st->msg);

    if (ev == NULL
        || mg_x_set(ev, "content_index", json_integer(st->content))
           != MG_X_OK
        || json_object_set(ev, "delta", delta) != 0
        || (kind == MG_RS_TEXT
            && mg_x_set(ev, "logprobs", json_array()) != MG_X_OK))
    {
        json_decref(ev);
        return MG_X_NOMEM;
    }

    rc = mg_rs_put(st, out, ev);
    if (rc != MG_X_OK) {
        return rc;
    }

    return mg_buf_append(&st->part, json_string_value(delta),
                         json_string_length(delta));
}


static int
mg_rs_open_message(mg_resp_stream_t *st, mg_buf_t *out)
{
    json_t         *item, *ev;
    mg_resp_ids_t   ids;

    item = json_pack("{s:s}", "type", "message");

    if (item == NULL || json_array_append_new(st->output, item) != 0) {
        return MG_X_NOMEM;
    }

    ids.o = &st->o;
    ids.n = st->ids;

    if (mg_resp_item_id(&ids, "msg_", item) != MG_X_OK
        || mg_x_set_str(item, "status", "in_progress") != MG_X_OK
        || mg_x_set_str(item, "role", "assistant") != MG_X_OK
        || mg_x_set(item, "content", json_array()) != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    st->ids = ids.n;
    st->msg = json_array_size(st->output) - 1;

    ev = mg_rs_event(st, "response.output_item.added");

    if (ev == NULL
        || mg_x_set(ev, "output_index", json_integer(st->msg)) != MG_X_OK
        || json_object_set(ev, "item", item) != 0)
    {
        json_decref(ev);
        return MG_X_NOMEM;
    }

    return mg_rs_put(st, out, ev);
}


/* the part as it is, its text or refusal what was said so far */

static json_t *
mg_rs_part(mg_resp_stream_t *st, int kind)
{
    json_t  *s;

    s = json_stringn(st->part.data ? st->part.data : "", st->part.len);
    if (s == NULL) {
        return NULL;
    }

    if (kind == MG_RS_TEXT) {
        return json_pack("{s:s,s:[],s:o}", "type", "output_text",
                         "annotations", "text", s);
    }

    return json_pack("{s:s,s:o}", "type", "refusal", "refusal", s);
}


static int
mg_rs_open_part(mg_resp_stream_t *st, mg_buf_t *out, int kind)
{
    json_t  *ev, *item;

    item = json_array_get(st->output, st->msg);

    st->kind = kind;
    st->content = json_array_size(json_object_get(item, "content"));
    mg_buf_reset(&st->part);

    ev = mg_rs_item_event(st, "response.content_part.added", st->msg);

    if (ev == NULL
        || mg_x_set(ev, "content_index", json_integer(st->content))
           != MG_X_OK
        || mg_x_set(ev, "part", mg_rs_part(st, kind)) != MG_X_OK)
    {
        json_decref(ev);
        return MG_X_NOMEM;
    }

    return mg_rs_put(st, out, ev);
}


static int
mg_rs_close_part(mg_resp_stream_t *st, mg_buf_t *out)
{
    int      rc;
    json_t  *part, *ev, *item;

    if (st->kind == 0) {
        return MG_X_OK;
    }

    part = mg_rs_part(st, st->kind);
    if (part == NULL) {
        return MG_X_NOMEM;
    }

    if (st->kind == MG_RS_TEXT) {
        ev = mg_rs_item_event(st, "response.output_text.done", st->msg);

        if (ev == NULL
            || mg_x_set(ev, "content_index", json_integer(st->content))
               != MG_X_OK
            || json_object_set(ev, "text", json_object_get(part, "text"))
               != 0
            || mg_x_set(ev, "logprobs", json_array()) != MG_X_OK)
        {
            json_decref(ev);
            ev = NULL;
        }

    } else {
        ev = mg_rs_item_event(st, "response.refusal.done", st->msg);

        if (ev == NULL
            || mg_x_set(ev, "content_index", json_integer(st->content))
               != MG_X_OK
            || json_object_set(ev, "refusal",
                               json_object_get(part, "refusal")) != 0)
        {
            json_decref(ev);
            ev = NULL;
        }
    }

    rc = mg_rs_put(st, out, ev);

    if (rc == MG_X_OK) {
        ev = mg_rs_item_event(st, "response.content_part.done", st->msg);

        if (ev == NULL
            || mg_x_set(ev, "content_index", json_integer(st->content))
               != MG_X_OK
            || json_object_set(ev, "part", part) != 0)
        {
            json_decref(ev);
            ev = NULL;
        }

        rc = mg_rs_put(st, out, ev);
    }

    item = json_array_get(st->output, st->msg);

    if (rc == MG_X_OK
        && json_array_append(json_object_get(item, "content"), part) != 0)
    {
        rc = MG_X_NOMEM;
    }

    json_decref(part);

    st->kind = 0;
    mg_buf_reset(&st->part);

    return rc;
}


int
mg_rs_close_message(mg_resp_stream_t *st, mg_buf_t *out,
    const char *status)
{
    int      rc;
    json_t  *item, *ev;

    if (st->msg < 0) {
        return MG_X_OK;
    }

    rc = mg_rs_close_part(st, out);
    if (rc != MG_X_OK) {
        return rc;
    }

    item = json_array_get(st->output, st->msg);

    if (mg_x_set_str(item, "status", status) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    ev = mg_rs_event(st, "response.output_item.done");

    if (ev == NULL
        || mg_x_set(ev, "output_index", json_integer(st->msg)) != MG_X_OK
        || json_object_set(ev, "item", item) != 0)
    {
        json_decref(ev);
        return MG_X_NOMEM;
    }

    st->msg = -1;

    return mg_rs_put(st, out, ev);
}
