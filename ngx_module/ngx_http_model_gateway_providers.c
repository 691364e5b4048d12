
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The provider table (see _providers.h) and what its rows point at: the
 * adapters that give the translators of src/ one signature, and the
 * builders of paths, authentication headers and signatures that need a
 * backend's configuration.  No other file of the glue names a provider.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"
#include "mg_anthropic.h"
#include "mg_gemini.h"
#include "mg_bedrock.h"
#include "mg_xfast.h"


static ngx_int_t ngx_http_model_gateway_bearer_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
static ngx_int_t ngx_http_model_gateway_azure_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
static ngx_int_t ngx_http_model_gateway_azure_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path);

static ngx_int_t ngx_http_model_gateway_anthropic_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
static ngx_int_t ngx_http_model_gateway_anthropic_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path);
static int ngx_http_model_gateway_anthropic_request(
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);
static void ngx_http_model_gateway_anthropic_error(int status,
    ngx_str_t *errortype, const char *body, size_t len, mg_xerror_t *err);
static void ngx_http_model_gateway_anthropic_stream_init(void *st,
    const char *model, size_t model_len, long created, int include_usage);
static int ngx_http_model_gateway_anthropic_stream(void *st,
    const mg_sse_event_t *ev, mg_buf_t *out, mg_xerror_t *err);
static void ngx_http_model_gateway_anthropic_free(void *st);
static int ngx_http_model_gateway_anthropic_usage(void *st, mg_x_usage_t *u);
static ngx_uint_t ngx_http_model_gateway_anthropic_preamble(
    const mg_sse_event_t *ev);

static ngx_int_t ngx_http_model_gateway_gemini_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
static ngx_int_t ngx_http_model_gateway_gemini_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path);
static int ngx_http_model_gateway_gemini_request(
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);
static void ngx_http_model_gateway_gemini_error(int status,
    ngx_str_t *errortype, const char *body, size_t len, mg_xerror_t *err);
static void ngx_http_model_gateway_gemini_stream_init(void *st,
    const char *model, size_t model_len, long created, int include_usage);
static int ngx_http_model_gateway_gemini_stream(void *st,
    const mg_sse_event_t *ev, mg_buf_t *out, mg_xerror_t *err);
static int ngx_http_model_gateway_gemini_finish(void *st, mg_buf_t *out);
static void ngx_http_model_gateway_gemini_free(void *st);
static int ngx_http_model_gateway_gemini_usage(void *st, mg_x_usage_t *u);

static ngx_int_t ngx_http_model_gateway_bedrock_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path);
static ngx_int_t ngx_http_model_gateway_bedrock_sign(ngx_http_request_t *r,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *path, ngx_str_t *body,
    ngx_str_t *out);
static int ngx_http_model_gateway_bedrock_request(
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);
static void ngx_http_model_gateway_bedrock_error(int status,
    ngx_str_t *errortype, const char *body, size_t len, mg_xerror_t *err);
static void ngx_http_model_gateway_bedrock_stream_init(void *st,
    const char *model, size_t model_len, long created, int include_usage);
static int ngx_http_model_gateway_bedrock_stream(void *st,
    const mg_sse_event_t *ev, mg_buf_t *out, mg_xerror_t *err);
static int ngx_http_model_gateway_bedrock_finish(void *st, mg_buf_t *out);
static void ngx_http_model_gateway_bedrock_free(void *st);
static int ngx_http_model_gateway_bedrock_usage(void *st, mg_x_usage_t *u);
static ngx_uint_t ngx_http_model_gateway_bedrock_preamble(
    const mg_sse_event_t *ev);
static ngx_http_model_gateway_fail_e ngx_http_model_gateway_bedrock_fail(
    const mg_sse_event_t *ev, ngx_int_t *status);


#define ngx_mg_ev(ev, s)                                                    \
    ((ev)->event_len == sizeof(s) - 1                                       \
     && ngx_strncmp((ev)->event, s, (ev)->event_len) == 0)


/* in the order "unknown backend type" lists them */

const ngx_http_model_gateway_provider_t  ngx_http_model_gateway_providers[] = {

    { ngx_string("openai"), NGX_HTTP_MG_OPENAI,
      1, 1, 1, 0, 0, 1,
      NGX_HTTP_MG_FWD_ALL|NGX_HTTP_MG_FWD_OPENAI,
      ngx_string("text/event-stream"),
      ngx_http_model_gateway_bearer_init, NULL, NULL,
      0, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL },

    { ngx_string("openai_compatible"), NGX_HTTP_MG_OPENAI_COMPATIBLE,
      1, 1, 1, 0, 0, 0,
      NGX_HTTP_MG_FWD_ALL|NGX_HTTP_MG_FWD_OPENAI,
      ngx_string("text/event-stream"),
      ngx_http_model_gateway_bearer_init, NULL, NULL,
      0, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL },

    { ngx_string("anthropic"), NGX_HTTP_MG_ANTHROPIC,
      1, 0, 0, 1, 0, 1,
      NGX_HTTP_MG_FWD_ALL,
      ngx_string("text/event-stream"),
      ngx_http_model_gateway_anthropic_init,
      ngx_http_model_gateway_anthropic_path,
      NULL,
      MG_XF_ANTHROPIC, MG_XF_ANTHROPIC, MG_ANTHROPIC_MAX_TOKENS,
      ngx_http_model_gateway_anthropic_request,
      mg_anthropic_response,
      ngx_http_model_gateway_anthropic_error,
      sizeof(mg_anthropic_stream_t),
      ngx_http_model_gateway_anthropic_stream_init,
      ngx_http_model_gateway_anthropic_stream,
      NULL,
      ngx_http_model_gateway_anthropic_free,
      ngx_http_model_gateway_anthropic_preamble,
      NULL,
      ngx_http_model_gateway_anthropic_usage },

    { ngx_string("azure"), NGX_HTTP_MG_AZURE,
      1, 1, 1, 0, 0, 1,
      NGX_HTTP_MG_FWD_ALL|NGX_HTTP_MG_FWD_OPENAI|NGX_HTTP_MG_FWD_AZURE,
      ngx_string("text/event-stream"),
      ngx_http_model_gateway_azure_init,
      ngx_http_model_gateway_azure_path,
      NULL,
      0, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL },

    { ngx_string("gemini"), NGX_HTTP_MG_GEMINI,
      1, 0, 0, 1, 0, 1,
      NGX_HTTP_MG_FWD_ALL,
      ngx_string("text/event-stream"),
      ngx_http_model_gateway_gemini_init,
      ngx_http_model_gateway_gemini_path,
      NULL,
      MG_XF_GEMINI, MG_XF_GEMINI, 0,
      ngx_http_model_gateway_gemini_request,
      mg_gemini_response,
      ngx_http_model_gateway_gemini_error,
      sizeof(mg_gemini_stream_t),
      ngx_http_model_gateway_gemini_stream_init,
      ngx_http_model_gateway_gemini_stream,
      ngx_http_model_gateway_gemini_finish,
      ngx_http_model_gateway_gemini_free,
      NULL,
      NULL,
      ngx_http_model_gateway_gemini_usage },

    { ngx_string("bedrock"), NGX_HTTP_MG_BEDROCK,
      1, 0, 0, 1, 1, 0,
      NGX_HTTP_MG_FWD_ALL,
      ngx_string("application/vnd.amazon.eventstream"),
      ngx_http_model_gateway_bearer_init,
      ngx_http_model_gateway_bedrock_path,
      ngx_http_model_gateway_bedrock_sign,
      MG_XF_BEDROCK, MG_XF_BEDROCK, 0,
      ngx_http_model_gateway_bedrock_request,
      mg_bedrock_response,
      ngx_http_model_gateway_bedrock_error,
      sizeof(mg_bedrock_stream_t),
      ngx_http_model_gateway_bedrock_stream_init,
      ngx_http_model_gateway_bedrock_stream,
      ngx_http_model_gateway_bedrock_finish,
      ngx_http_model_gateway_bedrock_free,
      ngx_http_model_gateway_bedrock_preamble,
      ngx_http_model_gateway_bedrock_fail,
      ngx_http_model_gateway_bedrock_usage },

    { ngx_null_string, 0, 0, 0, 0, 0, 0, 0, 0, ngx_null_string,
      NULL, NULL, NULL,
      0, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL }
};


/* OpenAI and OpenAI-compatible (and a Bedrock API key) */

static ngx_int_t
ngx_http_model_gateway_bearer_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    u_char  *p;

    if (b->key.len == 0) {
        return NGX_OK;
    }

    b->auth_header.len = sizeof("Authorization: Bearer " CRLF) - 1
                         + b->key.len;
    b->auth_header.data = ngx_pnalloc(cf->pool, b->auth_header.len);
    if (b->auth_header.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->auth_header.data, "Authorization: Bearer ",
                   sizeof("Authorization: Bearer ") - 1);
    p = ngx_cpymem(p, b->key.data, b->key.len);
    *p++ = CR; *p = LF;

    return NGX_OK;
}


/* Azure OpenAI */

static ngx_int_t
ngx_http_model_gateway_azure_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    if (b->api_version.data == NULL) {
        ngx_str_set(&b->api_version, "2024-10-21");
    }

    /*
     * the classic form puts the deployment in the path and needs a dated
     * api-version; the v1 form (".../openai/v1", or api_version v1) is
     * OpenAI's API with the deployment as the model
     */

    b->azure_v1 = (b->api_version.len == 2
                   && ngx_strncmp(b->api_version.data, "v1", 2) == 0)
                  || (b->path.len >= 3
                      && ngx_strncmp(b->path.data + b->path.len - 3, "/v1", 3)
                         == 0);

    /* stored objects need OpenAI's paths, which only v1 has */

    b->responses = b->azure_v1;

    b->auth_header.len = sizeof("api-key: " CRLF) - 1 + b->key.len;
    b->auth_header.data = ngx_pnalloc(cf->pool, b->auth_header.len);
    if (b->auth_header.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(b->auth_header.data, "api-key: %V" CRLF, &b->key);

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_azure_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path)
{
    ngx_http_model_gateway_backend_t  *b;

    b = t->backend;

    if (b->azure_v1 || t->provider_model.len == 0) {
        return NGX_DECLINED;
    }

    /*
     * classic Azure: the deployment is in the path and decides the model;
     * the body goes as the client sent it
     */

    path->len = sizeof("/deployments/?api-version=") - 1
                + t->provider_model.len + ctx->uri_suffix.len
                + b->api_version.len;
    path->data = ngx_pnalloc(r->pool, path->len);
    if (path->data == NULL) {
        return NGX_ERROR;
    }

    path->len = ngx_sprintf(path->data, "/deployments/%V%V?api-version=%V",
                            &t->provider_model, &ctx->uri_suffix,
                            &b->api_version)
                - path->data;

    return NGX_OK;
}


/* Anthropic Messages */

static ngx_int_t
ngx_http_model_gateway_anthropic_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    if (b->anthropic_version.data == NULL) {
        ngx_str_set(&b->anthropic_version, "2023-06-01");
    }

    /* Anthropic's own key header, and the API version it requires */

    b->auth_header.len = sizeof("x-api-key: " CRLF) - 1 + b->key.len
                         + sizeof("anthropic-version: " CRLF) - 1
                         + b->anthropic_version.len;
    b->auth_header.data = ngx_pnalloc(cf->pool, b->auth_header.len);
    if (b->auth_header.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(b->auth_header.data,
                "x-api-key: %V" CRLF "anthropic-version: %V" CRLF,
                &b->key, &b->anthropic_version);

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_anthropic_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path)
{
    ngx_str_set(path, "/messages");
    return NGX_OK;
}


static int
ngx_http_model_gateway_anthropic_request(ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    mg_anthropic_opts_t  opts;

    ngx_memzero(&opts, sizeof(mg_anthropic_opts_t));

    opts.model = (char *) t->provider_model.data;
    opts.model_len = t->provider_model.len;
    opts.default_max_tokens = t->backend->max_tokens;
    opts.max_out = max;

    return mg_anthropic_request((char *) body->data, body->len, &opts, out,
                                stream, include_usage, err);
}


static void
ngx_http_model_gateway_anthropic_error(int status, ngx_str_t *errortype,
    const char *body, size_t len, mg_xerror_t *err)
{
    mg_anthropic_error(status, body, len, err);
}


static void
ngx_http_model_gateway_anthropic_stream_init(void *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    mg_anthropic_stream_init(st, model, model_len, created, include_usage);
}


static int
ngx_http_model_gateway_anthropic_stream(void *st, const mg_sse_event_t *ev,
    mg_buf_t *out, mg_xerror_t *err)
{
    return mg_anthropic_stream_event(st, ev->event, ev->event_len, ev->data,
                                     ev->data_len, out, err);
}


static int
ngx_http_model_gateway_anthropic_usage(void *st, mg_x_usage_t *u)
{
    return mg_anthropic_stream_usage(st, u);
}


static void
ngx_http_model_gateway_anthropic_free(void *st)
{
    mg_anthropic_stream_free(st);
}


static ngx_uint_t
ngx_http_model_gateway_anthropic_preamble(const mg_sse_event_t *ev)
{
    if (ev->event == NULL) {
        return 0;
    }

    return ngx_mg_ev(ev, "message_start") || ngx_mg_ev(ev, "ping")
           || ngx_mg_ev(ev, "content_block_start");
}


/* Gemini */

static ngx_int_t
ngx_http_model_gateway_gemini_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    b->auth_header.len = sizeof("x-goog-api-key: " CRLF) - 1 + b->key.len;
    b->auth_header.data = ngx_pnalloc(cf->pool, b->auth_header.len);
    if (b->auth_header.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(b->auth_header.data, "x-goog-api-key: %V" CRLF, &b->key);

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_gemini_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path)
{
    /* the model is in Gemini's path */

    path->len = sizeof("/models/:streamGenerateContent?alt=sse") - 1
                + t->provider_model.len;
    path->data = ngx_pnalloc(r->pool, path->len);
    if (path->data == NULL) {
        return NGX_ERROR;
    }

    path->len = ngx_sprintf(path->data, "/models/%V:%s", &t->provider_model,
                            ctx->streaming ? "streamGenerateContent?alt=sse"
                                           : "generateContent")
                - path->data;

    return NGX_OK;
}


static int
ngx_http_model_gateway_gemini_request(ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    mg_gemini_opts_t  opts;

    ngx_memzero(&opts, sizeof(mg_gemini_opts_t));

    opts.default_max_tokens = t->backend->max_tokens;
    opts.max_out = max;

    return mg_gemini_request((char *) body->data, body->len, &opts, out,
                             stream, include_usage, err);
}


static void
ngx_http_model_gateway_gemini_error(int status, ngx_str_t *errortype,
    const char *body, size_t len, mg_xerror_t *err)
{
    mg_gemini_error(status, body, len, err);
}


static void
ngx_http_model_gateway_gemini_stream_init(void *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    mg_gemini_stream_init(st, model, model_len, created, include_usage);
}


static int
ngx_http_model_gateway_gemini_stream(void *st, const mg_sse_event_t *ev,
    mg_buf_t *out, mg_xerror_t *err)
{
    return mg_gemini_stream_event(st, ev->data, ev->data_len, out, err);
}


static int
ngx_http_model_gateway_gemini_finish(void *st, mg_buf_t *out)
{
    return mg_gemini_stream_finish(st, out);
}


static int
ngx_http_model_gateway_gemini_usage(void *st, mg_x_usage_t *u)
{
    return mg_gemini_stream_usage(st, u);
}


static void
ngx_http_model_gateway_gemini_free(void *st)
{
    mg_gemini_stream_free(st);
}


/* Amazon Bedrock Converse */

static ngx_int_t
ngx_http_model_gateway_bedrock_path(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_target_t *t,
    ngx_str_t *path)
{
    /* the model is in Bedrock's path too, one encoded segment */

    path->len = sizeof("/model//converse-stream") - 1 + t->provider_path.len;
    path->data = ngx_pnalloc(r->pool, path->len);
    if (path->data == NULL) {
        return NGX_ERROR;
    }

    path->len = ngx_sprintf(path->data, "/model/%V/%s", &t->provider_path,
                            ctx->streaming ? "converse-stream" : "converse")
                - path->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_bedrock_sign(ngx_http_request_t *r,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *path, ngx_str_t *body,
    ngx_str_t *out)
{
    u_char     *p;
    ngx_str_t   uri;

    if (b->key.len) {
        return NGX_OK;
    }

    /* SigV4, per attempt: the date is part of the signature */

    uri.len = b->path.len + path->len;
    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    p = uri.data;

    if (b->path.len) {
        p = ngx_cpymem(p, b->path.data, b->path.len);
    }

    ngx_memcpy(p, path->data, path->len);

    return ngx_http_model_gateway_aws_sign(r, b, &uri, body, out);
}


static int
ngx_http_model_gateway_bedrock_request(ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    mg_bedrock_opts_t  opts;

    ngx_memzero(&opts, sizeof(mg_bedrock_opts_t));

    opts.default_max_tokens = t->backend->max_tokens;
    opts.max_out = max;

    return mg_bedrock_request((char *) body->data, body->len, &opts, out,
                              stream, include_usage, err);
}


static void
ngx_http_model_gateway_bedrock_error(int status, ngx_str_t *errortype,
    const char *body, size_t len, mg_xerror_t *err)
{
    mg_bedrock_error(status, (char *) errortype->data, errortype->len, body,
                     len, err);
}


static void
ngx_http_model_gateway_bedrock_stream_init(void *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    mg_bedrock_stream_init(st, model, model_len, created, include_usage);
}


/* an eventstream message, as the glue's decoder handed it on */

static int
ngx_http_model_gateway_bedrock_stream(void *st, const mg_sse_event_t *ev,
    mg_buf_t *out, mg_xerror_t *err)
{
    return mg_bedrock_stream_event(st, ev->kind, ev->kind_len, ev->event,
                                   ev->event_len, ev->data, ev->data_len,
                                   out, err);
}


static int
ngx_http_model_gateway_bedrock_finish(void *st, mg_buf_t *out)
{
    return mg_bedrock_stream_finish(st, out);
}


static int
ngx_http_model_gateway_bedrock_usage(void *st, mg_x_usage_t *u)
{
    return mg_bedrock_stream_usage(st, u);
}


static void
ngx_http_model_gateway_bedrock_free(void *st)
{
    mg_bedrock_stream_free(st);
}


static ngx_uint_t
ngx_http_model_gateway_bedrock_preamble(const mg_sse_event_t *ev)
{
    if (ev->event == NULL) {
        return 0;
    }

    /* a tool call's contentBlockStart is content: it names the call */

    return ngx_mg_ev(ev, "messageStart");
}


/*
 * A throttlingException before any content counts as a 429 (the pair
 * cools down and the client gets 429 if nothing else serves),
 * serviceUnavailableException as a 503; anything else is a failed stream.
 */

static ngx_http_model_gateway_fail_e
ngx_http_model_gateway_bedrock_fail(const mg_sse_event_t *ev,
    ngx_int_t *status)
{
    mg_xerror_t  err;

    if (ev->kind == NULL) {
        return NGX_HTTP_MG_FAIL_STREAM_ERROR;
    }

    ngx_memzero(&err, sizeof(mg_xerror_t));

    mg_bedrock_error(0, ev->event, ev->event_len, ev->data, ev->data_len,
                     &err);

    if (err.status == NGX_HTTP_TOO_MANY_REQUESTS) {
        *status = NGX_HTTP_TOO_MANY_REQUESTS;
        return NGX_HTTP_MG_FAIL_RATE_LIMITED;
    }

    if (err.status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        *status = NGX_HTTP_SERVICE_UNAVAILABLE;
        return NGX_HTTP_MG_FAIL_STATUS;
    }

    return NGX_HTTP_MG_FAIL_STREAM_ERROR;
}
