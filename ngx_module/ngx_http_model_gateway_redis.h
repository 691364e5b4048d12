
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_REDIS_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


struct redisReply;

typedef struct ngx_http_mg_redis_cmd_s  ngx_http_mg_redis_cmd_t;

/* rc is NGX_OK with a reply, or NGX_ERROR (timeout, Redis down) */
typedef void (*ngx_http_mg_redis_handler_pt)(void *data,
    struct redisReply *reply, ngx_int_t rc);


typedef struct {
    const char         *body;
    ngx_uint_t          nkeys;
    char                sha1[41];
} ngx_http_mg_redis_script_t;


#define NGX_HTTP_MG_SCRIPT_PIN      0
#define NGX_HTTP_MG_SCRIPT_MOVE     1
#define NGX_HTTP_MG_SCRIPT_DROP     2
#define NGX_HTTP_MG_SCRIPT_LOOKUP   3
#define NGX_HTTP_MG_SCRIPT_STORE    4
#define NGX_HTTP_MG_SCRIPT_LIMIT    5
#define NGX_HTTP_MG_SCRIPT_SETTLE   6
#define NGX_HTTP_MG_SCRIPT_MREAD    7
#define NGX_HTTP_MG_SCRIPT_MWRITE   8
#define NGX_HTTP_MG_SCRIPT_MGET     9
#define NGX_HTTP_MG_SCRIPT_MCONV    10
#define NGX_HTTP_MG_SCRIPT_ADMIN    11
#define NGX_HTTP_MG_REDIS_NSCRIPTS  12

extern ngx_http_mg_redis_script_t  ngx_http_mg_redis_scripts[];


ngx_int_t ngx_http_mg_redis_scripts_init(ngx_log_t *log);
ngx_uint_t ngx_http_mg_redis_ready(void);
ngx_int_t ngx_http_mg_redis_now(void);
ngx_int_t ngx_http_mg_redis_now_for(ngx_str_t *key);
ngx_http_mg_redis_cmd_t *ngx_http_mg_redis_script(ngx_uint_t script,
    ngx_uint_t nargs, ngx_str_t *args, ngx_http_mg_redis_handler_pt handler,
    void *data);
ngx_http_mg_redis_cmd_t *ngx_http_mg_redis_script_keys(ngx_uint_t script,
    ngx_uint_t nkeys, ngx_uint_t nargs, ngx_str_t *args,
    ngx_http_mg_redis_handler_pt handler, void *data);
ngx_http_mg_redis_cmd_t *ngx_http_mg_redis_command(ngx_uint_t nargs,
    ngx_str_t *args, ngx_http_mg_redis_handler_pt handler, void *data);
void ngx_http_mg_redis_cancel(ngx_http_mg_redis_cmd_t *cmd);
void ngx_http_mg_redis_exit_process(void);


#endif /* _NGX_HTTP_MODEL_GATEWAY_REDIS_H_INCLUDED_ */
