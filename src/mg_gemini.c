/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_gemini.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


/*
 * A tool's parameters are rewritten into the OpenAPI subset Gemini takes;
 * $refs are expanded in place, so that a small schema could grow without
 * bound: these cap the nodes written, the $refs followed one inside
 * another (a recursive schema has no finite expansion) and the nesting.
 */
#define MG_G_SCHEMA_NODES  4096
#define MG_G_SCHEMA_REFS   16
#define MG_G_SCHEMA_DEPTH  64

/*
 * What the translation writes more than once from a value sent once (a
 * $ref's target, with its descriptions, defaults, examples and enums,
 * each time it is referenced; a function's name in each tool result that
 * answers its call) is counted in bytes of output against one budget per
 * request: MG_G_COPY_RATIO times the body plus MG_G_COPY_SLACK, or the
 * request's bound when that is lower.  So the request written stays within
 * a small multiple of the one received however the values are shared; the
 * tree shares them (json_object_set), and only the dump would multiply.
 * A schema node is charged MG_G_NODE_BYTES besides what it copies: its
 * braces and the few members the conversion adds (type, nullable).
 */
#define MG_G_COPY_RATIO    4
#define MG_G_COPY_SLACK    (64 * 1024)
#define MG_G_NODE_BYTES    32

/* the candidate indexes a stream may use (candidateCount is at most 8) */
#define MG_G_CHOICES_MAX   64

/* where the Gemini Files API keeps what was uploaded to it */
#define MG_G_FILES_HOST  "https://generativelanguage.googleapis.com/"


/* one request's translation */

typedef struct {
    json_t      *calls;         /* tool call id -> the function's name, of
                                   the assistant messages walked so far */
    size_t       copies;        /* bytes the copies may still take */
    size_t       max;           /* the bound of the request written */
    unsigned     bound:1;       /* copies is max, not the multiple */
} mg_g_req_t;


typedef struct {
    json_t      *root;          /* where "#/$defs/..." is looked up */
    size_t       nodes;         /* left to write */
    mg_g_req_t  *req;           /* its copies are charged */
    unsigned     refs;          /* $refs being expanded */
    unsigned     depth;
    unsigned     over:1;        /* the copies' budget ran out */
    const char  *why;           /* what was wrong, for the 400 */
} mg_g_schema_t;


static json_t *mg_g_string(json_t *v);

static int mg_g_req_check(json_t *in, mg_xerror_t *err);
static int mg_g_req_messages(mg_g_req_t *rq, json_t *in, json_t *req,
    mg_xerror_t *err);
static int mg_g_copies(mg_g_req_t *rq, size_t n);
static int mg_g_req_parts(void *data, int kind, json_t *msgs, json_t *m,
    size_t i, json_t *parts, mg_xerror_t *err);
static int mg_g_req_assistant(mg_g_req_t *rq, json_t *m, json_t *parts,
    size_t i, mg_xerror_t *err);
static int mg_g_req_tool_result(mg_g_req_t *rq, json_t *m, json_t *parts,
    size_t i, mg_xerror_t *err);
static int mg_g_req_content(json_t *content, unsigned allow, json_t *parts,
    size_t i, mg_xerror_t *err);
static const mg_x_content_t  mg_g_content;
static int mg_g_req_image(json_t *part, json_t **gp, size_t i, size_t j,
    mg_xerror_t *err);
static int mg_g_req_file(json_t *part, json_t **gp, size_t i, size_t j,
    mg_xerror_t *err);
static int mg_g_req_audio(json_t *part, json_t **gp, size_t i, size_t j,
    mg_xerror_t *err);
static json_t *mg_g_inline(const char *mt, size_t mt_len, const char *data,
    size_t data_len);
static int mg_g_file_uri(const char *s, size_t len);
static int mg_g_req_tools(mg_g_req_t *rq, json_t *in, json_t *req,
    mg_xerror_t *err);
static int mg_g_req_tool_choice(json_t *in, json_t *req, size_t ntools,
    mg_xerror_t *err);
static int mg_g_schema(mg_g_schema_t *sc, json_t *in, json_t **out);
static int mg_g_schema_ref(mg_g_schema_t *sc, json_t *in, const char *ref,
    json_t **out);
static int mg_g_schema_keys(mg_g_schema_t *sc, json_t *in, json_t *o);
static int mg_g_schema_charge(mg_g_schema_t *sc, const char *key,
    json_t *v);
static int mg_g_schema_put(mg_g_schema_t *sc, json_t *o, const char *key,
    json_t *v);
static int mg_g_schema_count(mg_g_schema_t *sc, size_t n);
static int mg_g_schema_type(json_t *v, json_t *o, int *nullable);
static int mg_g_schema_props(mg_g_schema_t *sc, json_t *v, json_t *o);
static int mg_g_schema_any(mg_g_schema_t *sc, json_t *v, json_t *o,
    int *nullable);
static int mg_g_schema_all(mg_g_schema_t *sc, json_t *v, json_t *o);
static int mg_g_schema_enum(json_t *v, json_t *o, int *nullable);
static int mg_g_schema_strings(json_t *v, json_t *o, const char *key);
static int mg_g_merge(json_t *o, json_t *s);
static int mg_g_req_config(json_t *in, const mg_gemini_opts_t *o,
    json_t *gc, mg_xerror_t *err);
static int mg_g_req_output(json_t *in, json_t *gc, mg_xerror_t *err);
static int mg_g_req_stream(json_t *in, int *stream, int *include_usage,
    mg_xerror_t *err);

static uint64_t mg_g_seed(json_t *rid, long created);
static json_t *mg_g_call_id(uint64_t seed, size_t cand, size_t k);
static json_t *mg_g_tool_call(json_t *part, uint64_t seed, size_t cand,
    size_t k, int with_index);
static int mg_g_choice(json_t *c, size_t index, uint64_t seed,
    json_t **choice, int *unusable);
static int mg_g_malformed(const char *reason);
static int mg_g_usable(json_t *c);
static json_t *mg_g_usage(long long prompt, long long candidates,
    long long thoughts, long long tool_prompt, long long cached,
    long long total);
static json_t *mg_g_error_body(json_t *j);
static void mg_g_error_map(int status, json_t *body, mg_xerror_t *err);
static int mg_g_api_key_error(json_t *e);

static int mg_g_stream_fast(mg_gemini_stream_t *st, const char *data,
    size_t len, mg_buf_t *out);
static int mg_g_stream_start(mg_gemini_stream_t *st, json_t *j);
static int mg_g_stream_chunk(mg_gemini_stream_t *st, json_t *j,
    mg_buf_t *out, mg_xerror_t *err);
static int mg_g_stream_index(json_t *c, size_t pos, size_t *idx);
static int mg_g_stream_candidate(mg_gemini_stream_t *st, json_t *c,
    size_t idx, mg_buf_t *out);
static mg_gemini_choice_t *mg_g_stream_choice(mg_gemini_stream_t *st,
    size_t idx);
static int mg_g_stream_text(mg_gemini_stream_t *st, size_t idx,
    mg_buf_t *text, mg_buf_t *out);
static void mg_g_stream_usage(mg_gemini_stream_t *st, json_t *u);
static int mg_g_chunk(mg_gemini_stream_t *st, mg_buf_t *out, size_t idx,
    json_t *delta, const char *finish);


/* helpers */

/* a string member as a new string, "" for anything else (NULL: no memory) */

static json_t *
mg_g_string(json_t *v)
{
    return json_is_string(v) ? json_stringn(json_string_value(v),
                                            json_string_length(v))
                             : json_string("");
}


/* the request */

int
mg_gemini_request(const char *body, size_t len, const mg_gemini_opts_t *o,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err)
{
    int           rc;
    size_t        max;
    json_t       *in, *req, *gc;
    mg_g_req_t    rq;
    json_error_t  jerr;

    *stream = 0;
    *include_usage = 0;

    max = mg_x_out_max(o ? o->max_out : 0);

    /* plain text chats need no tree */

    if (o == NULL || !o->full) {
        rc = mg_xf_try(MG_XF_GEMINI, NULL, 0, o ? o->default_max_tokens : 0,
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

    req = NULL;
    gc = NULL;

    rq.max = max;
    rq.copies = MG_G_COPY_SLACK + MG_G_COPY_RATIO * len;
    rq.bound = (rq.copies >= max);

    if (rq.bound) {
        rq.copies = max;
    }

    rq.calls = json_object();

    if (!json_is_object(in)) {
        rc = mg_x_bad(err, NULL, "The request body must be a JSON object.");
        goto done;
    }

    req = json_object();
    gc = json_object();

    if (req == NULL || gc == NULL || rq.calls == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_g_req_check(in, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_g_req_messages(&rq, in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_g_req_tools(&rq, in, req, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_g_req_config(in, o, gc, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (json_object_size(gc)
        && json_object_set(req, "generationConfig", gc) != 0)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_g_req_stream(in, stream, include_usage, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = mg_x_dump_max(req, out, 0, max, "gemini", err);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(rq.calls);
    json_decref(gc);
    json_decref(req);
    json_decref(in);

    return rc;
}


/* OpenAI features without a Gemini counterpart: refused, not dropped */

static int
mg_g_req_check(json_t *in, mg_xerror_t *err)
{
    int          rc;
    json_t      *v;
    const char  *key;

    v = mg_x_get(in, "n");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 1)) {
        return mg_x_bad(err, "n", "n must be a positive integer.");
    }

    /* Gemini has logprobs of its own, but they are not translated here */

    rc = mg_x_req_check(in, 0, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    /* Gemini has no end-user field; these only have to be well formed */

    key = "safety_identifier";
    v = mg_x_get(in, key);

    if (v == NULL) {
        key = "user";
        v = mg_x_get(in, key);
    }

    if (v && !json_is_string(v)) {
        return mg_x_bad(err, key, "%s must be a string.", key);
    }

    return MG_X_OK;
}


/*
 * The messages (mg_x_messages() walks them: assistant turns are Gemini's
 * "model" role, and the results answering one model turn merge into a
 * single content, as Gemini wants) to systemInstruction and contents.
 */

static int
mg_g_req_messages(mg_g_req_t *rq, json_t *in, json_t *req,
    mg_xerror_t *err)
{
    int      rc;
    json_t  *system, *contents;

    system = json_array();
    contents = json_array();

    if (system == NULL || contents == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_x_messages(in, "model", "parts", mg_g_req_parts, rq, system,
                       contents, err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (json_array_size(system)
        && mg_x_set(req, "systemInstruction",
                    json_pack("{s:O}", "parts", system))
           != MG_X_OK)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = json_object_set(req, "contents", contents) == 0 ? MG_X_OK
                                                         : MG_X_NOMEM;

done:

    json_decref(contents);
    json_decref(system);

    return rc;
}


/* the parts of one message, by its kind */

static int
mg_g_req_parts(void *data, int kind, json_t *msgs, json_t *m, size_t i,
    json_t *parts, mg_xerror_t *err)
{
    switch (kind) {

    case MG_X_SYSTEM:
        return mg_g_req_content(json_object_get(m, "content"), 0,
                                parts, i, err);

    case MG_X_USER:
        return mg_g_req_content(json_object_get(m, "content"),
                                MG_X_PART_IMAGE | MG_X_PART_FILE
                                | MG_X_PART_AUDIO,
                                parts, i, err);

    case MG_X_ASSISTANT:
        return mg_g_req_assistant(data, m, parts, i, err);

    default:
        return mg_g_req_tool_result(data, m, parts, i, err);
    }
}


/* n more bytes of copies, if the request's budget has them */

static int
mg_g_copies(mg_g_req_t *rq, size_t n)
{
    if (n > rq->copies) {
        return MG_X_ERROR;
    }

    rq->copies -= n;

    return MG_X_OK;
}


static int
mg_g_req_assistant(mg_g_req_t *rq, json_t *m, json_t *parts, size_t i,
    mg_xerror_t *err)
{
    int      rc;
    size_t   k;
    json_t  *calls, *c, *id, *name, *input, *p, *sig;

    rc = mg_x_assistant(&mg_g_content, NULL, m, 0, parts, i, &calls, err);
    if (rc != MG_X_OK || calls == NULL) {
        return rc;
    }

    /* a call needs a string id: it is how a tool message finds the
     * function's name */

    json_array_foreach(calls, k, c) {
        rc = mg_x_tool_call(c, i, k, &id, &name, &input, err);
        if (rc != MG_X_OK) {
            return rc;
        }

        p = json_pack("{s:{s:O,s:O}}", "functionCall", "name", name, "args",
                      input);

        json_decref(input);

        if (p == NULL) {
            return MG_X_NOMEM;
        }

        /* Gemini 3 wants the signature of its calls back, and they went
         * out where Google's own OpenAI-compatible endpoint puts them */

        sig = json_object_get(json_object_get(json_object_get(c,
                                  "extra_content"), "google"),
                              "thought_signature");

        if (json_is_string(sig) && json_string_length(sig)
            && json_object_set(p, "thoughtSignature", sig) != 0)
        {
            json_decref(p);
            return MG_X_NOMEM;
        }

        if (json_array_append_new(parts, p) != 0) {
            return MG_X_NOMEM;
        }
    }

    /*
     * the names by id, for the tool messages after this one: an id
     * repeated later is that later call's, and within one message the
     * first call with it is taken, hence backwards
     */

    for (k = json_array_size(calls); k-- > 0; ) {
        c = json_array_get(calls, k);
        id = json_object_get(c, "id");
        name = json_object_get(json_object_get(c, "function"), "name");

        if (json_object_setn(rq->calls, json_string_value(id),
                             json_string_length(id), name)
            != 0)
        {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


/*
 * A tool message: functionResponse {name, response}.  Gemini pairs a
 * response with its call by the function's name, which OpenAI does not
 * repeat: it is looked up by tool_call_id among the calls made before.
 * The response must be an object: the content is sent as it is when it is
 * a JSON object, and as {"content": text} otherwise.
 */

static int
mg_g_req_tool_result(mg_g_req_t *rq, json_t *m, json_t *parts, size_t i,
    mg_xerror_t *err)
{
    int       rc;
    size_t    j;
    json_t   *id, *name, *content, *part, *v, *resp, *p;
    mg_buf_t  text;

    id = json_object_get(m, "tool_call_id");

    if (!json_is_string(id)) {
        return mg_x_bad(err, "messages", "messages[%zu].tool_call_id must be "
                        "a string.", i);
    }

    /* the function's name, borrowed: looked up, not searched for, so
     * that many tool messages take linear time */

    name = json_object_getn(rq->calls, json_string_value(id),
                            json_string_length(id));

    if (name == NULL) {
        return mg_x_bad(err, "messages", "messages[%zu].tool_call_id \"%s\" "
                        "answers no tool call of an earlier assistant "
                        "message.", i, json_string_value(id));
    }

    /* each tool result copies the name: sent once, it is counted */

    if (mg_g_copies(rq, json_dumpb(name, NULL, 0, JSON_ENCODE_ANY) + 8)
        != MG_X_OK)
    {
        if (rq->bound) {
            return mg_x_too_large(err, "gemini", rq->max);
        }

        return mg_x_bad(err, "messages", "messages[%zu]: the tool results "
                        "repeat their functions' names too often: the "
                        "request sent would be more than %d times as long "
                        "as this one.", i, MG_G_COPY_RATIO + 1);
    }

    memset(&text, 0, sizeof(mg_buf_t));
    resp = NULL;

    content = mg_x_get(m, "content");

    if (json_is_string(content)) {
        if (mg_buf_append(&text, json_string_value(content),
                          json_string_length(content))
            != MG_X_OK)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

    } else if (json_is_array(content)) {
        json_array_foreach(content, j, part) {
            v = json_object_get(part, "text");

            if (!mg_x_streq(json_string_value(json_object_get(part, "type")),
                            "text")
                || !json_is_string(v))
            {
                rc = mg_x_bad(err, "messages", "messages[%zu].content[%zu]: "
                              "a tool result may only hold text parts with "
                              "this model's backend.", i, j);
                goto done;
            }

            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                rc = MG_X_NOMEM;
                goto done;
            }
        }

    } else if (content) {
        rc = mg_x_bad(err, "messages", "messages[%zu].content must be a "
                      "string or an array of parts.", i);
        goto done;
    }

    resp = text.len ? json_loadb(text.data, text.len, JSON_ALLOW_NUL, NULL)
                    : NULL;

    if (!json_is_object(resp)) {
        json_decref(resp);
        resp = json_pack("{s:s%}", "content", text.len ? text.data : "",
                         text.len);
    }

    p = resp ? json_pack("{s:{s:O,s:O}}", "functionResponse", "name", name,
                         "response", resp)
             : NULL;

    rc = (p && json_array_append_new(parts, p) == 0) ? MG_X_OK : MG_X_NOMEM;

done:

    json_decref(resp);
    mg_buf_free(&text);

    return rc;
}


static json_t *
mg_g_text_part(json_t *s)
{
    return json_pack("{s:O}", "text", s);
}


static int
mg_g_req_media(void *data, unsigned kind, json_t *part, size_t i, size_t j,
    json_t **gp, mg_xerror_t *err)
{
    switch (kind) {

    case MG_X_PART_IMAGE:
        return mg_g_req_image(part, gp, i, j, err);

    case MG_X_PART_FILE:
        return mg_g_req_file(part, gp, i, j, err);

    default:
        return mg_g_req_audio(part, gp, i, j, err);
    }
}


static const mg_x_content_t  mg_g_content = {
    mg_g_text_part, mg_g_req_media, NULL, 1
};


/* a message's content, a string or an array of parts, appended as parts */

static int
mg_g_req_content(json_t *content, unsigned allow, json_t *parts, size_t i,
    mg_xerror_t *err)
{
    return mg_x_content(&mg_g_content, NULL, content, allow, parts, i, err);
}


/*
 * Gemini fetches no URLs: an image is sent inline, or it is a file the
 * Files API already holds (its URI goes as fileData).
 */

static int
mg_g_req_image(json_t *part, json_t **gp, size_t i, size_t j,
    mg_xerror_t *err)
{
    int            rc;
    json_t        *p;
    mg_x_image_t   im;

    rc = mg_x_image_url(part, i, j, &im, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (im.data) {
        p = mg_g_inline(im.mt, im.mt_len, im.b64, im.b64_len);

    } else if (mg_g_file_uri(im.s, im.len)) {
        p = json_pack("{s:{s:O}}", "fileData", "fileUri", im.url);

    } else {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: an "
                        "image must be a base64 data URL or a Gemini file "
                        "URI (" MG_G_FILES_HOST "...): this model's backend "
                        "does not fetch URLs.", i, j);
    }

    if (p == NULL) {
        return MG_X_NOMEM;
    }

    *gp = p;

    return MG_X_OK;
}


/* a file given inline goes as it is; file ids mean nothing here */

static int
mg_g_req_file(json_t *part, json_t **gp, size_t i, size_t j,
    mg_xerror_t *err)
{
    int           rc;
    json_t       *p;
    mg_x_file_t   f;

    rc = mg_x_file_data(part, i, j, &f, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (f.mt == NULL) {
        if (!mg_x_file_is_pdf(&f)) {
            return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: "
                            "file_data must be a data URL, or a PDF named "
                            "*.pdf.", i, j);
        }

        f.mt = "application/pdf";
        f.mt_len = sizeof("application/pdf") - 1;
    }

    p = mg_g_inline(f.mt, f.mt_len, f.data, f.data_len);
    if (p == NULL) {
        return MG_X_NOMEM;
    }

    *gp = p;

    return MG_X_OK;
}


static int
mg_g_req_audio(json_t *part, json_t **gp, size_t i, size_t j,
    mg_xerror_t *err)
{
    size_t       k;
    json_t      *a, *data, *p;
    const char  *fmt;
    char         mt[16];

    static const char  *formats[] = {
        "wav", "mp3", "aiff", "aac", "ogg", "flac"
    };

    a = json_object_get(part, "input_audio");
    data = json_object_get(a, "data");
    fmt = json_string_value(json_object_get(a, "format"));

    for (k = 0; fmt && k < sizeof(formats) / sizeof(formats[0]); k++) {
        if (strcmp(fmt, formats[k]) == 0) {
            break;
        }
    }

    if (fmt == NULL || k == sizeof(formats) / sizeof(formats[0])) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]."
                        "input_audio.format must be wav, mp3, aiff, aac, "
                        "ogg or flac.", i, j);
    }

    if (!json_is_string(data) || json_string_length(data) == 0) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]."
                        "input_audio.data must be a base64 string.", i, j);
    }

    (void) snprintf(mt, sizeof(mt), "audio/%s", formats[k]);

    p = json_pack("{s:{s:s,s:O}}", "inlineData", "mimeType", mt, "data",
                  data);
    if (p == NULL) {
        return MG_X_NOMEM;
    }

    *gp = p;

    return MG_X_OK;
}


/* inlineData; media types lower-cased, and the common "image/jpg" made
 * right */

static json_t *
mg_g_inline(const char *mt, size_t mt_len, const char *data, size_t data_len)
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

    return json_pack("{s:{s:s%,s:s%}}", "inlineData", "mimeType", mt, mt_len,
                     "data", data, data_len);
}


/* https://generativelanguage.googleapis.com/v1beta/files/abc123 */

static int
mg_g_file_uri(const char *s, size_t len)
{
    size_t       n, k;
    const char  *p;

    n = sizeof(MG_G_FILES_HOST) - 1;

    if (len <= n || strncasecmp(s, MG_G_FILES_HOST, n) != 0) {
        return 0;
    }

    p = s + n;
    len -= n;

    for (k = 0; k + 7 < len; k++) {
        if (memcmp(p + k, "/files/", 7) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * OpenAI function tools -> one Gemini tool with the function declarations.
 * strict has no counterpart (Gemini validates the arguments it writes
 * against the declaration anyway) and is dropped.
 */

static int
mg_g_req_tools(mg_g_req_t *rq, json_t *in, json_t *req, mg_xerror_t *err)
{
    int             rc;
    size_t          i;
    json_t         *tools, *decls, *t, *name, *desc, *params, *schema;
    json_t         *d, *v;
    mg_g_schema_t   sc;

    tools = mg_x_get(in, "tools");

    if (tools == NULL) {
        return mg_g_req_tool_choice(in, req, 0, err);
    }

    if (!json_is_array(tools)) {
        return mg_x_bad(err, "tools", "tools must be an array.");
    }

    decls = json_array();
    if (decls == NULL) {
        return MG_X_NOMEM;
    }

    d = NULL;
    schema = NULL;

    json_array_foreach(tools, i, t) {
        rc = mg_x_tool_def(t, i, &name, &desc, &params, &v, err);
        if (rc != MG_X_OK) {
            goto done;
        }

        if (params) {
            sc.root = params;
            sc.nodes = MG_G_SCHEMA_NODES;
            sc.req = rq;
            sc.refs = 0;
            sc.depth = 0;
            sc.over = 0;
            sc.why = NULL;

            rc = mg_g_schema(&sc, params, &schema);

            if (rc == MG_X_ERROR && sc.over && rq->bound) {
                rc = mg_x_too_large(err, "gemini", rq->max);
                goto done;
            }

            if (rc == MG_X_ERROR) {
                rc = mg_x_bad(err, "tools", "tools[%zu].function.parameters "
                              "%s.", i, sc.why);
                goto done;
            }

            if (rc != MG_X_OK) {
                goto done;
            }

            /* no arguments: Gemini refuses an object without properties */

            if (json_object_get(schema, "properties") == NULL
                && json_object_get(schema, "anyOf") == NULL)
            {
                json_decref(schema);
                schema = NULL;
            }
        }

        d = json_object();

        if (d == NULL
            || json_object_set(d, "name", name) != 0
            || (desc && json_object_set(d, "description", desc) != 0)
            || (schema && json_object_set(d, "parameters", schema) != 0)
            || json_array_append(decls, d) != 0)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

        json_decref(schema);
        json_decref(d);
        schema = NULL;
        d = NULL;
    }

    if (json_array_size(decls)
        && mg_x_set(req, "tools",
                    json_pack("[{s:O}]", "functionDeclarations", decls))
           != MG_X_OK)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_g_req_tool_choice(in, req, json_array_size(decls), err);

done:

    json_decref(schema);
    json_decref(d);
    json_decref(decls);

    return rc;
}


/*
 * auto, none, required and a named function -> functionCallingConfig
 * AUTO, NONE, ANY, and ANY limited to that function.  Gemini has no
 * switch for parallel calls: parallel_tool_calls is checked and dropped.
 */

static int
mg_g_req_tool_choice(json_t *in, json_t *req, size_t ntools,
    mg_xerror_t *err)
{
    int             rc;
    json_t         *fcc, *name;
    const char     *mode;
    mg_x_choice_t   c;

    static const char  *modes[] = { NULL, "AUTO", "ANY", "NONE", "ANY" };

    rc = mg_x_tool_choice(in, ntools, &c, err);

    /* without tools there is nothing to choose from */

    if (rc != MG_X_OK || ntools == 0 || c.kind == MG_X_CHOICE_UNSET) {
        return rc;
    }

    mode = modes[c.kind];
    name = c.name;

    fcc = json_pack("{s:s}", "mode", mode);

    if (fcc == NULL
        || (name && mg_x_set(fcc, "allowedFunctionNames",
                             json_pack("[O]", name))
                    != MG_X_OK))
    {
        json_decref(fcc);
        return MG_X_NOMEM;
    }

    return mg_x_set(req, "toolConfig",
                    json_pack("{s:o}", "functionCallingConfig", fcc));
}


/*
 * A JSON Schema -> the OpenAPI 3.0 subset of Gemini's Schema: what it
 * would refuse as unknown ($schema, additionalProperties, ...) goes,
 * type ["x", "null"] and anyOf [x, {"type": "null"}] become x with
 * nullable, const a one-value enum, $ref the schema it points to.  *out
 * is a new object.  MG_X_ERROR: sc->why says what cannot be sent.
 */

static int
mg_g_schema(mg_g_schema_t *sc, json_t *in, json_t **out)
{
    int          rc;
    json_t      *o;
    const char  *ref;

    *out = NULL;

    if (sc->nodes == 0) {
        sc->why = "are too large once their $refs are expanded";
        return MG_X_ERROR;
    }

    if (sc->depth >= MG_G_SCHEMA_DEPTH) {
        sc->why = "nest too deeply";
        return MG_X_ERROR;
    }

    sc->nodes--;

    if (mg_g_schema_charge(sc, NULL, NULL) != MG_X_OK) {
        return MG_X_ERROR;
    }

    if (json_is_boolean(in)) {
        /* true (anything) or false: nothing a model can be told */
        *out = json_object();
        return *out ? MG_X_OK : MG_X_NOMEM;
    }

    if (!json_is_object(in)) {
        sc->why = "hold a schema that is not an object";
        return MG_X_ERROR;
    }

    ref = json_string_value(json_object_get(in, "$ref"));

    if (ref) {
        return mg_g_schema_ref(sc, in, ref, out);
    }

    o = json_object();
    if (o == NULL) {
        return MG_X_NOMEM;
    }

    sc->depth++;
    rc = mg_g_schema_keys(sc, in, o);
    sc->depth--;

    if (rc != MG_X_OK) {
        json_decref(o);
        return rc;
    }

    *out = o;

    return MG_X_OK;
}


/* "#", "#/$defs/NAME" and "#/definitions/NAME", expanded in place; a
 * description or title beside the $ref overrides the target's */

static int
mg_g_schema_ref(mg_g_schema_t *sc, json_t *in, const char *ref,
    json_t **out)
{
    int          rc;
    size_t       k;
    json_t      *target, *v;
    const char  *key;

    static const char  *keep[] = { "description", "title" };

    if (strcmp(ref, "#") == 0) {
        target = sc->root;

    } else if (strncmp(ref, "#/$defs/", 8) == 0) {
        target = json_object_get(json_object_get(sc->root, "$defs"),
                                 ref + 8);

    } else if (strncmp(ref, "#/definitions/", 14) == 0) {
        target = json_object_get(json_object_get(sc->root, "definitions"),
                                 ref + 14);

    } else {
        target = NULL;
    }

    if (target == NULL) {
        sc->why = "hold a $ref that cannot be resolved (only \"#/$defs/...\""
                  " and \"#/definitions/...\" can)";
        return MG_X_ERROR;
    }

    if (sc->refs >= MG_G_SCHEMA_REFS) {
        sc->why = "nest $refs too deeply (a recursive schema cannot be sent "
                  "to this model's backend)";
        return MG_X_ERROR;
    }

    sc->refs++;
    sc->depth++;

    rc = mg_g_schema(sc, target, out);

    sc->refs--;
    sc->depth--;

    if (rc != MG_X_OK) {
        return rc;
    }

    for (k = 0; k < sizeof(keep) / sizeof(keep[0]); k++) {
        key = keep[k];
        v = json_object_get(in, key);

        if (json_is_string(v)) {
            rc = mg_g_schema_put(sc, *out, key, v);

            if (rc != MG_X_OK) {
                json_decref(*out);
                *out = NULL;
                return rc;
            }
        }
    }

    return MG_X_OK;
}


static int
mg_g_schema_keys(mg_g_schema_t *sc, json_t *in, json_t *o)
{
    int          rc, nullable;
    size_t       k;
    json_t      *v, *s;
    const char  *key, *fmt;

    static const char  *strings[] = { "title", "description", "pattern" };
    static const char  *numbers[] = { "minimum", "maximum" };
    static const char  *counts[] = {
        "minItems", "maxItems", "minLength", "maxLength", "minProperties",
        "maxProperties"
    };
    static const char  *formats[] = {
        "enum", "date-time", "int32", "int64", "float", "double"
    };

    nullable = 0;

    json_object_foreach(in, key, v) {
        rc = MG_X_OK;

        if (strcmp(key, "type") == 0) {

            /* a list of types may become anyOf [{"type": ...}, ...] */

            rc = mg_g_schema_charge(sc, key, v);

            if (rc == MG_X_OK && json_is_array(v)) {
                rc = mg_g_schema_count(sc, sizeof("\"anyOf\":[]")
                                       + json_array_size(v)
                                         * sizeof("{\"type\":},"));
            }

            if (rc == MG_X_OK) {
                rc = mg_g_schema_type(v, o, &nullable);
            }

        } else if (strcmp(key, "properties") == 0) {
            rc = mg_g_schema_charge(sc, key, NULL);

            if (rc == MG_X_OK) {
                rc = mg_g_schema_props(sc, v, o);
            }

        } else if (strcmp(key, "items") == 0) {

            /* a tuple's list of item schemas has no counterpart: its
             * first one stands for all (Gemini wants items for arrays) */

            if (json_is_array(v)) {
                v = json_array_get(v, 0);
            }

            if (json_is_object(v) || json_is_boolean(v)) {
                rc = mg_g_schema_charge(sc, key, NULL);

                if (rc == MG_X_OK) {
                    rc = mg_g_schema(sc, v, &s);
                }

                if (rc == MG_X_OK) {
                    rc = mg_x_set(o, "items", s);
                }
            }

        } else if (strcmp(key, "anyOf") == 0 || strcmp(key, "oneOf") == 0) {
            rc = mg_g_schema_any(sc, v, o, &nullable);

        } else if (strcmp(key, "allOf") == 0) {
            rc = mg_g_schema_all(sc, v, o);

        } else if (strcmp(key, "enum") == 0) {

            /* what is kept of the list is charged as the whole list */

            rc = mg_g_schema_charge(sc, key, v);

            if (rc == MG_X_OK) {
                rc = mg_g_schema_enum(v, o, &nullable);
            }

        } else if (strcmp(key, "const") == 0) {
            if (json_is_string(v)) {
                rc = mg_g_schema_charge(sc, "enum[]", v);

                if (rc == MG_X_OK) {
                    rc = mg_x_set(o, "enum", json_pack("[O]", v));
                }
            }

        } else if (strcmp(key, "format") == 0) {

            /* Gemini refuses the other formats (email, uri, ...) */

            fmt = json_string_value(v);

            for (k = 0; fmt && k < sizeof(formats) / sizeof(formats[0]);
                 k++)
            {
                if (strcmp(fmt, formats[k]) == 0) {
                    rc = mg_g_schema_put(sc, o, key, v);
                    break;
                }
            }

        } else if (strcmp(key, "required") == 0
                   || strcmp(key, "propertyOrdering") == 0)
        {
            rc = mg_g_schema_charge(sc, key, v);

            if (rc == MG_X_OK) {
                rc = mg_g_schema_strings(v, o, key);
            }

        } else if (strcmp(key, "default") == 0
                   || strcmp(key, "example") == 0)
        {
            rc = mg_g_schema_put(sc, o, key, v);

        } else if (strcmp(key, "nullable") == 0) {
            nullable |= json_is_true(v);

        } else {
            for (k = 0; k < sizeof(strings) / sizeof(strings[0]); k++) {
                if (strcmp(key, strings[k]) == 0 && json_is_string(v)) {
                    rc = mg_g_schema_put(sc, o, key, v);
                }
            }

            for (k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
                if (strcmp(key, numbers[k]) == 0 && json_is_number(v)) {
                    rc = mg_g_schema_put(sc, o, key, v);
                }
            }

            for (k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
                if (strcmp(key, counts[k]) == 0 && json_is_integer(v)
                    && json_integer_value(v) >= 0)
                {
                    rc = mg_g_schema_put(sc, o, key, v);
                }
            }

            /* anything else ($schema, additionalProperties, $defs, ...)
             * would be refused as an unknown field */
        }

        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (nullable && mg_x_set(o, "nullable", json_true()) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    v = json_object_get(o, "properties");

    if (v && json_object_size(v) == 0) {
        /* "should be non-empty for OBJECT type" */
        (void) json_object_del(o, "properties");
        v = NULL;
    }

    if (json_object_get(o, "type") == NULL
        && json_object_get(o, "anyOf") == NULL)
    {
        if (v) {
            return mg_x_set_str(o, "type", "object");
        }

        if (json_object_get(o, "items")) {
            return mg_x_set_str(o, "type", "array");
        }

        /* Gemini's enums are of type string */

        if (json_object_get(o, "enum")) {
            return mg_x_set_str(o, "type", "string");
        }
    }

    return MG_X_OK;
}


/*
 * What a member of the schema written costs the request's copies: its
 * name (NULL: a node's own braces and the members the conversion adds)
 * and, when v is given, v as the dump writes it.  Counting a value takes
 * as long as writing it would, but no longer than the budget lasts.
 */

static int
mg_g_schema_charge(mg_g_schema_t *sc, const char *key, json_t *v)
{
    size_t  n;

    n = key ? strlen(key) + 4 : MG_G_NODE_BYTES;

    if (v) {
        n += json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    }

    return mg_g_schema_count(sc, n);
}


static int
mg_g_schema_count(mg_g_schema_t *sc, size_t n)
{
    if (mg_g_copies(sc->req, n) != MG_X_OK) {
        sc->over = 1;
        sc->why = "are too large once their $refs are expanded";
        return MG_X_ERROR;
    }

    return MG_X_OK;
}


/* v, a value of the client's schema, shared into o once it is charged */

static int
mg_g_schema_put(mg_g_schema_t *sc, json_t *o, const char *key, json_t *v)
{
    if (mg_g_schema_charge(sc, key, v) != MG_X_OK) {
        return MG_X_ERROR;
    }

    return json_object_set(o, key, v) == 0 ? MG_X_OK : MG_X_NOMEM;
}


/* a type, or a list of them: "null" among them makes it nullable */

static int
mg_g_schema_type(json_t *v, json_t *o, int *nullable)
{
    size_t       i;
    json_t      *t, *types, *any;
    const char  *s;

    if (json_is_string(v)) {
        return json_object_set(o, "type", v) == 0 ? MG_X_OK : MG_X_NOMEM;
    }

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    types = json_array();
    if (types == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, t) {
        s = json_string_value(t);

        if (s == NULL) {
            continue;
        }

        if (strcmp(s, "null") == 0) {
            *nullable = 1;
            continue;
        }

        if (json_array_append(types, t) != 0) {
            json_decref(types);
            return MG_X_NOMEM;
        }
    }

    if (json_array_size(types) == 0) {
        json_decref(types);
        return *nullable ? mg_x_set_str(o, "type", "null") : MG_X_OK;
    }

    if (json_array_size(types) == 1) {
        t = json_incref(json_array_get(types, 0));
        json_decref(types);
        return mg_x_set(o, "type", t);
    }

    any = json_array();
    if (any == NULL) {
        json_decref(types);
        return MG_X_NOMEM;
    }

    json_array_foreach(types, i, t) {
        if (json_array_append_new(any, json_pack("{s:O}", "type", t)) != 0) {
            json_decref(any);
            json_decref(types);
            return MG_X_NOMEM;
        }
    }

    json_decref(types);

    return mg_x_set(o, "anyOf", any);
}


static int
mg_g_schema_props(mg_g_schema_t *sc, json_t *v, json_t *o)
{
    int          rc;
    json_t      *props, *p, *s;
    const char  *key;

    if (!json_is_object(v)) {
        return MG_X_OK;
    }

    props = json_object();
    if (props == NULL) {
        return MG_X_NOMEM;
    }

    json_object_foreach(v, key, p) {
        rc = mg_g_schema_charge(sc, key, NULL);

        if (rc == MG_X_OK) {
            rc = mg_g_schema(sc, p, &s);
        }

        if (rc == MG_X_OK) {
            rc = mg_x_set(props, key, s);
        }

        if (rc != MG_X_OK) {
            json_decref(props);
            return rc;
        }
    }

    return mg_x_set(o, "properties", props);
}


/* anyOf (oneOf is taken as anyOf): {"type": "null"} members make it
 * nullable, and a single member left is merged in */

static int
mg_g_schema_any(mg_g_schema_t *sc, json_t *v, json_t *o, int *nullable)
{
    int      rc;
    size_t   i;
    json_t  *list, *e, *s;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    list = json_array();
    if (list == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, e) {
        if (json_object_size(e) == 1
            && mg_x_streq(json_string_value(json_object_get(e, "type")),
                          "null"))
        {
            *nullable = 1;
            continue;
        }

        rc = mg_g_schema(sc, e, &s);

        if (rc == MG_X_OK && json_array_append_new(list, s) != 0) {
            rc = MG_X_NOMEM;
        }

        if (rc != MG_X_OK) {
            json_decref(list);
            return rc;
        }
    }

    if (json_array_size(list) == 1) {
        rc = mg_g_merge(o, json_array_get(list, 0));
        json_decref(list);
        return rc;
    }

    if (json_array_size(list) == 0) {
        json_decref(list);
        return MG_X_OK;
    }

    return mg_x_set(o, "anyOf", list);
}


/* allOf: its members merged in (pydantic wraps a $ref in one) */

static int
mg_g_schema_all(mg_g_schema_t *sc, json_t *v, json_t *o)
{
    int      rc;
    size_t   i;
    json_t  *e, *s;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    json_array_foreach(v, i, e) {
        rc = mg_g_schema(sc, e, &s);
        if (rc != MG_X_OK) {
            return rc;
        }

        rc = mg_g_merge(o, s);

        json_decref(s);

        if (rc != MG_X_OK) {
            return rc;
        }
    }

    return MG_X_OK;
}


/* Gemini's enums are of strings; null among them makes it nullable, and
 * an enum of other values cannot be said at all */

static int
mg_g_schema_enum(json_t *v, json_t *o, int *nullable)
{
    size_t   i;
    json_t  *list, *e;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    json_array_foreach(v, i, e) {
        if (!json_is_string(e) && !json_is_null(e)) {
            return MG_X_OK;
        }
    }

    list = json_array();
    if (list == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, e) {
        if (json_is_null(e)) {
            *nullable = 1;
            continue;
        }

        if (json_array_append(list, e) != 0) {
            json_decref(list);
            return MG_X_NOMEM;
        }
    }

    if (json_array_size(list) == 0) {
        json_decref(list);
        return MG_X_OK;
    }

    return mg_x_set(o, "enum", list);
}


/* a list of names, without what is not a string */

static int
mg_g_schema_strings(json_t *v, json_t *o, const char *key)
{
    size_t   i;
    json_t  *list, *e;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    list = json_array();
    if (list == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, e) {
        if (json_is_string(e) && json_array_append(list, e) != 0) {
            json_decref(list);
            return MG_X_NOMEM;
        }
    }

    return mg_x_set(o, key, list);
}


/* s's members that o does not have yet */

static int
mg_g_merge(json_t *o, json_t *s)
{
    json_t      *v;
    const char  *key;

    json_object_foreach(s, key, v) {
        if (json_object_get(o, key) == NULL
            && json_object_set(o, key, v) != 0)
        {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}


/* generationConfig */

static int
mg_g_req_config(json_t *in, const mg_gemini_opts_t *o, json_t *gc,
    mg_xerror_t *err)
{
    int      rc;
    size_t   k;
    json_t  *v, *seq;

    static const struct {
        const char  *openai;
        const char  *gemini;
    } numbers[] = {
        { "temperature", "temperature" },
        { "top_p", "topP" },
        { "presence_penalty", "presencePenalty" },
        { "frequency_penalty", "frequencyPenalty" }
    };

    rc = mg_x_max_tokens(in, &v, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (v) {
        if (json_object_set(gc, "maxOutputTokens", v) != 0) {
            return MG_X_NOMEM;
        }

    } else if (o && o->default_max_tokens > 0
               && mg_x_set(gc, "maxOutputTokens",
                           json_integer(o->default_max_tokens))
                  != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    /* the same ranges as OpenAI's: sent as they are; a penalty of 0 (the
     * default) is left out, as some models refuse penalties at all */

    for (k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
        v = mg_x_get(in, numbers[k].openai);

        if (v == NULL) {
            continue;
        }

        if (!json_is_number(v)) {
            return mg_x_bad(err, numbers[k].openai, "%s must be a number.",
                            numbers[k].openai);
        }

        if (k >= 2 && json_number_value(v) == 0) {
            continue;
        }

        if (json_object_set(gc, numbers[k].gemini, v) != 0) {
            return MG_X_NOMEM;
        }
    }

    /* not OpenAI's, but many clients send it */

    v = mg_x_get(in, "top_k");

    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            return mg_x_bad(err, "top_k", "top_k must be a non-negative "
                            "integer.");
        }

        if (json_object_set(gc, "topK", v) != 0) {
            return MG_X_NOMEM;
        }
    }

    v = mg_x_get(in, "seed");

    if (v) {
        if (!json_is_integer(v)) {
            return mg_x_bad(err, "seed", "seed must be an integer.");
        }

        if (json_object_set(gc, "seed", v) != 0) {
            return MG_X_NOMEM;
        }
    }

    rc = mg_x_stop(in, 0, &seq, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    if (seq && mg_x_set(gc, "stopSequences", seq) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    /* n was checked; 1 is Gemini's default */

    v = mg_x_get(in, "n");

    if (v && json_integer_value(v) > 1
        && json_object_set(gc, "candidateCount", v) != 0)
    {
        return MG_X_NOMEM;
    }

    return mg_g_req_output(in, gc, err);
}


/*
 * response_format: JSON mode, and a schema given as JSON Schema (Gemini's
 * responseJsonSchema takes it whole, unlike responseSchema); and
 * reasoning_effort as a thinking budget, in tokens.
 */

static int
mg_g_req_output(json_t *in, json_t *gc, mg_xerror_t *err)
{
    size_t       k;
    json_t      *rf, *re, *schema;
    const char  *type, *s;

    static const struct {
        const char  *effort;
        json_int_t   budget;
    } budgets[] = {
        { "none", 0 },
        { "minimal", 512 },
        { "low", 1024 },
        { "medium", 8192 },
        { "high", 24576 },
        { "xhigh", 24576 }
    };

    rf = mg_x_get(in, "response_format");

    if (rf) {
        type = json_string_value(json_object_get(rf, "type"));
        schema = NULL;

        if (mg_x_streq(type, "json_schema")) {
            schema = json_object_get(json_object_get(rf, "json_schema"),
                                     "schema");

            if (!json_is_object(schema)) {
                return mg_x_bad(err, "response_format", "response_format."
                                "json_schema.schema must be an object.");
            }

        } else if (!mg_x_streq(type, "json_object")
                   && !mg_x_streq(type, "text"))
        {
            return mg_x_bad(err, "response_format", "response_format %s%s%s "
                            "is not supported by this model's backend.",
                            type ? "\"" : "",
                            type ? type : "without a type",
                            type ? "\"" : "");
        }

        if (type[0] == 'j'
            && (mg_x_set_str(gc, "responseMimeType", "application/json")
                != MG_X_OK
                || (schema
                    && json_object_set(gc, "responseJsonSchema", schema)
                       != 0)))
        {
            return MG_X_NOMEM;
        }
    }

    re = mg_x_get(in, "reasoning_effort");

    if (re == NULL) {
        return MG_X_OK;
    }

    s = json_string_value(re);

    for (k = 0; s && k < sizeof(budgets) / sizeof(budgets[0]); k++) {
        if (strcmp(s, budgets[k].effort) == 0) {
            return mg_x_set(gc, "thinkingConfig",
                            json_pack("{s:I}", "thinkingBudget",
                                      budgets[k].budget));
        }
    }

    return mg_x_bad(err, "reasoning_effort", "reasoning_effort must be none, "
                    "minimal, low, medium, high or xhigh.");
}


/* stream is not in the body: it picks the endpoint */

static int
mg_g_req_stream(json_t *in, int *stream, int *include_usage,
    mg_xerror_t *err)
{
    json_t  *v;

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
}


/* the response */

int
mg_gemini_response(const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc, unusable, all;
    size_t        i;
    json_t       *in, *e, *cands, *c, *choices, *choice, *res, *u, *rid;
    const char   *block, *reason;
    uint64_t      seed;
    json_error_t  jerr;

    in = json_loadb(body, body ? len : 0, JSON_ALLOW_NUL, &jerr);

    e = mg_g_error_body(in);

    if (e) {
        mg_g_error_map(0, e, err);
        json_decref(in);
        return MG_X_ERROR;
    }

    cands = json_object_get(in, "candidates");

    if (!json_is_object(in) || (cands && !json_is_array(cands))) {
        json_decref(in);
        return mg_x_bad_backend(err, "response");
    }

    rid = json_object_get(in, "responseId");
    seed = mg_g_seed(rid, created);

    choices = NULL;
    res = NULL;
    rc = MG_X_NOMEM;

    choices = json_array();
    if (choices == NULL) {
        goto done;
    }

    if (json_array_size(cands) == 0) {

        /* the prompt was blocked: an answer, not an error */

        block = json_string_value(json_object_get(json_object_get(in,
                                      "promptFeedback"), "blockReason"));

        if (block == NULL) {
            rc = mg_x_bad_backend(err, "response (no candidates)");
            goto done;
        }

        choice = json_pack("{s:i,s:{s:s,s:s,s:n},s:n,s:s}", "index", 0,
                           "message", "role", "assistant", "content", "",
                           "refusal", "logprobs", "finish_reason",
                           "content_filter");

        if (choice == NULL || json_array_append_new(choices, choice) != 0) {
            goto done;
        }
    }

    all = 1;
    reason = NULL;

    json_array_foreach(cands, i, c) {
        rc = mg_g_choice(c, i, seed, &choice, &unusable);
        if (rc != MG_X_OK) {
            goto done;
        }

        rc = MG_X_NOMEM;

        if (json_array_append_new(choices, choice) != 0) {
            goto done;
        }

        if (unusable) {
            reason = json_string_value(json_object_get(c, "finishReason"));

        } else {
            all = 0;
        }
    }

    /* a malformed function call (and the like) with nothing else: another
     * try, maybe on another backend, may well do better */

    if (json_array_size(cands) && all) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend gave no usable answer (%s).",
                      reason);

        rc = MG_X_ERROR;
        goto done;
    }

    res = json_object();

    if (res == NULL
        || mg_x_set(res, "id",
                    mg_x_prefixed("chatcmpl-",
                                  json_is_string(rid) ? json_string_value(rid)
                                                      : "",
                                  json_string_length(rid)))
           != MG_X_OK
        || mg_x_set_str(res, "object", "chat.completion") != MG_X_OK
        || mg_x_set(res, "created", json_integer(created)) != MG_X_OK
        || mg_x_set(res, "model",
                    json_stringn(model ? model : "", model ? model_len : 0))
           != MG_X_OK
        || json_object_set(res, "choices", choices) != 0)
    {
        goto done;
    }

    u = json_object_get(in, "usageMetadata");

    if (json_is_object(u)
        && mg_x_set(res, "usage",
                    mg_g_usage(mg_x_tokens(u, "promptTokenCount", 0),
                               mg_x_tokens(u, "candidatesTokenCount", 0),
                               mg_x_tokens(u, "thoughtsTokenCount", 0),
                               mg_x_tokens(u, "toolUsePromptTokenCount", 0),
                               mg_x_tokens(u, "cachedContentTokenCount", 0),
                               mg_x_tokens(u, "totalTokenCount", -1)))
           != MG_X_OK)
    {
        goto done;
    }

    rc = mg_x_dump(res, out, 0);

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    json_decref(res);
    json_decref(choices);
    json_decref(in);

    return rc;
}


/*
 * Tool call ids: Gemini's own when it gives one, else made up, the same
 * for the same response in a stream and whole.  They must not repeat
 * within a conversation (clients pair results by id), so they hash the
 * response id and the time with the call's place.
 */

static uint64_t
mg_g_seed(json_t *rid, long created)
{
    size_t          i, n;
    uint64_t        h;
    unsigned long   t;
    const char     *s;

    h = 0xcbf29ce484222325ULL;

    s = json_string_value(rid);
    n = s ? json_string_length(rid) : 0;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char) s[i]) * 0x100000001b3ULL;
    }

    t = (unsigned long) created;

    for (i = 0; i < sizeof(t); i++) {
        h = (h ^ ((t >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
    }

    return h;
}


static json_t *
mg_g_call_id(uint64_t seed, size_t cand, size_t k)
{
    char      buf[32];
    uint64_t  h;

    /* splitmix64's finalizer over the place */

    h = seed ^ ((uint64_t) cand << 40) ^ (uint64_t) k;
    h += 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    h ^= h >> 31;

    (void) snprintf(buf, sizeof(buf), "call_%016llx", (unsigned long long) h);

    return json_string(buf);
}


/*
 * A functionCall part -> an OpenAI tool call (with "index" for a stream
 * delta); the arguments go as a JSON string, a thought signature where
 * Google's OpenAI-compatible endpoint puts it.  A new reference.
 */

static json_t *
mg_g_tool_call(json_t *part, uint64_t seed, size_t cand, size_t k,
    int with_index)
{
    char    *args;
    json_t  *fc, *v, *id, *call, *sig;

    fc = json_object_get(part, "functionCall");
    v = json_object_get(fc, "args");

    args = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    if (args == NULL) {
        return NULL;
    }

    v = json_object_get(fc, "id");

    id = (json_is_string(v) && json_string_length(v))
         ? json_incref(v) : mg_g_call_id(seed, cand, k);

    call = json_object();

    if (id == NULL || call == NULL
        || (with_index
            && mg_x_set(call, "index", json_integer(k)) != MG_X_OK)
        || json_object_set(call, "id", id) != 0
        || mg_x_set_str(call, "type", "function") != MG_X_OK
        || mg_x_set(call, "function",
                    json_pack("{s:o,s:s}",
                              "name",
                              mg_g_string(json_object_get(fc, "name")),
                              "arguments", args))
           != MG_X_OK)
    {
        goto failed;
    }

    sig = json_object_get(part, "thoughtSignature");

    if (json_is_string(sig)
        && mg_x_set(call, "extra_content",
                    json_pack("{s:{s:O}}", "google", "thought_signature",
                              sig))
           != MG_X_OK)
    {
        goto failed;
    }

    free(args);
    json_decref(id);

    return call;

failed:

    free(args);
    json_decref(id);
    json_decref(call);

    return NULL;
}


/* one candidate -> one choice; *unusable: it ended malformed, empty */

static int
mg_g_choice(json_t *c, size_t index, uint64_t seed, json_t **choice,
    int *unusable)
{
    int           rc;
    size_t        i;
    json_t       *parts, *p, *v, *calls, *call, *msg;
    mg_buf_t      text;
    const char   *reason;

    *choice = NULL;
    *unusable = 0;

    memset(&text, 0, sizeof(mg_buf_t));
    msg = NULL;
    rc = MG_X_NOMEM;

    calls = json_array();
    if (calls == NULL) {
        goto done;
    }

    parts = json_object_get(json_object_get(c, "content"), "parts");

    /* thoughts (when asked for) and code execution have no chat shape */

    json_array_foreach(parts, i, p) {
        if (json_is_true(json_object_get(p, "thought"))) {
            continue;
        }

        v = json_object_get(p, "text");

        if (json_is_string(v)) {
            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        if (!json_is_object(json_object_get(p, "functionCall"))) {
            continue;
        }

        call = mg_g_tool_call(p, seed, index, json_array_size(calls), 0);

        if (call == NULL || json_array_append_new(calls, call) != 0) {
            goto done;
        }
    }

    reason = json_string_value(json_object_get(c, "finishReason"));

    *unusable = text.len == 0 && json_array_size(calls) == 0
                && mg_g_malformed(reason);

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

    *choice = json_pack("{s:I,s:O,s:n,s:s}", "index", (json_int_t) index,
                        "message", msg, "logprobs", "finish_reason",
                        mg_gemini_finish(reason, json_array_size(calls) != 0));

    rc = *choice ? MG_X_OK : MG_X_NOMEM;

done:

    mg_buf_free(&text);
    json_decref(msg);
    json_decref(calls);

    return rc;
}


/* table 10.2; a new or unknown reason is a normal stop */

const char *
mg_gemini_finish(const char *reason, int calls)
{
    size_t  k;

    static const char  *filtered[] = {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
        "LANGUAGE", "MODEL_ARMOR"
    };

    if (reason == NULL) {
        return calls ? "tool_calls" : "stop";
    }

    if (strcmp(reason, "MAX_TOKENS") == 0) {
        return "length";
    }

    for (k = 0; k < sizeof(filtered) / sizeof(filtered[0]); k++) {
        if (strcmp(reason, filtered[k]) == 0) {
            return "content_filter";
        }
    }

    if (strncmp(reason, "IMAGE_", 6) == 0) {
        return "content_filter";
    }

    /* Gemini says STOP after function calls too */

    return calls ? "tool_calls" : "stop";
}


/* reasons that leave nothing worth answering when nothing came before */

static int
mg_g_malformed(const char *reason)
{
    size_t  k;

    static const char  *malformed[] = {
        "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE",
        "MISSING_THOUGHT_SIGNATURE", "OTHER"
    };

    for (k = 0; reason && k < sizeof(malformed) / sizeof(malformed[0]); k++)
    {
        if (strcmp(reason, malformed[k]) == 0) {
            return 1;
        }
    }

    return 0;
}


/* whether a candidate has text or a function call for the client */

static int
mg_g_usable(json_t *c)
{
    size_t   i;
    json_t  *p;

    json_array_foreach(json_object_get(json_object_get(c, "content"),
                                       "parts"), i, p)
    {
        if (json_is_true(json_object_get(p, "thought"))) {
            continue;
        }

        if (json_string_length(json_object_get(p, "text"))
            || json_is_object(json_object_get(p, "functionCall")))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * table 10.3: thoughts are not in candidatesTokenCount but are billed as
 * output; a tool-use prompt is input.  total < 0: not given, summed.
 */

static json_t *
mg_g_usage(long long prompt, long long candidates, long long thoughts,
    long long tool_prompt, long long cached, long long total)
{
    long long  in, out;

    in = prompt + tool_prompt;
    out = candidates + thoughts;

    return json_pack("{s:I,s:I,s:I,s:{s:I},s:{s:I}}",
                     "prompt_tokens", (json_int_t) in,
                     "completion_tokens", (json_int_t) out,
                     "total_tokens", (json_int_t) (total < 0 ? in + out
                                                             : total),
                     "prompt_tokens_details",
                     "cached_tokens", (json_int_t) cached,
                     "completion_tokens_details",
                     "reasoning_tokens", (json_int_t) thoughts);
}


/* errors */

void
mg_gemini_error(int status, const char *body, size_t len,
    mg_xerror_t *err)
{
    json_t  *j;

    j = (body && len) ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;

    mg_g_error_map(status, mg_g_error_body(j), err);

    json_decref(j);
}


/* {"error": ...}, or that as the first of an array (as some proxies and
 * the stream endpoint without alt=sse send it); borrowed */

static json_t *
mg_g_error_body(json_t *j)
{
    if (json_is_array(j)) {
        j = json_array_get(j, 0);
    }

    return mg_x_get(j, "error") ? j : NULL;
}


/*
 * status: the HTTP status, or 0 for an error that came inside a 200 (a
 * body or a stream chunk): error.code, else error.status, stands for it.
 */

static void
mg_g_error_map(int status, json_t *body, mg_xerror_t *err)
{
    size_t       k;
    json_t      *e, *v;
    const char  *gs, *msg, *code;

    static const struct {
        const char  *status;
        int          http;
    } codes[] = {
        { "INVALID_ARGUMENT", 400 },
        { "FAILED_PRECONDITION", 400 },
        { "OUT_OF_RANGE", 400 },
        { "UNAUTHENTICATED", 401 },
        { "PERMISSION_DENIED", 403 },
        { "NOT_FOUND", 404 },
        { "ABORTED", 409 },
        { "ALREADY_EXISTS", 409 },
        { "RESOURCE_EXHAUSTED", 429 },
        { "CANCELLED", 499 },
        { "INTERNAL", 500 },
        { "UNKNOWN", 500 },
        { "DATA_LOSS", 500 },
        { "UNIMPLEMENTED", 501 },
        { "UNAVAILABLE", 503 },
        { "DEADLINE_EXCEEDED", 504 }
    };

    e = json_object_get(body, "error");
    gs = json_string_value(json_object_get(e, "status"));
    msg = json_string_value(json_object_get(e, "message"));

    if (msg == NULL || msg[0] == '\0') {
        msg = NULL;
    }

    if (status < 400 || status > 599) {
        v = json_object_get(e, "code");
        status = 500;

        if (json_is_integer(v) && json_integer_value(v) >= 400
            && json_integer_value(v) <= 599)
        {
            status = (int) json_integer_value(v);

        } else {
            for (k = 0; gs && k < sizeof(codes) / sizeof(codes[0]); k++) {
                if (strcmp(gs, codes[k].status) == 0) {
                    status = codes[k].http;
                    break;
                }
            }
        }
    }

    if (status == 429) {
        mg_xerror_set(err, 429, 1, "rate_limit_error", "rate_limit_exceeded",
                      NULL, "The model backend is rate limited%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 401 || status == 403
               || (status == 400 && mg_g_api_key_error(e)))
    {
        /* the gateway's key, not the client's: another may be good */

        mg_xerror_set(err, 502, 1, "server_error", "backend_auth_failed",
                      NULL, "backend authentication failed");

    } else if (status == 503) {
        mg_xerror_set(err, 503, 1, "server_error", "overloaded", NULL,
                      "The model backend is unavailable%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 504) {
        mg_xerror_set(err, 504, 1, "server_error", "backend_timeout", NULL,
                      "The model backend timed out%s%s",
                      msg ? ": " : ".", msg ? msg : "");

    } else if (status == 404) {
        mg_xerror_set(err, 404, 0, "invalid_request_error", "model_not_found",
                      "model", "The model backend does not know the "
                      "model%s%s", msg ? ": " : ".", msg ? msg : "");

    } else if (status == 413) {
        mg_xerror_set(err, 413, 0, "invalid_request_error",
                      "request_too_large", NULL, "%s",
                      msg ? msg : "The request is too large for the model "
                                  "backend.");

    } else if (status >= 500 || status == 408 || status == 409) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend failed (HTTP %d%s%s)%s%s", status,
                      gs ? " " : "", gs ? gs : "", msg ? ": " : ".",
                      msg ? msg : "");

    } else {
        /* the client's request, as Gemini judged it */

        code = (msg && strstr(msg, "input token count")
                && strstr(msg, "exceeds the maximum"))
               ? "context_length_exceeded" : NULL;

        if (msg) {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "%s", msg);

        } else {
            mg_xerror_set(err, 400, 0, "invalid_request_error", code, NULL,
                          "The model backend rejected the request (HTTP "
                          "%d%s%s).", status, gs ? " " : "", gs ? gs : "");
        }
    }
}


/* "API key not valid" is a 400 INVALID_ARGUMENT with an ErrorInfo reason
 * API_KEY_INVALID (or API_KEY_EXPIRED, ...) */

static int
mg_g_api_key_error(json_t *e)
{
    size_t       i;
    json_t      *d;
    const char  *reason;

    json_array_foreach(json_object_get(e, "details"), i, d) {
        reason = json_string_value(json_object_get(d, "reason"));

        if (reason && strncmp(reason, "API_KEY_", 8) == 0) {
            return 1;
        }
    }

    return 0;
}


/* the stream */

void
mg_gemini_stream_init(mg_gemini_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    memset(st, 0, sizeof(mg_gemini_stream_t));

    st->created = created;
    st->include_usage = include_usage != 0;
    st->total_tokens = -1;

    /* init cannot fail: a failed copy is reported by the first event */

    st->model = mg_x_strndup(model, model_len);

    if (st->model == NULL) {
        st->nomem = 1;
        return;
    }

    st->model_len = model ? model_len : 0;
}


int
mg_gemini_stream_event(mg_gemini_stream_t *st, const char *data,
    size_t data_len, mg_buf_t *out, mg_xerror_t *err)
{
    int      rc;
    size_t   start;
    json_t  *j, *e;

    if (st->nomem) {
        return mg_x_nomem(err);
    }

    if (st->done) {
        return MG_X_DONE;
    }

    if (data == NULL) {
        /* comments only */
        return MG_X_OK;
    }

    /* the chunks in the middle of a text answer need no tree */

    if (st->started && !st->full && st->nchoices
        && st->choices[0].started && !st->choices[0].finished)
    {
        rc = mg_g_stream_fast(st, data, data_len, out);

        if (rc != MG_XF_DECLINED) {
            return (rc == MG_X_NOMEM) ? mg_x_nomem(err) : rc;
        }
    }

    j = json_loadb(data, data_len, JSON_ALLOW_NUL, NULL);

    e = mg_g_error_body(j);

    if (e) {
        mg_g_error_map(0, e, err);
        json_decref(j);
        return MG_X_ERROR;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        return mg_x_bad_backend(err, "stream chunk");
    }

    start = out->len;

    rc = mg_g_stream_chunk(st, j, out, err);

    json_decref(j);

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    if (rc != MG_X_OK) {
        out->len = start;
    }

    return rc;
}


static int
mg_g_stream_fast(mg_gemini_stream_t *st, const char *data, size_t len,
    mg_buf_t *out)
{
    int        rc, sent;
    long long  n[6];

    n[0] = st->prompt_tokens;
    n[1] = st->candidates_tokens;
    n[2] = st->thoughts_tokens;
    n[3] = st->tool_prompt_tokens;
    n[4] = st->cached_tokens;
    n[5] = st->total_tokens;

    rc = mg_xf_gemini_chunk(data, len, st->prefix, st->prefix_len, n, &sent,
                            out);

    if (rc != MG_X_OK) {
        return rc;
    }

    st->prompt_tokens = n[0];
    st->candidates_tokens = n[1];
    st->thoughts_tokens = n[2];
    st->tool_prompt_tokens = n[3];
    st->cached_tokens = n[4];
    st->total_tokens = n[5];

    if (sent) {
        st->content = 1;
    }

    return MG_X_OK;
}


static int
mg_g_stream_start(mg_gemini_stream_t *st, json_t *j)
{
    json_t  *rid;

    rid = json_object_get(j, "responseId");

    /* every chunk goes on after these members */

    st->prefix = mg_x_chunk_head("chatcmpl-",
                                 json_is_string(rid) ? json_string_value(rid)
                                                     : "",
                                 json_string_length(rid), st->created,
                                 st->model, st->model_len, &st->prefix_len);
    if (st->prefix == NULL) {
        return MG_X_NOMEM;
    }

    st->seed = mg_g_seed(rid, st->created);
    st->started = 1;

    return MG_X_OK;
}


/*
 * A chunk is checked whole before anything of it is sent, so that a chunk
 * that fails changes nothing: the state stays that of what was sent.
 */

static int
mg_g_stream_chunk(mg_gemini_stream_t *st, json_t *j, mg_buf_t *out,
    mg_xerror_t *err)
{
    int                  rc, usable;
    size_t               i, idx;
    json_t              *cands, *c, *delta;
    const char          *reason, *malformed;
    mg_gemini_choice_t  *ch;

    cands = json_object_get(j, "candidates");
    usable = 0;
    malformed = NULL;

    json_array_foreach(cands, i, c) {
        if (mg_g_stream_index(c, i, &idx) != MG_X_OK) {
            return mg_x_bad_backend(err, "stream (a candidate index out of "
                                    "range)");
        }

        if (idx < st->nchoices && st->choices[idx].finished) {
            continue;
        }

        usable |= mg_g_usable(c);

        reason = json_string_value(json_object_get(c, "finishReason"));

        if (mg_g_malformed(reason)) {
            malformed = reason;
        }
    }

    /* as whole: nothing sent yet, so another try may still be made */

    if (malformed && !usable && !st->content) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend gave no usable answer (%s).",
                      malformed);

        return MG_X_ERROR;
    }

    if (!st->started) {
        rc = mg_g_stream_start(st, j);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    mg_g_stream_usage(st, json_object_get(j, "usageMetadata"));

    json_array_foreach(cands, i, c) {
        (void) mg_g_stream_index(c, i, &idx);

        rc = mg_g_stream_candidate(st, c, idx, out);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (json_array_size(cands)
        || json_string_value(json_object_get(json_object_get(j,
                                 "promptFeedback"), "blockReason"))
           == NULL)
    {
        return MG_X_OK;
    }

    /* the prompt was blocked: the answer ends before it began */

    ch = mg_g_stream_choice(st, 0);
    if (ch == NULL) {
        return MG_X_NOMEM;
    }

    if (ch->finished) {
        return MG_X_OK;
    }

    if (!ch->started) {
        delta = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
        if (delta == NULL) {
            return MG_X_NOMEM;
        }

        rc = mg_g_chunk(st, out, 0, delta, NULL);

        json_decref(delta);

        if (rc != MG_X_OK) {
            return rc;
        }

        ch->started = 1;
    }

    delta = json_object();
    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_g_chunk(st, out, 0, delta, "content_filter");

    json_decref(delta);

    if (rc == MG_X_OK) {
        ch->finished = 1;
        st->finished = 1;
    }

    return rc;
}


/* a candidate's index: its own, or its place in the chunk */

static int
mg_g_stream_index(json_t *c, size_t pos, size_t *idx)
{
    json_t  *v;

    v = json_object_get(c, "index");

    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0
            || json_integer_value(v) >= MG_G_CHOICES_MAX)
        {
            return MG_X_ERROR;
        }

        *idx = (size_t) json_integer_value(v);
        return MG_X_OK;
    }

    *idx = pos;

    return pos < MG_G_CHOICES_MAX ? MG_X_OK : MG_X_ERROR;
}


/*
 * One candidate of a chunk: a role chunk the first time, then its text
 * (consecutive text parts as one delta) and its function calls (whole, as
 * Gemini sends them) in order, then the finish chunk if it says why it
 * ended.
 */

static int
mg_g_stream_candidate(mg_gemini_stream_t *st, json_t *c, size_t idx,
    mg_buf_t *out)
{
    int                  rc;
    size_t               i;
    json_t              *parts, *p, *v, *call, *delta;
    mg_buf_t             text;
    const char          *reason;
    mg_gemini_choice_t  *ch;

    ch = mg_g_stream_choice(st, idx);
    if (ch == NULL) {
        return MG_X_NOMEM;
    }

    if (ch->finished) {
        return MG_X_OK;
    }

    if (!ch->started) {
        delta = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
        if (delta == NULL) {
            return MG_X_NOMEM;
        }

        rc = mg_g_chunk(st, out, idx, delta, NULL);

        json_decref(delta);

        if (rc != MG_X_OK) {
            return rc;
        }

        ch->started = 1;
    }

    memset(&text, 0, sizeof(mg_buf_t));
    rc = MG_X_NOMEM;

    parts = json_object_get(json_object_get(c, "content"), "parts");

    json_array_foreach(parts, i, p) {
        if (json_is_true(json_object_get(p, "thought"))) {
            continue;
        }

        v = json_object_get(p, "text");

        if (json_is_string(v)) {
            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        if (!json_is_object(json_object_get(p, "functionCall"))) {
            continue;
        }

        if (mg_g_stream_text(st, idx, &text, out) != MG_X_OK) {
            goto done;
        }

        call = mg_g_tool_call(p, st->seed, idx, ch->ntools, 1);
        delta = call ? json_pack("{s:[o]}", "tool_calls", call) : NULL;

        if (delta == NULL) {
            goto done;
        }

        rc = mg_g_chunk(st, out, idx, delta, NULL);

        json_decref(delta);

        if (rc != MG_X_OK) {
            goto done;
        }

        rc = MG_X_NOMEM;
        ch->ntools++;
        st->content = 1;
    }

    if (mg_g_stream_text(st, idx, &text, out) != MG_X_OK) {
        goto done;
    }

    reason = json_string_value(json_object_get(c, "finishReason"));

    if (reason == NULL) {
        rc = MG_X_OK;
        goto done;
    }

    delta = json_object();
    if (delta == NULL) {
        goto done;
    }

    rc = mg_g_chunk(st, out, idx, delta,
                    mg_gemini_finish(reason, ch->ntools != 0));

    json_decref(delta);

    if (rc == MG_X_OK) {
        ch->finished = 1;
        st->finished = 1;
    }

done:

    mg_buf_free(&text);

    return rc;
}


/* the state of choice idx, made as needed */

static mg_gemini_choice_t *
mg_g_stream_choice(mg_gemini_stream_t *st, size_t idx)
{
    mg_gemini_choice_t  *c;

    if (idx >= st->nchoices) {
        c = realloc(st->choices, (idx + 1) * sizeof(mg_gemini_choice_t));
        if (c == NULL) {
            return NULL;
        }

        memset(c + st->nchoices, 0,
               (idx + 1 - st->nchoices) * sizeof(mg_gemini_choice_t));

        st->choices = c;
        st->nchoices = idx + 1;
    }

    return &st->choices[idx];
}


/* the text gathered so far as one delta; emptied */

static int
mg_g_stream_text(mg_gemini_stream_t *st, size_t idx, mg_buf_t *text,
    mg_buf_t *out)
{
    int      rc;
    json_t  *delta;

    if (text->len == 0) {
        return MG_X_OK;
    }

    delta = json_object();

    if (delta == NULL
        || mg_x_set(delta, "content", json_stringn(text->data, text->len))
           != MG_X_OK)
    {
        json_decref(delta);
        return MG_X_NOMEM;
    }

    rc = mg_g_chunk(st, out, idx, delta, NULL);

    json_decref(delta);

    if (rc == MG_X_OK) {
        text->len = 0;
        st->content = 1;
    }

    return rc;
}


/* counts grow as the stream goes: the last ones given are the totals */

static void
mg_g_stream_usage(mg_gemini_stream_t *st, json_t *u)
{
    if (!json_is_object(u)) {
        return;
    }

    st->prompt_tokens = mg_x_tokens(u, "promptTokenCount",
                                    st->prompt_tokens);
    st->candidates_tokens = mg_x_tokens(u, "candidatesTokenCount",
                                        st->candidates_tokens);
    st->thoughts_tokens = mg_x_tokens(u, "thoughtsTokenCount",
                                      st->thoughts_tokens);
    st->tool_prompt_tokens = mg_x_tokens(u, "toolUsePromptTokenCount",
                                         st->tool_prompt_tokens);
    st->cached_tokens = mg_x_tokens(u, "cachedContentTokenCount",
                                    st->cached_tokens);
    st->total_tokens = mg_x_tokens(u, "totalTokenCount", st->total_tokens);
}


int
mg_gemini_stream_finish(mg_gemini_stream_t *st, mg_buf_t *out)
{
    int      rc;
    size_t   i, start;
    json_t  *delta, *u;

    if (st->nomem) {
        return MG_X_NOMEM;
    }

    if (st->done) {
        return MG_X_DONE;
    }

    /* Gemini ends every answer with a finishReason: none, it was cut */

    if (!st->finished) {
        return MG_X_ERROR;
    }

    start = out->len;
    rc = MG_X_NOMEM;

    delta = json_object();
    u = NULL;

    if (delta == NULL) {
        goto done;
    }

    for (i = 0; i < st->nchoices; i++) {
        if (st->choices[i].started && !st->choices[i].finished) {
            if (mg_g_chunk(st, out, i, delta, "stop") != MG_X_OK) {
                goto done;
            }
        }
    }

    if (st->include_usage) {
        u = mg_g_usage(st->prompt_tokens, st->candidates_tokens,
                       st->thoughts_tokens, st->tool_prompt_tokens,
                       st->cached_tokens, st->total_tokens);
        if (u == NULL) {
            goto done;
        }
    }

    if (mg_x_stream_end(out, st->prefix, st->prefix_len, u) != MG_X_OK) {
        goto done;
    }

    for (i = 0; i < st->nchoices; i++) {
        st->choices[i].finished = st->choices[i].started;
    }

    st->done = 1;
    rc = MG_X_DONE;

done:

    if (rc != MG_X_DONE) {
        out->len = start;
    }

    json_decref(u);
    json_decref(delta);

    return rc;
}


/* one chunk with choices[idx].delta = delta (borrowed) */

static int
mg_g_chunk(mg_gemini_stream_t *st, mg_buf_t *out, size_t idx, json_t *delta,
    const char *finish)
{
    if (mg_buf_append(out, "data: ", 6) != MG_X_OK
        || mg_buf_append(out, st->prefix, st->prefix_len) != MG_X_OK
        || mg_buf_printf(out, ",\"choices\":[{\"index\":%zu,\"delta\":", idx)
           != MG_X_OK
        || mg_x_dump(delta, out, 0) != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    if (finish) {
        return mg_buf_printf(out, ",\"logprobs\":null,\"finish_reason\":"
                             "\"%s\"}],\"usage\":null}\n\n", finish);
    }

    return mg_buf_printf(out, ",\"logprobs\":null,\"finish_reason\":null}],"
                         "\"usage\":null}\n\n");
}


int
mg_gemini_stream_has_content(const mg_gemini_stream_t *st)
{
    return st->content;
}


void
mg_gemini_stream_free(mg_gemini_stream_t *st)
{
    free(st->model);
    free(st->prefix);
    free(st->choices);

    memset(st, 0, sizeof(mg_gemini_stream_t));
}
