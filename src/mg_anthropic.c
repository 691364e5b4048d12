/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_anthropic.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"
#include "mg_json.h"


#define MG_A_ERRLEN  200


static int mg_a_req_check(json_t *in, mg_xerror_t *err);
static int mg_a_req_head(json_t *in, const mg_anthropic_opts_t *o,
    json_t *req, mg_xerror_t *err);
static int mg_a_req_messages(json_t *in, json_t *req, mg_xerror_t *err);
static int mg_a_req_blocks(void *data, int kind, json_t *msgs, json_t *m,
    size_t i, json_t *blocks, mg_xerror_t *err);
static int mg_a_req_assistant(json_t *m, json_t *blocks, size_t i,
    mg_xerror_t *err);
static int mg_a_req_tool_result(json_t *m, json_t *blocks, size_t i,
    mg_xerror_t *err);
static int mg_a_req_content(json_t *content, unsigned allow, json_t *blocks,
    size_t i, mg_xerror_t *err);
static const mg_x_content_t  mg_a_content;
static int mg_a_req_image(json_t *part, json_t **block, size_t i, size_t j,
    mg_xerror_t *err);
static int mg_a_req_file(json_t *part, json_t **block, size_t i, size_t j,
    mg_xerror_t *err);
static json_t *mg_a_base64_source(const char *type, const char *mt,
    size_t mt_len, const char *data, size_t data_len);
static json_t *mg_a_tool_id(json_t *id);
static int mg_a_results_first(json_t *blocks);
static json_t *mg_a_simplify(json_t *blocks);
static int mg_a_req_tools(json_t *in, json_t *req, mg_xerror_t *err);
static int mg_a_req_tool_choice(json_t *in, json_t *req, size_t ntools,
    mg_xerror_t *err);
static int mg_a_req_params(json_t *in, json_t *req, int *stream,
    int *include_usage, mg_xerror_t *err);
static int mg_a_req_output(json_t *in, json_t *req, mg_xerror_t *err);

static const char *mg_a_finish(const char *reason);
static json_t *mg_a_usage(long long input, long long output,
    long long cache_read, long long cache_creation);
static void mg_a_error_map(int status, json_t *body, mg_xerror_t *err);

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


/* the request */

int
mg_anthropic_request(const char *body, size_t len,
    const mg_anthropic_opts_t *o, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    int           rc;
    json_t       *in, *req;
    json_error_t  jerr;

    *stream = 0;
    *include_usage = 0;

    /* plain text chats need no tree */

    if (o && !o->full && o->model && o->model_len) {
        rc = mg_xf_try(MG_XF_ANTHROPIC, o->model, o->model_len,
                       (o->default_max_tokens > 0) ? o->default_max_tokens
                                                   : MG_ANTHROPIC_MAX_TOKENS,
                       o->max_out, body, len, out, stream, include_usage,
                       err);

        if (rc != MG_XF_DECLINED) {
            return rc;
        }
    }

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    if (in == NULL) {
        return mg_x_bad(err, NULL, "The request body is not valid JSON: %s",
                        jerr.text);
    }

    req = NULL;

    if (!json_is_object(in)) {
        rc = mg_x_bad(err, NULL, "The request body must be a JSON object.");
        goto done;
    }

    req = json_object();
    if (req == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_a_req_check(in, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_a_req_head(in, o, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_a_req_messages(in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_a_req_tools(in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_a_req_params(in, req, stream, include_usage, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_x_dump_max(req, out, 0, mg_x_out_max(o ? o->max_out : 0),
                       "anthropic", err);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(req);
    json_decref(in);

    return rc;
}


/* OpenAI features without an Anthropic counterpart: refused, not dropped */

static int
mg_a_req_check(json_t *in, mg_xerror_t *err)
{
    json_t  *v;

    v = mg_x_get(in, "n");
    if (v && (!json_is_integer(v) || json_integer_value(v) != 1)) {
        return mg_x_bad(err, "n", "n other than 1 is not supported by this "
                        "model's backend.");
    }

    return mg_x_req_check(in, 1, err);
}


static int
mg_a_req_head(json_t *in, const mg_anthropic_opts_t *o, json_t *req,
    mg_xerror_t *err)
{
    int      rc;
    long     n;
    json_t  *v;

    if (o && o->model && o->model_len) {
        v = json_stringn(o->model, o->model_len);

    } else {
        v = json_object_get(in, "model");

        if (!json_is_string(v)) {
            return mg_x_bad(err, "model", "model must be a string.");
        }

        json_incref(v);
    }

    if (mg_x_set(req, "model", v) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    /* Anthropic requires a limit */

    rc = mg_x_max_tokens(in, &v, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (v) {
        json_incref(v);

    } else {
        n = (o && o->default_max_tokens > 0) ? o->default_max_tokens
                                              : MG_ANTHROPIC_MAX_TOKENS;
        v = json_integer(n);
    }

    return mg_x_set(req, "max_tokens", v);
}


/*
 * The messages (mg_x_messages() walks them) to "system" and "messages";
 * tool results go first in a user turn, and a lone plain text block is
 * written as a string.
 */

static int
mg_a_req_messages(json_t *in, json_t *req, mg_xerror_t *err)
{
    int      rc;
    size_t   i;
    json_t  *system, *out, *blocks, *msg;

    system = json_array();
    out = json_array();

    if (system == NULL || out == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_x_messages(in, "assistant", "content", mg_a_req_blocks, NULL,
                       system, out, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    json_array_foreach(out, i, msg) {
        blocks = json_object_get(msg, "content");

        if (mg_x_streq(json_string_value(json_object_get(msg, "role")),
                       "user")
            && mg_a_results_first(blocks) != MG_X_OK)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

        if (mg_x_set(msg, "content", mg_a_simplify(blocks)) != MG_X_OK) {
            rc = MG_X_NOMEM;
            goto done;
        }
    }

    if (json_array_size(system)
        && mg_x_set(req, "system", mg_a_simplify(system)) != MG_X_OK)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = json_object_set(req, "messages", out) == 0 ? MG_X_OK : MG_X_NOMEM;

done:

    json_decref(out);
    json_decref(system);

    return rc;
}


/* the blocks of one message, by its kind */

static int
mg_a_req_blocks(void *data, int kind, json_t *msgs, json_t *m, size_t i,
    json_t *blocks, mg_xerror_t *err)
{
    switch (kind) {

    case MG_X_SYSTEM:
        return mg_a_req_content(json_object_get(m, "content"), 0,
                                blocks, i, err);

    case MG_X_USER:
        return mg_a_req_content(json_object_get(m, "content"),
                                MG_X_PART_IMAGE | MG_X_PART_FILE, blocks,
                                i, err);

    case MG_X_ASSISTANT:
        return mg_a_req_assistant(m, blocks, i, err);

    default:
        return mg_a_req_tool_result(m, blocks, i, err);
    }
}


static int
mg_a_req_assistant(json_t *m, json_t *blocks, size_t i, mg_xerror_t *err)
{
    int      rc;
    size_t   k;
    json_t  *calls, *c, *id, *name, *input, *b;

    rc = mg_x_assistant(&mg_a_content, NULL, m, 0, blocks, i, &calls, err);
    if (rc != MG_X_OK || calls == NULL) {
        return rc;
    }

    json_array_foreach(calls, k, c) {
        rc = mg_x_tool_call(c, i, k, &id, &name, &input, err);
        if (rc != MG_X_OK) {
            return rc;
        }

        id = mg_a_tool_id(id);

        b = id ? json_pack("{s:s,s:O,s:O,s:O}", "type", "tool_use", "id",
                           id, "name", name, "input", input)
               : NULL;

        json_decref(id);
        json_decref(input);

        if (b == NULL || json_array_append_new(blocks, b) != 0) {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


static int
mg_a_req_tool_result(json_t *m, json_t *blocks, size_t i, mg_xerror_t *err)
{
    int      rc;
    json_t  *id, *content, *b;

    id = json_object_get(m, "tool_call_id");

    if (!json_is_string(id)) {
        return mg_x_bad(err, "messages", "messages[%zu].tool_call_id must be "
                        "a string.", i);
    }

    id = mg_a_tool_id(id);
    content = json_array();
    b = json_object();

    if (id == NULL || content == NULL || b == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_a_req_content(json_object_get(m, "content"),
                          MG_X_PART_IMAGE, content, i, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (mg_x_set_str(b, "type", "tool_result") != MG_X_OK
        || json_object_set(b, "tool_use_id", id) != 0)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    /* an empty result is sent without content: "" is not a valid block */

    if (json_array_size(content)
        && mg_x_set(b, "content", mg_a_simplify(content)) != MG_X_OK)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = json_array_append(blocks, b) == 0 ? MG_X_OK : MG_X_NOMEM;

done:

    json_decref(b);
    json_decref(content);
    json_decref(id);

    return rc;
}


static json_t *
mg_a_text_block(json_t *s)
{
    return json_pack("{s:s,s:O}", "type", "text", "text", s);
}


static int
mg_a_req_media(void *data, unsigned kind, json_t *part, size_t i, size_t j,
    json_t **block, mg_xerror_t *err)
{
    if (kind == MG_X_PART_IMAGE) {
        return mg_a_req_image(part, block, i, j, err);
    }

    return mg_a_req_file(part, block, i, j, err);
}


/* prompt caching markers, as Anthropic-aware clients send them */

static int
mg_a_req_add(void *data, unsigned allow, json_t *part, json_t *b,
    json_t *blocks)
{
    json_t  *v;

    v = json_object_get(part, "cache_control");

    if (json_is_object(v) && json_object_set(b, "cache_control", v) != 0) {
        json_decref(b);
        return MG_X_NOMEM;
    }

    return json_array_append_new(blocks, b) == 0 ? MG_X_OK : MG_X_NOMEM;
}


static const mg_x_content_t  mg_a_content = {
    mg_a_text_block, mg_a_req_media, mg_a_req_add, 0
};


/* a message's content, a string or an array of parts, appended as blocks */

static int
mg_a_req_content(json_t *content, unsigned allow, json_t *blocks, size_t i,
    mg_xerror_t *err)
{
    return mg_x_content(&mg_a_content, NULL, content, allow, blocks, i, err);
}


static int
mg_a_req_image(json_t *part, json_t **block, size_t i, size_t j,
    mg_xerror_t *err)
{
    int            rc;
    json_t        *src, *b;
    mg_x_image_t   im;

    rc = mg_x_image_url(part, i, j, &im, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (im.data) {
        src = mg_a_base64_source("base64", im.mt, im.mt_len, im.b64,
                                 im.b64_len);

    } else if (im.http) {
        src = json_pack("{s:s,s:O}", "type", "url", "url", im.url);

    } else {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: an "
                        "image URL must be an http(s) or a base64 data URL.",
                        i, j);
    }

    if (src == NULL) {
        return MG_X_NOMEM;
    }

    b = json_pack("{s:s,s:O}", "type", "image", "source", src);

    json_decref(src);

    if (b == NULL) {
        return MG_X_NOMEM;
    }

    *block = b;

    return MG_X_OK;
}


/* a PDF given inline becomes a document block; file ids mean nothing here */

static int
mg_a_req_file(json_t *part, json_t **block, size_t i, size_t j,
    mg_xerror_t *err)
{
    int           rc;
    json_t       *src, *b;
    mg_x_file_t   f;

    rc = mg_x_file_data(part, i, j, &f, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (!mg_x_file_is_pdf(&f)
        && (f.mt == NULL || f.mt_len != sizeof("application/pdf") - 1
            || strncasecmp(f.mt, "application/pdf", f.mt_len) != 0))
    {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: only "
                        "PDF files are supported by this model's backend.",
                        i, j);
    }

    src = mg_a_base64_source("base64", "application/pdf",
                             sizeof("application/pdf") - 1, f.data,
                             f.data_len);
    if (src == NULL) {
        return MG_X_NOMEM;
    }

    b = json_pack("{s:s,s:O}", "type", "document", "source", src);

    json_decref(src);

    if (b == NULL) {
        return MG_X_NOMEM;
    }

    *block = b;

    return MG_X_OK;
}


/* media types lower-cased, and the common "image/jpg" made right */

static json_t *
mg_a_base64_source(const char *type, const char *mt, size_t mt_len,
    const char *data, size_t data_len)
{
    char    buf[64];
    size_t  i;

    if (mt_len < sizeof(buf)) {
        for (i = 0; i < mt_len; i++) {
            buf[i] = (mt[i] >= 'A' && mt[i] <= 'Z') ? mt[i] + 32 : mt[i];
        }

        mt = buf;

        if (mt_len == 9 && memcmp(buf, "image/jpg", 9) == 0) {
            mt = "image/jpeg";
            mt_len = 10;
        }
    }

    return json_pack("{s:s,s:s%,s:s%}", "type", type, "media_type", mt,
                     mt_len, "data", data, data_len);
}


/*
 * Anthropic's tool use ids must match ^[a-zA-Z0-9_-]+$; other clients and
 * models make ids such as "functions.get_weather:0".  A call and its result
 * go through the same mapping, so they still pair.  A new reference.
 */

static json_t *
mg_a_tool_id(json_t *id)
{
    char        *p;
    size_t       i, n;
    json_t      *v;
    const char  *s;

    s = json_string_value(id);
    n = json_string_length(id);

    for (i = 0; i < n; i++) {
        if (!mg_x_id_char(s[i])) {
            break;
        }
    }

    if (i == n) {
        return json_incref(id);
    }

    p = malloc(n);
    if (p == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        p[i] = mg_x_id_char(s[i]) ? s[i] : '_';
    }

    v = json_stringn(p, n);

    free(p);

    return v;
}


/*
 * Anthropic wants a user turn's tool results before anything else in it;
 * a user message merged into the results (or sent between a call and its
 * result) would put text first.  The order among results is kept.
 */

static int
mg_a_results_first(json_t *blocks)
{
    int          rc;
    size_t       i;
    json_t      *sorted, *b;
    const char  *type;

    sorted = json_array();
    if (sorted == NULL) {
        return MG_X_NOMEM;
    }

    rc = MG_X_OK;

    json_array_foreach(blocks, i, b) {
        type = json_string_value(json_object_get(b, "type"));

        if (mg_x_streq(type, "tool_result")
            && json_array_append(sorted, b) != 0)
        {
            rc = MG_X_NOMEM;
        }
    }

    json_array_foreach(blocks, i, b) {
        type = json_string_value(json_object_get(b, "type"));

        if (!mg_x_streq(type, "tool_result")
            && json_array_append(sorted, b) != 0)
        {
            rc = MG_X_NOMEM;
        }
    }

    if (rc == MG_X_OK
        && (json_array_clear(blocks) != 0
            || json_array_extend(blocks, sorted) != 0))
    {
        rc = MG_X_NOMEM;
    }

    json_decref(sorted);

    return rc;
}


/* a lone plain text block as a string, the usual shape; a new reference */

static json_t *
mg_a_simplify(json_t *blocks)
{
    json_t  *b;

    b = json_array_get(blocks, 0);

    if (json_array_size(blocks) == 1 && json_object_size(b) == 2
        && mg_x_streq(json_string_value(json_object_get(b, "type")), "text")
        && json_is_string(json_object_get(b, "text")))
    {
        return json_incref(json_object_get(b, "text"));
    }

    return json_incref(blocks);
}


static int
mg_a_req_tools(json_t *in, json_t *req, mg_xerror_t *err)
{
    int          rc;
    size_t       i;
    json_t      *tools, *out, *t, *name, *desc, *params, *schema, *b, *v;

    tools = mg_x_get(in, "tools");

    if (tools == NULL) {
        return mg_a_req_tool_choice(in, req, 0, err);
    }

    if (!json_is_array(tools)) {
        return mg_x_bad(err, "tools", "tools must be an array.");
    }

    out = json_array();
    if (out == NULL) {
        return MG_X_NOMEM;
    }

    b = NULL;
    schema = NULL;

    json_array_foreach(tools, i, t) {
        rc = mg_x_tool_def(t, i, &name, &desc, &params, &v, err);
        if (rc != MG_X_OK) {
            goto done;
        }

        /* input_schema.type must be "object"; {} means "no arguments" */

        if (params == NULL) {
            schema = json_pack("{s:s,s:{}}", "type", "object",
                               "properties");

        } else if (json_object_get(params, "type") == NULL) {
            schema = json_copy(params);

            if (schema && mg_x_set_str(schema, "type", "object") != MG_X_OK)
            {
                json_decref(schema);
                schema = NULL;
            }

        } else {
            schema = json_incref(params);
        }

        b = json_object();

        if (schema == NULL || b == NULL
            || json_object_set(b, "name", name) != 0
            || (desc && json_object_set(b, "description", desc) != 0)
            || json_object_set(b, "input_schema", schema) != 0
            || (json_is_true(v) && json_object_set(b, "strict", v) != 0)
            || json_array_append(out, b) != 0)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

        json_decref(schema);
        json_decref(b);
        schema = NULL;
        b = NULL;
    }

    if (json_array_size(out) && json_object_set(req, "tools", out) != 0) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_a_req_tool_choice(in, req, json_array_size(out), err);

done:

    json_decref(schema);
    json_decref(b);
    json_decref(out);

    return rc;
}


static int
mg_a_req_tool_choice(json_t *in, json_t *req, size_t ntools,
    mg_xerror_t *err)
{
    int             rc;
    json_t         *tc, *ptc, *name;
    const char     *type;
    mg_x_choice_t   c;

    static const char  *types[] = { NULL, "auto", "any", "none", "tool" };

    rc = mg_x_tool_choice(in, ntools, &c, err);

    /* without tools there is nothing to choose from */

    if (rc != MG_X_OK || ntools == 0) {
        return rc;
    }

    type = types[c.kind];
    name = c.name;
    ptc = c.parallel;

    if (type == NULL) {
        if (!json_is_false(ptc)) {
            return MG_X_OK;
        }

        type = "auto";
    }

    tc = json_object();

    if (tc == NULL
        || mg_x_set_str(tc, "type", type) != MG_X_OK
        || (name && json_object_set(tc, "name", name) != 0)
        || (json_is_false(ptc) && strcmp(type, "none") != 0
            && mg_x_set(tc, "disable_parallel_tool_use", json_true())
               != MG_X_OK))
    {
        json_decref(tc);
        return MG_X_NOMEM;
    }

    return mg_x_set(req, "tool_choice", tc);
}


static int
mg_a_req_params(json_t *in, json_t *req, int *stream, int *include_usage,
    mg_xerror_t *err)
{
    int          rc;
    json_t      *v, *seq, *temp, *top_p, *md;
    const char  *key;

    rc = mg_x_stop(in, 0, &seq, err);

    if (rc == MG_X_OK) {
        rc = mg_x_sampling(in, &temp, &top_p, err);
    }

    if (rc != MG_X_OK) {
        json_decref(seq);
        return rc;
    }

    if ((seq && json_object_set(req, "stop_sequences", seq) != 0)
        || (temp && json_object_set(req, "temperature", temp) != 0)
        || (top_p && json_object_set(req, "top_p", top_p) != 0))
    {
        rc = MG_X_NOMEM;
    }

    json_decref(seq);
    json_decref(temp);
    json_decref(top_p);

    if (rc != MG_X_OK) {
        return rc;
    }

    /* not OpenAI's, but many clients send it for Anthropic models */

    v = mg_x_get(in, "top_k");

    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            return mg_x_bad(err, "top_k", "top_k must be a non-negative "
                            "integer.");
        }

        if (json_object_set(req, "top_k", v) != 0) {
            return MG_X_NOMEM;
        }
    }

    /* safety_identifier replaces user */

    key = "safety_identifier";
    v = mg_x_get(in, key);

    if (v == NULL) {
        key = "user";
        v = mg_x_get(in, key);
    }

    if (v) {
        if (!json_is_string(v)) {
            return mg_x_bad(err, key, "%s must be a string.", key);
        }

        md = json_pack("{s:O}", "user_id", v);

        if (mg_x_set(req, "metadata", md) != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    rc = mg_a_req_output(in, req, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    v = mg_x_get(in, "stream");

    if (v) {
        if (!json_is_boolean(v)) {
            return mg_x_bad(err, "stream", "stream must be a boolean.");
        }

        *stream = json_is_true(v);

        if (json_object_set(req, "stream", v) != 0) {
            return MG_X_NOMEM;
        }
    }

    v = mg_x_get(in, "stream_options");

    if (v) {
        if (!json_is_object(v)) {
            return mg_x_bad(err, "stream_options", "stream_options must be "
                            "an object.");
        }

        *include_usage = json_is_true(json_object_get(v, "include_usage"));
    }

    return MG_X_OK;
}


/*
 * response_format json_schema and reasoning_effort go to output_config
 * (format and effort).  json_object has no faithful equivalent: Anthropic's
 * JSON outputs need a schema with closed objects.
 */

static int
mg_a_req_output(json_t *in, json_t *req, mg_xerror_t *err)
{
    json_t      *rf, *re, *schema, *fmt, *oc;
    const char  *type, *s, *effort;

    rf = mg_x_get(in, "response_format");
    re = mg_x_get(in, "reasoning_effort");
    fmt = NULL;
    effort = NULL;

    if (rf) {
        type = json_string_value(json_object_get(rf, "type"));

        if (mg_x_streq(type, "json_schema")) {
            schema = json_object_get(json_object_get(rf, "json_schema"),
                                     "schema");

            if (!json_is_object(schema)) {
                return mg_x_bad(err, "response_format", "response_format."
                                "json_schema.schema must be an object.");
            }

            fmt = json_pack("{s:s,s:O}", "type", "json_schema", "schema",
                            schema);
            if (fmt == NULL) {
                return MG_X_NOMEM;
            }

        } else if (!mg_x_streq(type, "text")) {
            return mg_x_bad(err, "response_format", "response_format %s%s%s "
                            "is not supported by this model's backend; use "
                            "json_schema.", type ? "\"" : "",
                            type ? type : "without a type",
                            type ? "\"" : "");
        }
    }

    if (re) {
        s = json_string_value(re);

        if (mg_x_streq(s, "low") || mg_x_streq(s, "medium")
            || mg_x_streq(s, "high") || mg_x_streq(s, "xhigh"))
        {
            effort = s;

        } else if (mg_x_streq(s, "minimal")) {
            effort = "low";

        } else if (!mg_x_streq(s, "none")) {
            json_decref(fmt);
            return mg_x_bad(err, "reasoning_effort", "reasoning_effort must "
                            "be none, minimal, low, medium, high or xhigh.");
        }
    }

    if (fmt == NULL && effort == NULL) {
        return MG_X_OK;
    }

    oc = json_object();

    if (oc == NULL
        || (effort && mg_x_set_str(oc, "effort", effort) != MG_X_OK)
        || (fmt && json_object_set(oc, "format", fmt) != 0))
    {
        json_decref(fmt);
        json_decref(oc);
        return MG_X_NOMEM;
    }

    json_decref(fmt);

    return mg_x_set(req, "output_config", oc);
}


/* the response */

int
mg_anthropic_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc;
    size_t        i;
    char         *args;
    json_t       *in, *content, *b, *calls, *call, *msg, *res, *u, *v;
    json_t       *id;
    mg_buf_t      text;
    const char   *type;
    json_error_t  jerr;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    if (!json_is_object(in)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    type = json_string_value(json_object_get(in, "type"));

    if (mg_x_streq(type, "error")) {
        mg_a_error_map(0, in, err);
        json_decref(in);
        return MG_X_ERROR;
    }

    content = json_object_get(in, "content");

    if (!json_is_array(content)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    memset(&text, 0, sizeof(mg_buf_t));
    calls = NULL;
    msg = NULL;
    res = NULL;
    rc = MG_X_NOMEM;

    calls = json_array();
    if (calls == NULL) {
        goto done;
    }

    /* thinking and server tool blocks have no chat completions shape */

    json_array_foreach(content, i, b) {
        type = json_string_value(json_object_get(b, "type"));

        if (mg_x_streq(type, "text")) {
            v = json_object_get(b, "text");

            if (json_is_string(v)
                && mg_buf_append(&text, json_string_value(v),
                                 json_string_length(v))
                   != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        if (!mg_x_streq(type, "tool_use")) {
            continue;
        }

        v = json_object_get(b, "input");

        args = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
                 : strdup("{}");
        if (args == NULL) {
            goto done;
        }

        id = json_object_get(b, "id");
        v = json_object_get(b, "name");

        /* json_string_value() of a non-string is NULL, its length 0 */

        call = json_pack("{s:s%,s:s,s:{s:s%,s:s}}",
                         "id", json_is_string(id) ? json_string_value(id) : "",
                         json_string_length(id),
                         "type", "function",
                         "function",
                         "name", json_is_string(v) ? json_string_value(v) : "",
                         json_string_length(v),
                         "arguments", args);
        free(args);

        if (call == NULL || json_array_append_new(calls, call) != 0) {
            goto done;
        }
    }

    msg = json_object();

    if (msg == NULL
        || mg_x_set_str(msg, "role", "assistant") != MG_X_OK
        || mg_x_set(msg, "content",
                    (text.len == 0 && json_array_size(calls))
                    ? json_null()
                    : json_stringn(text.len ? text.data : "", text.len))
           != MG_X_OK
        || mg_x_set(msg, "refusal", json_null()) != MG_X_OK
        || (json_array_size(calls)
            && json_object_set(msg, "tool_calls", calls) != 0))
    {
        goto done;
    }

    v = json_object_get(in, "id");

    res = json_object();

    if (res == NULL
        || mg_x_set(res, "id",
                    mg_x_prefixed("chatcmpl-",
                                  json_is_string(v) ? json_string_value(v)
                                                    : "",
                                  json_string_length(v)))
           != MG_X_OK
        || mg_x_set_str(res, "object", "chat.completion") != MG_X_OK
        || mg_x_set(res, "created", json_integer(created)) != MG_X_OK
        || mg_x_set(res, "model",
                    json_stringn(model ? model : "", model ? model_len : 0))
           != MG_X_OK
        || mg_x_set(res, "choices",
                    json_pack("[{s:i,s:O,s:n,s:s}]", "index", 0,
                              "message", msg, "logprobs",
                              "finish_reason",
                              mg_a_finish(json_string_value(
                                  json_object_get(in, "stop_reason")))))
           != MG_X_OK)
    {
        goto done;
    }

    u = json_object_get(in, "usage");

    if (json_is_object(u)
        && mg_x_set(res, "usage",
                    mg_a_usage(mg_x_tokens(u, "input_tokens", 0),
                               mg_x_tokens(u, "output_tokens", 0),
                               mg_x_tokens(u, "cache_read_input_tokens", 0),
                               mg_x_tokens(u, "cache_creation_input_tokens",
                                           0)))
           != MG_X_OK)
    {
        goto done;
    }

    rc = mg_x_dump(res, out, 0);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    mg_buf_free(&text);
    json_decref(res);
    json_decref(msg);
    json_decref(calls);
    json_decref(in);

    return rc;
}


/* table 10.2; a new or unknown reason is a normal stop */

static const char *
mg_a_finish(const char *reason)
{
    if (reason == NULL) {
        return "stop";
    }

    if (strcmp(reason, "tool_use") == 0) {
        return "tool_calls";
    }

    if (strcmp(reason, "max_tokens") == 0
        || strcmp(reason, "model_context_window_exceeded") == 0)
    {
        return "length";
    }

    if (strcmp(reason, "refusal") == 0) {
        return "content_filter";
    }

    return "stop";
}


/* table 10.3: Anthropic's input_tokens exclude the cached ones */

void
mg_anthropic_usage(long long input, long long output, long long cache_read,
    long long cache_creation, mg_x_usage_t *u)
{
    u->prompt = input + cache_read + cache_creation;
    u->completion = output;
    u->cached = cache_read;
    u->cache_write = cache_creation;
}


static json_t *
mg_a_usage(long long input, long long output, long long cache_read,
    long long cache_creation)
{
    mg_x_usage_t  u;

    mg_anthropic_usage(input, output, cache_read, cache_creation, &u);

    return mg_x_usage_json(&u);
}


/* errors */

void
mg_anthropic_error(int status, const char *body, size_t len,
    mg_xerror_t *err)
{
    json_t  *j;

    j = (body && len) ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;

    mg_a_error_map(status, j, err);

    json_decref(j);
}


/*
 * status: the HTTP status, or 0 for an error that came inside a 200 (an
 * error body or stream event): its error.type then stands for the status.
 */

static void
mg_a_error_map(int status, json_t *body, mg_xerror_t *err)
{
    int          spend;
    size_t       k;
    json_t      *e;
    const char  *type, *msg, *code;

    static const struct {
        const char  *type;
        int          status;
    } types[] = {
        { "invalid_request_error", 400 },
        { "authentication_error", 401 },
        { "billing_error", 402 },
        { "permission_error", 403 },
        { "not_found_error", 404 },
        { "request_too_large", 413 },
        { "rate_limit_error", 429 },
        { "api_error", 500 },
        { "timeout_error", 504 },
        { "overloaded_error", 529 }
    };

    e = json_object_get(body, "error");
    type = json_string_value(json_object_get(e, "type"));
    msg = json_string_value(json_object_get(e, "message"));

    /* a spend limit is this account's, not the model's: say it as OpenAI
     * says an exhausted quota; another backend may still have budget */

    spend = mg_x_streq(json_string_value(json_object_get(
                           json_object_get(e, "details"), "error_code")),
                       "enforced_spend_limit_reached");

    if (msg == NULL || msg[0] == '\0') {
        msg = NULL;
    }

    if (status < 400 || status > 599) {
        status = 500;

        for (k = 0; type && k < sizeof(types) / sizeof(types[0]); k++) {
            if (strcmp(type, types[k].type) == 0) {
                status = types[k].status;
                break;
            }
        }
    }

    if (status == 529 || mg_x_streq(type, "overloaded_error")) {
        mg_xerror_set(err, 503, 1, "server_error", "overloaded", NULL,
                      "The model backend is overloaded%s%s", msg ? ": " : ".",
                      msg ? msg : "");

    } else if (status == 429 && spend) {
        mg_xerror_set(err, 429, 1, "insufficient_quota", "insufficient_quota",
                      NULL, "The model backend's spend limit is reached%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 429) {
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend is rate limited%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 401 || status == 403) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_auth_failed",
                      NULL, "backend authentication failed");

    } else if (status == 404) {
        mg_xerror_set(err, 404, 0, "invalid_request_error", "model_not_found",
                      "model", "The model backend does not know the "
                      "model%s%s", msg ? ": " : ".", msg ? msg : "");

    } else if (status == 413) {
        mg_xerror_set(err, 413, 0, "invalid_request_error",
                      "request_too_large", NULL, "%s",
                      msg ? msg : "The request is too large for the model "
                                  "backend.");

    } else if (status >= 500 || status == 402 || status == 408
               || status == 409)
    {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed (HTTP %d%s%s)%s%s", status,
                      type ? " " : "", type ? type : "", msg ? ": " : ".",
                      msg ? msg : "");

    } else {
        /* the client's request, as Anthropic judged it */

        code = (msg && strstr(msg, "prompt is too long"))
               ? "context_length_exceeded" : NULL;

        if (msg) {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "%s", msg);

        } else {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "The model backend rejected the request (HTTP "
                          "%d).", status);
        }
    }
}


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


void
mg_anthropic_stream_free(mg_anthropic_stream_t *st)
{
    free(st->model);
    free(st->prefix);
    free(st->tools);

    memset(st, 0, sizeof(mg_anthropic_stream_t));
}
