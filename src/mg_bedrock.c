/*
 * Copyright (C) The ngx_http_model_gateway_module authors
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
#include "mg_json.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


/* mg_b_stream_text(): not a plain text delta, for the tree */
#define MG_B_DECLINED  2

/* ToolUseId: [a-zA-Z0-9_-]{1,64}; DocumentBlock name: 1..200 bytes */
#define MG_B_TOOL_ID_MAX   64
#define MG_B_DOC_NAME_MAX  200

#define mg_b_alnum(c)                                                         \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                 \
     || ((c) >= '0' && (c) <= '9'))


/* what the messages tell the tools: Bedrock wants a toolConfig whenever
 * the conversation holds toolUse or toolResult blocks */

typedef struct {
    json_t      *names;         /* the toolUse blocks' tool names, once */
    size_t       ndocs;         /* documents so far, to name unnamed ones */
    unsigned     tool_blocks:1;
} mg_b_req_t;


/* how an exception or error code is answered */

typedef enum {
    MG_B_E_UNKNOWN = 0,
    MG_B_E_THROTTLED,
    MG_B_E_QUOTA,
    MG_B_E_NOT_READY,
    MG_B_E_UNAVAILABLE,
    MG_B_E_FAILED,
    MG_B_E_AUTH,
    MG_B_E_NOT_FOUND,
    MG_B_E_INVALID
} mg_b_ekind_t;



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
static json_t *mg_b_tool_id(json_t *id);
static int mg_b_add_name(mg_b_req_t *ctx, json_t *name);
static int mg_b_results_first(json_t *blocks);
static int mg_b_req_tools(json_t *in, json_t *req, mg_b_req_t *ctx,
    mg_xerror_t *err);
static int mg_b_req_tool_choice(json_t *in, size_t ntools, json_t **choice,
    int *none, mg_xerror_t *err);
static int mg_b_req_params(json_t *in, json_t *req,
    const mg_bedrock_opts_t *o, int *stream, int *include_usage,
    mg_xerror_t *err);
static int mg_b_req_output(json_t *in, json_t *req, mg_xerror_t *err);

static const char *mg_b_finish(const char *reason);
static json_t *mg_b_usage(long long input, long long output,
    long long total, long long cache_read, long long cache_write);
static json_t *mg_b_usage_json(json_t *u);
static const char *mg_b_exception(const char *s, size_t len, size_t *n);
static mg_b_ekind_t mg_b_ekind(const char *name, size_t len);
static void mg_b_error_map(int status, const char *name, size_t name_len,
    const char *msg, mg_xerror_t *err);
static void mg_b_error_json(int status, const char *errortype,
    size_t errortype_len, json_t *body, mg_xerror_t *err);

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
static int mg_b_stream_end(mg_bedrock_stream_t *st, mg_buf_t *out);


/* helpers */

/*
 * Converse answers carry no id, and the x-amzn-RequestId header is not
 * ours to see: "chatcmpl-" with the time, the process and a counter is
 * unique among the gateway's workers.  nginx runs one thread per worker,
 * so the counter needs no lock.
 */

void
mg_bedrock_make_id(char *buf, size_t size, long created)
{
    int              i, k;
    char             id[sizeof("chatcmpl-") - 1 + 24];
    uint32_t         v[3];
    static unsigned  seq;

    static const char  hex[] = "0123456789abcdef";

    v[0] = (uint32_t) created;
    v[1] = (uint32_t) getpid();
    v[2] = (uint32_t) ++seq;

    /* as "chatcmpl-%08x%08x%08x", without printf on every answer */

    memcpy(id, "chatcmpl-", sizeof("chatcmpl-") - 1);

    for (k = 0; k < 3; k++) {
        for (i = 0; i < 8; i++) {
            id[sizeof("chatcmpl-") - 1 + 8 * k + i] =
                hex[(v[k] >> (28 - 4 * i)) & 0xf];
        }
    }

    if (size == 0) {
        return;
    }

    size = (size - 1 < sizeof(id)) ? size - 1 : sizeof(id);
    memcpy(buf, id, size);
    buf[size] = '\0';
}


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


/*
 * Bedrock's tool use ids must match [a-zA-Z0-9_-]{1,64}; other clients and
 * models make ids such as "functions.get_weather:0", or longer ones.  Other
 * characters become '_'; a long id keeps 47 characters and gets '_' and
 * 16 hex digits of a hash of the whole.  A call and its result go through
 * the same mapping, so they still pair.  A new reference.
 */

static json_t *
mg_b_tool_id(json_t *id)
{
    char                  buf[MG_B_TOOL_ID_MAX + 1];
    size_t                i, n;
    uint64_t              h;
    const char           *s;
    const unsigned char  *u;

    s = json_string_value(id);
    n = json_string_length(id);

    for (i = 0; i < n; i++) {
        if (!mg_x_id_char(s[i])) {
            break;
        }
    }

    if (i == n && n <= MG_B_TOOL_ID_MAX) {
        return json_incref(id);
    }

    if (n <= MG_B_TOOL_ID_MAX) {
        for (i = 0; i < n; i++) {
            buf[i] = mg_x_id_char(s[i]) ? s[i] : '_';
        }

        return json_stringn(buf, n);
    }

    /* FNV-1a */

    h = 0xcbf29ce484222325ULL;
    u = (const unsigned char *) s;

    for (i = 0; i < n; i++) {
        h = (h ^ u[i]) * 0x100000001b3ULL;
    }

    for (i = 0; i < 47; i++) {
        buf[i] = mg_x_id_char(s[i]) ? s[i] : '_';
    }

    (void) snprintf(buf + 47, sizeof(buf) - 47, "_%016llx",
                    (unsigned long long) h);

    return json_stringn(buf, MG_B_TOOL_ID_MAX);
}


/* the names of the tools the conversation called, each once */

static int
mg_b_add_name(mg_b_req_t *ctx, json_t *name)
{
    size_t   i;
    json_t  *v;

    json_array_foreach(ctx->names, i, v) {
        if (json_equal(v, name)) {
            return MG_X_OK;
        }
    }

    return json_array_append(ctx->names, name) == 0 ? MG_X_OK : MG_X_NOMEM;
}


/*
 * Claude, behind Converse, wants a user turn's tool results before
 * anything else in it; a user message merged into the results (or sent
 * between a call and its result) would put text first.  The order among
 * results is kept.
 */

static int
mg_b_results_first(json_t *blocks)
{
    int      rc;
    size_t   i;
    json_t  *sorted, *b;

    sorted = json_array();
    if (sorted == NULL) {
        return MG_X_NOMEM;
    }

    rc = MG_X_OK;

    json_array_foreach(blocks, i, b) {
        if (json_object_get(b, "toolResult")
            && json_array_append(sorted, b) != 0)
        {
            rc = MG_X_NOMEM;
        }
    }

    json_array_foreach(blocks, i, b) {
        if (json_object_get(b, "toolResult") == NULL
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


/*
 * tools -> toolConfig.tools[].toolSpec.  Converse's toolChoice has no
 * "none": tool_choice "none" sends no toolConfig, but Bedrock refuses a
 * conversation with toolUse or toolResult blocks and no toolConfig
 * (protocols.md 5.2), so then the tools are listed without a toolChoice
 * (the model may still call one: that cannot be forbidden), and a request
 * without tools lists the tools its history called, with empty schemas.
 */

static int
mg_b_req_tools(json_t *in, json_t *req, mg_b_req_t *ctx, mg_xerror_t *err)
{
    int          rc, none;
    size_t       i;
    json_t      *tools, *specs, *t, *name, *desc, *params, *schema;
    json_t      *b, *v, *choice, *tc;

    tools = mg_x_get(in, "tools");

    if (tools && !json_is_array(tools)) {
        return mg_x_bad(err, "tools", "tools must be an array.");
    }

    specs = json_array();
    if (specs == NULL) {
        return MG_X_NOMEM;
    }

    b = NULL;
    schema = NULL;
    choice = NULL;
    tc = NULL;

    json_array_foreach(tools, i, t) {
        rc = mg_x_tool_def(t, i, &name, &desc, &params, &v, err);
        if (rc != MG_X_OK) {
            goto done;
        }

        /* the schema's top-level type must be "object"; {} means "no
         * arguments".  strict has no Converse counterpart: the schema
         * still goes, and the model is asked to follow it */

        if (params == NULL) {
            schema = json_pack("{s:s,s:{}}", "type", "object",
                               "properties");

        } else if (json_object_get(params, "type") == NULL) {
            schema = json_copy(params);

            if (schema
                && mg_x_set(schema, "type", json_string("object"))
                   != MG_X_OK)
            {
                json_decref(schema);
                schema = NULL;
            }

        } else {
            schema = json_incref(params);
        }

        /* an empty description is refused: it is the same as none */

        if (desc && json_string_length(desc) == 0) {
            desc = NULL;
        }

        b = schema ? json_pack("{s:{s:O,s:{s:O}}}", "toolSpec", "name", name,
                               "inputSchema", "json", schema)
                   : NULL;

        if (b == NULL
            || (desc
                && json_object_set(json_object_get(b, "toolSpec"),
                                   "description", desc) != 0)
            || json_array_append(specs, b) != 0)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

        json_decref(schema);
        json_decref(b);
        schema = NULL;
        b = NULL;
    }

    rc = mg_b_req_tool_choice(in, json_array_size(specs), &choice, &none,
                              err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (json_array_size(specs) == 0 && ctx->tool_blocks) {
        json_array_foreach(ctx->names, i, name) {
            b = json_pack("{s:{s:O,s:{s:{s:s,s:{}}}}}", "toolSpec", "name",
                          name, "inputSchema", "json", "type", "object",
                          "properties");

            if (b == NULL || json_array_append_new(specs, b) != 0) {
                b = NULL;
                rc = MG_X_NOMEM;
                goto done;
            }

            b = NULL;
        }
    }

    if (json_array_size(specs) == 0 || (none && !ctx->tool_blocks)) {
        rc = MG_X_OK;
        goto done;
    }

    tc = json_pack("{s:O}", "tools", specs);

    if (tc == NULL
        || (choice && !none && json_object_set(tc, "toolChoice", choice)
                               != 0))
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = json_object_set(req, "toolConfig", tc) == 0 ? MG_X_OK : MG_X_NOMEM;

done:

    json_decref(tc);
    json_decref(choice);
    json_decref(schema);
    json_decref(b);
    json_decref(specs);

    return rc;
}


/* *choice: the toolChoice to send (NULL: none); *none: "none" was asked */

static int
mg_b_req_tool_choice(json_t *in, size_t ntools, json_t **choice, int *none,
    mg_xerror_t *err)
{
    int            rc;
    json_t        *ptc;
    mg_x_choice_t  c;

    *choice = NULL;
    *none = 0;

    rc = mg_x_tool_choice(in, ntools, &c, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    ptc = c.parallel;

    switch (c.kind) {

    case MG_X_CHOICE_AUTO:
        *choice = json_pack("{s:{}}", "auto");
        break;

    case MG_X_CHOICE_REQUIRED:
        *choice = json_pack("{s:{}}", "any");
        break;

    case MG_X_CHOICE_NONE:
        *none = 1;
        return MG_X_OK;

    case MG_X_CHOICE_NAMED:
        *choice = json_pack("{s:{s:O}}", "tool", "name", c.name);
        break;

    default:
        break;
    }

    if (c.kind != MG_X_CHOICE_UNSET && *choice == NULL) {
        return MG_X_NOMEM;
    }

    /* Converse cannot keep a model to one call at a time */

    if (json_is_false(ptc) && ntools) {
        json_decref(*choice);
        *choice = NULL;

        return mg_x_bad(err, "parallel_tool_calls", "parallel_tool_calls "
                        "false is not supported by this model's backend.");
    }

    return MG_X_OK;
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


/* the response */

int
mg_bedrock_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc;
    char          id[48];
    char         *args;
    size_t        i;
    json_t       *in, *output, *content, *b, *tu, *calls, *call, *msg, *res;
    json_t       *u, *v, *tid;
    mg_buf_t      text;
    const char   *reason, *finish;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(in)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    output = json_object_get(in, "output");

    if (!json_is_object(output)) {

        /* an error answered with a 200, as a wrong operation path is */

        if (json_object_get(in, "__type") || json_object_get(in, "message")
            || json_object_get(in, "Message"))
        {
            mg_b_error_json(0, NULL, 0, in, err);
            json_decref(in);
            return MG_X_ERROR;
        }

        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    content = json_object_get(json_object_get(output, "message"), "content");

    if (!json_is_array(content)) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    reason = json_string_value(json_object_get(in, "stopReason"));
    finish = mg_b_finish(reason);

    if (finish == NULL) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model produced malformed output (%s).", reason);
        json_decref(in);
        return MG_X_ERROR;
    }

    memset(&text, 0, sizeof(mg_buf_t));
    msg = NULL;
    res = NULL;
    rc = MG_X_NOMEM;

    calls = json_array();
    if (calls == NULL) {
        goto done;
    }

    /* reasoning, citations and other blocks have no chat completions
     * shape */

    json_array_foreach(content, i, b) {
        v = json_object_get(b, "text");

        if (json_is_string(v)) {
            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        tu = json_object_get(b, "toolUse");

        if (!json_is_object(tu)) {
            continue;
        }

        v = json_object_get(tu, "input");

        args = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
                 : strdup("{}");
        if (args == NULL) {
            goto done;
        }

        tid = json_object_get(tu, "toolUseId");
        v = json_object_get(tu, "name");

        /* json_string_value() of a non-string is NULL, its length 0 */

        call = json_pack("{s:s%,s:s,s:{s:s%,s:s}}",
                         "id",
                         json_is_string(tid) ? json_string_value(tid) : "",
                         json_string_length(tid),
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
        || mg_x_set(msg, "role", json_string("assistant")) != MG_X_OK
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

    mg_bedrock_make_id(id, sizeof(id), created);

    res = json_object();

    if (res == NULL
        || mg_x_set(res, "id", json_string(id)) != MG_X_OK
        || mg_x_set(res, "object", json_string("chat.completion"))
           != MG_X_OK
        || mg_x_set(res, "created", json_integer(created)) != MG_X_OK
        || mg_x_set(res, "model",
                    json_stringn(model ? model : "", model ? model_len : 0))
           != MG_X_OK
        || mg_x_set(res, "choices",
                    json_pack("[{s:i,s:O,s:n,s:s}]", "index", 0,
                              "message", msg, "logprobs",
                              "finish_reason", finish))
           != MG_X_OK)
    {
        goto done;
    }

    u = json_object_get(in, "usage");

    if (json_is_object(u)
        && mg_x_set(res, "usage", mg_b_usage_json(u)) != MG_X_OK)
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


/*
 * table 10.2; NULL for the reasons that say the output is broken (an
 * error beats a tool call with bad arguments); a new or unknown reason is
 * a normal stop
 */

static const char *
mg_b_finish(const char *reason)
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

    if (strcmp(reason, "guardrail_intervened") == 0
        || strcmp(reason, "content_filtered") == 0)
    {
        return "content_filter";
    }

    if (strcmp(reason, "malformed_model_output") == 0
        || strcmp(reason, "malformed_tool_use") == 0)
    {
        return NULL;
    }

    return "stop";
}


/*
 * table 10.3.  Bedrock's inputTokens leave out the tokens read from or
 * written to the prompt cache, and totalTokens counts them all; should a
 * model count them in inputTokens instead, totalTokens (then input plus
 * output) says so and they are not added twice.  total < 0: not sent.
 */

void
mg_bedrock_usage(long long input, long long output, long long total,
    long long cache_read, long long cache_write, mg_x_usage_t *u)
{
    u->prompt = input + cache_read + cache_write;

    if (cache_read + cache_write && total == input + output) {
        u->prompt = input;
    }

    u->completion = output;
    u->cached = cache_read;
    u->cache_write = cache_write;
}


static json_t *
mg_b_usage(long long input, long long output, long long total,
    long long cache_read, long long cache_write)
{
    mg_x_usage_t  u;

    mg_bedrock_usage(input, output, total, cache_read, cache_write, &u);

    return mg_x_usage_json(&u);
}


static json_t *
mg_b_usage_json(json_t *u)
{
    return mg_b_usage(mg_x_tokens(u, "inputTokens", 0),
                      mg_x_tokens(u, "outputTokens", 0),
                      mg_x_tokens(u, "totalTokens", -1),
                      mg_x_tokens(u, "cacheReadInputTokens", 0),
                      mg_x_tokens(u, "cacheWriteInputTokens", 0));
}


/* errors */

void
mg_bedrock_error(int status, const char *errortype, size_t errortype_len,
    const char *body, size_t len, mg_xerror_t *err)
{
    json_t  *j;

    j = (body && len) ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;

    mg_b_error_json(status, errortype, errortype ? errortype_len : 0, j, err);

    json_decref(j);
}


/*
 * "ThrottlingException:http://internal.amazon.com/coral/..." or
 * "com.amazon.coral.service#UnrecognizedClientException": the name alone
 */

static const char *
mg_b_exception(const char *s, size_t len, size_t *n)
{
    const char  *p, *end, *e;

    *n = 0;

    if (s == NULL) {
        return NULL;
    }

    end = s + len;

    e = memchr(s, ':', len);
    if (e) {
        end = e;
    }

    for (p = end; p > s; p--) {
        if (p[-1] == '#') {
            s = p;
            break;
        }
    }

    while (s < end && (*s == ' ' || *s == '\t')) {
        s++;
    }

    while (end > s && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    *n = end - s;

    return *n ? s : NULL;
}


/* by name, case-insensitively: streams send "throttlingException" */

static mg_b_ekind_t
mg_b_ekind(const char *name, size_t len)
{
    size_t  k;

    static const struct {
        const char    *name;
        mg_b_ekind_t   kind;
    } kinds[] = {
        { "ThrottlingException", MG_B_E_THROTTLED },
        { "Throttling", MG_B_E_THROTTLED },
        { "ThrottledException", MG_B_E_THROTTLED },
        { "RequestThrottledException", MG_B_E_THROTTLED },
        { "RequestThrottled", MG_B_E_THROTTLED },
        { "TooManyRequestsException", MG_B_E_THROTTLED },
        { "ProvisionedThroughputExceededException", MG_B_E_THROTTLED },
        { "RequestLimitExceeded", MG_B_E_THROTTLED },
        { "BandwidthLimitExceeded", MG_B_E_THROTTLED },
        { "LimitExceededException", MG_B_E_THROTTLED },
        { "SlowDown", MG_B_E_THROTTLED },
        { "ServiceQuotaExceededException", MG_B_E_QUOTA },
        { "ModelNotReadyException", MG_B_E_NOT_READY },
        { "ServiceUnavailableException", MG_B_E_UNAVAILABLE },
        { "ServiceUnavailable", MG_B_E_UNAVAILABLE },
        { "InternalServerException", MG_B_E_FAILED },
        { "InternalFailure", MG_B_E_FAILED },
        { "InternalServerError", MG_B_E_FAILED },
        { "ModelStreamErrorException", MG_B_E_FAILED },
        { "ModelErrorException", MG_B_E_FAILED },
        { "ModelTimeoutException", MG_B_E_FAILED },
        { "RequestTimeout", MG_B_E_FAILED },
        { "RequestTimeoutException", MG_B_E_FAILED },
        { "PriorRequestNotComplete", MG_B_E_FAILED },
        { "TransactionInProgressException", MG_B_E_FAILED },
        { "UnknownOperationException", MG_B_E_FAILED },
        { "AccessDeniedException", MG_B_E_AUTH },
        { "AccessDenied", MG_B_E_AUTH },
        { "UnrecognizedClientException", MG_B_E_AUTH },
        { "InvalidSignatureException", MG_B_E_AUTH },
        { "SignatureDoesNotMatch", MG_B_E_AUTH },
        { "IncompleteSignature", MG_B_E_AUTH },
        { "IncompleteSignatureException", MG_B_E_AUTH },
        { "ExpiredTokenException", MG_B_E_AUTH },
        { "ExpiredToken", MG_B_E_AUTH },
        { "InvalidClientTokenId", MG_B_E_AUTH },
        { "MissingAuthenticationToken", MG_B_E_AUTH },
        { "MissingAuthenticationTokenException", MG_B_E_AUTH },
        { "NotAuthorized", MG_B_E_AUTH },
        { "ResourceNotFoundException", MG_B_E_NOT_FOUND },
        { "ValidationException", MG_B_E_INVALID }
    };

    for (k = 0; name && k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        if (len == strlen(kinds[k].name)
            && strncasecmp(name, kinds[k].name, len) == 0)
        {
            return kinds[k].kind;
        }
    }

    return MG_B_E_UNKNOWN;
}


static void
mg_b_error_json(int status, const char *errortype, size_t errortype_len,
    json_t *body, mg_xerror_t *err)
{
    size_t       n;
    json_t      *v;
    const char  *name, *msg;

    name = mg_b_exception(errortype, errortype_len, &n);

    if (name == NULL) {
        v = json_object_get(body, "__type");

        if (!json_is_string(v)) {
            v = json_object_get(body, "code");
        }

        if (json_is_string(v)) {
            name = mg_b_exception(json_string_value(v), json_string_length(v),
                                  &n);
        }
    }

    v = json_object_get(body, "message");

    if (!json_is_string(v)) {
        v = json_object_get(body, "Message");
    }

    msg = json_string_value(v);

    mg_b_error_map(status, name, n, msg, err);
}


/*
 * status: the HTTP status, or one outside 400..599 for an error that came
 * inside a 200 (a body or a stream message): the name then decides.
 */

static void
mg_b_error_map(int status, const char *name, size_t name_len,
    const char *msg, mg_xerror_t *err)
{
    int            http;
    char           what[96];
    const char    *code;
    mg_b_ekind_t   kind;

    if (msg && msg[0] == '\0') {
        msg = NULL;
    }

    if (name_len > 64) {
        name_len = 64;
    }

    http = (status >= 400 && status <= 599);

    kind = mg_b_ekind(name, name_len);

    if (kind == MG_B_E_UNKNOWN) {
        if (status == 429) {
            kind = MG_B_E_THROTTLED;

        } else if (status == 401 || status == 403) {
            kind = MG_B_E_AUTH;

        } else if (status == 404) {
            kind = MG_B_E_NOT_FOUND;

        } else if (status == 503) {
            kind = MG_B_E_UNAVAILABLE;

        } else if (status == 413) {
            mg_xerror_set(err, 413, 0, "invalid_request_error",
                          "request_too_large", NULL, "%s",
                          msg ? msg : "The request is too large for the "
                                      "model backend.");
            goto done;

        } else if (!http || status >= 500 || status == 408 || status == 409
                   || status == 424)
        {
            kind = MG_B_E_FAILED;

        } else {
            kind = MG_B_E_INVALID;
        }
    }

    /* "HTTP 500 InternalServerException", or either alone */

    if (http && name) {
        (void) snprintf(what, sizeof(what), "HTTP %d %.*s", status,
                        (int) name_len, name);

    } else if (http) {
        (void) snprintf(what, sizeof(what), "HTTP %d", status);

    } else if (name) {
        (void) snprintf(what, sizeof(what), "%.*s", (int) name_len, name);

    } else {
        what[0] = '\0';
    }

    switch (kind) {

    case MG_B_E_THROTTLED:
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend is rate limited%s%s",
                      msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_QUOTA:
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend's quota is exceeded%s%s",
                      msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_NOT_READY:
        mg_xerror_set(err, 429, 1, "server_error", "model_not_ready", NULL,
                      "The model is not ready yet%s%s", msg ? ": " : ".",
                      msg ? msg : "");
        break;

    case MG_B_E_UNAVAILABLE:
        mg_xerror_set(err, 503, 1, "server_error", "overloaded", NULL,
                      "The model backend is unavailable%s%s",
                      msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_AUTH:
        mg_xerror_set(err, 502, 1, "server_error", "backend_auth_failed",
                      NULL, "backend authentication failed");
        break;

    case MG_B_E_NOT_FOUND:
        mg_xerror_set(err, 404, 0, "invalid_request_error", "model_not_found",
                      "model", "The model backend does not know the "
                      "model%s%s", msg ? ": " : ".", msg ? msg : "");
        break;

    case MG_B_E_INVALID:

        /* the client's request, as Bedrock judged it */

        code = (msg && (strstr(msg, "too long")
                        || strstr(msg, "context limit")
                        || strstr(msg, "context window")
                        || strstr(msg, "context length")))
               ? "context_length_exceeded" : NULL;

        if (msg) {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "%s", msg);

        } else {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "The model backend rejected the request (%s).",
                          what[0] ? what : "no details");
        }

        break;

    default: /* MG_B_E_FAILED */
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed%s%s%s%s%s",
                      what[0] ? " (" : "", what, what[0] ? ")" : "",
                      msg ? ": " : ".", msg ? msg : "");
        break;
    }

done:

    /* a label must label a statement (clang refuses one before "}") */
    return;
}


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

    if (st->done) {
        return MG_X_DONE;
    }

    if (event_type == NULL) {
        event_type_len = 0;
    }

    if (payload == NULL) {
        payload_len = 0;
    }

#define mg_b_is(s, n, lit)                                                    \
    ((n) == sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)

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
    json_t  *u;

    u = json_object_get(j, "usage");

    if (!json_is_object(u)) {
        return MG_X_OK;
    }

    st->input_tokens = mg_x_tokens(u, "inputTokens", 0);
    st->output_tokens = mg_x_tokens(u, "outputTokens", 0);
    st->total_tokens = mg_x_tokens(u, "totalTokens", -1);
    st->cache_read_tokens = mg_x_tokens(u, "cacheReadInputTokens", 0);
    st->cache_write_tokens = mg_x_tokens(u, "cacheWriteInputTokens", 0);
    st->usage = 1;

    if (!st->stopped) {
        return MG_X_OK;
    }

    return mg_b_stream_end(st, out);
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
