/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Anthropic Messages stream events -> OpenAI chat completion chunks;
 * the common events without a JSON tree.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_anthropic.h"
#include "mg_anthropic_int.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"
#include "mg_json.h"


/* mg_a_stream_text(): not a plain text delta, for the general path */
#define MG_A_DECLINED  2


static int mg_a_stream_light(mg_anthropic_stream_t *st, const char *event,
    size_t event_len, const char *data, size_t len, mg_buf_t *out);
static int mg_a_stream_start_light(mg_anthropic_stream_t *st,
    const char *msg, size_t len, mg_buf_t *out);
static int mg_a_stream_delta_light(mg_anthropic_stream_t *st,
    const char *data, size_t len, const mg_json_field_t *f, mg_buf_t *out);
static int mg_a_stream_text(mg_anthropic_stream_t *st, const char *data,
    size_t len, mg_buf_t *out);
static int mg_a_stream_start(mg_anthropic_stream_t *st, json_t *j,
    mg_buf_t *out);
static int mg_a_stream_block_start(mg_anthropic_stream_t *st, json_t *j,
    mg_buf_t *out, mg_xerror_t *err);
static int mg_a_stream_delta(mg_anthropic_stream_t *st, json_t *j,
    mg_buf_t *out);
static int mg_a_stream_message_delta(mg_anthropic_stream_t *st, json_t *j,
    mg_buf_t *out);
static int mg_a_stream_stop(mg_anthropic_stream_t *st, mg_buf_t *out);


/* the stream */

void
mg_anthropic_stream_init(mg_anthropic_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    memset(st, 0, sizeof(mg_anthropic_stream_t));

    st->created = created;
    st->include_usage = include_usage != 0;

    /* init cannot fail: a failed copy is reported by the first event */

    st->model = mg_x_strndup(model, model_len);

    if (st->model == NULL) {
        st->nomem = 1;
        return;
    }

    st->model_len = model ? model_len : 0;
}


int
mg_anthropic_stream_event(mg_anthropic_stream_t *st, const char *event,
    size_t event_len, const char *data, size_t data_len, mg_buf_t *out,
    mg_xerror_t *err)
{
    int          rc;
    size_t       start, nlen;
    json_t      *j;
    const char  *name;

    if (st->nomem) {
        return mg_x_nomem(err);
    }

    if (st->done) {
        return MG_X_DONE;
    }

    if (event == NULL) {
        event_len = 0;
    }

    if (data == NULL) {
        if (event_len == 5 && memcmp(event, "error", 5) == 0) {
            mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                          "The model backend sent an empty error event.");
            return MG_X_ERROR;
        }

        /* comments only */

        return MG_X_OK;
    }

    if (st->started && !st->full
        && (event_len == 0
            || (event_len == 19
                && memcmp(event, "content_block_delta", 19) == 0)))
    {
        rc = mg_a_stream_text(st, data, data_len, out);

        if (rc == MG_X_NOMEM) {
            return mg_x_nomem(err);
        }

        if (rc != MG_A_DECLINED) {
            return rc;
        }
    }

    rc = st->full ? MG_A_DECLINED
                  : mg_a_stream_light(st, event, event_len, data, data_len,
                                      out);

    if (rc == MG_X_NOMEM) {
        return mg_x_nomem(err);
    }

    if (rc != MG_A_DECLINED) {
        return rc;
    }

    j = json_loadb(data, data_len, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(j)) {
        json_decref(j);
        return mg_x_bad_backend(err, "stream event");
    }

    /* the data's type repeats the event name; either one will do */

    if (event_len) {
        name = event;
        nlen = event_len;

    } else {
        name = json_string_value(json_object_get(j, "type"));
        nlen = name ? json_string_length(json_object_get(j, "type")) : 0;
    }

#define mg_a_is(lit)                                                          \
    (nlen == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)

    start = out->len;

    if (mg_a_is("error")
        || mg_x_streq(json_string_value(json_object_get(j, "type")), "error"))
    {
        mg_a_error_map(0, j, err);
        rc = MG_X_ERROR;

    } else if (mg_a_is("ping")) {
        rc = MG_X_OK;

    } else if (mg_a_is("message_start")) {
        rc = st->started ? MG_X_OK : mg_a_stream_start(st, j, out);

    } else if (!(mg_a_is("content_block_start")
                 || mg_a_is("content_block_delta")
                 || mg_a_is("content_block_stop")
                 || mg_a_is("message_delta") || mg_a_is("message_stop")))
    {
        /* an event type newer than this code */
        rc = MG_X_OK;

    } else if (!st->started) {
        rc = mg_x_bad_backend(err, "stream (no message_start)");

    } else if (mg_a_is("content_block_start")) {
        rc = mg_a_stream_block_start(st, j, out, err);

    } else if (mg_a_is("content_block_delta")) {
        rc = mg_a_stream_delta(st, j, out);

    } else if (mg_a_is("message_delta")) {
        rc = mg_a_stream_message_delta(st, j, out);

    } else if (mg_a_is("message_stop")) {
        rc = mg_a_stream_stop(st, out);

    } else {
        /* content_block_stop */
        rc = MG_X_OK;
    }

#undef mg_a_is

    json_decref(j);

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    if (rc != MG_X_OK && rc != MG_X_DONE) {
        out->len = start;
    }

    return rc;
}


/*
 * The events that carry nothing to translate (ping, content_block_stop,
 * message_stop, the start of a text block with no text yet) are only
 * validated, and checked not to be errors, without a tree; anything else
 * is declined for the general path.
 */

static int
mg_a_stream_light(mg_anthropic_stream_t *st, const char *event,
    size_t event_len, const char *data, size_t len, mg_buf_t *out)
{
    size_t           i, vlen;
    const char      *cb;
    mg_json_field_t  f[3];

#define mg_a_ev(lit)                                                          \
    (event_len == sizeof(lit) - 1 && memcmp(event, lit, sizeof(lit) - 1) == 0)

    if (!(mg_a_ev("ping") || mg_a_ev("content_block_stop")
          || mg_a_ev("message_stop") || mg_a_ev("content_block_start")
          || mg_a_ev("message_start") || mg_a_ev("message_delta")))
    {
        return MG_A_DECLINED;
    }

    for (i = 0; i < len && (data[i] == ' ' || data[i] == '\t'
                            || data[i] == '\n' || data[i] == '\r'); i++)
    {
        /* void */
    }

    if (i == len || data[i] != '{') {
        return MG_A_DECLINED;
    }

    memset(f, 0, sizeof(f));
    f[0].name = "type";
    f[0].name_len = 4;
    f[1].name = mg_a_ev("content_block_start") ? "content_block"
                : mg_a_ev("message_start") ? "message" : "delta";
    f[1].name_len = strlen(f[1].name);
    f[2].name = "usage";
    f[2].name_len = 5;

    /* a type written with escapes may spell "error": the general path */

    if (mg_json_scan(data, len, f, 3, 64, NULL) != MG_JSON_OK
        || !mg_xf_parsable(data, len)
        || (f[0].type == MG_JSON_STRING
            && (memchr(data + f[0].start, '\\', f[0].len)
                || (f[0].len == 7
                    && memcmp(data + f[0].start, "\"error\"", 7) == 0))))
    {
        return MG_A_DECLINED;
    }

    if (mg_a_ev("ping")) {
        return MG_X_OK;
    }

    if (mg_a_ev("message_start")) {
        if (st->started) {
            return MG_X_OK;
        }

        return (f[1].type == MG_JSON_OBJECT)
               ? mg_a_stream_start_light(st, data + f[1].start, f[1].len,
                                         out)
               : MG_A_DECLINED;
    }

    if (!st->started) {
        return MG_A_DECLINED;
    }

    if (mg_a_ev("message_delta")) {
        return mg_a_stream_delta_light(st, data, len, f, out);
    }

    if (mg_a_ev("content_block_stop")) {
        return MG_X_OK;
    }

    if (mg_a_ev("message_stop")) {
        return mg_a_stream_stop(st, out);
    }

    /* content_block_start: {"type":"text","text":""} makes no chunk */

    if (f[1].type != MG_JSON_OBJECT) {
        return MG_A_DECLINED;
    }

    cb = data + f[1].start;
    vlen = f[1].len;

    memset(f, 0, sizeof(f));
    f[0].name = "type";
    f[0].name_len = 4;
    f[1].name = "text";
    f[1].name_len = 4;

    if (mg_json_scan(cb, vlen, f, 2, 64, NULL) != MG_JSON_OK
        || f[0].type != MG_JSON_STRING || f[0].len != 6
        || memcmp(cb + f[0].start, "\"text\"", 6) != 0
        || f[1].type != MG_JSON_STRING || f[1].len != 2)
    {
        return MG_A_DECLINED;
    }

    return MG_X_OK;

#undef mg_a_ev
}


/*
 * message_start without a tree: the chunk prefix (the message id, the
 * client's model), the counts so far, and the role chunk, as
 * mg_a_stream_start() makes them; strings are copied as escaped.
 */

static int
mg_a_stream_start_light(mg_anthropic_stream_t *st, const char *msg,
    size_t len, mg_buf_t *out)
{
    int              rc;
    size_t           i, n;
    mg_buf_t         head;
    const char      *u;
    long long        c[4];
    mg_json_field_t  f[2];
    char             model[512];

    static const char  *counts[] = {
        "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens"
    };

    memset(f, 0, sizeof(f));
    f[0].name = "id";
    f[0].name_len = 2;
    f[1].name = "usage";
    f[1].name_len = 5;

    if (mg_json_scan(msg, len, f, 2, 64, NULL) != MG_JSON_OK) {
        return MG_A_DECLINED;
    }

    n = mg_json_escape(model, sizeof(model), st->model, st->model_len);

    if (n >= sizeof(model)) {
        return MG_A_DECLINED;
    }

    memset(c, 0, sizeof(c));

    if (f[1].type == MG_JSON_OBJECT) {
        u = msg + f[1].start;

        for (i = 0; i < 4; i++) {
            if (mg_x_tokens_raw(u, f[1].len, counts[i], 0, &c[i])
                != MG_X_OK)
            {
                return MG_A_DECLINED;
            }
        }
    }

    memset(&head, 0, sizeof(mg_buf_t));

    rc = mg_buf_append(&head, "{\"id\":\"chatcmpl-", 16);

    if (rc == MG_X_OK && f[0].type == MG_JSON_STRING) {
        rc = mg_buf_append(&head, msg + f[0].start + 1, f[0].len - 2);
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_printf(&head, "\",\"object\":\"chat.completion.chunk\","
                           "\"created\":%ld,\"model\":\"", st->created);
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(&head, model, n);
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(&head, "\"", 2);    /* and a NUL, for free() */
    }

    if (rc != MG_X_OK) {
        mg_buf_free(&head);
        return MG_X_NOMEM;
    }

    rc = mg_x_chunk_raw(out, head.data, head.len - 1,
                        "{\"role\":\"assistant\",\"content\":\"\"}", 33,
                        NULL, NULL);

    if (rc != MG_X_OK) {
        mg_buf_free(&head);
        return MG_X_NOMEM;
    }

    st->prefix = head.data;
    st->prefix_len = head.len - 1;

    st->input_tokens = c[0];
    st->output_tokens = c[1];
    st->cache_read_tokens = c[2];
    st->cache_creation_tokens = c[3];
    st->started = 1;

    return MG_X_OK;
}


/*
 * message_delta without a tree: the cumulative counts, and the finish
 * chunk for the first stop_reason, as mg_a_stream_message_delta() does.
 */

static int
mg_a_stream_delta_light(mg_anthropic_stream_t *st, const char *data,
    size_t len, const mg_json_field_t *f, mg_buf_t *out)
{
    size_t            n, start, vlen;
    const char       *u;
    long long         c[4];
    mg_json_type_t    type;
    char              reason[64];

    static const char  *counts[] = {
        "output_tokens", "input_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens"
    };

    c[0] = st->output_tokens;
    c[1] = st->input_tokens;
    c[2] = st->cache_read_tokens;
    c[3] = st->cache_creation_tokens;

    if (f[2].type == MG_JSON_OBJECT) {
        u = data + f[2].start;

        for (n = 0; n < 4; n++) {
            if (mg_x_tokens_raw(u, f[2].len, counts[n], c[n], &c[n])
                != MG_X_OK)
            {
                return MG_A_DECLINED;
            }
        }
    }

    reason[0] = '\0';

    if (f[1].type == MG_JSON_OBJECT) {
        mg_json_field_t  r;

        memset(&r, 0, sizeof(r));
        r.name = "stop_reason";
        r.name_len = 11;

        if (mg_json_scan(data + f[1].start, f[1].len, &r, 1, 64, NULL)
            != MG_JSON_OK)
        {
            return MG_A_DECLINED;
        }

        type = r.type;
        start = f[1].start + r.start;
        vlen = r.len;

        if (type == MG_JSON_STRING) {
            if (vlen - 2 >= sizeof(reason)
                || memchr(data + start, '\\', vlen))
            {
                return MG_A_DECLINED;
            }

            memcpy(reason, data + start + 1, vlen - 2);
            reason[vlen - 2] = '\0';
        }

        if (type == MG_JSON_STRING && !st->finished) {
            if (mg_x_chunk_raw(out, st->prefix, st->prefix_len, "{}", 2,
                               NULL, mg_a_finish(reason))
                != MG_X_OK)
            {
                return MG_X_NOMEM;
            }

            st->finished = 1;
        }
    }

    st->output_tokens = c[0];
    st->input_tokens = c[1];
    st->cache_read_tokens = c[2];
    st->cache_creation_tokens = c[3];

    return MG_X_OK;
}


/*
 * Text deltas are most of a stream's events, and their text only needs
 * copying: the scanner validates the event and finds the text, which goes
 * to the client as the backend escaped it, with no tree built.  Anything
 * else (or anything unusual) is declined, for the general path.
 */

static int
mg_a_stream_text(mg_anthropic_stream_t *st, const char *data, size_t len,
    mg_buf_t *out)
{
    const char      *d;
    mg_json_field_t  top[2], delta[2];

    memset(top, 0, sizeof(top));
    top[0].name = "type";
    top[0].name_len = 4;
    top[1].name = "delta";
    top[1].name_len = 5;

    if (mg_json_scan(data, len, top, 2, 64, NULL) != MG_JSON_OK
        || !mg_xf_parsable(data, len)
        || top[0].type != MG_JSON_STRING || top[0].len != 21
        || memcmp(data + top[0].start, "\"content_block_delta\"", 21) != 0
        || top[1].type != MG_JSON_OBJECT)
    {
        return MG_A_DECLINED;
    }

    d = data + top[1].start;

    memset(delta, 0, sizeof(delta));
    delta[0].name = "type";
    delta[0].name_len = 4;
    delta[1].name = "text";
    delta[1].name_len = 4;

    if (mg_json_scan(d, top[1].len, delta, 2, 64, NULL) != MG_JSON_OK
        || delta[0].type != MG_JSON_STRING || delta[0].len != 12
        || memcmp(d + delta[0].start, "\"text_delta\"", 12) != 0
        || delta[1].type != MG_JSON_STRING)
    {
        return MG_A_DECLINED;
    }

    /* an empty text makes no chunk */

    if (delta[1].len == 2) {
        return MG_X_OK;
    }

    if (mg_x_chunk_content(out, st->prefix, st->prefix_len,
                           d + delta[1].start, delta[1].len)
        != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    st->content = 1;

    return MG_X_OK;
}


static int
mg_a_stream_start(mg_anthropic_stream_t *st, json_t *j, mg_buf_t *out)
{
    int      rc;
    json_t  *msg, *id, *u, *delta;

    msg = json_object_get(j, "message");
    id = json_object_get(msg, "id");
    u = json_object_get(msg, "usage");

    /* every chunk goes on after these members */

    st->prefix = mg_x_chunk_head("chatcmpl-",
                                 json_is_string(id) ? json_string_value(id)
                                                    : "",
                                 json_string_length(id), st->created,
                                 st->model, st->model_len, &st->prefix_len);
    if (st->prefix == NULL) {
        return MG_X_NOMEM;
    }

    st->input_tokens = mg_x_tokens(u, "input_tokens", 0);
    st->output_tokens = mg_x_tokens(u, "output_tokens", 0);
    st->cache_read_tokens = mg_x_tokens(u, "cache_read_input_tokens", 0);
    st->cache_creation_tokens = mg_x_tokens(u, "cache_creation_input_tokens",
                                            0);

    delta = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_chunk(out, st->prefix, st->prefix_len, delta, NULL);

    json_decref(delta);

    if (rc == MG_X_OK) {
        st->started = 1;
    }

    return rc;
}


static int
mg_a_stream_block_start(mg_anthropic_stream_t *st, json_t *j, mg_buf_t *out,
    mg_xerror_t *err)
{
    int          rc;
    json_t      *cb, *idx;
    const char  *type;

    cb = json_object_get(j, "content_block");
    type = json_string_value(json_object_get(cb, "type"));

    if (mg_x_streq(type, "text")) {
        return mg_x_text_chunk(out, st->prefix, st->prefix_len,
                               json_object_get(cb, "text"), &st->content);
    }

    if (!mg_x_streq(type, "tool_use")) {
        /* thinking, server tools: nothing a chat client can take */
        return MG_X_OK;
    }

    idx = json_object_get(j, "index");

    if (!json_is_integer(idx)) {
        return mg_x_bad_backend(err, "stream (a tool_use block without an "
                                "index)");
    }

    rc = mg_x_tool_start(out, st->prefix, st->prefix_len,
                         json_object_get(cb, "name"),
                         json_object_get(cb, "id"),
                         json_integer_value(idx), &st->tools, &st->ntools,
                         &st->tools_cap);

    if (rc == MG_X_OK) {
        st->content = 1;
    }

    return rc;
}


static int
mg_a_stream_delta(mg_anthropic_stream_t *st, json_t *j, mg_buf_t *out)
{
    int          rc;
    size_t       k;
    json_t      *d, *v, *fn;
    long long    idx;
    const char  *type;

    d = json_object_get(j, "delta");
    type = json_string_value(json_object_get(d, "type"));

    if (mg_x_streq(type, "text_delta")) {
        return mg_x_text_chunk(out, st->prefix, st->prefix_len,
                               json_object_get(d, "text"), &st->content);
    }

    if (!mg_x_streq(type, "input_json_delta")) {
        /* thinking, signature and citations deltas */
        return MG_X_OK;
    }

    v = json_object_get(d, "partial_json");

    if (!json_is_string(v) || json_string_length(v) == 0
        || !json_is_integer(json_object_get(j, "index")))
    {
        return MG_X_OK;
    }

    idx = json_integer_value(json_object_get(j, "index"));

    /* the latest block of that index; a server tool's input is not ours */

    for (k = st->ntools; k > 0; k--) {
        if (st->tools[k - 1] == idx) {
            break;
        }
    }

    if (k == 0) {
        return MG_X_OK;
    }

    fn = json_pack("{s:O}", "arguments", v);
    if (fn == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_tool_delta(out, st->prefix, st->prefix_len, k - 1, fn, NULL, 0);

    json_decref(fn);

    return rc;
}


static int
mg_a_stream_message_delta(mg_anthropic_stream_t *st, json_t *j,
    mg_buf_t *out)
{
    int          rc;
    json_t      *u, *delta;
    const char  *reason;

    /* the counts there are cumulative: the last ones are the totals */

    u = json_object_get(j, "usage");

    st->output_tokens = mg_x_tokens(u, "output_tokens", st->output_tokens);
    st->input_tokens = mg_x_tokens(u, "input_tokens", st->input_tokens);
    st->cache_read_tokens = mg_x_tokens(u, "cache_read_input_tokens",
                                        st->cache_read_tokens);
    st->cache_creation_tokens = mg_x_tokens(u, "cache_creation_input_tokens",
                                            st->cache_creation_tokens);

    reason = json_string_value(json_object_get(json_object_get(j, "delta"),
                                               "stop_reason"));

    if (reason == NULL || st->finished) {
        return MG_X_OK;
    }

    delta = json_object();
    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_chunk(out, st->prefix, st->prefix_len, delta,
                    mg_a_finish(reason));

    json_decref(delta);

    if (rc == MG_X_OK) {
        st->finished = 1;
    }

    return rc;
}


static int
mg_a_stream_stop(mg_anthropic_stream_t *st, mg_buf_t *out)
{
    int      rc;
    json_t  *delta, *u;

    if (!st->finished) {
        delta = json_object();
        if (delta == NULL) {
            return MG_X_NOMEM;
        }

        rc = mg_x_chunk(out, st->prefix, st->prefix_len, delta, "stop");

        json_decref(delta);

        if (rc != MG_X_OK) {
            return rc;
        }

        st->finished = 1;
    }

    u = NULL;

    if (st->include_usage) {
        u = mg_a_usage(st->input_tokens, st->output_tokens,
                       st->cache_read_tokens, st->cache_creation_tokens);
        if (u == NULL) {
            return MG_X_NOMEM;
        }
    }

    rc = mg_x_stream_end(out, st->prefix, st->prefix_len, u);

    json_decref(u);

    if (rc != MG_X_OK) {
        return rc;
    }

    st->done = 1;

    return MG_X_DONE;
}


int
mg_anthropic_stream_has_content(const mg_anthropic_stream_t *st)
{
    return st->content;
}


int
mg_anthropic_stream_usage(const mg_anthropic_stream_t *st, mg_x_usage_t *u)
{
    if (!st->started) {
        return 0;
    }

    mg_anthropic_usage(st->input_tokens, st->output_tokens,
                       st->cache_read_tokens, st->cache_creation_tokens, u);

    return 1;
}


void
mg_anthropic_stream_free(mg_anthropic_stream_t *st)
{
    free(st->model);
    free(st->prefix);
    free(st->tools);

    memset(st, 0, sizeof(mg_anthropic_stream_t));
}
