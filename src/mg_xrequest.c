/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


/*
 * What the jansson request translators (Anthropic, Bedrock, Gemini) read
 * alike from an OpenAI chat request: the checks of features no provider
 * has, the walk of the messages, content parts, tool definitions, calls
 * and choice, and the sampling parameters.  Each translator writes what it
 * read in its provider's shape; a client's mistake is a 400 that names it.
 */


#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mg_translate.h"
#include "mg_xrequest.h"


static int mg_x_content_part(const mg_x_content_t *cc, void *data,
    json_t *part, unsigned allow, json_t *blocks, size_t i, size_t j,
    mg_xerror_t *err);


/*
 * OpenAI features no provider has a counterpart for: refused, not dropped;
 * penalties: frequency_penalty and presence_penalty (but for 0) too
 */

int
mg_x_req_check(json_t *in, int penalties, mg_xerror_t *err)
{
    size_t       i, k;
    json_t      *v, *m;

    static const char  *none[] = {
        "audio", "prediction", "web_search_options", "functions",
        "function_call"
    };

    static const char  *penalty[] = {
        "frequency_penalty", "presence_penalty"
    };

    if (json_is_true(json_object_get(in, "logprobs"))) {
        return mg_x_bad(err, "logprobs", "logprobs are not supported by "
                        "this model's backend.");
    }

    v = mg_x_get(in, "top_logprobs");
    if (v && !(json_is_integer(v) && json_integer_value(v) == 0)) {
        return mg_x_bad(err, "top_logprobs", "top_logprobs are not "
                        "supported by this model's backend.");
    }

    for (k = 0; penalties && k < sizeof(penalty) / sizeof(penalty[0]); k++) {
        v = mg_x_get(in, penalty[k]);

        if (v && (!json_is_number(v) || json_number_value(v) != 0)) {
            return mg_x_bad(err, penalty[k], "%s is not supported by "
                            "this model's backend.", penalty[k]);
        }
    }

    v = mg_x_get(in, "logit_bias");
    if (v && (!json_is_object(v) || json_object_size(v) != 0)) {
        return mg_x_bad(err, "logit_bias", "logit_bias is not supported by "
                        "this model's backend.");
    }

    for (k = 0; k < sizeof(none) / sizeof(none[0]); k++) {
        if (mg_x_get(in, none[k])) {
            return mg_x_bad(err, none[k], "%s is not supported by this "
                            "model's backend%s.", none[k],
                            k >= 3 ? " (use tools and tool_choice)" : "");
        }
    }

    v = mg_x_get(in, "modalities");

    if (v) {
        if (!json_is_array(v)) {
            return mg_x_bad(err, "modalities", "modalities must be an "
                            "array.");
        }

        json_array_foreach(v, i, m) {
            if (!mg_x_streq(json_string_value(m), "text")) {
                return mg_x_bad(err, "modalities", "Only the \"text\" "
                                "modality is supported by this model's "
                                "backend.");
            }
        }
    }

    return MG_X_OK;
}


int
mg_x_messages(json_t *in, const char *assistant, const char *key,
    mg_x_blocks_pt make, void *data, json_t *system, json_t *out,
    mg_xerror_t *err)
{
    int          rc, kind;
    size_t       i;
    json_t      *msgs, *m, *blocks, *last, *turn;
    const char  *role, *trole, *lrole;

    msgs = json_object_get(in, "messages");

    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        return mg_x_bad(err, "messages", "messages must be a non-empty "
                        "array.");
    }

    last = NULL;
    lrole = NULL;

    json_array_foreach(msgs, i, m) {

        role = json_string_value(json_object_get(m, "role"));

        if (role == NULL) {
            return mg_x_bad(err, "messages", "messages[%zu].role must be a "
                            "string.", i);
        }

        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            rc = make(data, MG_X_SYSTEM, msgs, m, i, system, err);
            if (rc != MG_X_OK) {
                return rc;
            }

            continue;
        }

        if (strcmp(role, "user") == 0) {
            kind = MG_X_USER;
            trole = "user";

        } else if (strcmp(role, "assistant") == 0) {
            kind = MG_X_ASSISTANT;
            trole = assistant;

        } else if (strcmp(role, "tool") == 0) {
            kind = MG_X_TOOL;
            trole = "user";

        } else {
            return mg_x_bad(err, "messages", "messages[%zu]: the role \"%s\" "
                            "is not supported by this model's backend.", i,
                            role);
        }

        blocks = json_array();
        if (blocks == NULL) {
            return MG_X_NOMEM;
        }

        rc = make(data, kind, msgs, m, i, blocks, err);

        /* providers refuse a turn without content */

        if (rc != MG_X_OK || json_array_size(blocks) == 0) {
            json_decref(blocks);

            if (rc != MG_X_OK) {
                return rc;
            }

            continue;
        }

        if (lrole && strcmp(lrole, trole) == 0) {
            rc = json_array_extend(last, blocks);
            json_decref(blocks);

            if (rc != 0) {
                return MG_X_NOMEM;
            }

            continue;
        }

        turn = json_pack("{s:s,s:O}", "role", trole, key, blocks);
        json_decref(blocks);

        if (turn == NULL || json_array_append_new(out, turn) != 0) {
            return MG_X_NOMEM;
        }

        /* still held by the turn */

        last = blocks;
        lrole = trole;
    }

    if (json_array_size(out) == 0) {
        return mg_x_bad(err, "messages", "messages must hold at least one "
                        "user or assistant message with content.");
    }

    return MG_X_OK;
}


/*
 * A message's content, a string or an array of parts, made into blocks
 * the provider's way (see mg_translate.h).  Empty text makes no block:
 * providers refuse empty text blocks, and it says nothing.
 */

int
mg_x_content(const mg_x_content_t *cc, void *data, json_t *content,
    unsigned allow, json_t *blocks, size_t i, mg_xerror_t *err)
{
    int      rc;
    size_t   j;
    json_t  *part, *b;

    if (content == NULL || json_is_null(content)) {
        return MG_X_OK;
    }

    if (json_is_string(content)) {
        if (json_string_length(content) == 0) {
            return MG_X_OK;
        }

        b = cc->text(content);

        if (b == NULL || json_array_append_new(blocks, b) != 0) {
            return MG_X_NOMEM;
        }

        return MG_X_OK;
    }

    if (!json_is_array(content)) {
        return mg_x_bad(err, "messages", "messages[%zu].content must be a "
                        "string or an array of parts.", i);
    }

    json_array_foreach(content, j, part) {
        rc = mg_x_content_part(cc, data, part, allow, blocks, i, j, err);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    return MG_X_OK;
}


static int
mg_x_content_part(const mg_x_content_t *cc, void *data, json_t *part,
    unsigned allow, json_t *blocks, size_t i, size_t j, mg_xerror_t *err)
{
    int          rc;
    json_t      *b, *v;
    unsigned     kind;
    const char  *type, *key;

    type = json_string_value(json_object_get(part, "type"));

    if (type == NULL) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu] must "
                        "be an object with a string type.", i, j);
    }

    if (strcmp(type, "text") == 0
        || (strcmp(type, "refusal") == 0 && (allow & MG_X_PART_REFUSAL)))
    {
        key = (type[0] == 't') ? "text" : "refusal";
        v = json_object_get(part, key);

        if (!json_is_string(v)) {
            return mg_x_bad(err, "messages", "messages[%zu].content[%zu]."
                            "%s must be a string.", i, j, key);
        }

        if (json_string_length(v) == 0) {
            return MG_X_OK;
        }

        b = cc->text(v);
        if (b == NULL) {
            return MG_X_NOMEM;
        }

    } else {
        if (strcmp(type, "image_url") == 0) {
            kind = MG_X_PART_IMAGE;

        } else if (strcmp(type, "file") == 0) {
            kind = MG_X_PART_FILE;

        } else if (strcmp(type, "input_audio") == 0) {
            kind = MG_X_PART_AUDIO;

            if (!cc->audio) {
                return mg_x_bad(err, "messages", "messages[%zu].content[%zu]"
                                ": audio input is not supported by this "
                                "model's backend.", i, j);
            }

        } else {
            kind = 0;
        }

        if (!(allow & kind)) {
            return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: a "
                            "\"%s\" part is not supported here.", i, j,
                            type);
        }

        b = NULL;

        rc = cc->media(data, kind, part, i, j, &b, err);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (cc->add) {
        return cc->add(data, allow, part, b, blocks);
    }

    return json_array_append_new(blocks, b) == 0 ? MG_X_OK : MG_X_NOMEM;
}


/*
 * The text of an assistant message: its content, else its refusal, which
 * keeps its words; and its tool_calls, an array, or NULL when there are
 * none.
 */

int
mg_x_assistant(const mg_x_content_t *cc, void *data, json_t *m,
    unsigned allow, json_t *blocks, size_t i, json_t **calls,
    mg_xerror_t *err)
{
    int      rc;
    json_t  *v, *b;

    rc = mg_x_content(cc, data, json_object_get(m, "content"),
                      allow | MG_X_PART_REFUSAL, blocks, i, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    v = mg_x_get(m, "refusal");

    if (json_array_size(blocks) == 0 && json_is_string(v)
        && json_string_length(v))
    {
        b = cc->text(v);

        if (b == NULL || json_array_append_new(blocks, b) != 0) {
            return MG_X_NOMEM;
        }
    }

    *calls = mg_x_get(m, "tool_calls");

    if (*calls && !json_is_array(*calls)) {
        return mg_x_bad(err, "messages", "messages[%zu].tool_calls must be "
                        "an array.", i);
    }

    return MG_X_OK;
}


static int
mg_x_is_data_url(const char *s, size_t len)
{
    return len > 5 && strncasecmp(s, "data:", 5) == 0;
}


/*
 * The URL of an image_url part (a string, or an object with url), taken
 * apart: a data URL must be "data:<media type>;base64,<data>" here, as no
 * provider takes another; what else a provider accepts is its own choice.
 */

int
mg_x_image_url(json_t *part, size_t i, size_t j, mg_x_image_t *im,
    mg_xerror_t *err)
{
    json_t  *iu;

    iu = json_object_get(part, "image_url");
    im->url = json_is_string(iu) ? iu : json_object_get(iu, "url");

    if (!json_is_string(im->url)) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]."
                        "image_url.url must be a string.", i, j);
    }

    im->s = json_string_value(im->url);
    im->len = json_string_length(im->url);
    im->data = mg_x_is_data_url(im->s, im->len);
    im->http = (im->len > 7 && strncasecmp(im->s, "http://", 7) == 0)
               || (im->len > 8 && strncasecmp(im->s, "https://", 8) == 0);

    if (im->data
        && mg_x_data_url(im->s, im->len, &im->mt, &im->mt_len, &im->b64,
                         &im->b64_len) != 0)
    {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: "
                        "a data URL must be \"data:<media type>;base64,"
                        "<data>\".", i, j);
    }

    return MG_X_OK;
}


/*
 * The data of a file part: file ids mean nothing to a provider other than
 * OpenAI; file_data is a base64 data URL (its media type in f->mt) or bare
 * base64 (f->mt NULL: only the file's name can tell what it is).
 */

int
mg_x_file_data(json_t *part, size_t i, size_t j, mg_x_file_t *f,
    mg_xerror_t *err)
{
    json_t  *file, *fd, *name;

    file = json_object_get(part, "file");

    if (mg_x_get(file, "file_id")) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: file "
                        "ids cannot be used with this model's backend; send "
                        "file_data.", i, j);
    }

    fd = json_object_get(file, "file_data");
    name = mg_x_get(file, "filename");

    if (!json_is_string(fd) || (name && !json_is_string(name))) {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]."
                        "file.file_data and filename must be strings.", i,
                        j);
    }

    f->name = json_string_value(name);
    f->name_len = json_string_length(name);
    f->data = json_string_value(fd);
    f->data_len = json_string_length(fd);
    f->mt = NULL;
    f->mt_len = 0;

    if (mg_x_is_data_url(f->data, f->data_len)
        && mg_x_data_url(f->data, f->data_len, &f->mt, &f->mt_len, &f->data,
                         &f->data_len) != 0)
    {
        return mg_x_bad(err, "messages", "messages[%zu].content[%zu]: "
                        "file_data must be a base64 data URL.", i, j);
    }

    return MG_X_OK;
}


/* a bare base64 file named *.pdf, the one kind a name alone makes sure */

int
mg_x_file_is_pdf(const mg_x_file_t *f)
{
    return f->mt == NULL && f->data_len && f->name_len > 4
           && strcasecmp(f->name + f->name_len - 4, ".pdf") == 0;
}


/*
 * One entry of a request's tools: a function with a name, and its
 * description, parameters and strict flag (borrowed, NULL when absent).
 */

int
mg_x_tool_def(json_t *t, size_t i, json_t **name, json_t **desc,
    json_t **params, json_t **strict, mg_xerror_t *err)
{
    json_t      *fn;
    const char  *type;

    type = json_string_value(json_object_get(t, "type"));
    fn = json_object_get(t, "function");

    if (!json_is_object(t) || (type && strcmp(type, "function") != 0)) {
        return mg_x_bad(err, "tools", "tools[%zu]: only function tools "
                        "are supported by this model's backend.", i);
    }

    *name = json_object_get(fn, "name");
    *desc = mg_x_get(fn, "description");
    *params = mg_x_get(fn, "parameters");
    *strict = mg_x_get(fn, "strict");

    if (!json_is_string(*name) || json_string_length(*name) == 0
        || (*desc && !json_is_string(*desc))
        || (*params && !json_is_object(*params))
        || (*strict && !json_is_boolean(*strict)))
    {
        return mg_x_bad(err, "tools", "tools[%zu].function needs a name, "
                        "and description, parameters and strict of the "
                        "right types.", i);
    }

    return MG_X_OK;
}


/*
 * tool_choice and parallel_tool_calls, checked: "required" and a named
 * function need tools.
 */

int
mg_x_tool_choice(json_t *in, size_t ntools, mg_x_choice_t *c,
    mg_xerror_t *err)
{
    json_t      *tc;
    const char  *s;

    tc = mg_x_get(in, "tool_choice");

    c->kind = MG_X_CHOICE_UNSET;
    c->name = NULL;
    c->parallel = mg_x_get(in, "parallel_tool_calls");

    if (c->parallel && !json_is_boolean(c->parallel)) {
        return mg_x_bad(err, "parallel_tool_calls", "parallel_tool_calls "
                        "must be a boolean.");
    }

    if (tc == NULL) {
        return MG_X_OK;
    }

    s = json_string_value(tc);

    if (mg_x_streq(s, "auto")) {
        c->kind = MG_X_CHOICE_AUTO;

    } else if (mg_x_streq(s, "required")) {
        c->kind = MG_X_CHOICE_REQUIRED;

    } else if (mg_x_streq(s, "none")) {
        c->kind = MG_X_CHOICE_NONE;

    } else if (mg_x_streq(json_string_value(json_object_get(tc, "type")),
                          "function"))
    {
        c->kind = MG_X_CHOICE_NAMED;
        c->name = json_object_get(json_object_get(tc, "function"), "name");

        if (!json_is_string(c->name)) {
            return mg_x_bad(err, "tool_choice", "tool_choice.function.name "
                            "must be a string.");
        }

    } else {
        return mg_x_bad(err, "tool_choice", "tool_choice must be \"auto\", "
                        "\"required\", \"none\" or a named function with "
                        "this model's backend.");
    }

    if (ntools == 0 && c->kind == MG_X_CHOICE_REQUIRED) {
        return mg_x_bad(err, "tool_choice", "tool_choice \"required\" needs "
                        "tools.");
    }

    if (ntools == 0 && c->kind == MG_X_CHOICE_NAMED) {
        return mg_x_bad(err, "tool_choice", "tool_choice names a function, "
                        "but there are no tools.");
    }

    return MG_X_OK;
}


/*
 * One function call of an assistant message's tool_calls: its id and its
 * function's name (borrowed) and its arguments parsed (a new reference in
 * *input).  Anything else is the client's 400.
 */

int
mg_x_tool_call(json_t *c, size_t i, size_t k, json_t **id, json_t **name,
    json_t **input, mg_xerror_t *err)
{
    json_t  *type, *fn;

    type = mg_x_get(c, "type");
    fn = json_object_get(c, "function");

    if (!json_is_object(c)
        || (type && !mg_x_streq(json_string_value(type), "function")))
    {
        return mg_x_bad(err, "messages", "messages[%zu].tool_calls[%zu]"
                        ": only function tool calls are supported.", i, k);
    }

    *id = json_object_get(c, "id");
    *name = json_object_get(fn, "name");

    if (!json_is_string(*id) || !json_is_string(*name)) {
        return mg_x_bad(err, "messages", "messages[%zu].tool_calls[%zu]"
                        " needs a string id and function.name.", i, k);
    }

    return mg_x_tool_args(fn, i, k, input, err);
}


/*
 * messages[i].tool_calls[k].function.arguments (fn is the function), a
 * string of a JSON object, as the object: a new reference in *out
 */

int
mg_x_tool_args(json_t *fn, size_t i, size_t k, json_t **out,
    mg_xerror_t *err)
{
    json_t       *args, *input;
    const char   *s;
    json_error_t  jerr;

    args = mg_x_get(fn, "arguments");

    if (args == NULL
        || (json_is_string(args) && json_string_length(args) == 0))
    {
        input = json_object();

    } else if (json_is_object(args)) {
        /* not OpenAI's shape, but unambiguous */
        input = json_incref(args);

    } else if (json_is_string(args)) {
        s = json_string_value(args);
        input = json_loadb(s, json_string_length(args), JSON_ALLOW_NUL,
                           &jerr);

        if (input == NULL) {
            return mg_x_bad(err, "messages", "messages[%zu].tool_calls"
                            "[%zu].function.arguments is not valid "
                            "JSON: %s", i, k, jerr.text);
        }

        if (!json_is_object(input)) {
            json_decref(input);
            return mg_x_bad(err, "messages", "messages[%zu].tool_calls"
                            "[%zu].function.arguments must be a JSON "
                            "object.", i, k);
        }

    } else {
        return mg_x_bad(err, "messages", "messages[%zu].tool_calls[%zu]"
                        ".function.arguments must be a string.", i, k);
    }

    if (input == NULL) {
        return MG_X_NOMEM;
    }

    *out = input;

    return MG_X_OK;
}


/*
 * The client's output limit (borrowed), NULL when it set none:
 * max_completion_tokens replaces max_tokens.
 */

int
mg_x_max_tokens(json_t *in, json_t **v, mg_xerror_t *err)
{
    const char  *name;

    name = "max_completion_tokens";
    *v = mg_x_get(in, name);

    if (*v == NULL) {
        name = "max_tokens";
        *v = mg_x_get(in, name);
    }

    if (*v && (!json_is_integer(*v) || json_integer_value(*v) <= 0)) {
        return mg_x_bad(err, name, "%s must be a positive integer.", name);
    }

    return MG_X_OK;
}


/*
 * temperature, clamped to 0..1 (OpenAI's range is 0..2, Anthropic's and
 * Converse's 0..1), and top_p, left out when 1: OpenAI's default, sent by
 * many clients, changes nothing, and recent Claude models refuse
 * temperature and top_p together.  New references, NULL when absent.
 */

int
mg_x_sampling(json_t *in, json_t **temp, json_t **top_p, mg_xerror_t *err)
{
    double   t;
    json_t  *v;

    *temp = NULL;
    *top_p = NULL;

    v = mg_x_get(in, "temperature");

    if (v && !json_is_number(v)) {
        return mg_x_bad(err, "temperature", "temperature must be a number.");
    }

    if (v) {
        t = json_number_value(v);

        *temp = (t < 0 || t > 1) ? json_real(t < 0 ? 0.0 : 1.0)
                                 : json_incref(v);
        if (*temp == NULL) {
            return MG_X_NOMEM;
        }
    }

    v = mg_x_get(in, "top_p");

    if (v && !json_is_number(v)) {
        json_decref(*temp);
        *temp = NULL;
        return mg_x_bad(err, "top_p", "top_p must be a number.");
    }

    if (v && json_number_value(v) != 1) {
        *top_p = json_incref(v);
    }

    return MG_X_OK;
}


/*
 * stop, a string or an array of strings, as an array (a new reference),
 * NULL when absent or empty.  With drop_empty, empty strings are left
 * out: they match nothing, and Converse refuses them.
 */

int
mg_x_stop(json_t *in, int drop_empty, json_t **seq, mg_xerror_t *err)
{
    size_t   i;
    json_t  *v, *s;

    *seq = NULL;

    v = mg_x_get(in, "stop");

    if (v == NULL) {
        return MG_X_OK;
    }

    if (json_is_string(v)) {
        v = json_pack("[O]", v);

    } else if (json_is_array(v)) {
        json_array_foreach(v, i, s) {
            if (!json_is_string(s)) {
                v = NULL;
                break;
            }
        }

        if (v == NULL) {
            return mg_x_bad(err, "stop", "stop must be a string or an "
                            "array of strings.");
        }

        v = json_copy(v);

    } else {
        return mg_x_bad(err, "stop", "stop must be a string or an array of "
                        "strings.");
    }

    if (v == NULL) {
        return MG_X_NOMEM;
    }

    for (i = 0; drop_empty && i < json_array_size(v); /* void */) {
        if (json_string_length(json_array_get(v, i)) == 0) {
            (void) json_array_remove(v, i);
            continue;
        }

        i++;
    }

    if (json_array_size(v) == 0) {
        json_decref(v);
        return MG_X_OK;
    }

    *seq = v;

    return MG_X_OK;
}
