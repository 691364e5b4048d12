/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Converse stream events (from the AWS eventstream decoder) -> OpenAI
 * chat completion chunks.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "mg_bedrock.h"
#include "mg_bedrock_int.h"
#include "mg_json.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


/* mg_b_stream_text(): not a plain text delta, for the tree */
#define MG_B_DECLINED  2


static int mg_b_stream_error(int raw, const char *name, size_t name_len,
    const char *payload, size_t payload_len, mg_xerror_t *err);
static int mg_b_stream_start(mg_bedrock_stream_t *st, mg_buf_t *out);
static int mg_b_stream_block_start(mg_bedrock_stream_t *st, json_t *j,
    mg_buf_t *out, mg_xerror_t *err);
static int mg_b_stream_text(mg_bedrock_stream_t *st, const char *payload,
    size_t len, mg_buf_t *out);
static int mg_b_stream_delta(mg_bedrock_stream_t *st, json_t *j,
    mg_buf_t *out);
static int mg_b_stream_stop(mg_bedrock_stream_t *st, json_t *j,
    mg_buf_t *out, mg_xerror_t *err);
static int mg_b_stream_metadata(mg_bedrock_stream_t *st, json_t *j,
    mg_buf_t *out);
static void mg_b_stream_counts(mg_bedrock_stream_t *st, json_t *j);
static int mg_b_stream_end(mg_bedrock_stream_t *st, mg_buf_t *out);


/* the stream */

void
mg_bedrock_stream_init(mg_bedrock_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    memset(st, 0, sizeof(mg_bedrock_stream_t));

    st->created = created;
    st->include_usage = include_usage != 0;
    st->total_tokens = -1;

    mg_bedrock_make_id(st->id, sizeof(st->id), created);

    /* init cannot fail: a failed copy is reported by the first event */

    st->model = mg_x_strndup(model, model_len);

    if (st->model == NULL) {
        st->nomem = 1;
        return;
    }

    st->model_len = model ? model_len : 0;
}


int
mg_bedrock_stream_event(mg_bedrock_stream_t *st,
    const char *message_type, size_t message_type_len,
    const char *event_type, size_t event_type_len, const char *payload,
    size_t payload_len, mg_buf_t *out, mg_xerror_t *err)
{
    int          rc;
    size_t       start;
    json_t      *j;

    if (st->nomem) {
        return mg_x_nomem(err);
    }

    if (event_type == NULL) {
        event_type_len = 0;
    }

    if (payload == NULL) {
        payload_len = 0;
    }

#define mg_b_is(s, n, lit)                                                    \
    ((n) == sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)

    if (st->done) {

        /*
         * without include_usage the stream ended at messageStop, and the
         * counts come after it: kept for the gateway's own accounting
         */

        if (!st->usage && payload_len
            && mg_b_is(event_type, event_type_len, "metadata"))
        {
            j = json_loadb(payload, payload_len, JSON_ALLOW_NUL, NULL);

            if (json_is_object(j)) {
                mg_b_stream_counts(st, j);
            }

            json_decref(j);
        }

        return MG_X_DONE;
    }

    if (message_type && message_type_len
        && !mg_b_is(message_type, message_type_len, "event"))
    {
        if (mg_b_is(message_type, message_type_len, "exception")
            || mg_b_is(message_type, message_type_len, "error"))
        {
            return mg_b_stream_error(mg_b_is(message_type, message_type_len,
                                             "error"),
                                     event_type, event_type_len, payload,
                                     payload_len, err);
        }

        /* a message type newer than this code */
        return MG_X_OK;
    }

#define mg_b_ev(lit)  mg_b_is(event_type, event_type_len, lit)

    if (st->started && !st->stopped && !st->full
        && mg_b_ev("contentBlockDelta"))
    {
        rc = mg_b_stream_text(st, payload, payload_len, out);

        if (rc != MG_B_DECLINED) {
            return (rc == MG_X_NOMEM) ? mg_x_nomem(err) : rc;
        }
    }

    j = payload_len ? json_loadb(payload, payload_len, JSON_ALLOW_NUL, NULL)
                    : json_object();

    if (!json_is_object(j)) {
        json_decref(j);
        return mg_x_bad_backend(err, "stream message");
    }

    start = out->len;

    if (mg_b_ev("messageStart")) {
        rc = st->started ? MG_X_OK : mg_b_stream_start(st, out);

    } else if (mg_b_ev("metadata")) {
        rc = mg_b_stream_metadata(st, j, out);

    } else if (!(mg_b_ev("contentBlockStart")
                 || mg_b_ev("contentBlockDelta")
                 || mg_b_ev("contentBlockStop") || mg_b_ev("messageStop")))
    {
        /* an event type newer than this code */
        rc = MG_X_OK;

    } else if (!st->started) {
        rc = mg_x_bad_backend(err, "stream (no messageStart)");

    } else if (st->stopped) {
        /* nothing goes after the finish chunk */
        rc = MG_X_OK;

    } else if (mg_b_ev("contentBlockStart")) {
        rc = mg_b_stream_block_start(st, j, out, err);

    } else if (mg_b_ev("contentBlockDelta")) {
        rc = mg_b_stream_delta(st, j, out);

    } else if (mg_b_ev("messageStop")) {
        rc = mg_b_stream_stop(st, j, out, err);

    } else {
        /* contentBlockStop */
        rc = MG_X_OK;
    }

#undef mg_b_ev
#undef mg_b_is

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
 * An exception's payload is {"message": ...}; an error message's words
 * come as its payload (the glue passes :error-message), maybe not JSON.
 */

static int
mg_b_stream_error(int raw, const char *name, size_t name_len,
    const char *payload, size_t payload_len, mg_xerror_t *err)
{
    char         text[sizeof(err->message)];
    size_t       n;
    json_t      *j, *v;
    const char  *msg;

    j = payload_len ? json_loadb(payload, payload_len, JSON_ALLOW_NUL, NULL)
                    : NULL;

    v = json_object_get(j, "message");

    if (!json_is_string(v)) {
        v = json_object_get(j, "Message");
    }

    msg = json_string_value(v);

    if (msg == NULL && j == NULL && payload_len && raw) {
        n = payload_len < sizeof(text) - 1 ? payload_len : sizeof(text) - 1;

        memcpy(text, payload, n);
        text[n] = '\0';

        msg = text;
    }

    mg_b_error_map(0, name, name_len, msg, err);

    json_decref(j);

    return MG_X_ERROR;
}


static int
mg_b_stream_start(mg_bedrock_stream_t *st, mg_buf_t *out)
{
    int      rc;
    json_t  *delta;

    /* every chunk goes on after these members */

    free(st->prefix);

    st->prefix = mg_x_chunk_head("", st->id, strlen(st->id), st->created,
                                 st->model, st->model_len, &st->prefix_len);
    if (st->prefix == NULL) {
        return MG_X_NOMEM;
    }

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
mg_b_stream_block_start(mg_bedrock_stream_t *st, json_t *j, mg_buf_t *out,
    mg_xerror_t *err)
{
    int          rc;
    json_t      *tu, *idx;

    tu = json_object_get(json_object_get(j, "start"), "toolUse");

    if (!json_is_object(tu)) {
        /* text blocks rarely start; other kinds are nothing a chat client
         * can take */
        return MG_X_OK;
    }

    idx = json_object_get(j, "contentBlockIndex");

    if (!json_is_integer(idx)) {
        return mg_x_bad_backend(err, "stream (a toolUse block without a "
                                "contentBlockIndex)");
    }

    rc = mg_x_tool_start(out, st->prefix, st->prefix_len,
                         json_object_get(tu, "name"),
                         json_object_get(tu, "toolUseId"),
                         json_integer_value(idx), &st->tools, &st->ntools,
                         &st->tools_cap);

    if (rc == MG_X_OK) {
        st->content = 1;
    }

    return rc;
}


/*
 * Text deltas are most of a stream's messages, and their text only needs
 * copying: the scanner validates the payload and finds delta.text, which
 * goes to the client as Bedrock escaped it, with no tree built.  Anything
 * else (tool input, an unusual payload) is declined, for the tree.
 */

static int
mg_b_stream_text(mg_bedrock_stream_t *st, const char *payload, size_t len,
    mg_buf_t *out)
{
    const char      *d;
    mg_json_field_t  top[1], delta[1];

    if (len == 0) {
        return MG_B_DECLINED;
    }

    memset(top, 0, sizeof(top));
    top[0].name = "delta";
    top[0].name_len = 5;

    if (mg_json_scan(payload, len, top, 1, 64, NULL) != MG_JSON_OK
        || top[0].type != MG_JSON_OBJECT
        || !mg_xf_parsable(payload, len))
    {
        return MG_B_DECLINED;
    }

    d = payload + top[0].start;

    memset(delta, 0, sizeof(delta));
    delta[0].name = "text";
    delta[0].name_len = 4;

    if (mg_json_scan(d, top[0].len, delta, 1, 64, NULL) != MG_JSON_OK
        || delta[0].type != MG_JSON_STRING)
    {
        return MG_B_DECLINED;
    }

    /* an empty text makes no chunk */

    if (delta[0].len == 2) {
        return MG_X_OK;
    }

    if (mg_x_chunk_content(out, st->prefix, st->prefix_len,
                           d + delta[0].start, delta[0].len)
        != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    st->content = 1;

    return MG_X_OK;
}


static int
mg_b_stream_delta(mg_bedrock_stream_t *st, json_t *j, mg_buf_t *out)
{
    int          rc;
    size_t       k;
    json_t      *d, *v, *fn;
    long long    idx;

    d = json_object_get(j, "delta");
    v = json_object_get(d, "text");

    if (json_is_string(v)) {
        return mg_x_text_chunk(out, st->prefix, st->prefix_len, v,
                               &st->content);
    }

    /* reasoningContent and citation deltas have no chat completions
     * shape */

    v = json_object_get(json_object_get(d, "toolUse"), "input");

    if (!json_is_string(v) || json_string_length(v) == 0
        || !json_is_integer(json_object_get(j, "contentBlockIndex")))
    {
        return MG_X_OK;
    }

    idx = json_integer_value(json_object_get(j, "contentBlockIndex"));

    /* the latest block of that index; input of a block that never started
     * as a toolUse has no call to go to */

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
mg_b_stream_stop(mg_bedrock_stream_t *st, json_t *j, mg_buf_t *out,
    mg_xerror_t *err)
{
    int          rc;
    json_t      *delta;
    const char  *reason, *finish;

    reason = json_string_value(json_object_get(j, "stopReason"));
    finish = mg_b_finish(reason);

    if (finish == NULL) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model produced malformed output (%s).", reason);
        return MG_X_ERROR;
    }

    delta = json_object();
    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_chunk(out, st->prefix, st->prefix_len, delta, finish);

    json_decref(delta);

    if (rc != MG_X_OK) {
        return rc;
    }

    st->stopped = 1;

    /* usage comes after the stop reason, in metadata */

    if (st->include_usage && !st->usage) {
        return MG_X_OK;
    }

    return mg_b_stream_end(st, out);
}


/* the counts are the whole response's; a second metadata replaces them */

static int
mg_b_stream_metadata(mg_bedrock_stream_t *st, json_t *j, mg_buf_t *out)
{
    mg_b_stream_counts(st, j);

    if (!st->usage || !st->stopped) {
        return MG_X_OK;
    }

    return mg_b_stream_end(st, out);
}


static void
mg_b_stream_counts(mg_bedrock_stream_t *st, json_t *j)
{
    json_t  *u;

    u = json_object_get(j, "usage");

    if (!json_is_object(u)) {
        return;
    }

    st->input_tokens = mg_x_tokens(u, "inputTokens", 0);
    st->output_tokens = mg_x_tokens(u, "outputTokens", 0);
    st->total_tokens = mg_x_tokens(u, "totalTokens", -1);
    st->cache_read_tokens = mg_x_tokens(u, "cacheReadInputTokens", 0);
    st->cache_write_tokens = mg_x_tokens(u, "cacheWriteInputTokens", 0);
    st->usage = 1;
}


/* the usage chunk when asked for and known, and [DONE] */

static int
mg_b_stream_end(mg_bedrock_stream_t *st, mg_buf_t *out)
{
    int      rc;
    json_t  *u;

    u = NULL;

    if (st->include_usage && st->usage) {
        u = mg_b_usage(st->input_tokens, st->output_tokens, st->total_tokens,
                       st->cache_read_tokens, st->cache_write_tokens);
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
mg_bedrock_stream_has_content(const mg_bedrock_stream_t *st)
{
    return st->content;
}


int
mg_bedrock_stream_usage(const mg_bedrock_stream_t *st, mg_x_usage_t *u)
{
    if (!st->usage) {
        return 0;
    }

    mg_bedrock_usage(st->input_tokens, st->output_tokens, st->total_tokens,
                     st->cache_read_tokens, st->cache_write_tokens, u);

    return 1;
}


int
mg_bedrock_stream_finish(mg_bedrock_stream_t *st, mg_buf_t *out)
{
    int     rc;
    size_t  start;

    if (st->nomem) {
        return MG_X_NOMEM;
    }

    if (st->done || !st->stopped) {
        return MG_X_OK;
    }

    start = out->len;

    rc = mg_b_stream_end(st, out);

    if (rc != MG_X_DONE) {
        out->len = start;
    }

    return rc;
}


void
mg_bedrock_stream_free(mg_bedrock_stream_t *st)
{
    free(st->model);
    free(st->prefix);
    free(st->tools);

    memset(st, 0, sizeof(mg_bedrock_stream_t));
}
