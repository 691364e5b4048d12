
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin API's files: _admin.c (the key, the body, routing, backends),
 * _admin_sync.c (the fleet's admin state in Redis), _admin_objects.c
 * (session pins and stored objects) and _admin_keys.c (gateway keys).
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_ADMIN_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_ADMIN_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"

#include <hiredis/hiredis.h>
#include <jansson.h>


/*
 * A chain of Redis commands for one admin request, one in flight at a
 * time: each step gets the reply of the command before it.
 */
typedef struct ngx_http_model_gateway_admin_job_s
    ngx_http_model_gateway_admin_job_t;

typedef ngx_int_t (*ngx_http_model_gateway_admin_step_pt)(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);

struct ngx_http_model_gateway_admin_job_s {
    ngx_http_request_t                    *request;
    ngx_http_mg_redis_cmd_t               *cmd;
    ngx_http_model_gateway_admin_step_pt   step;
    ngx_uint_t                             remove;  /* DELETE */
    ngx_str_t                              kind;    /* "sessions", ... */
    ngx_str_t                              id;
    ngx_str_t                              tenant;  /* may be empty */
    ngx_str_t                              key;     /* the Redis key */
    ngx_str_t                              key2;
    ngx_str_t                              hex;     /* a key's hash */
    ngx_str_t                              secret;  /* a new key */
    ngx_array_t                           *fields;  /* ngx_str_t pairs */
};


/* admin.c */
ngx_int_t ngx_http_model_gateway_admin_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_http_model_gateway_admin_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *json);
ngx_str_t *ngx_http_model_gateway_admin_id(ngx_http_request_t *r);
ngx_str_t ngx_http_model_gateway_admin_part(ngx_str_t *s);
json_t *ngx_http_model_gateway_admin_field(ngx_http_request_t *r,
    const char *name);

/* admin_sync.c */
ngx_int_t ngx_http_model_gateway_admin_apply(
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b, const char *rec, size_t len,
    ngx_log_t *log);
void ngx_http_model_gateway_admin_apply_all(
    ngx_http_model_gateway_main_conf_t *mcf, redisReply *reply,
    ngx_log_t *log);
ngx_str_t *ngx_http_model_gateway_admin_hash(void);

/* admin_objects.c: pins and objects, and the jobs' machinery */
ngx_int_t ngx_http_model_gateway_admin_objects(ngx_http_request_t *r,
    ngx_str_t *kind, ngx_str_t *rest);
ngx_http_model_gateway_admin_job_t *ngx_http_model_gateway_admin_job(
    ngx_http_request_t *r);
ngx_int_t ngx_http_model_gateway_admin_arg(ngx_http_request_t *r,
    const char *name, ngx_str_t *out);
ngx_int_t ngx_http_model_gateway_admin_send_cmd(
    ngx_http_model_gateway_admin_job_t *job, ngx_uint_t nargs,
    ngx_str_t *args, ngx_http_model_gateway_admin_step_pt step);
ngx_int_t ngx_http_model_gateway_admin_deleted(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
ngx_int_t ngx_http_model_gateway_admin_json(ngx_http_request_t *r,
    ngx_uint_t status, json_t *j);
ngx_int_t ngx_http_model_gateway_admin_not_found(ngx_http_request_t *r);

/* admin_keys.c */
ngx_int_t ngx_http_model_gateway_admin_keys(ngx_http_request_t *r,
    ngx_str_t *rest);


#endif /* _NGX_HTTP_MODEL_GATEWAY_ADMIN_H_INCLUDED_ */
