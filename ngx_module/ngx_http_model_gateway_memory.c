
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
 * Here: the mode (model_gateway_responses), the route step that reads
 * the chain (one Redis script, however long the chain), the history
 * limits, and the chat request.  The answer and the write are in
 * _memory_answer.c; GET and DELETE of stored responses in
 * _memory_objects.c.
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
#include "ngx_http_model_gateway_providers.h"
#include "mg_history.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>


static ngx_int_t ngx_http_model_gateway_memory_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_memory_read(void *data,
    redisReply *reply, ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_memory_build(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_memory_history(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply, mg_buf_t *hist);
static int ngx_http_model_gateway_memory_chat(
    ngx_http_model_gateway_memory_t *m, mg_buf_t *hist, mg_resp_opts_t *o,
    mg_xerror_t *err);
static ngx_int_t ngx_http_model_gateway_memory_replay(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_buf_t *hist, mg_resp_opts_t *o);
static void ngx_http_model_gateway_memory_prefer(
    ngx_http_model_gateway_ctx_t *ctx, redisReply *name);
static void ngx_http_model_gateway_memory_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_memory_unavailable(
    ngx_http_request_t *r);


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
 * A location that may hold Responses: what it reads back from Redis in one
 * reply (a chain's history, a stored response, a page of items) is at most
 * model_gateway_history_max_bytes and some framing, which has to stay
 * below model_gateway_redis_max_reply_size: a larger reply drops the
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

    if (!gateway || mcf->redis == NULL) {
        return NGX_CONF_OK;
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
        p = ngx_pnalloc(r->pool, sizeof("Conversation with id '' not "
                                        "found.") + 128);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->err.message_str.data = p;
        ctx->err.message_str.len = ngx_sprintf(p, "Conversation with id "
                                               "'%*s' not found.",
                                               ngx_min(ctx->state.id.len,
                                                       128),
                                               ctx->state.id.data)
                                   - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "conversation_not_found",
                                           "conversation", NULL);
    }

    if (ctx->state.via == NGX_HTTP_MG_STATE_RESPONSE
        && !ngx_http_model_gateway_memory_id(ctx->state.id.data,
                                             ctx->state.id.len))
    {
        /* not one of ours: as unknown as another tenant's */

        p = ngx_pnalloc(r->pool, sizeof("Previous response with id '' not "
                                        "found.") + 128);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->err.message_str.data = p;
        ctx->err.message_str.len = ngx_sprintf(p, "Previous response with "
                                               "id '%*s' not found.",
                                               ngx_min(ctx->state.id.len,
                                                       128),
                                               ctx->state.id.data)
                                   - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "previous_response_not_found",
                                           "previous_response_id", NULL);
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

    if (f[0].type == MG_JSON_STRING)
    {
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


static ngx_int_t
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


/*
 * The route step: a turn that continues a chain reads it first (MREAD);
 * one that starts a chain is built at once.
 */

static ngx_int_t
ngx_http_model_gateway_memory_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                              *p;
    ngx_str_t                            kind, none, args[4];
    ngx_http_model_gateway_memory_t     *m;
    ngx_http_mg_redis_cmd_t             *cmd;
    u_char                               items[NGX_INT_T_LEN];
    u_char                               bytes[NGX_SIZE_T_LEN];

    m = ctx->memory;

    if (m == NULL) {
        return NGX_DECLINED;
    }

    if (m->conv.len) {
        ngx_str_set(&kind, "c:");

        if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &m->conv,
                                               &m->conv_key)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        args[0] = m->conv_key;

    } else if (m->prev.len) {
        ngx_str_set(&kind, "r:");

        if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &m->prev,
                                               &args[0])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        return ngx_http_model_gateway_memory_build(r, ctx, NULL);
    }

    ngx_str_set(&kind, "l:");
    ngx_str_null(&none);

    if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &none, &m->lists)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    args[1] = m->lists;

    p = ngx_sprintf(items, "%ui", ctx->lcf->history_max_items);
    args[2].data = items;
    args[2].len = p - items;

    p = ngx_sprintf(bytes, "%uz", ctx->lcf->history_max_bytes);
    args[3].data = bytes;
    args[3].len = p - bytes;

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_MREAD, 4, args,
                                   ngx_http_model_gateway_memory_read, ctx);
    if (cmd == NULL) {
        return ngx_http_model_gateway_memory_unavailable(r);
    }

    m->cmd = cmd;

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_memory_read(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    u_char                           *p;
    ngx_int_t                         next;
    ngx_http_request_t               *r;
    ngx_http_model_gateway_memory_t  *m;

    r = ctx->request;
    m = ctx->memory;
    m->cmd = NULL;
    r->read_event_handler = ngx_http_block_reading;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: reading the chain of \"%V%V\" failed",
                      &m->prev, &m->conv);

        next = ngx_http_model_gateway_memory_unavailable(r);

    } else if (reply->element[0]->integer == 0) {

        p = ngx_pnalloc(r->pool, sizeof("Previous response with id '' not "
                                        "found.")
                                 + m->prev.len + m->conv.len);
        if (p == NULL) {
            next = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }

        ctx->err.message_str.data = p;

        if (m->conv.len) {
            ctx->err.message_str.len = ngx_sprintf(p, "Conversation with "
                                                   "id '%V' not found.",
                                                   &m->conv)
                                       - p;

            next = ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                               "invalid_request_error",
                                               "conversation_not_found",
                                               "conversation", NULL);

        } else {
            ctx->err.message_str.len = ngx_sprintf(p, "Previous response "
                                                   "with id '%V' not "
                                                   "found.", &m->prev)
                                       - p;

            next = ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "previous_response_not_found",
                                           "previous_response_id", NULL);
        }

    } else if (reply->element[0]->integer != 1 || reply->elements < 5) {

        /* never a shorter history: a chain with a hole is an error */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: the chain of \"%V%V\" has lost items "
                      "(evicted? see maxmemory-policy)", &m->prev, &m->conv);

        next = ngx_http_model_gateway_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "server_error", "history_missing",
                                           m->conv.len
                                           ? "conversation"
                                           : "previous_response_id",
                                           "Items of this response's chain "
                                           "are missing from the store.");

    } else {
        next = ngx_http_model_gateway_memory_build(r, ctx, reply);
    }

done:

    ngx_http_model_gateway_route_done(r, next == NGX_OK ? NGX_DECLINED
                                                        : next);
}


/*
 * The chat request of this turn: the client's Responses request, after
 * the stored items of the chain (reply: MREAD's, or NULL), held to the
 * history limits.
 */

static ngx_int_t
ngx_http_model_gateway_memory_build(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply)
{
    int                               rc, stream;
    size_t                            max;
    ngx_int_t                         nrc;
    mg_buf_t                          hist;
    mg_xerror_t                       err;
    mg_resp_opts_t                    o;
    ngx_http_model_gateway_memory_t  *m;
    mg_json_field_t                   f[1] = {
        { "model", 5, MG_JSON_NONE, 0, 0, 0 }
    };

    m = ctx->memory;

    ngx_memzero(&o, sizeof(mg_resp_opts_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));
    ngx_memzero(&hist, sizeof(mg_buf_t));

    /* the history never makes a request more than it adds */

    max = ctx->lcf->max_body_size + ctx->lcf->history_max_bytes
          + MG_X_OUT_SLACK;
    o.max_out = max;

    /* the input items get their ids now: stored, they are copied as text */

    o.input_id = ngx_http_model_gateway_memory_item_id;

    /* the input, as it is stored (and what the history limits count) */

    rc = mg_resp_request((char *) m->request.data, m->request.len, NULL, 0,
                         &o, &m->chat, &m->echo, &m->input, &stream, &err);

    /*
     * a turn is stored whole or not at all, and must fit the history
     * limit: one that could not would be a chain nobody can continue (and
     * a reply larger than Redis' replies may be)
     */

    if (rc == MG_X_OK && (m->store || m->conv.len)
        && m->input.len > ctx->lcf->history_max_bytes)
    {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "context_length_exceeded",
                                           "input",
                                           "The input is larger than "
                                           "model_gateway_history_max_bytes "
                                           "allows a stored turn to be.");
    }

    o.input_id = NULL;

    if (rc == MG_X_OK && reply) {
        mg_buf_reset(&m->chat);

        nrc = ngx_http_model_gateway_memory_history(r, ctx, reply, &hist);
        if (nrc != NGX_OK) {
            mg_buf_free(&hist);
            return nrc;
        }

        rc = ngx_http_model_gateway_memory_chat(m, &hist, &o, &err);

        if (rc == MG_X_OK) {
            nrc = ngx_http_model_gateway_memory_replay(r, ctx, &hist, &o);
            if (nrc != NGX_OK) {
                mg_buf_free(&hist);
                return nrc;
            }
        }

        mg_buf_free(&hist);
    }

    if (rc == MG_X_NOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != MG_X_OK) {
        return ngx_http_model_gateway_memory_error(r, &err);
    }

    /* from here on, a chat completions request like any other */

    ctx->body.data = (u_char *) m->chat.data;
    ctx->body.len = m->chat.len;
    ctx->endpoint = MG_EP_CHAT;
    ngx_str_set(&ctx->uri_suffix, "/chat/completions");

    if (mg_json_scan(m->chat.data, m->chat.len, f, 1, 64, NULL) != MG_JSON_OK
        || f[0].type != MG_JSON_STRING)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->model_start = f[0].start;
    ctx->model_len = f[0].len;

    if (reply) {
        ngx_http_model_gateway_memory_prefer(ctx, reply->element[1]);
    }

    nrc = ngx_http_model_gateway_translate_prepare(r, ctx);

    return nrc;
}


/*
 * The chat request of a turn with a history, into m->chat.  Decoding and
 * encoding the long texts of a history is most of the work, so they are
 * set aside first (mg_x_shrink(), as the translators do) and put back,
 * still escaped, into the chat request; when that cannot be done, the
 * whole history goes through.
 */

static int
ngx_http_model_gateway_memory_chat(ngx_http_model_gateway_memory_t *m,
    mg_buf_t *hist, mg_resp_opts_t *o, mg_xerror_t *err)
{
    int            rc, stream;
    mg_buf_t       shrunk;
    mg_x_shrink_t  s;

    rc = mg_x_shrink(hist->data, hist->len, 128, &s);

    if (rc != MG_X_OK) {
        mg_x_shrink_free(&s);
        return rc;
    }

    if (s.n) {
        ngx_memzero(&shrunk, sizeof(mg_buf_t));

        rc = mg_resp_request((char *) m->request.data, m->request.len,
                             s.body.data, s.body.len, o, &shrunk, NULL, NULL,
                             &stream, err);

        if (rc == MG_X_OK) {
            s.max = mg_x_out_max(o->max_out);

            rc = mg_x_expand(&s, hist->data, shrunk.data, shrunk.len,
                             &m->chat);

            if (rc == MG_X_ERROR) {
                mg_buf_reset(&m->chat);
            }
        }

        mg_buf_free(&shrunk);
        mg_x_shrink_free(&s);

        if (rc != MG_X_ERROR) {
            return rc;
        }
    }

    mg_x_shrink_free(&s);

    return mg_resp_request((char *) m->request.data, m->request.len,
                           hist->data, hist->len, o, &m->chat, NULL, NULL,
                           &stream, err);
}


/*
 * The stored items (MREAD: {1, backend, more, list, end, items...}) and
 * this turn's input, held to the limits as truncation says; the kept
 * history is written to hist.
 */

static ngx_int_t
ngx_http_model_gateway_memory_history(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply, mg_buf_t *hist)
{
    int                               rc;
    size_t                            i, n, from, ninput, bytes;
    const char                      **items;
    size_t                           *lens;
    mg_buf_t                          all;
    mg_xerror_t                       err;
    mg_history_opts_t                 o;
    mg_history_result_t               res;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (reply->element[3]->type != REDIS_REPLY_STRING
        || reply->element[4]->type != REDIS_REPLY_STRING)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    m->parent_list.len = reply->element[3]->len;
    m->parent_list.data = ngx_pnalloc(r->pool, m->parent_list.len + 1);
    m->parent_end.len = reply->element[4]->len;
    m->parent_end.data = ngx_pnalloc(r->pool, m->parent_end.len + 1);

    if (m->parent_list.data == NULL || m->parent_end.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(m->parent_list.data, reply->element[3]->str,
               m->parent_list.len);
    ngx_memcpy(m->parent_end.data, reply->element[4]->str,
               m->parent_end.len);

    n = reply->elements - 5;

    items = ngx_palloc(r->pool, (n + 1) * sizeof(char *));
    lens = ngx_palloc(r->pool, (n + 1) * sizeof(size_t));
    if (items == NULL || lens == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (reply->element[5 + i]->type != REDIS_REPLY_STRING) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        items[i] = reply->element[5 + i]->str;
        lens[i] = reply->element[5 + i]->len;
    }

    ngx_memzero(&o, sizeof(mg_history_opts_t));
    o.max_items = ctx->lcf->history_max_items;
    o.max_bytes = ctx->lcf->history_max_bytes;
    o.truncation = (char *) m->truncation.data;
    o.truncation_len = m->truncation.len;

    from = 0;

    if (reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[2]->integer == 1)
    {
        /*
         * the chain is longer than the limits: only "auto" may go on, from
         * the first whole turn of what was read
         */

        if (!(m->truncation.len == 4
              && ngx_strncmp(m->truncation.data, "auto", 4) == 0))
        {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "context_length_exceeded",
                                           "input",
                                           "The response chain is longer "
                                           "than the history limits; use "
                                           "truncation 'auto' to drop its "
                                           "oldest turns.");
        }

        from = mg_mem_turn_start(items, lens, n);
    }

    ngx_memzero(&all, sizeof(mg_buf_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));

    ninput = mg_mem_count(m->input.data, m->input.len);

    /*
     * within both limits as it is (the stored items are compact JSON, so
     * their lengths are what the limiter counts, and the input's array is
     * longer than its items): the history goes as it was read, without
     * the limiter's parse of every item
     */

    for (bytes = m->input.len, i = from; i < n; i++) {
        bytes += lens[i];
    }

    if (n - from + ninput <= o.max_items && bytes <= o.max_bytes) {
        return mg_mem_array(items + from, lens + from, n - from, hist)
               == MG_X_OK ? NGX_OK : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* history and input in one array: "[h1,h2" + "," + "i1,i2]" */

    if (mg_mem_array(items + from, lens + from, n - from, &all) != MG_X_OK) {
        mg_buf_free(&all);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ninput) {
        all.len--;

        if ((n - from && mg_buf_append(&all, ",", 1) != MG_X_OK)
            || mg_buf_append(&all, m->input.data + 1, m->input.len - 1)
               != MG_X_OK)
        {
            mg_buf_free(&all);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    rc = mg_history_limit(all.data, all.len, ninput, &o, NULL, hist, &res,
                          &err);

    mg_buf_free(&all);

    if (rc == MG_X_NOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != MG_X_OK) {
        return ngx_http_model_gateway_memory_error(r, &err);
    }

    return NGX_OK;
}


/* a chain prefers the backend of its last turn (its prompt cache) */

static void
ngx_http_model_gateway_memory_prefer(ngx_http_model_gateway_ctx_t *ctx,
    redisReply *name)
{
    ngx_uint_t                        i, n;
    ngx_http_model_gateway_target_t  *t;

    if (name->type != REDIS_REPLY_STRING) {
        return;
    }

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;

    for (i = 0; i < n; i++) {
        if (!ctx->tried[i] && t[i].backend->name.len == name->len
            && ngx_strncmp(t[i].backend->name.data, name->str, name->len)
               == 0)
        {
            ctx->preferred = i;
            return;
        }
    }
}


/*
 * Provider-only state (Gemini's thought signatures, mg_responses.h) goes
 * back only to the provider and model that made it: a target that made
 * some of the history's gets a chat request of its own, with that state
 * (ngx_http_model_gateway_memory_body()); every other target gets the
 * request without (ctx->body).
 */

static ngx_int_t
ngx_http_model_gateway_memory_replay(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_buf_t *hist, mg_resp_opts_t *o)
{
    int                               rc, stream;
    u_char                           *origin, *p, *q, *end;
    size_t                            len;
    ngx_uint_t                        i, k, n;
    mg_buf_t                          body;
    mg_xerror_t                       err;
    ngx_http_model_gateway_target_t  *t;
    ngx_http_model_gateway_memory_t  *m;
    u_char                            needle[256];

    m = ctx->memory;

    p = (u_char *) hist->data;
    end = p + hist->len;

    if (!mg_mem_has_state(hist->data, hist->len)) {
        return NGX_OK;
    }

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;

    m->replay = ngx_pcalloc(r->pool, n * sizeof(ngx_str_t));
    if (m->replay == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (!t[i].backend->provider->translated || ctx->tried[i]) {
            continue;
        }

        origin = ngx_http_model_gateway_memory_origin(r->pool, &t[i]);
        if (origin == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_strlen(origin);

        if (len + sizeof("\"origin\":\"\"") > sizeof(needle)) {
            continue;
        }

        q = ngx_sprintf(needle, "\"origin\":\"%s\"", origin);

        if (ngx_strlcasestrn(p, end, needle, q - needle - 1) == NULL) {
            continue;
        }

        /* targets of one origin share its request */

        for (k = 0; k < i; k++) {
            if (m->replay[k].len
                && t[k].backend->provider == t[i].backend->provider
                && t[k].provider_model.len == t[i].provider_model.len
                && ngx_strncmp(t[k].provider_model.data,
                               t[i].provider_model.data,
                               t[i].provider_model.len) == 0)
            {
                m->replay[i] = m->replay[k];
                break;
            }
        }

        if (m->replay[i].len) {
            continue;
        }

        ngx_memzero(&body, sizeof(mg_buf_t));

        o->replay = (char *) origin;

        rc = mg_resp_request((char *) m->request.data, m->request.len,
                             hist->data, hist->len, o, &body, NULL, NULL,
                             &stream, &err);

        o->replay = NULL;

        if (rc == MG_X_NOMEM) {
            mg_buf_free(&body);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == MG_X_OK) {
            m->replay[i].data = ngx_pnalloc(r->pool, body.len);
            if (m->replay[i].data == NULL) {
                mg_buf_free(&body);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(m->replay[i].data, body.data, body.len);
            m->replay[i].len = body.len;
        }

        mg_buf_free(&body);
    }

    return NGX_OK;
}


/* the chat request of target i when it is not ctx->body, or NULL */

ngx_str_t *
ngx_http_model_gateway_memory_body(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t i)
{
    if (ctx->memory == NULL || ctx->memory->replay == NULL
        || ctx->memory->replay[i].len == 0)
    {
        return NULL;
    }

    return &ctx->memory->replay[i];
}


/* "PROVIDER/MODEL": where provider-only state comes from, NUL-terminated */

u_char *
ngx_http_model_gateway_memory_origin(ngx_pool_t *pool,
    ngx_http_model_gateway_target_t *t)
{
    u_char  *p;

    p = ngx_pnalloc(pool, t->backend->provider->name.len + 1
                          + t->provider_model.len + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_sprintf(p, "%V/%V", &t->backend->provider->name, &t->provider_model)
        = '\0';

    return p;
}
