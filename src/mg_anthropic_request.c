/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI chat request -> Anthropic Messages request: messages, content
 * blocks, tools and parameters (see mg_anthropic.h).
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
