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

    /* a provider's message cut to fit must stay valid UTF-8 for JSON */

    mg_x_utf8(err->message);
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
 * them in a JSON string, so bad bytes become '?' and a cut character goes
 * (mg_xerror_set() applies it to every message).
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


/* a NUL-terminated copy of n bytes at s (none when s is NULL), or NULL */

char *
mg_x_strndup(const char *s, size_t n)
{
    char  *p;

    if (s == NULL) {
        n = 0;
    }

    p = malloc(n + 1);
    if (p == NULL) {
        return NULL;
    }

    if (n) {
        memcpy(p, s, n);
    }

    p[n] = '\0';

    return p;
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


/*
 * jansson (2.14) does not look at what the callback returns for an
 * object's key: it goes on with the value.  So a callback that refuses
 * refuses everything after, and the dump is judged by that, not only by
 * what json_dump_callback() returns; else a key dropped at the bound (or
 * when memory ran out) left ":value" behind and the dump "succeeded".
 */

typedef struct {
    mg_buf_t    *out;
    size_t       end;           /* out->len may not pass it */
    unsigned     over:1;
    unsigned     failed:1;
} mg_x_dump_t;


static int
mg_x_dump_cb(const char *buf, size_t size, void *data)
{
    mg_x_dump_t  *d = data;

    if (d->failed) {
        return -1;
    }

    /* stop at the bound, before the bytes past it are even copied */

    if (size > d->end - d->out->len) {
        d->over = 1;
        d->failed = 1;
        return -1;
    }

    if (mg_buf_append(d->out, buf, size) != MG_X_OK) {
        d->failed = 1;
        return -1;
    }

    return 0;
}


static int
mg_x_dump_to(json_t *j, mg_buf_t *out, size_t flags, size_t max,
    mg_x_dump_t *d)
{
    size_t  len;

    len = out->len;

    d->out = out;
    d->end = (max > (size_t) -1 - len) ? (size_t) -1 : len + max;
    d->over = 0;
    d->failed = 0;

    if (json_dump_callback(j, mg_x_dump_cb, d, JSON_COMPACT | flags) != 0
        || d->failed)
    {
        out->len = len;
        return MG_X_ERROR;
    }

    return MG_X_OK;
}


int
mg_x_dump(json_t *j, mg_buf_t *out, size_t flags)
{
    mg_x_dump_t  d;

    return mg_x_dump_to(j, out, flags, (size_t) -1, &d) == MG_X_OK
           ? MG_X_OK : MG_X_NOMEM;
}


int
mg_x_dump_max(json_t *j, mg_buf_t *out, size_t flags, size_t max,
    const char *provider, mg_xerror_t *err)
{
    mg_x_dump_t  d;

    if (mg_x_dump_to(j, out, flags, max, &d) == MG_X_OK) {
        return MG_X_OK;
    }

    return d.over ? mg_x_too_large(err, provider, max) : MG_X_NOMEM;
}


int
mg_x_too_large(mg_xerror_t *err, const char *provider, size_t max)
{
    mg_xerror_set(err, 400, 0, "invalid_request_error", "request_too_large",
                  NULL, "the translated request for provider %s would "
                  "exceed %zu bytes", provider, max);

    return MG_X_ERROR;
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


/* a text (a JSON string) as a content chunk, *content set; none if empty */

int
mg_x_text_chunk(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *text, unsigned *content)
{
    int      rc;
    json_t  *delta;

    if (!json_is_string(text) || json_string_length(text) == 0) {
        return MG_X_OK;
    }

    delta = json_pack("{s:O}", "content", text);
    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_x_chunk(out, prefix, prefix_len, delta, NULL);

    json_decref(delta);

    if (rc == MG_X_OK) {
        *content = 1;
    }

    return rc;
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

