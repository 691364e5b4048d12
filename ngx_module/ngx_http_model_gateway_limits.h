
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The limits' files: _limits.c (directives, the LIMIT script, refusals,
 * headers), _limits_local.c (the shared-memory fallback),
 * _limits_settle.c (settling after the answer) and _limits_lease.c (units
 * leased to a node, model_gateway_limit_batch).
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_LIMITS_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_LIMITS_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"


/* where a request was charged: ctx->limits.charged */
#define NGX_HTTP_MG_CHARGED_REDIS  1
#define NGX_HTTP_MG_CHARGED_LOCAL  2


void ngx_http_model_gateway_limits_result(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t i, uint64_t limit, uint64_t remaining, int64_t reset);
ngx_int_t ngx_http_model_gateway_limits_refuse(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t i, int64_t retry);

ngx_int_t ngx_http_model_gateway_limits_local(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_limits_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
void ngx_http_model_gateway_limits_local_adjust(
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_limits_t *l, int64_t delta);

void ngx_http_model_gateway_limits_settle(ngx_http_model_gateway_ctx_t *ctx);
void ngx_http_model_gateway_limits_pend(
    ngx_http_model_gateway_main_conf_t *mcf, ngx_str_t *name, u_char kind,
    uint64_t limit, int64_t day, int64_t delta);

uint64_t ngx_http_model_gateway_limits_lease_ask(
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t i);
void ngx_http_model_gateway_limits_lease_grant(
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t i, int64_t units,
    uint64_t remaining, int64_t reset);
ngx_int_t ngx_http_model_gateway_limits_lease_take(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);


#endif /* _NGX_HTTP_MODEL_GATEWAY_LIMITS_H_INCLUDED_ */
