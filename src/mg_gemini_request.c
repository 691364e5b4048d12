/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI chat request -> Gemini generateContent request: messages,
 * content parts and generationConfig (see mg_gemini.h).
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_gemini.h"
#include "mg_gemini_int.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


/* where the Gemini Files API keeps what was uploaded to it */
#define MG_G_FILES_HOST  "https://generativelanguage.googleapis.com/"


static int mg_g_req_check(json_t *in, mg_xerror_t *err);
static int mg_g_req_messages(mg_g_req_t *rq, json_t *in, json_t *req,
    mg_xerror_t *err);
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
static int mg_g_req_config(json_t *in, const mg_gemini_opts_t *o,
    json_t *gc, mg_xerror_t *err);
static int mg_g_req_output(json_t *in, json_t *gc, mg_xerror_t *err);
static int mg_g_req_stream(json_t *in, int *stream, int *include_usage,
    mg_xerror_t *err);


/* helpers */

/* a string member as a new string, "" for anything else (NULL: no memory) */

json_t *
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

int
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
