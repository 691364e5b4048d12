
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Talking to backends through nginx's upstream machinery: starting it,
 * and the life of each attempt.
 *
 * Every attempt may go to another backend with another scheme, host, path,
 * key and model id, so the peer selector (peer.get) picks the backend and
 * rebuilds the request each time (_request.c); nginx's next-upstream logic
 * then retries through it.  process_header (_response.c) reads the response
 * until it is safe to commit to it: a response read whole (non-streaming,
 * or any error the client gets as sent), or a stream up to its first
 * content event.  Until then nothing has reached the client, so every
 * failure can still go to another backend; peer.free classifies it and
 * decides whether another backend is tried.  After commit, _stream.c
 * carries the body to the client; _keepalive.c keeps idle connections.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_upstream.h"


static void ngx_http_model_gateway_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_model_gateway_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_model_gateway_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_model_gateway_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif
static void ngx_http_model_gateway_reset_attempt(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_create_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_reinit_request(ngx_http_request_t *r);
static void ngx_http_model_gateway_abort_request(ngx_http_request_t *r);
static void ngx_http_model_gateway_total_timeout(ngx_event_t *ev);
static void ngx_http_model_gateway_log_attempt(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *what);
static const char *ngx_http_model_gateway_fail_text(
    ngx_http_model_gateway_fail_e fail);


ngx_int_t
ngx_http_model_gateway_upstream_start(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    size_t                              size;
    ngx_http_upstream_t                *u;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_model_gateway_target_t    *t;
    ngx_http_model_gateway_loc_conf_t  *lcf;

    lcf = ctx->lcf;

    if (ngx_http_upstream_create(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    u = r->upstream;

    t = ctx->model_conf->targets.elts;
    u->conf = &t[0].backend->header_conf;

    u->output.tag = (ngx_buf_tag_t) &ngx_http_model_gateway_module;

    u->create_request = ngx_http_model_gateway_create_request;
    u->reinit_request = ngx_http_model_gateway_reinit_request;
    u->process_header = ngx_http_model_gateway_process_header;
    u->abort_request = ngx_http_model_gateway_abort_request;
    u->finalize_request = ngx_http_model_gateway_finalize_request;
    u->input_filter_init = ngx_http_model_gateway_input_filter_init;
    u->input_filter = ngx_http_model_gateway_input_filter;
    u->input_filter_ctx = ctx;
    u->buffering = 0;

    /*
     * the response buffer holds the headers and, for a stream, everything
     * up to the first content event; its size is the location's, not the
     * backend's, so it is allocated here rather than by nginx
     */

    size = lcf->buffer_size;

    u->buffer.start = ngx_palloc(r->pool, size);
    if (u->buffer.start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    u->buffer.pos = u->buffer.start;
    u->buffer.last = u->buffer.start;
    u->buffer.end = u->buffer.start + size;
    u->buffer.temporary = 1;
    u->buffer.tag = u->output.tag;

    if (ngx_list_init(&u->headers_in.headers, r->pool, 1,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_array_init(&ctx->headers, r->pool, 4, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_array_init(&ctx->attempt_log, r->pool, 2, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }


    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_model_gateway_cleanup;
    cln->data = ctx;

    ctx->total_timer.handler = ngx_http_model_gateway_total_timeout;
    ctx->total_timer.data = ctx;
    ctx->total_timer.log = r->connection->log;

    ngx_add_timer(&ctx->total_timer, lcf->total_timeout);

    ngx_http_upstream_init(r);

    return NGX_OK;
}


static void
ngx_http_model_gateway_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t  *ctx = data;

    if (ctx->total_timer.timer_set) {
        ngx_del_timer(&ctx->total_timer);
    }
}


ngx_int_t
ngx_http_model_gateway_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_upstream_t           *u;
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);
    u = r->upstream;

    u->peer.data = ctx;
    u->peer.get = ngx_http_model_gateway_get_peer;
    u->peer.free = ngx_http_model_gateway_free_peer;
    u->peer.tries = ctx->lcf->tries;

#if (NGX_HTTP_SSL)
    u->peer.set_session = ngx_http_model_gateway_set_session;
    u->peer.save_session = ngx_http_model_gateway_save_session;
#endif

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_int_t                          n;
    ngx_addr_t                        *addr;
    ngx_http_request_t                *r;
    ngx_http_upstream_t               *u;
    ngx_http_model_gateway_target_t   *t;
    ngx_http_model_gateway_backend_t  *b;

    r = ctx->request;
    u = r->upstream;

    pc->cached = 0;
    pc->connection = NULL;

    t = ctx->model_conf->targets.elts;

    n = ngx_http_model_gateway_balance(r, ctx);

    if (n < 0) {
        ctx->all_cooling = 1;
        return NGX_BUSY;
    }

    ctx->tried[n] = 1;
    ctx->target = &t[n];
    ctx->attempts++;

    b = t[n].backend;

    ngx_http_model_gateway_reset_attempt(r, ctx);

    u->conf = &b->header_conf;

#if (NGX_HTTP_SSL)
    u->ssl = b->ssl;
    u->ssl_name = b->host;
#endif

    if (ngx_http_model_gateway_build_request(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    addr = &b->addrs[b->next_addr++ % b->naddrs];

    pc->sockaddr = addr->sockaddr;
    pc->socklen = addr->socklen;
    pc->name = &addr->name;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "model gateway: attempt %ui to backend \"%V\" at %V",
                   ctx->attempts, &b->name, &addr->name);

    /* an idle connection to the same address for the same host name */

    return ngx_http_model_gateway_keepalive_get(pc, b);
}


static void
ngx_http_model_gateway_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    u_char                            *p;
    ngx_str_t                          what;
    ngx_uint_t                         i, retry, left;
    ngx_connection_t                  *c;
    ngx_http_request_t                *r;
    ngx_http_upstream_t               *u;
    ngx_http_model_gateway_backend_t  *b;
    u_char                             buf[64];

    r = ctx->request;
    u = r->upstream;
    c = pc->connection;
    b = ctx->target->backend;

    if (!(state & NGX_PEER_FAILED)) {

        p = ngx_sprintf(buf, "%ui", ctx->attempt.status.code);
        what.data = buf;
        what.len = p - buf;
        ngx_http_model_gateway_log_attempt(r, ctx, &what);

        /* a client that went away says nothing about the backend */

        ngx_http_model_gateway_balance_done(r, ctx, ctx->committed ? 0 : 2);

        if (c && ctx->attempt.keepalive && ctx->attempt.framing_done
            && !ctx->stream.closed && u->request_body_sent)
        {
            ngx_http_model_gateway_keepalive_save(pc, b);
        }

        pc->tries = 0;
        return;
    }

    if (ctx->fail == NGX_HTTP_MG_FAIL_NONE) {

        if (c && c->read->timedout) {
            ctx->fail = ctx->attempt.received ? NGX_HTTP_MG_FAIL_IDLE
                                              : NGX_HTTP_MG_FAIL_FIRST_BYTE;

        } else if (c && c->write->timedout) {
            ctx->fail = NGX_HTTP_MG_FAIL_CONNECT_TIMEOUT;

        } else if (ctx->attempt.received) {
            ctx->fail = NGX_HTTP_MG_FAIL_CLOSED;

        } else if (pc->cached && ctx->stale_retries < 2) {

            /*
             * the backend closed an idle connection just as it was reused:
             * not the backend's fault, so the same backend is tried again
             * on a fresh connection (nginx adds a try for a cached peer)
             */

            ctx->stale_retries++;
            ctx->attempts--;
            ngx_http_model_gateway_balance_done(r, ctx, 2);
            ctx->tried[ctx->target - (ngx_http_model_gateway_target_t *)
                                     ctx->model_conf->targets.elts] = 0;
            pc->tries = 0;
            return;

        } else {
            ctx->fail = NGX_HTTP_MG_FAIL_CONNECT;
        }
    }

    if (ctx->total_expired) {
        ctx->fail = NGX_HTTP_MG_FAIL_TOTAL_TIMEOUT;
    }

    ctx->last_fail = ctx->fail;
    ctx->last_fail_status = ctx->attempt.fail_status;
    ctx->failures++;

    ngx_http_model_gateway_balance_done(r, ctx, 1);

    if (ctx->fail == NGX_HTTP_MG_FAIL_RATE_LIMITED) {
        ctx->rate_limited++;

        if (ctx->retry_after_ms >= 0
            && (ctx->min_retry_after_ms < 0
                || ctx->retry_after_ms < ctx->min_retry_after_ms))
        {
            ctx->min_retry_after_ms = ctx->retry_after_ms;
        }
    }

    if (ctx->attempt.fail_status) {
        p = ngx_sprintf(buf, "%ui", ctx->attempt.fail_status);

    } else {
        p = ngx_sprintf(buf, "%s", ngx_http_model_gateway_fail_text(ctx->fail));
    }

    what.data = buf;
    what.len = p - buf;
    ngx_http_model_gateway_log_attempt(r, ctx, &what);

    switch (ctx->fail) {

    case NGX_HTTP_MG_FAIL_IDLE:

        /*
         * the backend started answering, so it got the request and may
         * bill for it: a stalled response is only retried on request
         */
        retry = ctx->lcf->retry_idle_timeout;
        break;

    case NGX_HTTP_MG_FAIL_TOO_BIG:
    case NGX_HTTP_MG_FAIL_TOTAL_TIMEOUT:
        retry = 0;
        break;

    default:
        retry = 1;
    }

    left = 0;
    for (i = 0; i < ctx->model_conf->targets.nelts; i++) {
        if (!ctx->tried[i]) {
            left++;
        }
    }

    if (!retry || left == 0 || ctx->state.single
        || ctx->attempts >= ctx->lcf->tries)
    {
        pc->tries = 0;

    } else {
        pc->tries = 1;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "model gateway: backend \"%V\" failed (%V) on attempt %ui "
                  "of \"%V\"%s", &b->name, &what, ctx->attempts, &ctx->model,
                  pc->tries ? ", trying another backend" : "");
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_model_gateway_set_session(ngx_peer_connection_t *pc, void *data)
{
    return NGX_OK;
}


static void
ngx_http_model_gateway_save_session(ngx_peer_connection_t *pc, void *data)
{
    return;
}

#endif


static void
ngx_http_model_gateway_reset_attempt(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    r->state = 0;

    ngx_memzero(&ctx->attempt, sizeof(ngx_http_model_gateway_attempt_t));
    ctx->attempt.length = -1;

    ctx->headers.nelts = 0;
    ctx->retry_after_ms = -1;
    ctx->first_byte_at = 0;
    ctx->fail = NGX_HTTP_MG_FAIL_NONE;
}


static ngx_int_t
ngx_http_model_gateway_create_request(ngx_http_request_t *r)
{
    /* built per attempt, in peer.get */
    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_reinit_request(ngx_http_request_t *r)
{
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    ngx_http_model_gateway_reset_attempt(r, ctx);

    return NGX_OK;
}


static void
ngx_http_model_gateway_abort_request(ngx_http_request_t *r)
{
    return;
}


static void
ngx_http_model_gateway_total_timeout(ngx_event_t *ev)
{
    ngx_http_model_gateway_ctx_t *ctx = ev->data;

    ngx_event_t          *uev;
    ngx_connection_t     *c, *pc;
    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    r = ctx->request;
    c = r->connection;
    u = r->upstream;

    ctx->total_expired = 1;

    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                  "model gateway: model_gateway_total_timeout of %M ms "
                  "expired", ctx->lcf->total_timeout);

    if (u == NULL || u->peer.connection == NULL) {
        return;
    }

    pc = u->peer.connection;

    if (!u->header_sent) {

        /* fail the attempt as a timeout; peer.free stops the retries */

        uev = pc->write->timer_set ? pc->write : pc->read;

    } else if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {
        ngx_str_set(&ctx->stream.error,
                    "model_gateway_total_timeout expired");
        uev = pc->read;

    } else {
        return;
    }

    if (uev->timer_set) {
        ngx_del_timer(uev);
    }

    uev->timedout = 1;

    /* nginx's upstream handler runs the posted requests itself */

    uev->handler(uev);
}


static void
ngx_http_model_gateway_log_attempt(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *what)
{
    ngx_str_t                         *s;
    ngx_http_model_gateway_backend_t  *b;

    b = ctx->target->backend;

    s = ngx_array_push(&ctx->attempt_log);
    if (s == NULL) {
        return;
    }

    s->len = b->name.len + 1 + what->len;
    s->data = ngx_pnalloc(r->pool, s->len);
    if (s->data == NULL) {
        s->len = 0;
        return;
    }

    ngx_sprintf(s->data, "%V:%V", &b->name, what);
}


static const char *
ngx_http_model_gateway_fail_text(ngx_http_model_gateway_fail_e fail)
{
    switch (fail) {
    case NGX_HTTP_MG_FAIL_CONNECT:
        return "connect_error";
    case NGX_HTTP_MG_FAIL_CONNECT_TIMEOUT:
        return "connect_timeout";
    case NGX_HTTP_MG_FAIL_FIRST_BYTE:
        return "first_byte_timeout";
    case NGX_HTTP_MG_FAIL_IDLE:
        return "idle_timeout";
    case NGX_HTTP_MG_FAIL_CLOSED:
        return "closed";
    case NGX_HTTP_MG_FAIL_INVALID:
        return "invalid_response";
    case NGX_HTTP_MG_FAIL_STREAM_ERROR:
        return "stream_error";
    case NGX_HTTP_MG_FAIL_TOO_BIG:
        return "too_big";
    case NGX_HTTP_MG_FAIL_TOTAL_TIMEOUT:
        return "total_timeout";
    default:
        return "error";
    }
}


/* model_gateway_balance POLICY [MODEL ...]; */

char *
ngx_http_model_gateway_balance_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *mlcf = conf;

    ngx_str_t                        *value;
    ngx_uint_t                        i, policy;
    ngx_http_model_gateway_policy_t  *p;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "round_robin") == 0) {
        policy = NGX_HTTP_MG_BALANCE_ROUND_ROBIN;

    } else if (ngx_strcmp(value[1].data, "least_outstanding") == 0) {
        policy = NGX_HTTP_MG_BALANCE_LEAST_OUTSTANDING;

    } else if (ngx_strcmp(value[1].data, "peak_ewma") == 0) {
        policy = NGX_HTTP_MG_BALANCE_PEAK_EWMA;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown balancing policy \"%V\" (round_robin, "
                           "least_outstanding, peak_ewma)", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 2) {
        if (mlcf->balance != NGX_CONF_UNSET_UINT) {
            return "is duplicate";
        }

        mlcf->balance = policy;
        return NGX_CONF_OK;
    }

    if (mlcf->balance_models == NGX_CONF_UNSET_PTR) {
        mlcf->balance_models = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_model_gateway_policy_t));
        if (mlcf->balance_models == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 2; i < cf->args->nelts; i++) {
        p = ngx_array_push(mlcf->balance_models);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        p->model = value[i];
        p->policy = policy;
    }

    return NGX_CONF_OK;
}
