
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Variables for log_format and add_header.
 */


#include "ngx_http_model_gateway_module.h"


static ngx_int_t ngx_http_model_gateway_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#define NGX_HTTP_MG_VAR_BACKEND     0
#define NGX_HTTP_MG_VAR_MODEL       1
#define NGX_HTTP_MG_VAR_ATTEMPTS    2
#define NGX_HTTP_MG_VAR_POLICY      3
#define NGX_HTTP_MG_VAR_TTFB        4
#define NGX_HTTP_MG_VAR_SESSION     5
#define NGX_HTTP_MG_VAR_PINNED      6
#define NGX_HTTP_MG_VAR_TENANT      7
#define NGX_HTTP_MG_VAR_KEY_ID      8
#define NGX_HTTP_MG_VAR_PROMPT      9
#define NGX_HTTP_MG_VAR_COMPLETION  10


static ngx_http_variable_t  ngx_http_model_gateway_vars[] = {

    { ngx_string("model_gateway_backend"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_BACKEND,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_model"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_MODEL,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_attempts"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_ATTEMPTS,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_policy"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_POLICY,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_first_byte_time"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_TTFB,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_session_status"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_SESSION,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_session_backend"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_PINNED,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_tenant"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_TENANT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_key_id"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_KEY_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_prompt_tokens"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_PROMPT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("model_gateway_completion_tokens"), NULL,
      ngx_http_model_gateway_variable, NGX_HTTP_MG_VAR_COMPLETION,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_model_gateway_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_model_gateway_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p;
    size_t                         len;
    ngx_str_t                     *s, val;
    ngx_uint_t                     i;
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    ngx_str_null(&val);

    if (ctx) {
        switch (data) {

        case NGX_HTTP_MG_VAR_BACKEND:
            if (ctx->target) {
                val = ctx->target->backend->name;
            }
            break;

        case NGX_HTTP_MG_VAR_MODEL:
            val = ctx->model;
            break;

        case NGX_HTTP_MG_VAR_TENANT:
            val = ctx->identity.tenant;
            break;

        case NGX_HTTP_MG_VAR_KEY_ID:
            val = ctx->identity.key_id;
            break;

        case NGX_HTTP_MG_VAR_SESSION:
            if (ctx->session.key.len) {
                val = *ngx_http_model_gateway_pin_status(ctx);
            }
            break;

        case NGX_HTTP_MG_VAR_PINNED:
            if (ctx->session.backend.len) {
                val = ctx->session.backend;

            } else if (ctx->session.key.len && ctx->session.hashed >= 0) {
                val = ((ngx_http_model_gateway_target_t *)
                       ctx->model_conf->targets.elts)[ctx->session.hashed]
                      .backend->name;
            }
            break;

        case NGX_HTTP_MG_VAR_POLICY:
            switch (ctx->policy) {
            case NGX_HTTP_MG_BALANCE_ROUND_ROBIN:
                ngx_str_set(&val, "round_robin");
                break;
            case NGX_HTTP_MG_BALANCE_LEAST_OUTSTANDING:
                ngx_str_set(&val, "least_outstanding");
                break;
            case NGX_HTTP_MG_BALANCE_PEAK_EWMA:
                ngx_str_set(&val, "peak_ewma");
                break;
            }
            break;

        case NGX_HTTP_MG_VAR_PROMPT:
        case NGX_HTTP_MG_VAR_COMPLETION:

            /* unknown (no usage seen) is empty, never a made-up 0 */

            if (!ctx->usage.known) {
                break;
            }

            p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
            if (p == NULL) {
                return NGX_ERROR;
            }

            val.data = p;
            val.len = ngx_sprintf(p, "%uL", (data == NGX_HTTP_MG_VAR_PROMPT)
                                            ? ctx->usage.prompt
                                            : ctx->usage.completion)
                      - p;
            break;

        case NGX_HTTP_MG_VAR_TTFB:
            if (ctx->first_byte_at == 0) {
                break;
            }

            p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
            if (p == NULL) {
                return NGX_ERROR;
            }

            len = ctx->first_byte_at - ctx->attempt_start;
            val.data = p;
            val.len = ngx_sprintf(p, "%T.%03M", (time_t) len / 1000,
                                  (ngx_msec_t) (len % 1000))
                      - p;
            break;

        default: /* NGX_HTTP_MG_VAR_ATTEMPTS */
            s = ctx->attempt_log.elts;
            len = 0;

            for (i = 0; i < ctx->attempt_log.nelts; i++) {
                len += s[i].len + 1;
            }

            if (len == 0) {
                break;
            }

            p = ngx_pnalloc(r->pool, len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            val.data = p;

            for (i = 0; i < ctx->attempt_log.nelts; i++) {
                if (i) {
                    *p++ = ',';
                }

                p = ngx_cpymem(p, s[i].data, s[i].len);
            }

            val.len = p - val.data;
        }
    }

    if (val.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = val.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = val.data;

    return NGX_OK;
}
