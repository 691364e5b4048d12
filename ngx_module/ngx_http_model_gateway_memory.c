
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, the request side.  In "gateway" mode the
 * gateway holds a Responses chain itself: each turn's input and output
 * items are stored in Redis under the caller's tenant, and a turn is a
 * chat completions request, rebuilt from the stored items, that any chat
 * backend of the model serves, whatever its provider (src/mg_responses*.c
 * convert both ways; the chat translators do the rest).  So a chain
 * survives the outage of the provider that served its last turn.
 *
 * Here: the mode (model_gateway_responses) and its configuration check,
 * the request taken over (ids, store), and what the other parts share
 * (keys, item ids, errors).  The turn's chain and chat request are in
 * _memory_turn.c, the answer and the write in _memory_answer.c, stored
 * responses in _memory_objects.c, conversations in _memory_conv.c.
 *
 * Keys, all of them with the tenant's hash tag (one Cluster slot per
 * tenant, so that a chain's lists are read by one script even when it
 * forks):
 *
 *   <prefix>:{TENANT}:gw:r:<response id>    the response (a hash)
 *   <prefix>:{TENANT}:gw:l:<list id>        items (a list), see MREAD
 *
 * Without identity TENANT is ":", which no tenant name can be.  Another
 * tenant's id names a key that does not exist: an unknown id.
 */


#include "ngx_http_model_gateway_memory.h"

#include <openssl/rand.h>


static void ngx_http_model_gateway_memory_cleanup(void *data);


char *
ngx_http_model_gateway_responses_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *mlcf = conf;

    ngx_str_t                        *value;
    ngx_uint_t                        i, mode;
    ngx_http_model_gateway_policy_t  *p;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "native") == 0) {
        mode = NGX_HTTP_MG_RESPONSES_NATIVE;

    } else if (ngx_strcmp(value[1].data, "gateway") == 0) {
        mode = NGX_HTTP_MG_RESPONSES_GATEWAY;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown Responses mode \"%V\" (native, gateway)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 2) {
        if (mlcf->responses != NGX_CONF_UNSET_UINT) {
            return "is duplicate";
        }

        mlcf->responses = mode;
        return NGX_CONF_OK;
    }

    if (mlcf->responses_models == NGX_CONF_UNSET_PTR) {
        mlcf->responses_models = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_model_gateway_policy_t));
        if (mlcf->responses_models == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 2; i < cf->args->nelts; i++) {
        p = ngx_array_push(mlcf->responses_models);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        p->model = value[i];
        p->policy = mode;
    }

    return NGX_CONF_OK;
}


/*
 * A location that may hold Responses needs Redis, and what it reads back
 * in one reply (a chain's history, a stored response, a page of items) is
 * at most model_gateway_history_max_bytes and some framing, which has to
 * stay below model_gateway_redis_max_reply_size: a larger reply drops the
 * worker's connection for every request on it.
 */

char *
ngx_http_model_gateway_memory_merge(ngx_conf_t *cf,
    ngx_http_model_gateway_loc_conf_t *conf)
{
    ngx_uint_t                           i, gateway;
    ngx_http_model_gateway_policy_t     *pol;
    ngx_http_model_gateway_main_conf_t  *mcf;

    gateway = (conf->responses == NGX_HTTP_MG_RESPONSES_GATEWAY);

    if (conf->responses_models) {
        pol = conf->responses_models->elts;

        for (i = 0; i < conf->responses_models->nelts; i++) {
            gateway |= (pol[i].policy == NGX_HTTP_MG_RESPONSES_GATEWAY);
        }
    }

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    if (!gateway) {
        return NGX_CONF_OK;
    }

    if (mcf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_responses gateway\" needs "
                           "\"model_gateway_redis\": the gateway keeps "
                           "responses and conversations there");
        return NGX_CONF_ERROR;
    }

    if (conf->history_max_items == 0 || conf->history_max_bytes == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_history_max_items\" and "
                           "\"model_gateway_history_max_bytes\" must not "
                           "be 0");
        return NGX_CONF_ERROR;
    }

    if (conf->history_max_bytes + conf->history_max_items * 16 + 64 * 1024
        > mcf->redis->max_reply_size)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_history_max_bytes\" %uz (with "
                           "%ui items) does not fit "
                           "\"model_gateway_redis_max_reply_size\" %uz: "
                           "keep it 64k and 16 bytes an item below",
                           conf->history_max_bytes, conf->history_max_items,
                           mcf->redis->max_reply_size);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_model_gateway_memory_init(ngx_conf_t *cf)
{
    if (ngx_http_model_gateway_route_add(cf,
                                         ngx_http_model_gateway_memory_route,
                                         NGX_HTTP_MG_ROUTE_MEMORY)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_model_gateway_memory_answer_init(cf);
}


/* 1 if an id is one the gateway made */

ngx_uint_t
ngx_http_model_gateway_memory_id(u_char *id, size_t len)
{
    return len > sizeof(NGX_HTTP_MG_MEMORY_RESP) - 1
           && ngx_strncmp(id, NGX_HTTP_MG_MEMORY_RESP,
                          sizeof(NGX_HTTP_MG_MEMORY_RESP) - 1) == 0;
}


/*
 * 404 "WHAT with id 'ID' not found.", as OpenAI words it; the id is echoed
 * up to 128 bytes.
 */

ngx_int_t
ngx_http_model_gateway_memory_not_found(ngx_http_request_t *r,
    const char *what, ngx_str_t *id, const char *code, const char *param)
{
    u_char                        *p;
    size_t                         len;
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_min(id->len, 128);

    p = ngx_pnalloc(r->pool, ngx_strlen(what)
                             + sizeof(" with id '' not found.") + len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.message_str.data = p;
    ctx->err.message_str.len = ngx_sprintf(p, "%s with id '%*s' not found.",
                                           what, len, id->data)
                               - p;

    return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error", code, param,
                                       NULL);
}


/*
 * A POST /responses whose model is in gateway mode, its body read: the
 * request becomes the gateway's, and the native id routing (_state.c)
 * never sees it.
 */

ngx_int_t
ngx_http_model_gateway_memory_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                              *p;
    ngx_uint_t                           i, mode;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_model_gateway_policy_t     *pol;
    ngx_http_model_gateway_memory_t     *m;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               rnd[NGX_HTTP_MG_MEMORY_ID_BYTES];
    mg_json_field_t                      f[3] = {
        { "truncation", 10, MG_JSON_NONE, 0, 0, 0 },
        { "store", 5, MG_JSON_NONE, 0, 0, 0 },
        { "conversation", 12, MG_JSON_NONE, 0, 0, 0 }
    };

    mode = ctx->lcf->responses;

    if (ctx->lcf->responses_models) {
        pol = ctx->lcf->responses_models->elts;

        for (i = 0; i < ctx->lcf->responses_models->nelts; i++) {
            if (pol[i].model.len == ctx->model.len
                && ngx_strncmp(pol[i].model.data, ctx->model.data,
                               ctx->model.len) == 0)
            {
                mode = pol[i].policy;
                break;
            }
        }
    }

    if (mode != NGX_HTTP_MG_RESPONSES_GATEWAY) {
        return NGX_DECLINED;
    }

    if (mg_json_scan((char *) ctx->body.data, ctx->body.len, f, 3, 64, NULL)
        != MG_JSON_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->state.via == NGX_HTTP_MG_STATE_RESPONSE
        && f[2].type != MG_JSON_NONE && f[2].type != MG_JSON_NULL)
    {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           NULL, "conversation",
                                           "'previous_response_id' and "
                                           "'conversation' cannot be used "
                                           "together.");
    }

    if (ctx->state.via == NGX_HTTP_MG_STATE_CONVERSATION
        && !ngx_http_model_gateway_memory_conv_id(ctx->state.id.data,
                                                  ctx->state.id.len))
    {
        return ngx_http_model_gateway_memory_not_found(r, "Conversation",
                                                       &ctx->state.id,
                                                       "conversation_not_found",
                                                       "conversation");
    }

    if (ctx->state.via == NGX_HTTP_MG_STATE_RESPONSE
        && !ngx_http_model_gateway_memory_id(ctx->state.id.data,
                                             ctx->state.id.len))
    {
        /* not one of ours: as unknown as another tenant's */

        return ngx_http_model_gateway_memory_not_found(r,
                                               "Previous response",
                                               &ctx->state.id,
                                               "previous_response_not_found",
                                               "previous_response_id");
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    m = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_memory_t));
    if (m == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_model_gateway_memory_cleanup;
    cln->data = m;

    ctx->memory = m;

    if (ctx->state.via == NGX_HTTP_MG_STATE_RESPONSE) {
        m->prev = ctx->state.id;

    } else if (ctx->state.via == NGX_HTTP_MG_STATE_CONVERSATION) {
        m->conv = ctx->state.id;
    }

    ctx->state.kind = NGX_HTTP_MG_STATE_NONE;
    ctx->state.via = NGX_HTTP_MG_STATE_NONE;

    m->request = ctx->body;
    m->created_at = ngx_time();

    if (f[0].type == MG_JSON_STRING) {
        m->truncation.data = ctx->body.data + f[0].start + 1;
        m->truncation.len = f[0].len - 2;
    }

    /* "resp_mgw_" and 32 hex digits: unguessable, and ours at a glance */

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    m->id.data = ngx_pnalloc(r->pool, sizeof(NGX_HTTP_MG_MEMORY_RESP) - 1
                                      + 2 * sizeof(rnd));
    if (m->id.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(m->id.data, NGX_HTTP_MG_MEMORY_RESP,
                   sizeof(NGX_HTTP_MG_MEMORY_RESP) - 1);
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    m->id.len = p - m->id.data;

    /* stored unless the client says "store": false */

    m->store = (f[1].type != MG_JSON_FALSE);

    if ((m->store || m->prev.len || m->conv.len)
        && (mcf->redis == NULL || !ngx_http_mg_redis_ready()))
    {
        return ngx_http_model_gateway_memory_unavailable(r);
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_model_gateway_memory_unavailable(ngx_http_request_t *r)
{
    return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "server_error",
                                       "state_store_unavailable", NULL,
                                       "The store of gateway-held responses "
                                       "is unavailable.");
}


/* <prefix>:{TENANT}:gw:<kind><id> */

ngx_int_t
ngx_http_model_gateway_memory_base(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *kind, ngx_str_t *id,
    ngx_str_t *out)
{
    ngx_str_t                            tenant;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    tenant = ctx->identity.tenant;

    if (tenant.len == 0) {
        ngx_str_set(&tenant, ":");
    }

    out->len = mcf->redis->prefix.len + tenant.len + kind->len + id->len
               + sizeof(":{}:gw:") - 1;

    out->data = ngx_pnalloc(r->pool, out->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_sprintf(out->data, "%V:{%V}:gw:%V%V", &mcf->redis->prefix,
                       &tenant, kind, id);

    return NGX_OK;
}


/* an item's id: the prefix, "mgw_" and 24 hex digits */

int
ngx_http_model_gateway_memory_item_id(void *data, const char *prefix,
    char *buf, size_t size)
{
    u_char  *p;
    size_t   len;
    u_char   rnd[12];

    len = ngx_strlen(prefix);

    if (len + sizeof(NGX_HTTP_MG_MEMORY_MARK) - 1 + 2 * sizeof(rnd) + 1
        > size
        || RAND_bytes(rnd, sizeof(rnd)) != 1)
    {
        return -1;
    }

    p = ngx_cpymem((u_char *) buf, prefix, len);
    p = ngx_cpymem(p, NGX_HTTP_MG_MEMORY_MARK,
                   sizeof(NGX_HTTP_MG_MEMORY_MARK) - 1);
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    *p = '\0';

    return 0;
}


/* a refusal of src/: its status and fields, its message copied */

ngx_int_t
ngx_http_model_gateway_memory_error(ngx_http_request_t *r, mg_xerror_t *err)
{
    u_char                        *p;
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, sizeof(err->message));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.message_str.data = p;
    ctx->err.message_str.len = ngx_cpystrn(p, (u_char *) err->message,
                                           sizeof(err->message))
                               - p;

    return ngx_http_model_gateway_fail(r, err->status ? err->status : 500,
                                       err->type ? err->type
                                                 : "server_error",
                                       err->code, err->param, NULL);
}


static void
ngx_http_model_gateway_memory_cleanup(void *data)
{
    ngx_http_model_gateway_memory_t *m = data;

    if (m->cmd) {
        ngx_http_mg_redis_cancel(m->cmd);
        m->cmd = NULL;
    }

    if (m->st) {
        mg_resp_stream_free(m->st);
        free(m->st);
        m->st = NULL;
    }

    mg_buf_free(&m->echo);
    mg_buf_free(&m->input);
    mg_buf_free(&m->chat);
    mg_buf_free(&m->out);
    mg_buf_free(&m->items);
    mg_buf_free(&m->object);
}
