/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What every provider translator shares: a growable output buffer and the
 * error a translation reports.  Translators turn OpenAI chat completions
 * requests into a provider's native request, and the provider's responses,
 * stream events and errors back into OpenAI's shapes.  They know nothing
 * of nginx; the glue owns I/O and lifetimes and frees what they return.
 */

#ifndef _MG_TRANSLATE_H_INCLUDED_
#define _MG_TRANSLATE_H_INCLUDED_

#include <stddef.h>
#include <string.h>

#include <jansson.h>


/* a malloc'd byte buffer; zero-initialised is empty and valid */
typedef struct {
    char        *data;
    size_t       len;
    size_t       cap;
} mg_buf_t;


/*
 * An error to answer with: the HTTP status the gateway should return and
 * the OpenAI error fields.  retryable: another backend may succeed (5xx,
 * throttling, overload), so the glue fails over when it still can.
 */
typedef struct {
    int          status;
    int          retryable;
    const char  *type;          /* static strings */
    const char  *code;          /* may be NULL */
    const char  *param;         /* may be NULL */
    char         message[256];  /* NUL-terminated, may be truncated */
} mg_xerror_t;


/*
 * The bound of a translated request.  The glue passes its own
 * (model_gateway_max_body_size plus 64 KB, the room a translation may
 * add); a caller that passes 0 gets this one, so that no translation is
 * ever unbounded.  A request whose translation would be longer is the
 * client's 400: "the translated request for provider X would exceed N
 * bytes".
 */
#define MG_X_OUT_SLACK  (64 * 1024)
#define MG_X_OUT_MAX    (4 * 1024 * 1024 + MG_X_OUT_SLACK)

#define mg_x_out_max(max)  ((max) ? (size_t) (max) : (size_t) MG_X_OUT_MAX)


/* usage counts beyond this are clamped */
#define MG_X_TOKENS_MAX  1000000000000000LL

#define MG_X_OK        0
#define MG_X_ERROR    -1        /* see the mg_xerror_t */
#define MG_X_NOMEM    -2
#define MG_X_DONE      1        /* a stream translator saw the end */


/*
 * The usage of an OpenAI answer: total_tokens is prompt + completion;
 * cache_write 0 is left out of prompt_tokens_details.
 */
typedef struct {
    long long    prompt;
    long long    completion;
    long long    cached;
    long long    cache_write;
} mg_x_usage_t;

json_t *mg_x_usage_json(const mg_x_usage_t *u);
int mg_x_usage_print(mg_buf_t *out, const mg_x_usage_t *u);

int mg_buf_reserve(mg_buf_t *b, size_t n);    /* room for n more bytes */
int mg_buf_append(mg_buf_t *b, const char *p, size_t n);
int mg_buf_printf(mg_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int mg_buf_int(mg_buf_t *b, long long v);       /* decimal */
void mg_buf_reset(mg_buf_t *b);     /* len = 0, keeps the memory */
void mg_buf_free(mg_buf_t *b);

void mg_xerror_set(mg_xerror_t *err, int status, int retryable,
    const char *type, const char *code, const char *param,
    const char *fmt, ...) __attribute__((format(printf, 7, 8)));


#define mg_x_streq(s, lit)  ((s) != NULL && strcmp(s, lit) == 0)

/* [a-zA-Z0-9_-], what tool call ids may hold */
#define mg_x_id_char(c)                                                       \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                 \
     || ((c) >= '0' && (c) <= '9') || (c) == '_' || (c) == '-')


/* helpers of the translators (mg_anthropic_*.c, mg_bedrock_*.c, ...) */

json_t *mg_x_get(json_t *o, const char *key);
int mg_x_bad(mg_xerror_t *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int mg_x_nomem(mg_xerror_t *err);
void mg_x_utf8(char *s);
int mg_x_set(json_t *o, const char *key, json_t *v);
int mg_x_set_str(json_t *o, const char *key, const char *s);
char *mg_x_strndup(const char *s, size_t n);
json_t *mg_x_prefixed(const char *prefix, const char *s, size_t n);
int mg_x_dump(json_t *j, mg_buf_t *out, size_t flags);
/*
 * j dumped as mg_x_dump() does, but never more than max bytes of it: the
 * dump stops there (out as it was) and the request's 400 is set, naming
 * the provider
 */
int mg_x_dump_max(json_t *j, mg_buf_t *out, size_t flags, size_t max,
    const char *provider, mg_xerror_t *err);
int mg_x_too_large(mg_xerror_t *err, const char *provider, size_t max);
int mg_x_data_url(const char *s, size_t len, const char **mt,
    size_t *mt_len, const char **data, size_t *data_len);

long long mg_x_tokens(json_t *usage, const char *key, long long dflt);
int mg_x_bad_backend(mg_xerror_t *err, const char *what);
int mg_x_chunk_raw(mg_buf_t *out, const char *prefix, size_t prefix_len,
    const char *delta, size_t delta_len, json_t *delta_json,
    const char *finish);
int mg_x_stream_end(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *usage);
int mg_x_text_chunk(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *text, unsigned *content);
char *mg_x_chunk_head(const char *id_prefix, const char *id, size_t id_len,
    long long created, const char *model, size_t model_len, size_t *len);

int mg_x_tokens_raw(const char *p, size_t len, const char *key,
    long long dflt, long long *n);
int mg_x_chunk(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *delta, const char *finish);
int mg_x_chunk_content(mg_buf_t *out, const char *prefix, size_t prefix_len,
    const char *text, size_t text_len);
int mg_x_tool_delta(mg_buf_t *out, const char *prefix, size_t prefix_len,
    size_t k, json_t *fn, const char *id, size_t id_len);
int mg_x_tool_start(mg_buf_t *out, const char *prefix, size_t prefix_len,
    json_t *name, json_t *id, long long block, long long **tools,
    size_t *ntools, size_t *cap);


/*
 * Translating a request means decoding every JSON string of it and
 * encoding it again, which for a long chat history costs far more than
 * the rest.  mg_x_shrink() swaps each long message text ("content" or
 * "text" values) for a short placeholder (U+E000, its number, U+E001),
 * the translator works on that small body, and mg_x_expand() puts the
 * original, still escaped, text back where the placeholders landed.  Texts
 * that look like JSON (a tool result a translator may parse) are left in.
 */
typedef struct {
    mg_buf_t     body;          /* the shrunk request */
    size_t      *start;         /* each text inside its quotes, in p */
    size_t      *len;
    size_t       n;
    size_t       cap;
    size_t       max;           /* the expanded output's bound, 0: none;
                                   set by the caller after mg_x_shrink() */
} mg_x_shrink_t;

/* n == 0 afterwards: nothing worth shrinking, use the body as it is */
int mg_x_shrink(const char *p, size_t len, size_t min, mg_x_shrink_t *s);
int mg_x_expand(const mg_x_shrink_t *s, const char *orig, const char *out,
    size_t out_len, mg_buf_t *res);
void mg_x_shrink_free(mg_x_shrink_t *s);

/*
 * translate(data, ...) over the shrunk body with the texts put back into
 * out, or over the whole body when nothing was shrunk or the texts cannot
 * be put back (nor when they would make out longer than s->max: the whole
 * body's translator then reports its bound); returns what translate
 * returned.
 */
typedef int (*mg_x_translate_pt)(void *data, const char *body, size_t len,
    mg_buf_t *out);

int mg_x_translate_shrunk(const mg_x_shrink_t *s, const char *body,
    size_t len, mg_x_translate_pt translate, void *data, mg_buf_t *out);


#endif /* _MG_TRANSLATE_H_INCLUDED_ */
