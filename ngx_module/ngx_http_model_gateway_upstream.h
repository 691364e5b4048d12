
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the files of the upstream side share: _peer.c (attempts),
 * _request.c, _response.c (up to the commit), _stream.c (the body to the
 * client) and _keepalive.c.  Nothing outside them includes this.
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_UPSTREAM_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_UPSTREAM_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"


#define NGX_HTTP_MG_OUT_CHUNK     4096
#define NGX_HTTP_MG_BAD_FRAMING   3
#define NGX_HTTP_MG_BAD_EVENTS    4


/* _request.c */
ngx_int_t ngx_http_model_gateway_build_request(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

/* _response.c */
ngx_int_t ngx_http_model_gateway_process_header(ngx_http_request_t *r);

/* _stream.c */
int ngx_http_model_gateway_unframe(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_buf_t *view,
    mg_sse_handler_pt handler);
void ngx_http_model_gateway_events_init(ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_input_filter_init(void *data);
ngx_int_t ngx_http_model_gateway_input_filter(void *data, ssize_t bytes);
void ngx_http_model_gateway_finalize_request(ngx_http_request_t *r,
    ngx_int_t rc);

/* _keepalive.c */
ngx_int_t ngx_http_model_gateway_keepalive_get(ngx_peer_connection_t *pc,
    ngx_http_model_gateway_backend_t *b);
void ngx_http_model_gateway_keepalive_save(ngx_peer_connection_t *pc,
    ngx_http_model_gateway_backend_t *b);


#endif /* _NGX_HTTP_MODEL_GATEWAY_UPSTREAM_H_INCLUDED_ */
