/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mg_json.h"
#include "mg_translate.h"


static int mg_x_content_part(const mg_x_content_t *cc, void *data,
    json_t *part, unsigned allow, json_t *blocks, size_t i, size_t j,
    mg_xerror_t *err);


/* token counts are clamped, so that their sums cannot overflow */


int
mg_buf_reserve(mg_buf_t *b, size_t n)
{
    char    *p;
    size_t   cap;

    if (b->cap - b->len >= n) {
        return MG_X_OK;
    }

    cap = b->cap ? b->cap : 256;

    while (cap - b->len < n) {
        if (cap > ((size_t) -1) / 2) {
            return MG_X_NOMEM;
        }

        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        return MG_X_NOMEM;
    }

    b->data = p;
    b->cap = cap;

    return MG_X_OK;
}


int
mg_buf_append(mg_buf_t *b, const char *p, size_t n)
{
    if (n == 0) {
        return MG_X_OK;
    }

    if (mg_buf_reserve(b, n) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;

    return MG_X_OK;
}


int
mg_buf_printf(mg_buf_t *b, const char *fmt, ...)
{
    int      n;
    size_t   room;
    va_list  ap;

    /* most texts fit the room left: formatted once, straight in place */

    room = b->cap - b->len;

    va_start(ap, fmt);
    n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);

    if (n < 0) {
        return MG_X_ERROR;
    }

    if ((size_t) n < room) {
        b->len += (size_t) n;
        return MG_X_OK;
    }

    if (mg_buf_reserve(b, (size_t) n + 1) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    va_start(ap, fmt);
    (void) vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);

    b->len += (size_t) n;

    return MG_X_OK;
}


/* a decimal integer, without printf's cost on the hot paths */

int
mg_buf_int(mg_buf_t *b, long long v)
{
    char                *p;
    char                 tmp[24];
    unsigned long long   u;

    u = (v < 0) ? 0ULL - (unsigned long long) v : (unsigned long long) v;
    p = tmp + sizeof(tmp);

    do {
        *--p = (char) ('0' + u % 10);
        u /= 10;
    } while (u);

    if (v < 0) {
        *--p = '-';
    }

    return mg_buf_append(b, p, (size_t) (tmp + sizeof(tmp) - p));
}


void
mg_buf_reset(mg_buf_t *b)
{
    b->len = 0;
}


void
mg_buf_free(mg_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}


void
mg_xerror_set(mg_xerror_t *err, int status, int retryable, const char *type,
    const char *code, const char *param, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL) {
        return;
    }

    err->status = status;
    err->retryable = retryable;
    err->type = type;
    err->code = code;
    err->param = param;

    va_start(ap, fmt);
    (void) vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}


/* helpers of the translators */

/* a member, with JSON null taken as absent (clients send null for unset) */

json_t *
mg_x_get(json_t *o, const char *key)
{
    json_t  *v;

    v = json_object_get(o, key);

    return json_is_null(v) ? NULL : v;
}


int
mg_x_bad(mg_xerror_t *err, const char *param, const char *fmt, ...)
{
    char     buf[sizeof(err->message)];
    va_list  ap;

    va_start(ap, fmt);
    (void) vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    mg_xerror_set(err, 400, 0, "invalid_request_error", NULL, param, "%s",
                  buf);

    if (err) {
        mg_x_utf8(err->message);
    }

    return MG_X_ERROR;
}


int
mg_x_nomem(mg_xerror_t *err)
{
    mg_xerror_set(err, 500, 1, "server_error", NULL, NULL, "out of memory");

    return MG_X_NOMEM;
}


/*
 * Messages quote what we were sent (a role, jansson's view of a syntax
 * error) and snprintf may cut them inside a character: the client gets
 * them in a JSON string, so bad bytes become '?' and a cut character goes.
 */

void
mg_x_utf8(char *s)
{
    size_t          n, k;
    unsigned char  *p, c, lo, hi;

    p = (unsigned char *) s;

    while (*p) {
        c = *p;

        if (c < 0x80) {
            p++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            lo = (c == 0xe0) ? 0xa0 : 0x80;
            hi = (c == 0xed) ? 0x9f : 0xbf;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            lo = (c == 0xf0) ? 0x90 : 0x80;
            hi = (c == 0xf4) ? 0x8f : 0xbf;

        } else {
            *p++ = '?';
            continue;
        }

        for (k = 1; k <= n; k++) {
            c = p[k];

            if (c == '\0' || c < (k == 1 ? lo : 0x80)
                || c > (k == 1 ? hi : 0xbf))
            {
                break;
            }
        }

        if (k > n) {
            p += n + 1;
            continue;
        }

        if (p[k] == '\0') {
            /* cut at the end */
            *p = '\0';
            return;
        }

        *p++ = '?';
    }
}


/* json_object_set_new() that tells whether v (possibly a NULL from a
 * failed constructor) was stored; v is consumed either way */

int
mg_x_set(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new(o, key, v) == 0 ? MG_X_OK : MG_X_NOMEM;
}


int
mg_x_set_str(json_t *o, const char *key, const char *s)
{
    return mg_x_set(o, key, json_string(s));
}


json_t *
mg_x_prefixed(const char *prefix, const char *s, size_t n)
{
    char    *p;
    size_t   plen;
    json_t  *v;

    plen = strlen(prefix);

    p = malloc(plen + n + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, prefix, plen);

    if (n) {
        memcpy(p + plen, s, n);
    }

    v = json_stringn(p, plen + n);

    free(p);

    return v;
}


static int
mg_x_dump_cb(const char *buf, size_t size, void *data)
{
    return mg_buf_append(data, buf, size) == MG_X_OK ? 0 : -1;
}


int
mg_x_dump(json_t *j, mg_buf_t *out, size_t flags)
{
    size_t  len;

    len = out->len;

    if (json_dump_callback(j, mg_x_dump_cb, out, JSON_COMPACT | flags) != 0) {
        out->len = len;
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/* "data:<media type>[;params];base64,<data>" */

int
mg_x_data_url(const char *s, size_t len, const char **mt, size_t *mt_len,
    const char **data, size_t *data_len)
{
    const char  *p, *end, *comma, *semi;

    p = s + 5;
    end = s + len;

    comma = memchr(p, ',', end - p);

    if (comma == NULL || comma - p < 7
        || strncasecmp(comma - 7, ";base64", 7) != 0)
    {
        return -1;
    }

    semi = memchr(p, ';', comma - p);

    if (semi == p || comma + 1 == end) {
        return -1;
    }

    *mt = p;
    *mt_len = semi - p;
    *data = comma + 1;
    *data_len = end - comma - 1;

    return 0;
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


long long
mg_x_tokens(json_t *usage, const char *key, long long dflt)
{
    json_t     *v;
    long long   n;

    v = json_object_get(usage, key);

    if (!json_is_integer(v)) {
        return dflt;
    }

    n = json_integer_value(v);

    return n < 0 ? 0 : (n > MG_X_TOKENS_MAX ? MG_X_TOKENS_MAX : n);
}


int
mg_x_bad_backend(mg_xerror_t *err, const char *what)
{
    mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                  "The model backend sent an invalid %s.", what);

    return MG_X_ERROR;
}


/*
 * One stream chunk: "data: " and prefix (the chunk's opening members,
 * {"id":..,"object":..,"created":..,"model":.. without the closing brace)
 * with choices[0].delta = delta (borrowed) and finish_reason = finish.
 */

static const char  mg_x_choice[] = ",\"choices\":[{\"index\":0,\"delta\":";
static const char  mg_x_tail[] = ",\"logprobs\":null,\"finish_reason\":null}],"
                                 "\"usage\":null}\n\n";


int
mg_x_chunk(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *delta, const char *finish)
{
    return mg_x_chunk_raw(out, prefix, prefix_len, NULL, 0, delta, finish);
}


/* the same with the delta already written (delta_json NULL) */

int
mg_x_chunk_raw(mg_buf_t *out, const char *prefix, size_t prefix_len,
    const char *delta, size_t delta_len, json_t *delta_json,
    const char *finish)
{
    if (mg_buf_append(out, "data: ", 6) != MG_X_OK
        || mg_buf_append(out, prefix, prefix_len) != MG_X_OK
        || mg_buf_append(out, mg_x_choice, sizeof(mg_x_choice) - 1)
           != MG_X_OK
        || (delta_json ? mg_x_dump(delta_json, out, 0)
                       : mg_buf_append(out, delta, delta_len))
           != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    if (finish) {
        if (mg_buf_printf(out, ",\"logprobs\":null,\"finish_reason\":\"%s\"}],"
                          "\"usage\":null}\n\n", finish)
            != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        return MG_X_OK;
    }

    return mg_buf_append(out, mg_x_tail, sizeof(mg_x_tail) - 1);
}


/*
 * The members every chunk of a translated stream starts with, written
 * once: {"id":"<id_prefix><id>","object":"chat.completion.chunk",
 * "created":..,"model":"..", without the closing brace, as the chunks go
 * on after them.  malloc()ed, its length in *len; NULL when out of memory.
 */

char *
mg_x_chunk_head(const char *id_prefix, const char *id, size_t id_len,
    long long created, const char *model, size_t model_len, size_t *len)
{
    char    *p;
    json_t  *head;

    head = json_pack("{s:o,s:s,s:I,s:s%}",
                     "id", mg_x_prefixed(id_prefix, id, id_len),
                     "object", "chat.completion.chunk",
                     "created", (json_int_t) created,
                     "model", model, model_len);
    if (head == NULL) {
        return NULL;
    }

    /* jansson keeps the members in the order given */

    p = json_dumps(head, JSON_COMPACT | JSON_PRESERVE_ORDER);

    json_decref(head);

    if (p != NULL) {
        *len = strlen(p) - 1;
    }

    return p;
}


/*
 * The end of a translated stream: the usage chunk OpenAI sends with
 * stream_options.include_usage (when usage is not NULL), then [DONE].
 */

int
mg_x_stream_end(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *usage)
{
    static const char  choices[] = ",\"choices\":[],\"usage\":";

    if (usage
        && (mg_buf_append(out, "data: ", 6) != MG_X_OK
            || mg_buf_append(out, prefix, prefix_len) != MG_X_OK
            || mg_buf_append(out, choices, sizeof(choices) - 1) != MG_X_OK
            || mg_x_dump(usage, out, 0) != MG_X_OK
            || mg_buf_append(out, "}\n\n", 3) != MG_X_OK))
    {
        return MG_X_NOMEM;
    }

    return mg_buf_append(out, "data: [DONE]\n\n", 14);
}


/*
 * A streamed tool call starts: its first chunk (id, name, empty arguments)
 * as call number *ntools, and the backend's block index of the call kept
 * in (*tools)[*ntools], for the argument deltas that follow.
 */

int
mg_x_tool_start(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *name, json_t *id, long long block, long long **tools,
    size_t *ntools, size_t *cap)
{
    int         rc;
    size_t      n;
    json_t     *fn;
    long long  *a;

    if (*ntools == *cap) {
        n = *cap ? *cap * 2 : 4;

        a = realloc(*tools, n * sizeof(long long));
        if (a == NULL) {
            return MG_X_NOMEM;
        }

        *tools = a;
        *cap = n;
    }

    fn = json_pack("{s:s%,s:s}", "name",
                   json_is_string(name) ? json_string_value(name) : "",
                   json_string_length(name), "arguments", "");
    if (fn == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_tool_delta(out, prefix, prefix_len, *ntools, fn,
                         json_is_string(id) ? json_string_value(id) : "",
                         json_string_length(id));

    json_decref(fn);

    if (rc == MG_X_OK) {
        (*tools)[(*ntools)++] = block;
    }

    return rc;
}


/*
 * The same chunk with {"content":text}, text being a JSON string token
 * (quotes included) copied as it is; on failure nothing is appended.
 */

int
mg_x_chunk_content(mg_buf_t *out, const char *prefix, size_t prefix_len,
    const char *text, size_t text_len)
{
    size_t  start;

    start = out->len;

    if (mg_buf_append(out, "data: ", 6) != MG_X_OK
        || mg_buf_append(out, prefix, prefix_len) != MG_X_OK
        || mg_buf_append(out, mg_x_choice, sizeof(mg_x_choice) - 1)
           != MG_X_OK
        || mg_buf_append(out, "{\"content\":", 11) != MG_X_OK
        || mg_buf_append(out, text, text_len) != MG_X_OK
        || mg_buf_append(out, "}", 1) != MG_X_OK
        || mg_buf_append(out, mg_x_tail, sizeof(mg_x_tail) - 1) != MG_X_OK)
    {
        out->len = start;
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/*
 * A chunk with {"tool_calls":[{"index":k,"id":..,"type":"function",
 * "function":fn}]}, or without id and type when id is NULL (fn is borrowed)
 */

int
mg_x_tool_delta(mg_buf_t *out, const char *prefix, size_t prefix_len,
    size_t k, json_t *fn, const char *id, size_t id_len)
{
    int      rc;
    json_t  *delta;

    if (id) {
        delta = json_pack("{s:[{s:I,s:s%,s:s,s:O}]}", "tool_calls",
                          "index", (json_int_t) k, "id", id, id_len,
                          "type", "function", "function", fn);

    } else {
        delta = json_pack("{s:[{s:I,s:O}]}", "tool_calls",
                          "index", (json_int_t) k, "function", fn);
    }

    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_chunk(out, prefix, prefix_len, delta, NULL);

    json_decref(delta);

    return rc;
}


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


#define MG_X_PH_OPEN   "\xee\x80\x80"     /* U+E000 */
#define MG_X_PH_CLOSE  "\xee\x80\x81"     /* U+E001 */
#define MG_X_DEPTH     64


static int
mg_x_shrink_add(mg_x_shrink_t *s, size_t start, size_t len)
{
    size_t  *a, *b, cap;

    if (s->n == s->cap) {
        cap = s->cap ? 2 * s->cap : 32;

        a = realloc(s->start, cap * sizeof(size_t));
        if (a == NULL) {
            return MG_X_NOMEM;
        }

        s->start = a;

        b = realloc(s->len, cap * sizeof(size_t));
        if (b == NULL) {
            return MG_X_NOMEM;
        }

        s->len = b;
        s->cap = cap;
    }

    s->start[s->n] = start;
    s->len[s->n] = len;
    s->n++;

    return MG_X_OK;
}


/*
 * A text a translator might parse as JSON (a tool result) stays: anything
 * starting like an object, an array, a number or an escape, and the three
 * literals.  Prose only loses the fast path when it starts with a digit.
 */

static int
mg_x_maybe_json(const char *p, size_t len)
{
    const char  *end;

    while (len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
        len--;
    }

    if (len == 0) {
        return 1;
    }

    if (strchr("{[-0123456789\\", *p) != NULL) {
        return 1;
    }

    if ((len == 4 && (memcmp(p, "true", 4) == 0
                      || memcmp(p, "null", 4) == 0))
        || (len == 5 && memcmp(p, "false", 5) == 0))
    {
        return 1;
    }

    /*
     * An escaped NUL is the translators' to judge.  An escaped backslash
     * followed by "u0000" matches too: that only costs the fast path.
     */

    for (end = p + len; p < end; p++) {
        p = memchr(p, '\\', end - p);
        if (p == NULL || end - p < 6) {
            return 0;
        }

        if (memcmp(p, "\\u0000", 6) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * The closing quote of the string whose contents start at "i": memchr()
 * runs at memory speed over prose, and a quote is escaped when an odd
 * number of backslashes precedes it.  Returns "len" when there is none.
 */

static size_t
mg_x_string_end(const char *p, size_t i, size_t len)
{
    size_t       n;
    const char  *q, *b;

    for ( ;; ) {
        q = memchr(p + i, '"', len - i);
        if (q == NULL) {
            return len;
        }

        for (b = q, n = 0; b > p + i && b[-1] == '\\'; b--, n++) {
            /* void */
        }

        if (n % 2 == 0) {
            return q - p;
        }

        i = q - p + 1;
    }
}


/*
 * A walk over valid JSON (the gateway validated it): strings are copied
 * or swapped, everything else is copied.  Per nesting level it remembers
 * whether the next string of an object is a key, and the last key.
 */

int
mg_x_shrink(const char *p, size_t len, size_t min, mg_x_shrink_t *s)
{
    int          rc;
    size_t       i, j, depth, copied, key_start, key_len;
    const char  *q;
    unsigned     in_object[MG_X_DEPTH], expect_key[MG_X_DEPTH];

    memset(s, 0, sizeof(mg_x_shrink_t));

    /* a body that has the placeholder characters already is left alone */

    for (q = p; q + 2 < p + len; q++) {
        q = memchr(q, 0xee, p + len - q);
        if (q == NULL || q + 2 >= p + len) {
            break;
        }

        if ((unsigned char) q[1] == 0x80
            && ((unsigned char) q[2] == 0x80 || (unsigned char) q[2] == 0x81))
        {
            return MG_X_OK;
        }
    }

    /* or has them escaped: a translator writes them back unescaped */

    for (q = p; q + 5 < p + len; q++) {
        q = memchr(q, '\\', p + len - q);
        if (q == NULL || q + 5 >= p + len) {
            break;
        }

        if (q[1] == 'u' && (q[2] == 'e' || q[2] == 'E') && q[3] == '0'
            && q[4] == '0' && (q[5] == '0' || q[5] == '1'))
        {
            return MG_X_OK;
        }
    }

    depth = 0;
    copied = 0;
    key_start = 0;
    key_len = 0;

    for (i = 0; i < len; i++) {

        switch (p[i]) {

        case '{':
        case '[':
            if (depth == MG_X_DEPTH) {
                goto none;
            }

            in_object[depth] = (p[i] == '{');
            expect_key[depth] = (p[i] == '{');
            depth++;
            continue;

        case '}':
        case ']':
            if (depth) {
                depth--;
            }

            continue;

        case ',':
            if (depth && in_object[depth - 1]) {
                expect_key[depth - 1] = 1;
            }

            continue;

        case '"':
            break;

        default:
            continue;
        }

        j = mg_x_string_end(p, i + 1, len);
        if (j >= len) {
            goto none;
        }

        if (depth && in_object[depth - 1] && expect_key[depth - 1]) {
            key_start = i + 1;
            key_len = j - i - 1;
            expect_key[depth - 1] = 0;
            i = j;
            continue;
        }

        if (depth && in_object[depth - 1]
            && j - i - 1 >= min
            && ((key_len == 7
                 && memcmp(p + key_start, "content", 7) == 0)
                || (key_len == 4 && memcmp(p + key_start, "text", 4) == 0))
            && !mg_x_maybe_json(p + i + 1, j - i - 1))
        {
            rc = mg_buf_append(&s->body, p + copied, i + 1 - copied);
            if (rc != MG_X_OK) {
                return rc;
            }

            rc = mg_buf_printf(&s->body, MG_X_PH_OPEN "%zu" MG_X_PH_CLOSE,
                               s->n);
            if (rc != MG_X_OK) {
                return rc;
            }

            rc = mg_x_shrink_add(s, i + 1, j - i - 1);
            if (rc != MG_X_OK) {
                return rc;
            }

            copied = j;
        }

        i = j;
    }

    if (s->n == 0) {
        goto none;
    }

    return mg_buf_append(&s->body, p + copied, len - copied);

none:

    mg_x_shrink_free(s);
    memset(s, 0, sizeof(mg_x_shrink_t));

    return MG_X_OK;
}


int
mg_x_expand(const mg_x_shrink_t *s, const char *orig, const char *out,
    size_t out_len, mg_buf_t *res)
{
    int          rc;
    size_t       k, total;
    const char  *p, *end, *q;

    /* one allocation: the result is the output plus every text */

    for (k = 0, total = out_len; k < s->n; k++) {
        total += s->len[k];
    }

    rc = mg_buf_reserve(res, total);
    if (rc != MG_X_OK) {
        return rc;
    }

    p = out;
    end = out + out_len;

    while (p < end) {
        q = p;

        for ( ;; ) {
            q = memchr(q, 0xee, end - q);

            if (q == NULL || end - q < 3
                || ((unsigned char) q[1] == 0x80
                    && (unsigned char) q[2] == 0x80))
            {
                break;
            }

            q++;
        }

        if (q == NULL || end - q < 3) {
            return mg_buf_append(res, p, end - p);
        }

        rc = mg_buf_append(res, p, q - p);
        if (rc != MG_X_OK) {
            return rc;
        }

        q += 3;
        k = 0;

        if (q == end || *q < '0' || *q > '9') {
            return MG_X_ERROR;
        }

        while (q < end && *q >= '0' && *q <= '9') {
            k = k * 10 + (size_t) (*q++ - '0');
        }

        if (k >= s->n || end - q < 3 || memcmp(q, MG_X_PH_CLOSE, 3) != 0) {
            return MG_X_ERROR;
        }

        rc = mg_buf_append(res, orig + s->start[k], s->len[k]);
        if (rc != MG_X_OK) {
            return rc;
        }

        p = q + 3;
    }

    return MG_X_OK;
}


int
mg_x_translate_shrunk(const mg_x_shrink_t *s, const char *body, size_t len,
    mg_x_translate_pt translate, void *data, mg_buf_t *out)
{
    int       rc;
    mg_buf_t  small;

    if (s->n == 0) {
        return translate(data, body, len, out);
    }

    memset(&small, 0, sizeof(mg_buf_t));

    rc = translate(data, s->body.data, s->body.len, &small);

    if (rc == MG_X_OK) {
        rc = mg_x_expand(s, body, small.data, small.len, out);

        if (rc == MG_X_ERROR) {
            mg_buf_reset(out);
            rc = translate(data, body, len, out);
        }
    }

    mg_buf_free(&small);

    return rc;
}


void
mg_x_shrink_free(mg_x_shrink_t *s)
{
    mg_buf_free(&s->body);
    free(s->start);
    free(s->len);
    s->start = NULL;
    s->len = NULL;
    s->n = 0;
    s->cap = 0;
}


json_t *
mg_x_usage_json(const mg_x_usage_t *u)
{
    if (u->cache_write) {
        return json_pack("{s:I,s:I,s:I,s:{s:I,s:I}}",
                         "prompt_tokens", (json_int_t) u->prompt,
                         "completion_tokens", (json_int_t) u->completion,
                         "total_tokens",
                         (json_int_t) (u->prompt + u->completion),
                         "prompt_tokens_details",
                         "cached_tokens", (json_int_t) u->cached,
                         "cache_write_tokens", (json_int_t) u->cache_write);
    }

    return json_pack("{s:I,s:I,s:I,s:{s:I}}",
                     "prompt_tokens", (json_int_t) u->prompt,
                     "completion_tokens", (json_int_t) u->completion,
                     "total_tokens",
                     (json_int_t) (u->prompt + u->completion),
                     "prompt_tokens_details",
                     "cached_tokens", (json_int_t) u->cached);
}


/* the same object, written without a tree */

int
mg_x_usage_print(mg_buf_t *out, const mg_x_usage_t *u)
{
    int  rc;

#define mg_x_lit(s)  mg_buf_append(out, s, sizeof(s) - 1)

    if (mg_x_lit("{\"prompt_tokens\":") != MG_X_OK
        || mg_buf_int(out, u->prompt) != MG_X_OK
        || mg_x_lit(",\"completion_tokens\":") != MG_X_OK
        || mg_buf_int(out, u->completion) != MG_X_OK
        || mg_x_lit(",\"total_tokens\":") != MG_X_OK
        || mg_buf_int(out, u->prompt + u->completion) != MG_X_OK
        || mg_x_lit(",\"prompt_tokens_details\":{\"cached_tokens\":")
           != MG_X_OK
        || mg_buf_int(out, u->cached) != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    rc = MG_X_OK;

    if (u->cache_write) {
        rc = mg_x_lit(",\"cache_write_tokens\":");

        if (rc == MG_X_OK) {
            rc = mg_buf_int(out, u->cache_write);
        }
    }

#undef mg_x_lit

    return (rc == MG_X_OK) ? mg_buf_append(out, "}}", 2) : rc;
}


/*
 * A usage count of the object [p, p + len), as mg_x_tokens() reads it from
 * a tree: an integer, clamped to 0..MG_X_TOKENS_MAX; anything else (or
 * nothing) is dflt.  MG_X_ERROR for an integer jansson would refuse to
 * parse (over 64 bits): the caller leaves such input to the tree.
 */

int
mg_x_tokens_raw(const char *p, size_t len, const char *key,
    long long dflt, long long *n)
{
    size_t           i;
    long long        v;
    const char      *t;
    mg_json_field_t  f;

    memset(&f, 0, sizeof(f));
    f.name = key;
    f.name_len = strlen(key);

    *n = dflt;

    if (mg_json_scan(p, len, &f, 1, 64, NULL) != MG_JSON_OK) {
        return MG_X_ERROR;
    }

    if (f.type != MG_JSON_NUMBER) {
        return MG_X_OK;
    }

    t = p + f.start;

    if (memchr(t, '.', f.len) || memchr(t, 'e', f.len)
        || memchr(t, 'E', f.len))
    {
        return MG_X_OK;
    }

    if (f.len > 18) {
        return MG_X_ERROR;
    }

    v = 0;

    for (i = (t[0] == '-'); i < f.len; i++) {
        v = v * 10 + (t[i] - '0');
    }

    *n = (t[0] == '-') ? 0 : (v > MG_X_TOKENS_MAX ? MG_X_TOKENS_MAX : v);

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
