
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI Responses and Conversations.  Their ids live in one provider
 * account, so a follow-up (previous_response_id, a conversation, GET or
 * DELETE of a stored object) must reach the backend that created the
 * object, with no failover elsewhere.  The gateway records each created id
 * against its backend in Redis (<prefix>:resp:<id>, <prefix>:conv:<id>),
 * and that write is acknowledged, or times out, before the response's
 * last byte reaches the client: a client that follows up at once finds it.
 *
 * With identity, the record also names the tenant that owns the id
 * ("TENANT|BACKEND"), and only that tenant finds it: another tenant's id
 * answers as an unknown one.  The owner is in the value, not in the key,
 * because the lookup has to tell "another tenant's" (404, whatever the
 * default backend) from "nobody's" (the default backend applies): with the
 * tenant in the key that takes a second, tenant-free key, which lives on
 * another Redis Cluster slot than the tenant's.  One key per id keeps the
 * lookup one single-key script, Cluster-safe, in one round trip; ids are
 * unique, so they need no tenant in the key to stay apart.
 */


#include "ngx_http_model_gateway_memory.h"

#include <hiredis/hiredis.h>


static ngx_int_t ngx_http_model_gateway_state_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_state_key(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t kind, ngx_str_t *id);
static ngx_int_t ngx_http_model_gateway_state_unknown(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_state_not_found(
    ngx_http_request_t *r, ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_state_only(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *name, size_t len);
static ngx_int_t ngx_http_model_gateway_state_model_mismatch(
    ngx_http_request_t *r, ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_state_found(void *data,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_model_gateway_state_store(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t kind, u_char *id,
    size_t len);
static void ngx_http_model_gateway_state_stored(void *data,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_model_gateway_state_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_state_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_state_event(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);


static ngx_http_model_gateway_event_pt  ngx_http_model_gateway_state_next_event;


ngx_int_t
ngx_http_model_gateway_state_init(ngx_conf_t *cf)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (ngx_http_model_gateway_route_add(cf,
                                         ngx_http_model_gateway_state_route,
                                         NGX_HTTP_MG_ROUTE_STATE)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_commit_add(cf,
                                          ngx_http_model_gateway_state_commit)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    ngx_http_model_gateway_state_next_event = mcf->event_filter;
    mcf->event_filter = ngx_http_model_gateway_state_event;

    return NGX_OK;
}


/* 1 if an object id routes the request, so that no session key does */

ngx_uint_t
ngx_http_model_gateway_state_by_id(ngx_http_model_gateway_ctx_t *ctx)
{
    if (ctx->memory) {

        /* a gateway-held chain goes where its last turn went */
        return ctx->memory->prev.len || ctx->memory->conv.len;
    }

    return ctx->state.kind == NGX_HTTP_MG_STATE_RESPONSE
           || ctx->state.kind == NGX_HTTP_MG_STATE_CONVERSATION
           || (ctx->state.kind == NGX_HTTP_MG_STATE_NEW_RESPONSE
               && ctx->state.via != NGX_HTTP_MG_STATE_NONE);
}


static ngx_int_t
ngx_http_model_gateway_state_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_int_t                            rc;
    ngx_uint_t                           kind;
    ngx_str_t                            args[2], backend;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_mg_redis_cmd_t             *cmd;
    ngx_http_model_gateway_main_conf_t  *mcf;

    switch (ctx->state.kind) {

    case NGX_HTTP_MG_STATE_RESPONSE:
    case NGX_HTTP_MG_STATE_CONVERSATION:
        kind = ctx->state.kind;
        break;

    case NGX_HTTP_MG_STATE_NEW_RESPONSE:
        if (ctx->state.via == NGX_HTTP_MG_STATE_NONE) {
            return NGX_DECLINED;
        }

        kind = ctx->state.via;
        break;

    default:
        return NGX_DECLINED;
    }

    /* the object's backend, only: an id wins over a session key */

    ctx->state.single = 1;
    ctx->session.key.len = 0;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (ngx_http_model_gateway_state_key(r, ctx, kind, &ctx->state.id)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a mapping this node read lately: it never changes */

    rc = ngx_http_model_gateway_ids_get(r, ctx, &backend);

    if (rc == NGX_OK) {
        ngx_http_model_gateway_metrics_state(r, NGX_HTTP_MG_STATE_READ);
        return ngx_http_model_gateway_state_only(r, ctx, backend.data,
                                                 backend.len);
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (mcf->redis == NULL || !ngx_http_mg_redis_ready()) {

        /*
         * without the store, a tenant's id may be another tenant's, and
         * the default backend (the same account, often) would hand it over
         */

        if (mcf->state_default.len && ctx->identity.tenant.len == 0) {
            return ngx_http_model_gateway_state_only(r, ctx,
                                                     mcf->state_default.data,
                                                     mcf->state_default.len);
        }

        return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "state_store_unavailable", NULL,
                                           "The store of response and "
                                           "conversation ids is "
                                           "unavailable.");
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    args[0] = ctx->state.key;
    args[1] = ctx->identity.tenant;

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_LOOKUP, 2, args,
                                   ngx_http_model_gateway_state_found, ctx);
    if (cmd == NULL) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "state_store_unavailable", NULL,
                                           "The store of response and "
                                           "conversation ids is busy.");
    }

    ctx->state.cmd = cmd;
    cln->handler = ngx_http_model_gateway_state_cleanup;
    cln->data = ctx;

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/* <prefix>:resp:<id> or <prefix>:conv:<id> */

static ngx_int_t
ngx_http_model_gateway_state_key(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t kind, ngx_str_t *id)
{
    ngx_str_t                            prefix;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->redis) {
        prefix = mcf->redis->prefix;

    } else {
        ngx_str_set(&prefix, "mg");
    }

    ctx->state.key.len = prefix.len + sizeof(":resp:") - 1 + id->len;
    ctx->state.key.data = ngx_pnalloc(r->pool, ctx->state.key.len);
    if (ctx->state.key.data == NULL) {
        return NGX_ERROR;
    }

    ctx->state.key.len = ngx_sprintf(ctx->state.key.data, "%V:%s:%V",
                                     &prefix,
                                     (kind == NGX_HTTP_MG_STATE_RESPONSE)
                                     ? "resp" : "conv", id)
                         - ctx->state.key.data;

    return NGX_OK;
}


static void
ngx_http_model_gateway_state_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ctx->state.cmd) {
        ngx_http_mg_redis_cancel(ctx->state.cmd);
        ctx->state.cmd = NULL;
    }
}


static void
ngx_http_model_gateway_state_found(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_int_t                            next;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_main_conf_t  *mcf;

    r = ctx->request;
    ctx->state.cmd = NULL;
    r->read_event_handler = ngx_http_block_reading;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {

        if (mcf->state_default.len && ctx->identity.tenant.len == 0) {
            next = ngx_http_model_gateway_state_only(r, ctx,
                                                     mcf->state_default.data,
                                                     mcf->state_default.len);

        } else {
            next = ngx_http_model_gateway_fail(r,
                                           NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "state_store_unavailable", NULL,
                                           "The store of response and "
                                           "conversation ids did not "
                                           "answer.");
        }

    } else if (reply->type == REDIS_REPLY_STRING) {
        ngx_http_model_gateway_metrics_state(r, NGX_HTTP_MG_STATE_READ);
        ngx_http_model_gateway_ids_put(r, ctx, (u_char *) reply->str,
                                       reply->len);
        next = ngx_http_model_gateway_state_only(r, ctx,
                                                 (u_char *) reply->str,
                                                 reply->len);

    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {

        /*
         * another tenant's id: the very answer an unknown id gets without
         * a default backend, and never the default backend, which would
         * hand the other tenant's object over
         */

        ngx_http_model_gateway_metrics_state(r, NGX_HTTP_MG_STATE_MISS);
        next = ngx_http_model_gateway_state_not_found(r, ctx);

    } else {

        /* unknown, or owned by no tenant (a record from before tenants) */

        ngx_http_model_gateway_metrics_state(r, NGX_HTTP_MG_STATE_MISS);

        next = ngx_http_model_gateway_state_unknown(r, ctx);
    }

    ngx_http_model_gateway_route_done(r, next);
}


static ngx_int_t
ngx_http_model_gateway_state_unknown(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->state_default.len) {
        return ngx_http_model_gateway_state_only(r, ctx,
                                                 mcf->state_default.data,
                                                 mcf->state_default.len);
    }

    return ngx_http_model_gateway_state_not_found(r, ctx);
}


static ngx_int_t
ngx_http_model_gateway_state_not_found(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char      *p;
    ngx_uint_t   response;

    response = (ctx->state.kind == NGX_HTTP_MG_STATE_RESPONSE
                || ctx->state.via == NGX_HTTP_MG_STATE_RESPONSE);

    p = ngx_pnalloc(r->pool, sizeof("No conversation found with id ''.")
                             + ctx->state.id.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.message_str.data = p;
    ctx->err.message_str.len = ngx_sprintf(p, "No %s found with id '%V'.",
                                           response ? "response"
                                                    : "conversation",
                                           &ctx->state.id)
                               - p;

    return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error",
                                       response ? "response_not_found"
                                                : "conversation_not_found",
                                       (ctx->state.kind
                                        == NGX_HTTP_MG_STATE_NEW_RESPONSE)
                                       ? (response ? "previous_response_id"
                                                   : "conversation")
                                       : NULL,
                                       NULL);
}


static ngx_int_t
ngx_http_model_gateway_state_model_mismatch(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char      *p;
    ngx_uint_t   response;

    response = (ctx->state.via == NGX_HTTP_MG_STATE_RESPONSE);

    p = ngx_pnalloc(r->pool, sizeof("The conversation '' is held by a backend "
                                    "that does not serve the model ''.")
                             + ctx->state.id.len + ctx->model.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.message_str.data = p;
    ctx->err.message_str.len = ngx_sprintf(p, "The %s '%V' is held by a "
                                           "backend that does not serve "
                                           "the model '%V'.",
                                           response ? "response"
                                                    : "conversation",
                                           &ctx->state.id, &ctx->model)
                               - p;

    return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request_error",
                                       "model_not_available", "model", NULL);
}


/* narrows the candidates to the backend that holds the object */

static ngx_int_t
ngx_http_model_gateway_state_only(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *name, size_t len)
{
    ngx_uint_t                           i, n;
    ngx_http_model_gateway_target_t     *t;
    ngx_http_model_gateway_backend_t   **b;
    ngx_http_model_gateway_main_conf_t  *mcf;

    n = ctx->model_conf->targets.nelts;
    t = ctx->model_conf->targets.elts;

    for (i = 0; i < n; i++) {
        if (t[i].backend->name.len == len
            && ngx_memcmp(t[i].backend->name.data, name, len) == 0)
        {
            goto found;
        }
    }

    /*
     * the backend holding the object does not serve the model asked for:
     * sending it there would run a model name the model table does not
     * map on that backend's key
     */

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (ctx->model_conf != &mcf->state_model) {
        b = mcf->backends.elts;

        for (i = 0; i < mcf->backends.nelts; i++) {
            if (b[i]->name.len == len
                && ngx_memcmp(b[i]->name.data, name, len) == 0)
            {
                return ngx_http_model_gateway_state_model_mismatch(r, ctx);
            }
        }
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "model gateway: the backend \"%*s\" holding \"%V\" is not "
                  "configured any more", len, name, &ctx->state.id);

    return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "server_error",
                                       "state_backend_unavailable", NULL,
                                       "The backend holding this object is "
                                       "not available.");

found:

    ngx_memset(ctx->tried, 1, n);
    ctx->tried[i] = 0;
    ctx->preferred = i;

    return NGX_OK;
}


/*
 * A response committed: a newly created response or conversation has its
 * id recorded against the backend that created it.
 */

static ngx_int_t
ngx_http_model_gateway_state_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    size_t           start, len;
    ngx_uint_t       kind;
    mg_json_field_t  f[1] = { { "id", 2, MG_JSON_NONE, 0, 0, 0 } };

    if ((ctx->state.kind != NGX_HTTP_MG_STATE_NEW_RESPONSE
         && ctx->state.kind != NGX_HTTP_MG_STATE_NEW_CONVERSATION)
        || ctx->attempt.status.code < 200 || ctx->attempt.status.code >= 300)
    {
        return NGX_OK;
    }

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {

        /* the id comes with the stream's response.created event */

        return NGX_OK;
    }

    if (ctx->attempt.whole == NULL) {
        return NGX_OK;
    }

    if (mg_json_scan((char *) ctx->attempt.whole->pos,
                     ctx->attempt.whole->last - ctx->attempt.whole->pos,
                     f, 1, 64, NULL)
        != MG_JSON_OK
        || f[0].type != MG_JSON_STRING)
    {
        return NGX_OK;
    }

    start = f[0].start;
    len = f[0].len;

    kind = (ctx->state.kind == NGX_HTTP_MG_STATE_NEW_RESPONSE)
           ? NGX_HTTP_MG_STATE_RESPONSE : NGX_HTTP_MG_STATE_CONVERSATION;

    ngx_http_model_gateway_state_store(r, ctx, kind,
                                       ctx->attempt.whole->pos + start, len);

    return NGX_OK;
}


/*
 * The event chain's link of stored objects: a stream that creates one
 * (its kind says so; only a 2xx is a stream) names the new response's id
 * in its response.created event.  Every event passes on unchanged.
 */

static ngx_int_t
ngx_http_model_gateway_state_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    size_t           start, len;
    mg_json_type_t   t;
    mg_json_field_t  f[2] = {
        { "type", 4, MG_JSON_NONE, 0, 0, 0 },
        { "response", 8, MG_JSON_NONE, 0, 0, 0 }
    };

    if ((ctx->state.kind != NGX_HTTP_MG_STATE_NEW_RESPONSE
         && ctx->state.kind != NGX_HTTP_MG_STATE_NEW_CONVERSATION)
        || ev->data == NULL || ctx->state.stored)
    {
        return ngx_http_model_gateway_state_next_event(ctx, ev);
    }

    if (mg_json_scan(ev->data, ev->data_len, f, 2, 64, NULL) == MG_JSON_OK
        && f[0].type == MG_JSON_STRING
        && f[0].len == sizeof("\"response.created\"") - 1
        && ngx_strncmp(ev->data + f[0].start, "\"response.created\"",
                       f[0].len) == 0
        && f[1].type == MG_JSON_OBJECT)
    {
        t = mg_json_member(ev->data + f[1].start, f[1].len, "id", 2,
                           &start, &len);

        if (t == MG_JSON_STRING) {
            ngx_http_model_gateway_state_store(ctx->request, ctx,
                                          NGX_HTTP_MG_STATE_RESPONSE,
                                          (u_char *) ev->data + f[1].start
                                          + start, len);
        }
    }

    return ngx_http_model_gateway_state_next_event(ctx, ev);
}


static void
ngx_http_model_gateway_state_store(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t kind, u_char *tok,
    size_t toklen)
{
    u_char                              *p;
    ngx_str_t                            id, rec, args[4];
    ngx_msec_t                           ttl;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_mg_redis_cmd_t             *cmd;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               ms[NGX_INT64_LEN];

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->redis == NULL || ctx->state.stored) {
        return;
    }

    ctx->state.stored = 1;

    id.data = ngx_pnalloc(r->pool, toklen);
    if (id.data == NULL) {
        return;
    }

    if (toklen < 3
        || mg_json_unescape((char *) tok, toklen, (char *) id.data, toklen)
           <= 0)
    {
        return;
    }

    id.len = mg_json_unescape((char *) tok, toklen, (char *) id.data, toklen);

    if (ngx_http_model_gateway_state_key(r, ctx, kind, &id) != NGX_OK) {
        return;
    }

    ttl = (kind == NGX_HTTP_MG_STATE_RESPONSE) ? mcf->response_ttl
                                               : mcf->conversation_ttl;

    /* "TENANT|BACKEND" names the owner; a bare "BACKEND" without one */

    rec = ctx->target->backend->name;

    if (ctx->identity.tenant.len) {
        rec.len = ctx->identity.tenant.len + 1 + rec.len;
        rec.data = ngx_pnalloc(r->pool, rec.len);
        if (rec.data == NULL) {
            return;
        }

        p = ngx_cpymem(rec.data, ctx->identity.tenant.data,
                       ctx->identity.tenant.len);
        *p++ = '|';
        ngx_memcpy(p, ctx->target->backend->name.data,
                   ctx->target->backend->name.len);
    }

    args[0] = ctx->state.key;
    args[1] = rec;
    args[2].data = ms;
    args[2].len = ngx_sprintf(ms, "%M", ttl) - ms;
    args[3] = ctx->identity.tenant;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return;
    }

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_STORE, 4, args,
                                   ngx_http_model_gateway_state_stored, ctx);
    if (cmd == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: could not record \"%V\" of backend "
                      "\"%V\": redis unavailable, follow-ups will not find "
                      "it", &id, &ctx->target->backend->name);
        return;
    }

    ctx->state.cmd = cmd;
    ctx->state.store_pending = 1;

    cln->handler = ngx_http_model_gateway_state_cleanup;
    cln->data = ctx;
}


/*
 * The id is recorded (or the write failed or timed out): whatever the
 * response held back for it goes out now.
 */

static void
ngx_http_model_gateway_state_stored(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_http_request_t  *r;

    r = ctx->request;

    ctx->state.cmd = NULL;
    ctx->state.store_pending = 0;

    ngx_http_model_gateway_metrics_state(r,
                                   (rc != NGX_OK
                                    || reply->type == REDIS_REPLY_ERROR)
                                   ? NGX_HTTP_MG_STATE_WRITE_FAILED
                                   : NGX_HTTP_MG_STATE_WRITE);

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: recording \"%V\" failed, follow-ups "
                      "will not find it", &ctx->state.key);

    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "model gateway: \"%V\" is recorded for another owner "
                      "already, left alone", &ctx->state.key);
    }

    ngx_http_model_gateway_state_release(ctx);
}


/*
 * A write the answer waited for is over: what the answer held back for it
 * (its last byte, or its final events) goes out now, and the end when the
 * backend's response has ended.
 */

void
ngx_http_model_gateway_state_release(ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_chain_t          *cl, **ll;
    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    r = ctx->request;
    u = r->upstream;

    if (u == NULL) {
        return;
    }

    if (ctx->state.held) {
        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return;
        }

        cl->buf = ctx->state.held;
        cl->next = NULL;
        ctx->state.held = NULL;

        for (ll = &u->out_bufs; *ll; ll = &(*ll)->next) { /* void */ }
        *ll = cl;

        u->length = 0;

    } else if (ctx->state.finish_pending) {
        ctx->state.finish_pending = 0;
        u->length = 0;

    } else {
        return;
    }

    /* the client connection's writer sends it and finalizes */

    ngx_post_event(r->connection->write, &ngx_posted_events);
}
