
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Which client headers reach a backend.  An allowlist, per provider type,
 * that the operator may extend; a denylist would let a client set a header
 * the gateway signs (X-Amz-Date breaks SigV4) or authenticates with, and
 * one such request would cool the backend down for every client.  Names
 * that touch a credential, a signature or the framing can never be
 * forwarded, whatever the configuration says.  A backend may also carry
 * fixed headers of its own (anthropic-beta, say), which win over a client
 * header of the same name.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"


/* a name in every class: the operator's, for every provider */
#define NGX_HTTP_MG_ALL_TYPES  ((ngx_uint_t) -1)


typedef struct {
    ngx_str_t                          name;        /* lower case */
    ngx_uint_t                         types;       /* NGX_HTTP_MG_FWD_* */
} ngx_http_model_gateway_fwd_name_t;


/* a client header kept for the attempts */
typedef struct {
    ngx_table_elt_t                   *header;
    ngx_uint_t                         types;
} ngx_http_model_gateway_fwd_t;


/* forwarded by default: tracing, idempotency and SDK headers */

static ngx_http_model_gateway_fwd_name_t  ngx_http_model_gateway_fwd_default[]
    = {
    { ngx_string("user-agent"), NGX_HTTP_MG_FWD_ALL },
    { ngx_string("x-request-id"), NGX_HTTP_MG_FWD_ALL },
    { ngx_string("x-client-request-id"), NGX_HTTP_MG_FWD_ALL },
    { ngx_string("traceparent"), NGX_HTTP_MG_FWD_ALL },
    { ngx_string("tracestate"), NGX_HTTP_MG_FWD_ALL },
    { ngx_string("idempotency-key"), NGX_HTTP_MG_FWD_ALL },
    { ngx_string("openai-beta"), NGX_HTTP_MG_FWD_OPENAI },
    { ngx_string("x-ms-client-request-id"), NGX_HTTP_MG_FWD_AZURE },
    { ngx_null_string, 0 }
};


/*
 * Written by the gateway itself on every request: its credential and the
 * provider's version, and the request's own framing.  Neither a client nor
 * a backend's fixed headers set these.
 */

static ngx_str_t  ngx_http_model_gateway_own[] = {
    ngx_string("host"),
    ngx_string("authorization"),
    ngx_string("api-key"),
    ngx_string("x-api-key"),
    ngx_string("x-goog-api-key"),
    ngx_string("anthropic-version"),
    ngx_string("content-length"),
    ngx_string("content-type"),
    ngx_string("content-encoding"),
    ngx_string("transfer-encoding"),
    ngx_string("connection"),
    ngx_string("keep-alive"),
    ngx_string("te"),
    ngx_string("trailer"),
    ngx_string("upgrade"),
    ngx_string("expect"),
    ngx_string("accept"),
    ngx_string("accept-encoding"),
    ngx_null_string
};


/*
 * Never from a client either: the account a key bills to, and whole
 * families of signed, credential and proxy headers.  A backend's fixed
 * headers may set these, but X-Amz-*, which SigV4 signs, whatever the
 * backend's type ("header" may come before "type" in the block).
 */

static ngx_str_t  ngx_http_model_gateway_client_never[] = {
    ngx_string("openai-organization"),
    ngx_string("openai-project"),
    ngx_null_string
};


static ngx_str_t  ngx_http_model_gateway_client_never_prefix[] = {
    ngx_string("x-amz-"),
    ngx_string("x-amzn-"),
    ngx_string("x-goog-"),
    ngx_string("anthropic-"),
    ngx_string("proxy-"),
    ngx_null_string
};


static ngx_str_t  ngx_http_model_gateway_fixed_never_prefix[] = {
    ngx_string("x-amz-"),
    ngx_null_string
};


static ngx_uint_t
ngx_http_model_gateway_name_in(ngx_str_t *name, ngx_str_t *list,
    ngx_uint_t prefix)
{
    for ( /* void */ ; list->len; list++) {
        if ((prefix ? name->len >= list->len : name->len == list->len)
            && ngx_strncasecmp(name->data, list->data, list->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_http_model_gateway_token(ngx_str_t *name)
{
    u_char      c;
    ngx_uint_t  i;

    if (name->len == 0) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/* model_gateway_forward_headers NAME ...; */

char *
ngx_http_model_gateway_forward_headers(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *lcf = conf;

    ngx_str_t                          *value;
    ngx_uint_t                          i;
    ngx_http_model_gateway_fwd_name_t  *f;

    if (lcf->forward_headers != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    lcf->forward_headers = ngx_array_create(cf->pool, cf->args->nelts,
                                 sizeof(ngx_http_model_gateway_fwd_name_t));
    if (lcf->forward_headers == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (!ngx_http_model_gateway_token(&value[i])) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid header name \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_model_gateway_name_in(&value[i],
                                           ngx_http_model_gateway_own, 0)
            || ngx_http_model_gateway_name_in(&value[i],
                                       ngx_http_model_gateway_client_never, 0)
            || ngx_http_model_gateway_name_in(&value[i],
                                ngx_http_model_gateway_client_never_prefix, 1))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the header \"%V\" is the gateway's own "
                               "(a credential, a signed header or framing) "
                               "and is never forwarded from a client; a "
                               "backend's \"header\" can set it",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        f = ngx_array_push(lcf->forward_headers);
        if (f == NULL) {
            return NGX_CONF_ERROR;
        }

        f->name.len = value[i].len;
        f->name.data = ngx_pnalloc(cf->pool, value[i].len);
        if (f->name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_strlow(f->name.data, value[i].data, value[i].len);
        f->types = NGX_HTTP_MG_ALL_TYPES;
    }

    return NGX_CONF_OK;
}


/*
 * The headers named by the session key ("$http_x_session_id") carry a
 * client's routing secret: they are not sent to providers even when an
 * operator's list names them.
 */

char *
ngx_http_model_gateway_headers_merge(ngx_conf_t *cf,
    ngx_http_model_gateway_loc_conf_t *prev,
    ngx_http_model_gateway_loc_conf_t *conf)
{
    u_char     *p, *last, *start;
    ngx_str_t  *name;

    ngx_conf_merge_ptr_value(conf->forward_headers, prev->forward_headers,
                             NULL);

    if (conf->session == NULL || conf->session_headers) {
        return NGX_CONF_OK;
    }

    if (conf->session == prev->session) {
        conf->session_headers = prev->session_headers;
        return NGX_CONF_OK;
    }

    conf->session_headers = ngx_array_create(cf->pool, 1, sizeof(ngx_str_t));
    if (conf->session_headers == NULL) {
        return NGX_CONF_ERROR;
    }

    last = conf->session->value.data + conf->session->value.len;

    for (p = conf->session->value.data; p < last; p++) {

        if (*p != '$') {
            continue;
        }

        start = p + 1;

        if (start < last && *start == '{') {
            start++;
        }

        if (last - start < 5
            || ngx_strncasecmp(start, (u_char *) "http_", 5) != 0)
        {
            continue;
        }

        start += 5;

        for (p = start; p < last; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '_'))
            {
                break;
            }
        }

        if (p == start) {
            continue;
        }

        name = ngx_array_push(conf->session_headers);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        name->len = p - start;
        name->data = ngx_pnalloc(cf->pool, name->len);
        if (name->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_strlow(name->data, start, name->len);
        p--;
    }

    return NGX_CONF_OK;
}


/* "$http_x_session_id" names the header X-Session-Id (and x_session_id) */

static ngx_uint_t
ngx_http_model_gateway_session_header(ngx_http_model_gateway_loc_conf_t *lcf,
    ngx_str_t *key)
{
    u_char      c;
    ngx_str_t  *s;
    ngx_uint_t  i, j;

    if (lcf->session_headers == NULL) {
        return 0;
    }

    s = lcf->session_headers->elts;

    for (i = 0; i < lcf->session_headers->nelts; i++) {
        if (s[i].len != key->len) {
            continue;
        }

        for (j = 0; j < key->len; j++) {
            c = ngx_tolower(key->data[j]);
            if (c == '-') {
                c = '_';
            }

            if (c != s[i].data[j]) {
                break;
            }
        }

        if (j == key->len) {
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_http_model_gateway_fwd_types(ngx_http_model_gateway_loc_conf_t *lcf,
    ngx_str_t *key)
{
    ngx_uint_t                          i, types;
    ngx_http_model_gateway_fwd_name_t  *f;

    types = 0;

    for (f = ngx_http_model_gateway_fwd_default; f->name.len; f++) {
        if (key->len == f->name.len
            && ngx_strncasecmp(key->data, f->name.data, key->len) == 0)
        {
            types |= f->types;
            break;
        }
    }

    if (lcf->forward_headers) {
        f = lcf->forward_headers->elts;

        for (i = 0; i < lcf->forward_headers->nelts; i++) {
            if (key->len == f[i].name.len
                && ngx_strncasecmp(key->data, f[i].name.data, key->len) == 0)
            {
                types |= f[i].types;
                break;
            }
        }
    }

    if (types && ngx_http_model_gateway_session_header(lcf, key)) {
        return 0;
    }

    return types;
}


/* the client headers some backend type may get, kept once per request */

ngx_int_t
ngx_http_model_gateway_headers_collect(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_uint_t                     i, types;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h;
    ngx_http_model_gateway_fwd_t  *fwd;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        types = ngx_http_model_gateway_fwd_types(ctx->lcf, &h[i].key);
        if (types == 0) {
            continue;
        }

        if (ctx->fwd == NULL) {
            ctx->fwd = ngx_array_create(r->pool, 4,
                                       sizeof(ngx_http_model_gateway_fwd_t));
            if (ctx->fwd == NULL) {
                return NGX_ERROR;
            }
        }

        fwd = ngx_array_push(ctx->fwd);
        if (fwd == NULL) {
            return NGX_ERROR;
        }

        fwd->header = &h[i];
        fwd->types = types;
        ctx->fwd_len += h[i].key.len + sizeof(": " CRLF) - 1
                        + h[i].value.len;
    }

    return NGX_OK;
}


/* header NAME VALUE; in a model_gateway_backend block */

char *
ngx_http_model_gateway_backend_header(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *name, ngx_str_t *value)
{
    u_char           *p, *last;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (!ngx_http_model_gateway_token(name)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid header name \"%V\"", name);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value->len; i++) {
        if (value->data[i] == CR || value->data[i] == LF
            || value->data[i] == '\0')
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value of header \"%V\"", name);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_model_gateway_name_in(name, ngx_http_model_gateway_own, 0)
        || ngx_http_model_gateway_name_in(name,
                                 ngx_http_model_gateway_fixed_never_prefix, 1))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the header \"%V\" is written by the gateway "
                           "itself and cannot be set by \"header\"", name);
        return NGX_CONF_ERROR;
    }

    if (b->fixed_headers == NULL) {
        b->fixed_headers = ngx_array_create(cf->pool, 2,
                                            sizeof(ngx_table_elt_t));
        if (b->fixed_headers == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    h = ngx_array_push(b->fixed_headers);
    if (h == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(h, sizeof(ngx_table_elt_t));
    h->key = *name;
    h->value = *value;

    /* the rendered lines, written as one */

    p = ngx_pnalloc(cf->pool, b->fixed_lines.len + name->len
                              + sizeof(": " CRLF) - 1 + value->len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    last = p;

    if (b->fixed_lines.len) {
        last = ngx_cpymem(last, b->fixed_lines.data, b->fixed_lines.len);
    }

    last = ngx_sprintf(last, "%V: %V" CRLF, name, value);

    b->fixed_lines.data = p;
    b->fixed_lines.len = last - p;

    return NGX_CONF_OK;
}


static ngx_uint_t
ngx_http_model_gateway_fixed(ngx_http_model_gateway_backend_t *b,
    ngx_str_t *key)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (b->fixed_headers == NULL) {
        return 0;
    }

    h = b->fixed_headers->elts;

    for (i = 0; i < b->fixed_headers->nelts; i++) {
        if (h[i].key.len == key->len
            && ngx_strncasecmp(h[i].key.data, key->data, key->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* at most what ngx_http_model_gateway_headers_write() writes */

size_t
ngx_http_model_gateway_headers_len(ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_backend_t *b)
{
    return ctx->fwd_len + b->fixed_lines.len;
}


u_char *
ngx_http_model_gateway_headers_write(ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_backend_t *b, u_char *p)
{
    ngx_uint_t                     i;
    ngx_table_elt_t               *h;
    ngx_http_model_gateway_fwd_t  *fwd;

    if (ctx->fwd) {
        fwd = ctx->fwd->elts;

        for (i = 0; i < ctx->fwd->nelts; i++) {
            h = fwd[i].header;

            if (!(fwd[i].types & b->provider->forward)
                || ngx_http_model_gateway_fixed(b, &h->key))
            {
                continue;
            }

            p = ngx_cpymem(p, h->key.data, h->key.len);
            *p++ = ':'; *p++ = ' ';
            p = ngx_cpymem(p, h->value.data, h->value.len);
            *p++ = CR; *p++ = LF;
        }
    }

    if (b->fixed_lines.len) {
        p = ngx_cpymem(p, b->fixed_lines.data, b->fixed_lines.len);
    }

    return p;
}
