
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The phases of a gateway request as registries in the main conf.  A
 * feature registers its handlers in its postconfiguration and never edits
 * the upstream code:
 *
 *   route   in an explicit order (NGX_HTTP_MG_ROUTE_*), before the
 *           upstream starts; see ngx_http_model_gateway_route_pt
 *   commit  status and headers are decided, before the first byte goes to
 *           the client; in the order registered
 *   events  a chain like nginx's body filters: mcf->event_filter is its
 *           top, each link keeps the one it replaced and may pass, replace,
 *           drop or add events; the last link writes to the client
 *   done    the request is over: its outcome, attempts, timings
 */


#include "ngx_http_model_gateway_module.h"


ngx_int_t
ngx_http_model_gateway_route_add(ngx_conf_t *cf,
    ngx_http_model_gateway_route_pt handler, ngx_uint_t order)
{
    ngx_uint_t                           i, n;
    ngx_http_model_gateway_route_t      *h;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    if (ngx_array_push(&mcf->route_handlers) == NULL) {
        return NGX_ERROR;
    }

    /* kept sorted once, at load: the request walks the array as it is */

    h = mcf->route_handlers.elts;
    n = mcf->route_handlers.nelts - 1;

    for (i = n; i > 0 && h[i - 1].order > order; i--) {
        h[i] = h[i - 1];
    }

    h[i].handler = handler;
    h[i].order = order;

    return NGX_OK;
}


ngx_int_t
ngx_http_model_gateway_commit_add(ngx_conf_t *cf,
    ngx_http_model_gateway_commit_pt handler)
{
    ngx_http_model_gateway_commit_pt    *h;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    h = ngx_array_push(&mcf->commit_handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = handler;

    return NGX_OK;
}


ngx_int_t
ngx_http_model_gateway_done_add(ngx_conf_t *cf,
    ngx_http_model_gateway_done_pt handler)
{
    ngx_http_model_gateway_done_pt      *h;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    h = ngx_array_push(&mcf->done_handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = handler;

    return NGX_OK;
}


ngx_int_t
ngx_http_model_gateway_run_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_uint_t                           i;
    ngx_http_model_gateway_commit_pt    *h;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    h = mcf->commit_handlers.elts;

    for (i = 0; i < mcf->commit_handlers.nelts; i++) {
        if (h[i](r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_model_gateway_run_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_int_t rc)
{
    ngx_uint_t                           i;
    ngx_http_model_gateway_done_pt      *h;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    h = mcf->done_handlers.elts;

    for (i = 0; i < mcf->done_handlers.nelts; i++) {
        h[i](r, ctx, rc);
    }
}
