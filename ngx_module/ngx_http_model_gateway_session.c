
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Sessions pinned to backends.  A request that carries a session key is
 * routed to the backend its session is pinned to; the pin lives in Redis,
 * so every nginx node of a fleet agrees.  A new session is pinned to the
 * backend that weighted rendezvous hashing of its key picks, which is also
 * what every node picks when Redis is unreachable.  This is a route
 * handler: it suspends the request for one Redis round trip.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "mg_rendezvous.h"

#include <hiredis/hiredis.h>


#define NGX_HTTP_MG_SESSION_MAX_LEN  256


static ngx_int_t ngx_http_model_gateway_session_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_session_key(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_session_fallback(
    ngx_http_request_t *r, ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_session_reply(void *data,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_model_gateway_session_peek(void *data,
    redisReply *reply, ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_session_pin(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_session_apply(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, const char *name, size_t len,
    ngx_uint_t fresh);
static void ngx_http_model_gateway_session_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_session_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_session_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_session_target(
    ngx_http_model_gateway_ctx_t *ctx, const char *name, size_t len);
static void ngx_http_model_gateway_session_ignore(void *data,
    redisReply *reply, ngx_int_t rc);


ngx_int_t
ngx_http_model_gateway_session_init(ngx_conf_t *cf)
{
    if (ngx_http_model_gateway_route_add(cf,
                                         ngx_http_model_gateway_session_route,
                                         NGX_HTTP_MG_ROUTE_SESSION)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_commit_add(cf,
                                         ngx_http_model_gateway_session_commit)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_model_gateway_done_add(cf,
                                          ngx_http_model_gateway_session_done);
}


/*
 * What a request's session needs, decided once: NGX_DECLINED, no session;
 * NGX_OK, its pin is to be looked up in Redis (ctx->session.pin_key, and
 * ctx->session.hashed for a new one); NGX_DONE, Redis is away and the
 * fallback routed it; or an error status.  The limits step calls this too,
 * to look the pin up in its own round trip.
 */

ngx_int_t
ngx_http_model_gateway_session_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->session.prepared) {
        return ctx->session.prepare_rc;
    }

    rc = ngx_http_model_gateway_session_key(r, ctx);

    ctx->session.prepared = 1;
    ctx->session.prepare_rc = rc;

    return rc;
}


static ngx_int_t
ngx_http_model_gateway_session_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_str_t                 args[4], backend;
    ngx_pool_cleanup_t       *cln;
    ngx_http_mg_redis_cmd_t  *cmd;
    u_char                    ms[1][NGX_INT64_LEN];

    rc = ngx_http_model_gateway_session_prepare(r, ctx);

    if (rc == NGX_DONE) {
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    /* a pin this node read a moment ago costs no round trip */

    rc = ngx_http_model_gateway_pins_get(r, ctx, &backend);

    if (rc == NGX_OK) {
        return ngx_http_model_gateway_session_resolved(r, ctx,
                                                  (char *) backend.data,
                                                  backend.len, 0);
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    /*
     * an existing pin costs one plain GETEX (read and refresh the idle
     * timeout); only a missing or too old pin needs the script
     */

    ngx_str_set(&args[0], "GETEX");
    args[1] = ctx->session.pin_key;
    ngx_str_set(&args[2], "PX");
    args[3].data = ms[0];
    args[3].len = ngx_sprintf(ms[0], "%M", ctx->lcf->session_idle) - ms[0];

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cmd = ngx_http_mg_redis_command(4, args,
                                    ngx_http_model_gateway_session_peek, ctx);
    if (cmd == NULL) {
        return ngx_http_model_gateway_session_fallback(r, ctx);
    }

    /*
     * the command outlives the request if the client goes away: the
     * cleanup only cancels it, and the reply then touches nothing
     */

    ctx->session.cmd = cmd;
    cln->handler = ngx_http_model_gateway_session_cleanup;
    cln->data = ctx;

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_model_gateway_session_key(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    size_t                                i;
    ngx_int_t                             rc;
    ngx_str_t                             key, hkey, *tenant;
    ngx_msec_t                            now;
    ngx_uint_t                            n;
    ngx_http_model_gateway_node_t        *bn, *pn;
    ngx_http_model_gateway_target_t      *t;
    ngx_http_model_gateway_loc_conf_t    *lcf;
    ngx_http_model_gateway_main_conf_t   *mcf;
    mg_rendezvous_node_t                  nodes[NGX_HTTP_MG_MAX_TARGETS];
    unsigned char                         eligible[NGX_HTTP_MG_MAX_TARGETS];

    lcf = ctx->lcf;

    if (lcf->session == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_complex_value(r, lcf->session, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (key.len == 0) {
        return NGX_DECLINED;
    }

    if (key.len > NGX_HTTP_MG_SESSION_MAX_LEN) {
        goto invalid;
    }

    for (i = 0; i < key.len; i++) {
        if (key.data[i] < 0x21 || key.data[i] > 0x7e) {
            goto invalid;
        }
    }

    ctx->session.key = key;
    tenant = &ctx->identity.tenant;

    /*
     * the backend a new session gets: weighted rendezvous over the healthy
     * candidates, the same choice on every node with or without Redis
     */

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;
    now = ngx_current_msec;

    for (i = 0; i < n; i++) {
        bn = t[i].backend->node;
        pn = t[i].node;

        nodes[i].name = (char *) t[i].backend->name.data;
        nodes[i].len = t[i].backend->name.len;
        nodes[i].weight = ngx_http_model_gateway_weight(t[i].backend);

        eligible[i] = t[i].backend->naddrs && !bn->drain
                      && bn->breaker.cooldown_until <= now
                      && pn->breaker.limited_until <= now;
    }

    /*
     * a tenant's sessions hash as "TENANT:KEY" (a tenant has no ":"), so
     * the same key in two tenants is two sessions that spread on their own
     */

    hkey = key;

    if (tenant->len) {
        hkey.len = tenant->len + 1 + key.len;
        hkey.data = ngx_pnalloc(r->pool, hkey.len);
        if (hkey.data == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(hkey.data, "%V:%V", tenant, &key);
    }

    ctx->session.hashed = mg_rendezvous_pick((char *) hkey.data, hkey.len,
                                             nodes, n, eligible);
    if (ctx->session.hashed < 0) {
        ctx->session.hashed = mg_rendezvous_pick((char *) hkey.data,
                                                 hkey.len, nodes, n, NULL);
    }

    if (mcf->redis == NULL || !ngx_http_mg_redis_ready()) {
        rc = ngx_http_model_gateway_session_fallback(r, ctx);
        return (rc == NGX_OK) ? NGX_DONE : rc;
    }

    /*
     * <prefix>:pin:<session>:<model>, or with a tenant
     * <prefix>:{<tenant>}:pin:<session>:<model>: the hash tag puts every
     * key of a tenant on one Redis Cluster slot, so a script may touch
     * several of them (the pin scripts touch this one key only); the tag
     * comes before the session key, so a "{" in a session key is no tag
     */

    ctx->session.pin_key.len = mcf->redis->prefix.len + sizeof(":pin::") - 1
                               + key.len + ctx->model.len;

    if (tenant->len) {
        ctx->session.pin_key.len += sizeof(":{}") - 1 + tenant->len;
    }

    ctx->session.pin_key.data = ngx_pnalloc(r->pool,
                                            ctx->session.pin_key.len);
    if (ctx->session.pin_key.data == NULL) {
        return NGX_ERROR;
    }

    if (tenant->len) {
        ngx_sprintf(ctx->session.pin_key.data, "%V:{%V}:pin:%V:%V",
                    &mcf->redis->prefix, tenant, &key, &ctx->model);

    } else {
        ngx_sprintf(ctx->session.pin_key.data, "%V:pin:%V:%V",
                    &mcf->redis->prefix, &key, &ctx->model);
    }

    return NGX_OK;

invalid:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request_error",
                                       "invalid_session_key", NULL,
                                       "The session key must be 1 to 256 "
                                       "printable ASCII characters.");
}


static ngx_int_t
ngx_http_model_gateway_session_fallback(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->redis && ctx->lcf->session_fallback == NGX_HTTP_MG_FALLBACK_FAIL)
    {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "session_store_unavailable", NULL,
                                           "The session store is "
                                           "unavailable.");
    }

    /* no shared state needed: every node hashes the key the same way */

    ctx->session.status = NGX_HTTP_MG_PIN_FALLBACK;
    ctx->preferred = ctx->session.hashed;

    if (ctx->lcf->session_mode == NGX_HTTP_MG_SESSION_STRICT) {
        ngx_memset(ctx->tried, 1, ctx->model_conf->targets.nelts);
        ctx->tried[ctx->session.hashed] = 0;
    }

    return NGX_OK;
}


static void
ngx_http_model_gateway_session_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ctx->session.cmd) {
        ngx_http_mg_redis_cancel(ctx->session.cmd);
        ctx->session.cmd = NULL;
    }
}


static void
ngx_http_model_gateway_session_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_int_t                          next;
    ngx_str_t                          backend;
    redisReply                        *name, *fresh;
    ngx_http_request_t                *r;

    r = ctx->request;
    ctx->session.cmd = NULL;
    r->read_event_handler = ngx_http_block_reading;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        if (rc == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: unexpected reply to the session "
                          "pin script%s%*s",
                          reply->type == REDIS_REPLY_ERROR ? ": " : "",
                          (size_t) (reply->type == REDIS_REPLY_ERROR
                                    ? ngx_min(reply->len, 200) : 0),
                          reply->str);
        }

        next = ngx_http_model_gateway_session_fallback(r, ctx);
        ngx_http_model_gateway_route_done(r, next);
        return;
    }

    name = reply->element[0];
    fresh = reply->element[1];

    /* the pin is new, or was made a moment ago: about now either way */

    backend.data = (u_char *) name->str;
    backend.len = name->len;
    ngx_http_model_gateway_pins_put(r, ctx, &backend,
                             ngx_http_mg_redis_now_for(&ctx->session.pin_key));

    ngx_http_model_gateway_session_apply(r, ctx, name->str, name->len,
                                         fresh->integer != 0);
}


/* the GETEX answer: "BACKEND|CREATED_MS", or nil */

static void
ngx_http_model_gateway_session_peek(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    u_char              *sep, *end;
    ngx_int_t            born, next;
    ngx_str_t            name;
    ngx_http_request_t  *r;

    r = ctx->request;
    ctx->session.cmd = NULL;

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {

        if (rc == NGX_OK) {

            /* GETEX came with Redis 6.2 */

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: redis refused GETEX (Redis 6.2 or "
                          "later is needed): %*s",
                          (size_t) ngx_min(reply->len, 200), reply->str);
        }

        r->read_event_handler = ngx_http_block_reading;
        next = ngx_http_model_gateway_session_fallback(r, ctx);
        ngx_http_model_gateway_route_done(r, next);
        return;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        end = (u_char *) reply->str + reply->len;
        sep = ngx_strlchr((u_char *) reply->str, end, '|');

        if (sep) {
            born = ngx_atoi(sep + 1, end - sep - 1);

            /*
             * pins are stamped with Redis' clock, and so is their age
             * measured (this worker's clock corrected by the offset taken
             * when it connected), so every node agrees
             */

            if (born != NGX_ERROR
                && ngx_http_mg_redis_now_for(&ctx->session.pin_key) - born
                   < (ngx_int_t) ctx->lcf->session_max)
            {
                r->read_event_handler = ngx_http_block_reading;
                name.data = (u_char *) reply->str;
                name.len = sep - (u_char *) reply->str;
                ngx_http_model_gateway_pins_put(r, ctx, &name, born);
                ngx_http_model_gateway_session_apply(r, ctx, reply->str,
                                                     name.len, 0);
                return;
            }
        }
    }

    /* no pin, or one past its lifetime: the script reserves one */

    next = ngx_http_model_gateway_session_pin(r, ctx);

    if (next != NGX_AGAIN) {
        r->read_event_handler = ngx_http_block_reading;
        ngx_http_model_gateway_route_done(r, next);
    }
}


static ngx_int_t
ngx_http_model_gateway_session_pin(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_str_t                         args[4];
    ngx_http_mg_redis_cmd_t          *cmd;
    ngx_http_model_gateway_target_t  *t;
    u_char                            ms[2][NGX_INT64_LEN];

    t = ctx->model_conf->targets.elts;

    args[0] = ctx->session.pin_key;
    args[1] = t[ctx->session.hashed].backend->name;
    args[2].data = ms[0];
    args[2].len = ngx_sprintf(ms[0], "%M", ctx->lcf->session_idle) - ms[0];
    args[3].data = ms[1];
    args[3].len = ngx_sprintf(ms[1], "%M", ctx->lcf->session_max) - ms[1];

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_PIN, 4, args,
                                   ngx_http_model_gateway_session_reply, ctx);
    if (cmd == NULL) {
        return ngx_http_model_gateway_session_fallback(r, ctx);
    }

    ctx->session.cmd = cmd;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_session_apply(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, const char *name, size_t len,
    ngx_uint_t fresh)
{
    ngx_http_model_gateway_route_done(r,
        ngx_http_model_gateway_session_resolved(r, ctx, name, len, fresh));
}


/*
 * Redis named the session's backend (fresh: the pin was just made): the
 * route is decided, NGX_OK, or the request fails with the status returned.
 */

ngx_int_t
ngx_http_model_gateway_session_resolved(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, const char *name, size_t len,
    ngx_uint_t fresh)
{
    ngx_int_t                         n;
    ngx_http_model_gateway_target_t  *t;

    ctx->session.backend.data = ngx_pnalloc(r->pool, len);
    if (ctx->session.backend.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->session.backend.data, name, len);
    ctx->session.backend.len = len;

    ctx->session.status = fresh ? NGX_HTTP_MG_PIN_NEW : NGX_HTTP_MG_PIN_HIT;

    n = ngx_http_model_gateway_session_target(ctx, name, len);
    ctx->session.pinned = n;

    t = ctx->model_conf->targets.elts;

    if (ctx->lcf->session_mode == NGX_HTTP_MG_SESSION_STRICT) {

        /* the pinned backend is the only candidate */

        if (n < 0
            || t[n].backend->node->drain
            || t[n].backend->node->breaker.cooldown_until > ngx_current_msec
            || t[n].node->breaker.limited_until > ngx_current_msec
            || t[n].backend->naddrs == 0)
        {
            return ngx_http_model_gateway_fail(r,
                                           NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "session_backend_unavailable",
                                           NULL, "the session's backend is "
                                           "unavailable");
        }

        ngx_memset(ctx->tried, 1, ctx->model_conf->targets.nelts);
        ctx->tried[n] = 0;
    }

    /*
     * rebind: the pinned backend first, then the others; a drained one
     * hands its sessions to where a new session would go
     */

    ctx->preferred = (n >= 0 && !t[n].backend->node->drain)
                     ? n : ctx->session.hashed;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_session_target(ngx_http_model_gateway_ctx_t *ctx,
    const char *name, size_t len)
{
    ngx_uint_t                        i;
    ngx_http_model_gateway_target_t  *t;

    t = ctx->model_conf->targets.elts;

    for (i = 0; i < ctx->model_conf->targets.nelts; i++) {
        if (t[i].backend->name.len == len
            && ngx_memcmp(t[i].backend->name.data, name, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


static void
ngx_http_model_gateway_session_ignore(void *data, redisReply *reply,
    ngx_int_t rc)
{
    return;
}


ngx_str_t *
ngx_http_model_gateway_pin_status(ngx_http_model_gateway_ctx_t *ctx)
{
    static ngx_str_t  status[] = {
        ngx_string("none"),
        ngx_string("new"),
        ngx_string("hit"),
        ngx_string("rebound"),
        ngx_string("fallback")
    };

    return &status[ctx->session.status];
}


/*
 * The response committed to a backend: if it is not the pinned one (a
 * failover, or a rebind), the pin follows it, compare-and-set so that a
 * concurrent move elsewhere wins.
 */

static ngx_int_t
ngx_http_model_gateway_session_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_str_t                            args[3];
    ngx_table_elt_t                     *h;
    ngx_http_model_gateway_backend_t    *b;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (ctx->session.backend.len == 0) {
        goto header;
    }

    b = ctx->target->backend;

    if (b->name.len == ctx->session.backend.len
        && ngx_memcmp(b->name.data, ctx->session.backend.data,
                      b->name.len) == 0)
    {
        goto header;
    }

    ctx->session.status = NGX_HTTP_MG_PIN_REBOUND;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    args[0] = ctx->session.pin_key;
    args[1] = ctx->session.backend;
    args[2] = b->name;

    ngx_http_model_gateway_pins_put(r, ctx, &b->name, -1);

    if (ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_MOVE, 3, args,
                                 ngx_http_model_gateway_session_ignore, mcf)
        == NULL)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "model gateway: could not move the pin of a session "
                      "to backend \"%V\": redis unavailable", &b->name);
    }

header:

    if (ctx->session.key.len == 0) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Model-Gateway-Session");
    h->value = *ngx_http_model_gateway_pin_status(ctx);
    h->lowcase_key = NULL;

    return NGX_OK;
}


/* a new session whose every attempt failed leaves no pin behind */

static void
ngx_http_model_gateway_session_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_int_t rc)
{
    ngx_str_t                            args[2];
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (ctx->committed || ctx->session.status != NGX_HTTP_MG_PIN_NEW
        || ctx->session.backend.len == 0)
    {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    args[0] = ctx->session.pin_key;
    args[1] = ctx->session.backend;

    (void) ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_DROP, 2, args,
                                    ngx_http_model_gateway_session_ignore,
                                    mcf);

    ngx_http_model_gateway_pins_drop(r, ctx);

    ctx->session.backend.len = 0;
}
