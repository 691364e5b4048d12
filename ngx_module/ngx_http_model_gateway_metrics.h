
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The metrics' files: _metrics.c (prices, the log phase's counting) and
 * _metrics_render.c (the Prometheus text).
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_METRICS_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_METRICS_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"


/* OpenTelemetry's recommended bucket boundaries (ms, ms, tokens) */
#define NGX_HTTP_MG_DURATION_BUCKETS  14
#define NGX_HTTP_MG_TTFT_BUCKETS      16
#define NGX_HTTP_MG_TOKEN_BUCKETS     14

extern const uint64_t  ngx_http_model_gateway_duration_bounds[];
extern const uint64_t  ngx_http_model_gateway_ttft_bounds[];
extern const uint64_t  ngx_http_model_gateway_token_bounds[];


ngx_int_t ngx_http_model_gateway_metrics_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_MODEL_GATEWAY_METRICS_H_INCLUDED_ */
