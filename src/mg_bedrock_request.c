/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI chat request -> Bedrock Converse request: messages, content
 * blocks and inference parameters (see mg_bedrock.h).
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


#define mg_b_alnum(c)                                                         \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                 \
     || ((c) >= '0' && (c) <= '9'))


static int mg_b_req_check(json_t *in, mg_xerror_t *err);
static int mg_b_req_messages(json_t *in, json_t *req, mg_b_req_t *ctx,
    mg_xerror_t *err);
static int mg_b_req_blocks(void *data, int kind, json_t *msgs, json_t *m,
    size_t i, json_t *blocks, mg_xerror_t *err);
static int mg_b_req_assistant(json_t *m, json_t *blocks, size_t i,
    mg_b_req_t *ctx, mg_xerror_t *err);
static int mg_b_req_tool_result(json_t *m, json_t *blocks, size_t i,
    mg_b_req_t *ctx, mg_xerror_t *err);
static int mg_b_req_content(json_t *content, unsigned allow, json_t *blocks,
    size_t i, mg_b_req_t *ctx, mg_xerror_t *err);
static const mg_x_content_t  mg_b_content;
static int mg_b_req_image(json_t *part, json_t **block, size_t i, size_t j,
    mg_xerror_t *err);
static int mg_b_req_file(json_t *part, json_t **block, size_t i, size_t j,
    mg_b_req_t *ctx, mg_xerror_t *err);
static const char *mg_b_image_format(const char *mt, size_t len);
static const char *mg_b_doc_format(const char *mt, size_t len);
static const char *mg_b_doc_format_ext(const char *name, size_t len);
static json_t *mg_b_doc_name(const char *name, size_t len, size_t n);
static int mg_b_req_params(json_t *in, json_t *req,
    const mg_bedrock_opts_t *o, int *stream, int *include_usage,
    mg_xerror_t *err);
static int mg_b_req_output(json_t *in, json_t *req, mg_xerror_t *err);


/* the request */

int
mg_bedrock_request(const char *body, size_t len,
    const mg_bedrock_opts_t *o, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    int           rc;
    json_t       *in, *req;
    mg_b_req_t    ctx;
    json_error_t  jerr;

    *stream = 0;
    *include_usage = 0;

    /* plain text chats need no tree */

    if (o == NULL || !o->full) {
        rc = mg_xf_try(MG_XF_BEDROCK, NULL, 0, o ? o->default_max_tokens : 0,
                       o ? o->max_out : 0, body, len, out, stream,
                       include_usage, err);

        if (rc != MG_XF_DECLINED) {
            return rc;
        }
    }

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    if (in == NULL) {
        return mg_x_bad(err, NULL, "The request body is not valid JSON: %s",
                        jerr.text);
    }

    memset(&ctx, 0, sizeof(mg_b_req_t));
    req = NULL;

    if (!json_is_object(in)) {
        rc = mg_x_bad(err, NULL, "The request body must be a JSON object.");
        goto done;
    }

    req = json_object();
    ctx.names = json_array();

    if (req == NULL || ctx.names == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_b_req_check(in, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_b_req_messages(in, req, &ctx, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_b_req_params(in, req, o, stream, include_usage, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_b_req_tools(in, req, &ctx, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_b_req_output(in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_x_dump_max(req, out, 0, mg_x_out_max(o ? o->max_out : 0),
                       "bedrock", err);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(ctx.names);
    json_decref(req);
    json_decref(in);

    return rc;
}


/* OpenAI features without a Converse counterpart: refused, not dropped */

static int
mg_b_req_check(json_t *in, mg_xerror_t *err)
{
    int      rc;
    json_t  *v;

    v = mg_x_get(in, "n");
    if (v && (!json_is_integer(v) || json_integer_value(v) != 1)) {
        return mg_x_bad(err, "n", "n other than 1 is not supported by this "
                        "model's backend.");
    }

    rc = mg_x_req_check(in, 1, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    /* Converse has no effort of its own for every model: "none" is what
     * a model does unasked, anything else would be dropped */

    v = mg_x_get(in, "reasoning_effort");

    if (v && !mg_x_streq(json_string_value(v), "none")) {
        return mg_x_bad(err, "reasoning_effort", "reasoning_effort is not "
                        "supported by this model's backend.");
    }

    return MG_X_OK;
}


/*
 * The messages (mg_x_messages() walks them) to "system" and "messages";
 * tool results go first in a user turn.
 */

static int
mg_b_req_messages(json_t *in, json_t *req, mg_b_req_t *ctx,
    mg_xerror_t *err)
{
    int      rc;
    size_t   i;
    json_t  *system, *out, *msg;

    system = json_array();
    out = json_array();

    if (system == NULL || out == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_x_messages(in, "assistant", "content", mg_b_req_blocks, ctx,
                       system, out, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    json_array_foreach(out, i, msg) {
        if (mg_x_streq(json_string_value(json_object_get(msg, "role")),
                       "user")
            && mg_b_results_first(json_object_get(msg, "content"))
               != MG_X_OK)
        {
            rc = MG_X_NOMEM;
            goto done;
        }
    }

    if (json_array_size(system)
        && json_object_set(req, "system", system) != 0)
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
mg_b_req_blocks(void *data, int kind, json_t *msgs, json_t *m, size_t i,
    json_t *blocks, mg_xerror_t *err)
{
    mg_b_req_t *ctx = data;

    switch (kind) {

    case MG_X_SYSTEM:
        return mg_b_req_content(json_object_get(m, "content"),
                                MG_X_PART_CACHE, blocks, i, ctx, err);

    case MG_X_USER:
        return mg_b_req_content(json_object_get(m, "content"),
                                MG_X_PART_IMAGE | MG_X_PART_FILE
                                | MG_X_PART_CACHE,
                                blocks, i, ctx, err);

    case MG_X_ASSISTANT:
        return mg_b_req_assistant(m, blocks, i, ctx, err);

    default:
        return mg_b_req_tool_result(m, blocks, i, ctx, err);
    }
}


static int
mg_b_req_assistant(json_t *m, json_t *blocks, size_t i, mg_b_req_t *ctx,
    mg_xerror_t *err)
{
    int      rc;
    size_t   k;
    json_t  *calls, *c, *id, *name, *input, *b;

    rc = mg_x_assistant(&mg_b_content, ctx, m, MG_X_PART_CACHE, blocks, i,
                        &calls, err);
    if (rc != MG_X_OK || calls == NULL) {
        return rc;
    }

    json_array_foreach(calls, k, c) {
        rc = mg_x_tool_call(c, i, k, &id, &name, &input, err);
        if (rc != MG_X_OK) {
            return rc;
        }

        /* a toolUseId must not be empty */

        if (json_string_length(id) == 0) {
            json_decref(input);
            return mg_x_bad(err, "messages", "messages[%zu].tool_calls[%zu]"
                            " needs a string id and function.name.", i, k);
        }

        id = mg_b_tool_id(id);

        b = id ? json_pack("{s:{s:O,s:O,s:O}}", "toolUse", "toolUseId", id,
                           "name", name, "input", input)
               : NULL;

        json_decref(id);
        json_decref(input);

        if (b == NULL || json_array_append_new(blocks, b) != 0
            || mg_b_add_name(ctx, name) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        ctx->tool_blocks = 1;
    }

    return MG_X_OK;
}


/*
 * A tool message becomes a toolResult: its text and image parts as text
 * and image blocks, or, when the content is a JSON object rather than
 * OpenAI's string or parts (unambiguous), one json block.  A string is
 * always text, even one that looks like JSON: guessing would change it.
 * OpenAI has no error flag for tool results, so "status" is not sent.
 */

static int
mg_b_req_tool_result(json_t *m, json_t *blocks, size_t i, mg_b_req_t *ctx,
    mg_xerror_t *err)
{
    int      rc;
    json_t  *id, *content, *results, *b;

    id = json_object_get(m, "tool_call_id");

    if (!json_is_string(id) || json_string_length(id) == 0) {
        return mg_x_bad(err, "messages", "messages[%zu].tool_call_id must be "
                        "a non-empty string.", i);
    }

    content = json_object_get(m, "content");

    id = mg_b_tool_id(id);
    results = json_array();
    b = NULL;

    if (id == NULL || results == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    if (json_is_object(content)) {
        if (json_array_append_new(results, json_pack("{s:O}", "json",
                                                     content))
            != 0)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

    } else {
        rc = mg_b_req_content(content, MG_X_PART_IMAGE, results, i,
                              ctx, err);
        if (rc != MG_X_OK) {
            goto done;
        }
    }

    /* an empty result stays an empty list: Bedrock refuses empty text */

    b = json_pack("{s:{s:O,s:O}}", "toolResult", "toolUseId", id,
                  "content", results);

    rc = (b && json_array_append(blocks, b) == 0) ? MG_X_OK : MG_X_NOMEM;

    ctx->tool_blocks = 1;

done:

    json_decref(b);
    json_decref(results);
    json_decref(id);

    return rc;
}


static json_t *
mg_b_text_block(json_t *s)
{
    return json_pack("{s:O}", "text", s);
}


static int
mg_b_req_media(void *data, unsigned kind, json_t *part, size_t i, size_t j,
    json_t **block, mg_xerror_t *err)
{
    if (kind == MG_X_PART_IMAGE) {
        return mg_b_req_image(part, block, i, j, err);
    }

    return mg_b_req_file(part, block, i, j, data, err);
}


/* prompt caching markers, as Anthropic-aware clients send them: Converse
 * caches everything before a cachePoint block */

static int
mg_b_req_add(void *data, unsigned allow, json_t *part, json_t *b,
    json_t *blocks)
{
    if (json_array_append_new(blocks, b) != 0) {
        return MG_X_NOMEM;
    }

    if ((allow & MG_X_PART_CACHE)
        && json_is_object(json_object_get(part, "cache_control")))
    {
        b = json_pack("{s:{s:s}}", "cachePoint", "type", "default");

        if (b == NULL || json_array_append_new(blocks, b) != 0) {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


static const mg_x_content_t  mg_b_content = {
    mg_b_text_block, mg_b_req_media, mg_b_req_add, 0
};


/* a message's content, a string or an array of parts, appended as blocks */

static int
mg_b_req_content(json_t *content, unsigned allow, json_t *blocks, size_t i,
    mg_b_req_t *ctx, mg_xerror_t *err)
{
    return mg_x_content(&mg_b_content, ctx, content, allow, blocks, i, err);
}


/* only inline images: Bedrock does not fetch URLs */

static int
mg_b_req_image(json_t *part, json_t **block, size_t i, size_t j,
    mg_xerror_t *err)
{
    int            rc;
    json_t        *b;
    const char    *format;
    mg_x_image_t   im;

    rc = mg_x_image_url(part, i, j, &im, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (im.http) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: this "
                        "model's backend cannot fetch image URLs; send the "
                        "image as a base64 data URL.", i, j);
    }

    if (!im.data) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: an "
                        "image must be a data URL \"data:<media type>;"
                        "base64,<data>\".", i, j);
    }

    format = mg_b_image_format(im.mt, im.mt_len);

    if (format == NULL) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: the "
                        "image type \"%.*s\" is not supported by this "
                        "model's backend (png, jpeg, gif or webp).", i, j,
                        (int) (im.mt_len > 64 ? 64 : im.mt_len), im.mt);
    }

    b = json_pack("{s:{s:s,s:{s:s%}}}", "image", "format", format, "source",
                  "bytes", im.b64, im.b64_len);
    if (b == NULL) {
        return MG_X_NOMEM;
    }

    *block = b;

    return MG_X_OK;
}


/* an inline file becomes a document block; file ids mean nothing here */

static int
mg_b_req_file(json_t *part, json_t **block, size_t i, size_t j,
    mg_b_req_t *ctx, mg_xerror_t *err)
{
    int           rc;
    json_t       *name, *b;
    const char   *format;
    mg_x_file_t   f;

    rc = mg_x_file_data(part, i, j, &f, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (f.mt) {
        format = mg_b_doc_format(f.mt, f.mt_len);

    } else {
        /* bare base64: only a name can tell what it is */

        format = (f.name && f.data_len)
                 ? mg_b_doc_format_ext(f.name, f.name_len) : NULL;
    }

    if (format == NULL) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: only "
                        "pdf, csv, doc, docx, xls, xlsx, html, txt and md "
                        "files are supported by this model's backend.", i,
                        j);
    }

    name = mg_b_doc_name(f.name, f.name_len, ++ctx->ndocs);
    if (name == NULL) {
        return MG_X_NOMEM;
    }

    b = json_pack("{s:{s:s,s:O,s:{s:s%}}}", "document", "format", format,
                  "name", name, "source", "bytes", f.data, f.data_len);

    json_decref(name);

    if (b == NULL) {
        return MG_X_NOMEM;
    }

    *block = b;

    return MG_X_OK;
}


/* ImageFormat; the common "image/jpg" is taken too */

static const char *
mg_b_image_format(const char *mt, size_t len)
{
    size_t  k;

    static const struct {
        const char  *mt;
        const char  *format;
    } formats[] = {
        { "image/png", "png" },
        { "image/jpeg", "jpeg" },
        { "image/jpg", "jpeg" },
        { "image/gif", "gif" },
        { "image/webp", "webp" }
    };

    for (k = 0; k < sizeof(formats) / sizeof(formats[0]); k++) {
        if (len == strlen(formats[k].mt)
            && strncasecmp(mt, formats[k].mt, len) == 0)
        {
            return formats[k].format;
        }
    }

    return NULL;
}


/* DocumentFormat by media type */

static const char *
mg_b_doc_format(const char *mt, size_t len)
{
    size_t  k;

    static const struct {
        const char  *mt;
        const char  *format;
    } formats[] = {
        { "application/pdf", "pdf" },
        { "text/csv", "csv" },
        { "application/msword", "doc" },
        { "application/vnd.openxmlformats-officedocument.wordprocessingml."
          "document", "docx" },
        { "application/vnd.ms-excel", "xls" },
        { "application/vnd.openxmlformats-officedocument.spreadsheetml."
          "sheet", "xlsx" },
        { "text/html", "html" },
        { "text/plain", "txt" },
        { "text/markdown", "md" }
    };

    for (k = 0; k < sizeof(formats) / sizeof(formats[0]); k++) {
        if (len == strlen(formats[k].mt)
            && strncasecmp(mt, formats[k].mt, len) == 0)
        {
            return formats[k].format;
        }
    }

    return NULL;
}


/* DocumentFormat by a file name's extension */

static const char *
mg_b_doc_format_ext(const char *name, size_t len)
{
    size_t       k, elen;
    const char  *dot;

    static const struct {
        const char  *ext;
        const char  *format;
    } formats[] = {
        { "pdf", "pdf" }, { "csv", "csv" }, { "doc", "doc" },
        { "docx", "docx" }, { "xls", "xls" }, { "xlsx", "xlsx" },
        { "html", "html" }, { "htm", "html" }, { "txt", "txt" },
        { "md", "md" }, { "markdown", "md" }
    };

    dot = NULL;

    for (k = 0; k < len; k++) {
        if (name[k] == '.') {
            dot = name + k;
        }
    }

    if (dot == NULL) {
        return NULL;
    }

    dot++;
    elen = name + len - dot;

    for (k = 0; k < sizeof(formats) / sizeof(formats[0]); k++) {
        if (elen == strlen(formats[k].ext)
            && strncasecmp(dot, formats[k].ext, elen) == 0)
        {
            return formats[k].format;
        }
    }

    return NULL;
}


/*
 * A document's name may hold only letters, digits, single spaces, hyphens,
 * parentheses and square brackets: the file name without its extension,
 * any other character run made a hyphen, or "document-<n>" (n counts the
 * request's documents) when nothing is left.  A new reference.
 */

static json_t *
mg_b_doc_name(const char *name, size_t len, size_t n)
{
    char         buf[MG_B_DOC_NAME_MAX + 1];
    size_t       k, o, end;
    unsigned     c, prev;

    end = len;

    for (k = len; k > 1; k--) {
        if (name[k - 1] == '.') {
            end = k - 1;
            break;
        }
    }

    o = 0;
    prev = ' ';

    for (k = 0; name && k < end && o < MG_B_DOC_NAME_MAX; k++) {
        c = (unsigned char) name[k];

        if (mg_b_alnum(c) || c == '-' || c == '(' || c == ')' || c == '['
            || c == ']')
        {
            buf[o++] = (char) c;
            prev = c;
            continue;
        }

        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            c = ' ';

        } else {
            c = '-';
        }

        if (prev != c) {
            buf[o++] = (char) c;
            prev = c;
        }
    }

    while (o && buf[o - 1] == ' ') {
        o--;
    }

    if (o == 0 || (o == 1 && buf[0] == '-')) {
        o = (size_t) snprintf(buf, sizeof(buf), "document-%zu", n);
    }

    return json_stringn(buf, o);
}


static int
mg_b_req_params(json_t *in, json_t *req, const mg_bedrock_opts_t *o,
    int *stream, int *include_usage, mg_xerror_t *err)
{
    int          rc;
    json_t      *ic, *v, *seq, *temp, *top_p;
    const char  *key;

    ic = json_object();
    if (ic == NULL) {
        return MG_X_NOMEM;
    }

    seq = NULL;

    rc = mg_x_max_tokens(in, &v, err);

    if (rc == MG_X_OK) {
        rc = mg_x_stop(in, 1, &seq, err);
    }

    if (rc == MG_X_OK) {
        rc = mg_x_sampling(in, &temp, &top_p, err);
    }

    if (rc != MG_X_OK) {
        json_decref(seq);
        json_decref(ic);
        return rc;
    }

    if (v == NULL && o && o->default_max_tokens > 0) {
        v = json_integer(o->default_max_tokens);
        if (v == NULL) {
            rc = MG_X_NOMEM;
        }

    } else {
        json_incref(v);
    }

    if ((v && json_object_set(ic, "maxTokens", v) != 0)
        || (temp && json_object_set(ic, "temperature", temp) != 0)
        || (top_p && json_object_set(ic, "topP", top_p) != 0)
        || (seq && json_object_set(ic, "stopSequences", seq) != 0))
    {
        rc = MG_X_NOMEM;
    }

    json_decref(v);
    json_decref(temp);
    json_decref(top_p);
    json_decref(seq);

    if (rc != MG_X_OK) {
        goto nomem;
    }

    if (json_object_size(ic)
        && json_object_set(req, "inferenceConfig", ic) != 0)
    {
        goto nomem;
    }

    json_decref(ic);

    /* not OpenAI's, but many clients send it; Converse passes it on */

    v = mg_x_get(in, "top_k");

    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            return mg_x_bad(err, "top_k", "top_k must be a non-negative "
                            "integer.");
        }

        if (mg_x_set(req, "additionalModelRequestFields",
                     json_pack("{s:O}", "top_k", v))
            != MG_X_OK)
        {
            return MG_X_NOMEM;
        }
    }

    /*
     * safety_identifier (or user) is for OpenAI's abuse monitoring and
     * changes no answer; Bedrock's requestMetadata, its nearest place, has
     * character rules an arbitrary id may break, failing the request: it
     * is checked, not sent.
     */

    key = "safety_identifier";
    v = mg_x_get(in, key);

    if (v == NULL) {
        key = "user";
        v = mg_x_get(in, key);
    }

    if (v && !json_is_string(v)) {
        return mg_x_bad(err, key, "%s must be a string.", key);
    }

    v = mg_x_get(in, "stream");

    if (v) {
        if (!json_is_boolean(v)) {
            return mg_x_bad(err, "stream", "stream must be a boolean.");
        }

        *stream = json_is_true(v);
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

nomem:

    json_decref(ic);

    return MG_X_NOMEM;
}


/*
 * response_format json_schema -> outputConfig.textFormat, the schema as a
 * JSON string (Converse's JsonSchemaDefinition); json_object has no
 * faithful equivalent.
 */

static int
mg_b_req_output(json_t *in, json_t *req, mg_xerror_t *err)
{
    char        *s;
    json_t      *rf, *js, *schema, *name, *desc, *def, *oc;
    const char  *type;

    rf = mg_x_get(in, "response_format");

    if (rf == NULL) {
        return MG_X_OK;
    }

    type = json_string_value(json_object_get(rf, "type"));

    if (mg_x_streq(type, "text")) {
        return MG_X_OK;
    }

    if (!mg_x_streq(type, "json_schema")) {
        return mg_x_bad(err, "response_format", "response_format %s%s%s is "
                        "not supported by this model's backend; use "
                        "json_schema.", type ? "\"" : "",
                        type ? type : "without a type", type ? "\"" : "");
    }

    js = json_object_get(rf, "json_schema");
    schema = json_object_get(js, "schema");
    name = mg_x_get(js, "name");
    desc = mg_x_get(js, "description");

    if (!json_is_object(schema) || (name && !json_is_string(name))
        || (desc && !json_is_string(desc)))
    {
        return mg_x_bad(err, "response_format", "response_format.json_schema"
                        " needs an object schema, and a string name and "
                        "description if any.");
    }

    /* in the client's order: models tend to write the fields in it */

    s = json_dumps(schema, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s == NULL) {
        return MG_X_NOMEM;
    }

    def = json_pack("{s:s}", "schema", s);

    free(s);

    if (def == NULL
        || (name && json_string_length(name)
            && json_object_set(def, "name", name) != 0)
        || (desc && json_string_length(desc)
            && json_object_set(def, "description", desc) != 0))
    {
        json_decref(def);
        return MG_X_NOMEM;
    }

    oc = json_pack("{s:{s:s,s:{s:O}}}", "textFormat", "type", "json_schema",
                   "structure", "jsonSchema", def);

    json_decref(def);

    return mg_x_set(req, "outputConfig", oc);
}
