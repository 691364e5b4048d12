
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The provider table: one row per backend type.  A row points at the
 * nginx-free translators of src/ (through small adapters that give them
 * one signature) and at the glue's builders that need a backend's
 * configuration or signing; it says what the provider can serve and how
 * its streams are framed.  Everything else in the glue reaches a provider
 * through its row: adding one is one source file in src/, its fixtures,
 * and one row in _providers.c.
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_PROVIDERS_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_PROVIDERS_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"


/* classes of client headers a provider accepts (see _headers.c) */
#define NGX_HTTP_MG_FWD_ALL       0x01   /* tracing, idempotency, SDK */
#define NGX_HTTP_MG_FWD_OPENAI    0x02   /* OpenAI-Beta */
#define NGX_HTTP_MG_FWD_AZURE     0x04   /* x-ms-client-request-id */


struct ngx_http_model_gateway_provider_s {
    ngx_str_t    name;              /* as in "type NAME;" */
    ngx_uint_t   type;              /* NGX_HTTP_MG_* */

    /* capabilities */
    unsigned     chat:1;
    unsigned     embeddings:1;
    unsigned     responses:1;       /* Responses and Conversations, native */
    unsigned     translated:1;      /* not OpenAI's API: the fields below */
    unsigned     eventstream:1;     /* streams in AWS eventstream framing */
    unsigned     needs_key:1;       /* key_env or key_file is required */
    ngx_uint_t   forward;           /* NGX_HTTP_MG_FWD_* */
    ngx_str_t    accept_stream;     /* the Accept of a streaming request */

    /*
     * the glue's builders: the backend made ready at load (its
     * authentication header, defaults), the path of one attempt after the
     * backend's prefix (NGX_DECLINED: the client's, with the model spliced
     * into the body), and a per-attempt signature header
     */
    ngx_int_t  (*init)(ngx_conf_t *cf, ngx_http_model_gateway_backend_t *b);
    ngx_int_t  (*path)(ngx_http_request_t *r,
                       ngx_http_model_gateway_ctx_t *ctx,
                       ngx_http_model_gateway_target_t *t, ngx_str_t *path);
    ngx_int_t  (*sign)(ngx_http_request_t *r,
                       ngx_http_model_gateway_backend_t *b, ngx_str_t *path,
                       ngx_str_t *body, ngx_str_t *out);

    /* translation (translated providers only) */
    int          fast_request;      /* MG_XF_*, or 0: no tree-free path */
    int          fast_answer;
    ngx_int_t    fast_max_tokens;   /* the tree-free path's default */
    int        (*request)(ngx_http_model_gateway_target_t *t,
                          ngx_str_t *body, size_t max, mg_buf_t *out,
                          int *stream, int *include_usage,
                          mg_xerror_t *err);
    int        (*response)(const char *body, size_t len, const char *model,
                           size_t model_len, long created, mg_buf_t *out,
                           mg_xerror_t *err);
    void       (*error)(int status, ngx_str_t *errortype, const char *body,
                        size_t len, mg_xerror_t *err);
    size_t       stream_size;
    void       (*stream_init)(void *st, const char *model, size_t model_len,
                              long created, int include_usage);
    int        (*stream_event)(void *st, const mg_sse_event_t *ev,
                               mg_buf_t *out, mg_xerror_t *err);
    int        (*stream_finish)(void *st, mg_buf_t *out);
    void       (*stream_free)(void *st);

    /*
     * a stream event sent before any content (the stream is held on), and
     * how an error event before content fails the attempt (NULL: a failed
     * stream)
     */
    ngx_uint_t (*preamble)(const mg_sse_event_t *ev);
    ngx_http_model_gateway_fail_e  (*stream_fail)(const mg_sse_event_t *ev,
                                                  ngx_int_t *status);

    /*
     * a translated stream's counts so far, in OpenAI's terms, whether the
     * client asked for the usage chunk or not: 1 when known (_usage.c)
     */
    int        (*stream_usage)(void *st, mg_x_usage_t *u);
};


/* ended by a row without a name */
extern const ngx_http_model_gateway_provider_t
    ngx_http_model_gateway_providers[];


#endif /* _NGX_HTTP_MODEL_GATEWAY_PROVIDERS_H_INCLUDED_ */
