/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>

#include "mg_usage.h"


/*
 * a document with many nested "usage" members and no top-level one would
 * otherwise cost a walk to its end for each of them
 */
#define MG_USAGE_CANDIDATES  16


#define mg_usage_ws(c)                                                        \
    ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')


static const char *mg_usage_rfind(const char *p, const char *q);
static const char *mg_usage_string_end(const char *s, const char *end);
static const char *mg_usage_value_end(const char *v, const char *end);
static int mg_usage_closes(const char *s, const char *end);
static int mg_usage_count(const char *p, const mg_json_field_t *f,
    long long *n);


int
mg_usage_object(const char *p, size_t len, mg_usage_t *u)
{
    int              found;
    size_t           i, start, vlen;
    long long        n[4];
    mg_json_field_t  f[6], c;

    static const char  *names[] = {
        "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
        "prompt_tokens_details", "input_tokens_details"
    };

    memset(f, 0, sizeof(f));

    for (i = 0; i < 6; i++) {
        f[i].name = names[i];
        f[i].name_len = strlen(names[i]);
    }

    if (mg_json_scan(p, len, f, 6, 16, NULL) != MG_JSON_OK) {
        return MG_USAGE_NONE;
    }

    found = 0;

    for (i = 0; i < 4; i++) {
        n[i] = 0;
        found |= mg_usage_count(p, &f[i], &n[i]);
    }

    if (!found) {
        return MG_USAGE_NONE;
    }

    /* OpenAI's chat and embeddings names, or the Responses API's */

    u->prompt = (f[0].type != MG_JSON_NONE) ? n[0] : n[2];
    u->completion = (f[1].type != MG_JSON_NONE) ? n[1] : n[3];
    u->cached = 0;

    for (i = 4; i < 6; i++) {
        if (f[i].type != MG_JSON_OBJECT) {
            continue;
        }

        memset(&c, 0, sizeof(c));
        c.type = mg_json_member(p + f[i].start, f[i].len, "cached_tokens", 13,
                                &start, &vlen);
        c.start = f[i].start + start;
        c.len = vlen;

        if (mg_usage_count(p, &c, &u->cached)) {
            break;
        }
    }

    return MG_USAGE_FOUND;
}


/* a non-negative integer ("-0" is one); 1 if it is one */

static int
mg_usage_count(const char *p, const mg_json_field_t *f, long long *n)
{
    size_t     i;
    long long  v;

    if (f->type != MG_JSON_NUMBER) {
        return 0;
    }

    v = 0;
    i = 0;

    if (p[f->start] == '-') {
        if (f->len != 2 || p[f->start + 1] != '0') {
            return 0;
        }

        i = 1;
    }

    for ( /* void */ ; i < f->len; i++) {
        if (p[f->start + i] < '0' || p[f->start + i] > '9') {
            return 0;
        }

        if (v < MG_USAGE_MAX) {
            v = v * 10 + (p[f->start + i] - '0');
        }
    }

    *n = (v > MG_USAGE_MAX) ? MG_USAGE_MAX : v;

    return 1;
}


int
mg_usage_tail(const char *p, size_t len, mg_usage_t *u)
{
    size_t       bs;
    const char  *end, *q, *k, *v, *ve, *b;
    unsigned     tries;

    end = p + len;

    while (end > p && mg_usage_ws(end[-1])) {
        end--;
    }

    if (end == p || end[-1] != '}') {
        return MG_USAGE_NONE;
    }

    q = end;

    for (tries = 0; tries < MG_USAGE_CANDIDATES; tries++) {

        k = mg_usage_rfind(p, q);
        if (k == NULL) {
            return MG_USAGE_NONE;
        }

        q = k;

        /* \"usage" inside a string: a quote escaped is not a name's */

        bs = 0;
        for (b = k; b > p && b[-1] == '\\'; b--) {
            bs++;
        }

        if (bs & 1) {
            continue;
        }

        /*
         * a member name, for only a name is followed by a colon: inside
         * a string the closing quote would have been escaped
         */

        v = k + sizeof("\"usage\"") - 1;

        while (v < end && mg_usage_ws(*v)) {
            v++;
        }

        if (v == end || *v != ':') {
            continue;
        }

        v++;

        while (v < end && mg_usage_ws(*v)) {
            v++;
        }

        ve = mg_usage_value_end(v, end);

        if (ve == NULL || !mg_usage_closes(ve, end)) {

            /* a member of a nested object */
            continue;
        }

        if (*v != '{') {
            return MG_USAGE_NONE;
        }

        return mg_usage_object(v, ve - v, u);
    }

    return MG_USAGE_NONE;
}


/* the last "usage" (quotes included) that starts before q */

static const char *
mg_usage_rfind(const char *p, const char *q)
{
    const char  *c;

    /* from its closing quote: a name's last byte */

    for (c = q - 1; c - p >= (ptrdiff_t) sizeof("\"usage") - 1; c--) {
        if (*c == '"' && c[-1] == 'e'
            && memcmp(c - 6, "\"usage", 6) == 0)
        {
            return c - 6;
        }
    }

    return NULL;
}


/* s is at an opening quote: the byte after the closing one, or NULL */

static const char *
mg_usage_string_end(const char *s, const char *end)
{
    for (s++; s < end; s++) {
        if (*s == '\\') {
            s++;
            continue;
        }

        if (*s == '"') {
            return s + 1;
        }
    }

    return NULL;
}


/* the byte after the value that starts at v, or NULL when cut short */

static const char *
mg_usage_value_end(const char *v, const char *end)
{
    long  depth;

    if (v == end) {
        return NULL;
    }

    if (*v == '"') {
        return mg_usage_string_end(v, end);
    }

    if (*v != '{' && *v != '[') {
        while (v < end && *v != ',' && *v != '}' && *v != ']'
               && !mg_usage_ws(*v))
        {
            v++;
        }

        return (v < end) ? v : NULL;
    }

    depth = 0;

    while (v < end) {
        switch (*v) {

        case '"':
            v = mg_usage_string_end(v, end);
            if (v == NULL) {
                return NULL;
            }

            continue;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            if (--depth == 0) {
                return v + 1;
            }

            break;
        }

        v++;
    }

    return NULL;
}


/*
 * From s (just after a member's value) to end, the only container that
 * closes is the one the member is in, and it closes at the very end: the
 * member is the top-level object's.
 */

static int
mg_usage_closes(const char *s, const char *end)
{
    long  depth;

    depth = 0;

    while (s < end) {
        switch (*s) {

        case '"':
            s = mg_usage_string_end(s, end);
            if (s == NULL) {
                return 0;
            }

            continue;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            if (--depth < 0) {
                return s + 1 == end;
            }

            break;
        }

        s++;
    }

    return 0;
}


int
mg_usage_chunk(const char *data, size_t len, mg_usage_t *u, int *usage_only)
{
    const char       *p;
    mg_json_field_t   f[1];

    *usage_only = 0;

    /* most chunks have no usage, or "usage":null: no full scan for them */

    if (mg_usage_tail(data, len, u) != MG_USAGE_FOUND) {
        return MG_USAGE_NONE;
    }

    memset(f, 0, sizeof(f));
    f[0].name = "choices";
    f[0].name_len = sizeof("choices") - 1;

    if (mg_json_scan(data, len, f, 1, 64, NULL) == MG_JSON_OK
        && f[0].type == MG_JSON_ARRAY)
    {
        p = data + f[0].start + 1;

        while (mg_usage_ws(*p)) {
            p++;
        }

        *usage_only = (*p == ']');
    }

    return MG_USAGE_FOUND;
}


int
mg_usage_responses_event(const char *data, size_t len, mg_usage_t *u)
{
    const char       *t;
    mg_json_field_t   f[2];

    memset(f, 0, sizeof(f));
    f[0].name = "type";
    f[0].name_len = sizeof("type") - 1;
    f[1].name = "response";
    f[1].name_len = sizeof("response") - 1;

    if (mg_json_scan(data, len, f, 2, 64, NULL) != MG_JSON_OK
        || f[0].type != MG_JSON_STRING || f[1].type != MG_JSON_OBJECT)
    {
        return MG_USAGE_NONE;
    }

    t = data + f[0].start;

#define mg_usage_is(s)                                                        \
    (f[0].len == sizeof(s) - 1 && memcmp(t, s, sizeof(s) - 1) == 0)

    if (!(mg_usage_is("\"response.completed\"")
          || mg_usage_is("\"response.incomplete\"")
          || mg_usage_is("\"response.failed\"")))
    {
        return MG_USAGE_NONE;
    }

#undef mg_usage_is

    return mg_usage_tail(data + f[1].start, f[1].len, u);
}


int
mg_usage_stream_options(const char *body, size_t len,
    const mg_json_field_t *so, mg_usage_edit_t *e)
{
    size_t           start, vlen;
    const char      *p, *end;
    mg_json_type_t   t;

    switch (so->type) {

    case MG_JSON_NONE:

        /* a member of its own before the body's closing brace */

        end = body + len;

        while (end > body && end[-1] != '}') {
            end--;
        }

        if (end == body) {
            return MG_USAGE_DECLINED;
        }

        e->at = end - 1 - body;
        e->cut = 0;
        e->text = ",\"stream_options\":{\"include_usage\":true}";
        e->len = sizeof(",\"stream_options\":{\"include_usage\":true}") - 1;

        /* no comma in an object without members */

        for (p = end - 1; p > body && mg_usage_ws(p[-1]); p--) { /* void */ }

        if (p > body && p[-1] == '{') {
            e->text++;
            e->len--;
        }

        return MG_USAGE_EDIT;

    case MG_JSON_NULL:
        e->at = so->start;
        e->cut = so->len;
        e->text = "{\"include_usage\":true}";
        e->len = sizeof("{\"include_usage\":true}") - 1;

        return MG_USAGE_EDIT;

    case MG_JSON_OBJECT:
        break;

    default:

        /* the backend's to refuse, as it would without the gateway */
        return MG_USAGE_DECLINED;
    }

    p = body + so->start;

    t = mg_json_member(p, so->len, "include_usage",
                       sizeof("include_usage") - 1, &start, &vlen);

    if (t == MG_JSON_TRUE) {
        return MG_USAGE_ASKED;
    }

    if (t != MG_JSON_NONE) {
        e->at = so->start + start;
        e->cut = vlen;
        e->text = "true";
        e->len = sizeof("true") - 1;

        return MG_USAGE_EDIT;
    }

    /* the first member, so that no comma has to follow another one */

    e->at = so->start + 1;
    e->cut = 0;

    for (p++; mg_usage_ws(*p); p++) { /* void */ }

    if (*p == '}') {
        e->text = "\"include_usage\":true";
        e->len = sizeof("\"include_usage\":true") - 1;

    } else {
        e->text = "\"include_usage\":true,";
        e->len = sizeof("\"include_usage\":true,") - 1;
    }

    return MG_USAGE_EDIT;
}
