
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Who is calling.  In a location where identity is configured, the access
 * phase decides the caller's tenant (and key id) before the body is read,
 * so a caller without one costs no more than its headers; every stored
 * object is then keyed by that tenant.  This file takes the identity from
 * nginx's own variables, for deployments that already authenticate
 * (auth_request, mTLS, njs): model_gateway_identity $tenant [$key_id].
 */


#include "ngx_http_model_gateway_module.h"


#define NGX_HTTP_MG_NAME_MAX  64


static ngx_int_t ngx_http_model_gateway_identity_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_identity_name(ngx_str_t *s);


/* model_gateway_identity TENANT [KEY_ID]; */

char *
ngx_http_model_gateway_identity(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *lcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_complex_value_t         **cv[2];
    ngx_http_compile_complex_value_t   ccv;

    if (lcf->identity_tenant != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    cv[0] = &lcf->identity_tenant;
    cv[1] = &lcf->identity_key_id;
    lcf->identity_key_id = NULL;

    for (i = 1; i < cf->args->nelts; i++) {
        *cv[i - 1] = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (*cv[i - 1] == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = *cv[i - 1];

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_model_gateway_identity_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_model_gateway_identity_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_identity_handler(ngx_http_request_t *r)
{
    ngx_str_t                           tenant, key_id;
    ngx_http_model_gateway_ctx_t       *ctx;
    ngx_http_model_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_model_gateway_module);

    if (!lcf->enable || lcf->identity_tenant == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->identity.done) {
        return NGX_DECLINED;
    }

    if (ngx_http_complex_value(r, lcf->identity_tenant, &tenant) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_null(&key_id);

    if (lcf->identity_key_id
        && ngx_http_complex_value(r, lcf->identity_key_id, &key_id)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * the tenant names Redis keys of its own: a value that is not a plain
     * name (an empty one above all) identifies nobody
     */

    if (ngx_http_model_gateway_identity_name(&tenant) != NGX_OK
        || (key_id.len
            && ngx_http_model_gateway_identity_name(&key_id) != NGX_OK))
    {
        if (tenant.len) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: the identity's tenant or key id "
                          "is not a name of 1 to 64 letters, digits, "
                          "\".\", \"_\" or \"-\"");
        }

        return ngx_http_model_gateway_fail(r, NGX_HTTP_UNAUTHORIZED,
                                           "invalid_request_error",
                                           "invalid_api_key", NULL,
                                           "Invalid or missing API key.");
    }

    ctx->identity.tenant = tenant;
    ctx->identity.key_id = key_id;
    ctx->identity.done = 1;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_model_gateway_identity_name(ngx_str_t *s)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > NGX_HTTP_MG_NAME_MAX) {
        return NGX_DECLINED;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}
