
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, the stored objects: GET and DELETE
 * /responses/{id} and GET /responses/{id}/input_items for the ids the
 * gateway made ("resp_mgw_..."), answered from Redis without a backend.
 * What gateway mode cannot do (cancel: it runs nothing in the background;
 * replaying a stream with ?stream=true) is a 400 naming the parameter.
 */


#include "ngx_http_model_gateway_memory.h"

#include <hiredis/hiredis.h>


typedef struct {
    ngx_http_request_t                *request;
    ngx_str_t                          id;
    ngx_http_mg_redis_cmd_t           *cmd;
    ngx_uint_t                         what;        /* 'o', 'i', 'd' */
} ngx_http_model_gateway_object_t;


static ngx_int_t ngx_http_model_gateway_object_start(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_object_t *o);
static void ngx_http_model_gateway_object_done(void *data,
    redisReply *reply, ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_object_answer(ngx_http_request_t *r,
    ngx_http_model_gateway_object_t *o, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_object_items(ngx_http_request_t *r,
    ngx_http_model_gateway_object_t *o, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_object_not_found(
    ngx_http_request_t *r, ngx_str_t *id);
static void ngx_http_model_gateway_object_cleanup(void *data);


ngx_int_t
ngx_http_model_gateway_memory_serve(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *id, size_t len, u_char *rest,
    size_t rest_len)
{
    ngx_int_t                            rc;
    ngx_str_t                            arg;
    ngx_http_model_gateway_object_t     *o;
    ngx_http_model_gateway_main_conf_t  *mcf;

    while (rest_len && rest[rest_len - 1] == '/') {
        rest_len--;
    }

    o = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_object_t));
    if (o == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o->request = r;
    o->id.data = id;
    o->id.len = len;

    if (rest_len == 0) {

        if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
            if (ngx_http_arg(r, (u_char *) "stream", 6, &arg) == NGX_OK
                && arg.len == 4 && ngx_strncmp(arg.data, "true", 4) == 0)
            {
                return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "unsupported_parameter",
                                           "stream",
                                           "Streaming a stored response "
                                           "again is not supported in "
                                           "gateway mode.");
            }

            o->what = 'o';

        } else if (r->method == NGX_HTTP_DELETE) {
            o->what = 'd';

        } else {
            goto not_allowed;
        }

    } else if (rest_len == sizeof("/input_items") - 1
               && ngx_strncmp(rest, "/input_items", rest_len) == 0)
    {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            goto not_allowed;
        }

        o->what = 'i';

    } else if (rest_len == sizeof("/cancel") - 1
               && ngx_strncmp(rest, "/cancel", rest_len) == 0)
    {
        if (r->method != NGX_HTTP_POST) {
            goto not_allowed;
        }

        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "unsupported_parameter",
                                           "background",
                                           "Only responses created with "
                                           "background=true can be "
                                           "cancelled, and gateway mode "
                                           "serves none.");

    } else {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "unknown_url", NULL,
                                           "Invalid URL.");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->redis == NULL || !ngx_http_mg_redis_ready()) {
        goto unavailable;
    }

    rc = ngx_http_model_gateway_object_start(r, ctx, o);

    if (rc == NGX_AGAIN) {
        r->main->count++;
        return NGX_DONE;
    }

    if (rc != NGX_DECLINED) {
        return rc;
    }

unavailable:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "server_error",
                                       "state_store_unavailable", NULL,
                                       "The store of gateway-held responses "
                                       "is unavailable.");

not_allowed:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_ALLOWED,
                                       "invalid_request_error",
                                       "method_not_allowed", NULL,
                                       "This method is not allowed on this "
                                       "endpoint.");
}


/* NGX_AGAIN when the command is sent, NGX_DECLINED when Redis is busy */

static ngx_int_t
ngx_http_model_gateway_object_start(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_object_t *o)
{
    ngx_str_t                 kind, none, args[3];
    ngx_pool_cleanup_t       *cln;
    ngx_http_mg_redis_cmd_t  *cmd;

    ngx_str_set(&kind, "r:");

    if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &o->id, &args[0])
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (o->what == 'd') {
        ngx_str_set(&args[1], "DEL");
        args[2] = args[0];

        cmd = ngx_http_mg_redis_command(2, &args[1],
                                        ngx_http_model_gateway_object_done,
                                        o);

    } else {
        ngx_str_set(&kind, "l:");
        ngx_str_null(&none);

        if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &none,
                                               &args[1])
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (o->what == 'o') {
            ngx_str_set(&args[2], "o");

        } else {
            ngx_str_set(&args[2], "i");
        }

        cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_MGET, 3, args,
                                       ngx_http_model_gateway_object_done,
                                       o);
    }

    if (cmd == NULL) {
        return NGX_DECLINED;
    }

    o->cmd = cmd;
    cln->handler = ngx_http_model_gateway_object_cleanup;
    cln->data = o;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_object_cleanup(void *data)
{
    ngx_http_model_gateway_object_t *o = data;

    if (o->cmd) {
        ngx_http_mg_redis_cancel(o->cmd);
        o->cmd = NULL;
    }
}


static void
ngx_http_model_gateway_object_done(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_object_t *o = data;

    ngx_int_t            next;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = o->request;
    c = r->connection;
    o->cmd = NULL;

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "model gateway: reading \"%V\" failed", &o->id);

        next = ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "state_store_unavailable", NULL,
                                           "The store of gateway-held "
                                           "responses did not answer.");

    } else {
        next = ngx_http_model_gateway_object_answer(r, o, reply);
    }

    ngx_http_finalize_request(r, next);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_model_gateway_object_answer(ngx_http_request_t *r,
    ngx_http_model_gateway_object_t *o, redisReply *reply)
{
    u_char     *p;
    ngx_str_t   json;

    if (o->what == 'd') {
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer == 0) {
            return ngx_http_model_gateway_object_not_found(r, &o->id);
        }

        json.data = ngx_pnalloc(r->pool, o->id.len + sizeof("{\"id\":\"\","
                                "\"object\":\"response\",\"deleted\":true}"));
        if (json.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_sprintf(json.data, "{\"id\":\"%V\",\"object\":\"response\","
                        "\"deleted\":true}", &o->id);
        json.len = p - json.data;

        return ngx_http_model_gateway_send_json(r, &json);
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (reply->element[0]->integer == 0) {
        return ngx_http_model_gateway_object_not_found(r, &o->id);
    }

    if (reply->element[0]->integer != 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: the items of \"%V\" are missing "
                      "(evicted? see maxmemory-policy)", &o->id);

        return ngx_http_model_gateway_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "server_error", "history_missing",
                                           NULL, "Items of this response "
                                           "are missing from the store.");
    }

    if (o->what == 'i') {
        return ngx_http_model_gateway_object_items(r, o, reply);
    }

    if (reply->elements != 2 || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json.len = reply->element[1]->len;
    json.data = ngx_pnalloc(r->pool, json.len);
    if (json.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(json.data, reply->element[1]->str, json.len);

    return ngx_http_model_gateway_send_json(r, &json);
}


static ngx_int_t
ngx_http_model_gateway_object_items(ngx_http_request_t *r,
    ngx_http_model_gateway_object_t *o, redisReply *reply)
{
    int           rc;
    size_t        i, n;
    size_t       *lens;
    ngx_str_t     order, limit, after, json;
    mg_buf_t      out;
    mg_xerror_t   err;
    const char  **items;

    n = reply->elements - 1;

    items = ngx_palloc(r->pool, (n + 1) * sizeof(char *));
    lens = ngx_palloc(r->pool, (n + 1) * sizeof(size_t));
    if (items == NULL || lens == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (reply->element[i + 1]->type != REDIS_REPLY_STRING) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        items[i] = reply->element[i + 1]->str;
        lens[i] = reply->element[i + 1]->len;
    }

    if (ngx_http_arg(r, (u_char *) "order", 5, &order) != NGX_OK) {
        ngx_str_null(&order);
    }

    if (ngx_http_arg(r, (u_char *) "limit", 5, &limit) != NGX_OK) {
        ngx_str_null(&limit);
    }

    if (ngx_http_arg(r, (u_char *) "after", 5, &after) != NGX_OK) {
        ngx_str_null(&after);
    }

    ngx_memzero(&out, sizeof(mg_buf_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));

    rc = mg_mem_list(items, lens, n, (char *) order.data, order.len,
                     (char *) limit.data, limit.len, (char *) after.data,
                     after.len, &out, &err);

    if (rc != MG_X_OK) {
        mg_buf_free(&out);
        return ngx_http_model_gateway_memory_error(r, &err);
    }

    json.len = out.len;
    json.data = ngx_pnalloc(r->pool, out.len);
    if (json.data == NULL) {
        mg_buf_free(&out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(json.data, out.data, out.len);
    mg_buf_free(&out);

    return ngx_http_model_gateway_send_json(r, &json);
}


static ngx_int_t
ngx_http_model_gateway_object_not_found(ngx_http_request_t *r, ngx_str_t *id)
{
    return ngx_http_model_gateway_memory_not_found(r, "Response", id,
                                                   "response_not_found",
                                                   NULL);
}
