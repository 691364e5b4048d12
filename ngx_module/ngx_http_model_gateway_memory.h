
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses (_memory*.c): what the three files share.
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_MEMORY_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_MEMORY_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "mg_responses.h"
#include "mg_memory.h"


/* what marks the ids the gateway makes: "resp_mgw_...", "msg_mgw_..." */
#define NGX_HTTP_MG_MEMORY_MARK      "mgw_"
#define NGX_HTTP_MG_MEMORY_RESP      "resp_mgw_"
#define NGX_HTTP_MG_MEMORY_CONV      "conv_mgw_"

/* random bytes of an id, hex-encoded */
#define NGX_HTTP_MG_MEMORY_ID_BYTES  16


struct ngx_http_model_gateway_memory_s {
    ngx_str_t                          id;          /* this response's */
    ngx_str_t                          prev;        /* previous_response_id */
    ngx_str_t                          conv;        /* conversation */
    ngx_str_t                          conv_key;    /* <base>c:<conv> */
    ngx_str_t                          truncation;  /* as the client said */
    ngx_str_t                          record;      /* <base>r:<id> */
    ngx_str_t                          lists;       /* <base>l: */
    ngx_str_t                          parent_list; /* where prev ends */
    ngx_str_t                          parent_end;
    ngx_str_t                          request;     /* the client's body */
    time_t                             created_at;

    mg_buf_t                           echo;        /* malloc'd: freed by */
    mg_buf_t                           input;       /* the pool cleanup */
    mg_buf_t                           chat;
    mg_buf_t                           out;
    mg_buf_t                           items;
    mg_buf_t                           object;
    mg_resp_stream_t                  *st;          /* a stream's */
    ngx_str_t                         *replay;      /* per target, or NULL:
                                                       with provider-only
                                                       state (_memory.c) */

    ngx_http_mg_redis_cmd_t           *cmd;         /* in flight */
    ngx_http_event_handler_pt          read_handler;

    unsigned                           store:1;
    unsigned                           ended:1;     /* final events made */
};


/* _memory.c */
ngx_int_t ngx_http_model_gateway_memory_unavailable(ngx_http_request_t *r);
ngx_int_t ngx_http_model_gateway_memory_not_found(ngx_http_request_t *r,
    const char *what, ngx_str_t *id, const char *code, const char *param);
ngx_int_t ngx_http_model_gateway_memory_base(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *kind, ngx_str_t *id,
    ngx_str_t *out);
int ngx_http_model_gateway_memory_item_id(void *data, const char *prefix,
    char *buf, size_t size);
ngx_int_t ngx_http_model_gateway_memory_error(ngx_http_request_t *r,
    mg_xerror_t *err);

/* _memory_turn.c */
ngx_int_t ngx_http_model_gateway_memory_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
u_char *ngx_http_model_gateway_memory_origin(ngx_pool_t *pool,
    ngx_http_model_gateway_target_t *t);

/* _memory_answer.c */
ngx_int_t ngx_http_model_gateway_memory_answer_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_MODEL_GATEWAY_MEMORY_H_INCLUDED_ */
