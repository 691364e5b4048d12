
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Talking to backends through nginx's upstream machinery.
 *
 * Every attempt may go to another backend with another scheme, host, path,
 * key and model id, so the peer selector (peer.get) picks the backend and
 * rebuilds the request each time; nginx's next-upstream logic then retries
 * through it.  process_header reads the response until it is safe to commit
 * to it: a response read whole (non-streaming, or any error the client gets
 * as sent), or a stream up to its first content event.  Until then nothing
 * has reached the client, so every failure can still go to another backend.
 */


#include "ngx_http_model_gateway_module.h"


#define NGX_HTTP_MG_OUT_CHUNK     4096
#define NGX_HTTP_MG_BAD_FRAMING   3
#define NGX_HTTP_MG_BAD_EVENTS    4


static ngx_int_t ngx_http_model_gateway_create_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_reinit_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_process_header(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_header_line(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_headers_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_read_whole(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_read_held(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static int ngx_http_model_gateway_unframe(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_buf_t *view,
    mg_sse_handler_pt handler);
static void ngx_http_model_gateway_events_init(
    ngx_http_model_gateway_ctx_t *ctx);
static int ngx_http_model_gateway_feed(ngx_http_model_gateway_ctx_t *ctx,
    u_char *data, size_t len, mg_sse_handler_pt handler);
static int ngx_http_model_gateway_es_message(void *data,
    const mg_es_message_t *msg);
static size_t ngx_http_model_gateway_pending(
    ngx_http_model_gateway_ctx_t *ctx);
static int ngx_http_model_gateway_held_event(void *data,
    const mg_sse_event_t *ev);
static ngx_int_t ngx_http_model_gateway_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_abort_request(ngx_http_request_t *r);
static void ngx_http_model_gateway_finalize_request(ngx_http_request_t *r,
    ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_input_filter_init(void *data);
static ngx_int_t ngx_http_model_gateway_input_filter(void *data,
    ssize_t bytes);
static int ngx_http_model_gateway_stream_event(void *data,
    const mg_sse_event_t *ev);
static ngx_int_t ngx_http_model_gateway_openai_event(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);
static void ngx_http_model_gateway_stream_read_handler(ngx_http_request_t *r,
    ngx_http_upstream_t *u);
static ngx_int_t ngx_http_model_gateway_stream_tail(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

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
static ngx_int_t ngx_http_model_gateway_build_request(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_reset_attempt(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_log_attempt(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *what);
static const char *ngx_http_model_gateway_fail_text(
    ngx_http_model_gateway_fail_e fail);

static void ngx_http_model_gateway_keepalive_save(ngx_peer_connection_t *pc,
    ngx_http_model_gateway_backend_t *b);
static void ngx_http_model_gateway_keepalive_close_handler(ngx_event_t *ev);
static void ngx_http_model_gateway_keepalive_dummy_handler(ngx_event_t *ev);
static void ngx_http_model_gateway_close(ngx_connection_t *c);

static void ngx_http_model_gateway_total_timeout(ngx_event_t *ev);
static void ngx_http_model_gateway_cleanup(void *data);


/* response headers passed to the client: the rest are the gateway's */

static ngx_str_t  ngx_http_model_gateway_pass_headers[] = {
    ngx_string("x-request-id"),
    ngx_string("openai-processing-ms"),
    ngx_string("openai-version"),
    ngx_null_string
};


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


    ctx->on_event = ngx_http_model_gateway_openai_event;

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
    ngx_queue_t                       *q;
    ngx_connection_t                  *c;
    ngx_http_request_t                *r;
    ngx_http_upstream_t               *u;
    ngx_http_model_gateway_cached_t   *item;
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

    for (q = ngx_queue_head(&b->cache);
         q != ngx_queue_sentinel(&b->cache);
         q = ngx_queue_next(q))
    {
        item = ngx_queue_data(q, ngx_http_model_gateway_cached_t, queue);
        c = item->connection;

        if (ngx_memn2cmp((u_char *) &item->sockaddr, (u_char *) pc->sockaddr,
                         item->socklen, pc->socklen)
            != 0)
        {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&b->free, q);

        c->idle = 0;
        c->sent = 0;
        c->data = NULL;
        c->log = pc->log;
        c->read->log = pc->log;
        c->write->log = pc->log;
        c->pool->log = pc->log;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        pc->connection = c;
        pc->cached = 1;

        return NGX_DONE;
    }

    return NGX_OK;
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

        p = ngx_sprintf(buf, "%ui", ctx->status.code);
        what.data = buf;
        what.len = p - buf;
        ngx_http_model_gateway_log_attempt(r, ctx, &what);

        /* a client that went away says nothing about the backend */

        ngx_http_model_gateway_balance_done(r, ctx, ctx->committed ? 0 : 2);

        if (c && ctx->keepalive && ctx->framing_done && !ctx->stream_closed
            && u->request_body_sent)
        {
            ngx_http_model_gateway_keepalive_save(pc, b);
        }

        pc->tries = 0;
        return;
    }

    if (ctx->fail == NGX_HTTP_MG_FAIL_NONE) {

        if (c && c->read->timedout) {
            ctx->fail = ctx->received ? NGX_HTTP_MG_FAIL_IDLE
                                      : NGX_HTTP_MG_FAIL_FIRST_BYTE;

        } else if (c && c->write->timedout) {
            ctx->fail = NGX_HTTP_MG_FAIL_CONNECT_TIMEOUT;

        } else if (ctx->received) {
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
    ctx->last_fail_status = ctx->fail_status;
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

    if (ctx->fail_status) {
        p = ngx_sprintf(buf, "%ui", ctx->fail_status);

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

    if (!retry || left == 0 || ctx->single
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

    ctx->resp_state = NGX_HTTP_MG_RESP_STATUS;
    ctx->mode = NGX_HTTP_MG_BODY_WHOLE;
    ctx->framing = NGX_HTTP_MG_FRAME_CLOSE;
    ngx_memzero(&ctx->status, sizeof(ngx_http_status_t));
    ngx_memzero(&ctx->chunked, sizeof(ngx_http_chunked_t));
    ctx->length = -1;
    ctx->headers.nelts = 0;
    ngx_str_null(&ctx->content_type);
    ngx_str_null(&ctx->errortype);
    ctx->eventstream = 0;
    ctx->retry_after_ms = -1;
    ctx->received = 0;
    ctx->first_byte_at = 0;
    ctx->body_start = NULL;
    ctx->scanned = NULL;
    ctx->whole = NULL;
    ctx->fail = NGX_HTTP_MG_FAIL_NONE;
    ctx->fail_status = 0;
    ctx->upstream_close = 0;
    ctx->framing_done = 0;
    ctx->keepalive = 0;
}


/*
 * The request for the current attempt: the client's JSON body with only
 * the model id replaced (spliced, not re-serialized), and the backend's own
 * path, host and key.
 */

static ngx_int_t
ngx_http_model_gateway_build_request(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                            *p;
    size_t                             len, body_len;
    ngx_buf_t                         *b;
    ngx_uint_t                         i, n;
    ngx_chain_t                       *cl, **ll;
    ngx_str_t                          part[3], suffix, sign, uri;
    const char                        *accept;
    ngx_http_upstream_t               *u;
    ngx_http_model_gateway_target_t   *t;
    ngx_http_model_gateway_backend_t  *be;

    u = r->upstream;
    t = ctx->target;
    be = t->backend;
    suffix = ctx->uri_suffix;
    ngx_str_null(&sign);

    /* xbody is indexed by the targets it was translated for */

    i = t - (ngx_http_model_gateway_target_t *) ctx->model_conf->targets.elts;

    if (ctx->xbody && ctx->xbody_model == ctx->model_conf
        && ctx->xbody[i].len)
    {
        /* translated for this backend when the body was read */

        part[0] = ctx->xbody[i];
        n = 1;

        if (be->type == NGX_HTTP_MG_GEMINI) {

            /* the model is in Gemini's path */

            suffix.len = sizeof("/models/:streamGenerateContent?alt=sse") - 1
                         + t->provider_model.len;
            suffix.data = ngx_pnalloc(r->pool, suffix.len);
            if (suffix.data == NULL) {
                return NGX_ERROR;
            }

            suffix.len = ngx_sprintf(suffix.data, "/models/%V:%s",
                                     &t->provider_model,
                                     ctx->stream
                                     ? "streamGenerateContent?alt=sse"
                                     : "generateContent")
                         - suffix.data;

        } else if (be->type == NGX_HTTP_MG_BEDROCK) {

            /* so is Bedrock's, one encoded segment */

            suffix.len = sizeof("/model//converse-stream") - 1
                         + t->provider_path.len;
            suffix.data = ngx_pnalloc(r->pool, suffix.len);
            if (suffix.data == NULL) {
                return NGX_ERROR;
            }

            suffix.len = ngx_sprintf(suffix.data, "/model/%V/%s",
                                     &t->provider_path,
                                     ctx->stream ? "converse-stream"
                                                 : "converse")
                         - suffix.data;

            if (be->key.len == 0) {

                /* SigV4, per attempt: the date is part of the signature */

                uri.len = be->path.len + suffix.len;
                uri.data = ngx_pnalloc(r->pool, uri.len);
                if (uri.data == NULL) {
                    return NGX_ERROR;
                }

                p = uri.data;

                if (be->path.len) {
                    p = ngx_cpymem(p, be->path.data, be->path.len);
                }

                ngx_memcpy(p, suffix.data, suffix.len);

                if (ngx_http_model_gateway_aws_sign(r, be, &uri, &part[0],
                                                    &sign)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }

        } else {
            ngx_str_set(&suffix, "/messages");
        }

    } else if (be->type == NGX_HTTP_MG_AZURE && !be->azure_v1
               && t->provider_model.len)
    {
        /*
         * classic Azure: the deployment is in the path and decides the
         * model; the body goes as the client sent it
         */

        part[0] = ctx->body;
        n = 1;

        suffix.len = sizeof("/deployments/?api-version=") - 1
                     + t->provider_model.len + ctx->uri_suffix.len
                     + be->api_version.len;
        suffix.data = ngx_pnalloc(r->pool, suffix.len);
        if (suffix.data == NULL) {
            return NGX_ERROR;
        }

        suffix.len = ngx_sprintf(suffix.data,
                                 "/deployments/%V%V?api-version=%V",
                                 &t->provider_model, &ctx->uri_suffix,
                                 &be->api_version)
                     - suffix.data;

    } else if (t->provider_model.len == 0
        || (t->provider_model.len == ctx->model.len
            && ngx_memcmp(t->provider_model.data, ctx->model.data,
                          ctx->model.len) == 0))
    {
        part[0] = ctx->body;
        n = 1;

    } else {
        part[0].data = ctx->body.data;
        part[0].len = ctx->model_start;
        part[1] = t->provider_model_json;
        part[2].data = ctx->body.data + ctx->model_start + ctx->model_len;
        part[2].len = ctx->body.len - ctx->model_start - ctx->model_len;
        n = 3;
    }

    body_len = 0;
    for (i = 0; i < n; i++) {
        body_len += part[i].len;
    }

    if (!ctx->stream) {
        accept = "application/json";

    } else if (be->type == NGX_HTTP_MG_BEDROCK) {
        accept = "application/vnd.amazon.eventstream";

    } else {
        accept = "text/event-stream";
    }

    len = sizeof("  HTTP/1.1" CRLF) - 1 + r->method_name.len + be->path.len
          + suffix.len
          + sizeof("Host: " CRLF) - 1 + be->host_header.len
          + be->auth_header.len + sign.len
          + sizeof("Content-Type: application/json" CRLF) - 1
          + sizeof("Content-Length: " CRLF) - 1 + NGX_SIZE_T_LEN
          + sizeof("Accept-Encoding: identity" CRLF) - 1
          + sizeof("Accept: application/vnd.amazon.eventstream" CRLF) - 1
          + sizeof("Connection: keep-alive" CRLF) - 1
          + ngx_http_model_gateway_headers_len(ctx, be)
          + sizeof(CRLF) - 1;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = b->last;

    /* the client's method: POST, or GET and DELETE of stored objects */

    p = ngx_sprintf(p, "%V %V%V HTTP/1.1" CRLF "Host: %V" CRLF,
                    &r->method_name, &be->path, &suffix, &be->host_header);

    if (be->auth_header.len) {
        p = ngx_cpymem(p, be->auth_header.data, be->auth_header.len);
    }

    if (sign.len) {
        p = ngx_cpymem(p, sign.data, sign.len);
    }

    if (body_len || r->method == NGX_HTTP_POST) {
        p = ngx_sprintf(p, "Content-Type: application/json" CRLF
                        "Content-Length: %uz" CRLF, body_len);
    }

    p = ngx_sprintf(p, "Accept-Encoding: identity" CRLF
                    "Accept: %s" CRLF
                    "Connection: keep-alive" CRLF, accept);
    p = ngx_http_model_gateway_headers_write(ctx, be, p);

    *p++ = CR; *p++ = LF;

    b->last = p;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    u->request_bufs = cl;
    ll = &cl->next;

    for (i = 0; i < n; i++) {
        if (part[i].len == 0) {
            continue;
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        /* reinit of the upstream resets pos to start */

        b->start = part[i].data;
        b->pos = part[i].data;
        b->last = part[i].data + part[i].len;
        b->end = b->last;
        b->memory = 1;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        *ll = cl;
        ll = &cl->next;
    }

    *ll = NULL;

    /* nginx's SSL layer buffers until told to flush */

    b->flush = 1;

    return NGX_OK;
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


static ngx_int_t
ngx_http_model_gateway_process_header(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_buf_t                     *b;
    ngx_http_upstream_t           *u;
    ngx_http_model_gateway_ctx_t  *ctx;

    u = r->upstream;
    b = &u->buffer;
    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    /*
     * the first-byte timeout was armed when the request was sent; once
     * bytes flow, the gap between reads is bounded by the idle timeout
     */

    if (!ctx->received) {
        ctx->received = 1;
        ctx->first_byte_at = ngx_current_msec;
    }

    ngx_add_timer(u->peer.connection->read,
                  ctx->target->backend->idle_timeout);

    if (ctx->resp_state == NGX_HTTP_MG_RESP_STATUS) {

        rc = ngx_http_parse_status_line(r, b, &ctx->status);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: backend \"%V\" sent no valid "
                          "HTTP/1.x status line",
                          &ctx->target->backend->name);
            ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
            return NGX_HTTP_UPSTREAM_INVALID_HEADER;
        }

        ctx->resp_state = NGX_HTTP_MG_RESP_HEADERS;
    }

    if (ctx->resp_state == NGX_HTTP_MG_RESP_HEADERS) {

        for ( ;; ) {

            rc = ngx_http_parse_header_line(r, b, 1);

            if (rc == NGX_OK) {
                if (ngx_http_model_gateway_header_line(r, ctx) != NGX_OK) {
                    return NGX_ERROR;
                }

                continue;
            }

            if (rc == NGX_HTTP_PARSE_HEADER_DONE) {
                break;
            }

            if (rc == NGX_AGAIN) {
                return NGX_AGAIN;
            }

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: backend \"%V\" sent an invalid "
                          "header", &ctx->target->backend->name);
            ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
            return NGX_HTTP_UPSTREAM_INVALID_HEADER;
        }

        rc = ngx_http_model_gateway_headers_done(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->resp_state = NGX_HTTP_MG_RESP_BODY;
        ctx->body_start = b->pos;
        ctx->scanned = b->pos;

        if (ctx->framing == NGX_HTTP_MG_FRAME_CLOSE
            && ctx->mode == NGX_HTTP_MG_BODY_WHOLE)
        {
            /*
             * a body delimited by the connection's end cannot be known to
             * be complete before nginx sees that end, which it only passes
             * on after the header: an OpenAI-type response is sent as it
             * comes, but a provider's answer that must be translated
             * whole never reaches the client raw
             */

            if (ngx_http_model_gateway_translated(
                                            ctx->target->backend->type))
            {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "model gateway: backend \"%V\" sent a "
                              "response delimited by the connection's end, "
                              "which cannot be translated",
                              &ctx->target->backend->name);
                ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
                return NGX_HTTP_UPSTREAM_INVALID_HEADER;
            }

            return ngx_http_model_gateway_commit(r, ctx);
        }
    }

    if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {
        return ngx_http_model_gateway_read_held(r, ctx);
    }

    return ngx_http_model_gateway_read_whole(r, ctx);
}


static ngx_int_t
ngx_http_model_gateway_header_line(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char           *name;
    size_t            len;
    ngx_str_t         value, *s;
    ngx_table_elt_t  *h;
    u_char            lowcase[64];

    len = r->header_name_end - r->header_name_start;
    value.data = r->header_start;
    value.len = r->header_end - r->header_start;

    if (len > sizeof(lowcase)) {
        return NGX_OK;
    }

    name = lowcase;
    ngx_strlow(name, r->header_name_start, len);

#define ngx_mg_hdr(s)                                                       \
    (len == sizeof(s) - 1 && ngx_strncmp(name, s, len) == 0)

    if (ngx_mg_hdr("content-length")) {
        ctx->length = ngx_atoof(value.data, value.len);
        if (ctx->length < 0) {
            ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
        }

        return NGX_OK;
    }

    if (ngx_mg_hdr("transfer-encoding")) {
        if (ngx_strlcasestrn(value.data, value.data + value.len,
                             (u_char *) "chunked", 7 - 1)
            != NULL)
        {
            ctx->framing = NGX_HTTP_MG_FRAME_CHUNKED;
        }

        return NGX_OK;
    }

    if (ngx_mg_hdr("connection")) {
        if (ngx_strlcasestrn(value.data, value.data + value.len,
                             (u_char *) "close", 5 - 1)
            != NULL)
        {
            ctx->upstream_close = 1;
        }

        return NGX_OK;
    }

    if (ngx_mg_hdr("content-type")) {
        ctx->content_type.data = ngx_pstrdup(r->pool, &value);
        if (ctx->content_type.data == NULL) {
            return NGX_ERROR;
        }

        ctx->content_type.len = value.len;
        return NGX_OK;
    }

    if (ngx_mg_hdr("x-amzn-errortype")) {

        /* Bedrock names its exception here */

        ctx->errortype.data = ngx_pstrdup(r->pool, &value);
        if (ctx->errortype.data == NULL) {
            return NGX_ERROR;
        }

        ctx->errortype.len = value.len;
        return NGX_OK;
    }

    if (ngx_mg_hdr("retry-after-ms")) {
        ctx->retry_after_ms = mg_retry_after_ms_value((char *) value.data,
                                                      value.len);
        return NGX_OK;
    }

    if (ngx_mg_hdr("retry-after")) {
        if (ctx->retry_after_ms < 0) {
            ctx->retry_after_ms = mg_retry_after_ms((char *) value.data,
                                                    value.len, ngx_time());
        }

        return NGX_OK;
    }

    if (!(len > 12 && ngx_strncmp(name, "x-ratelimit-", 12) == 0)) {

        for (s = ngx_http_model_gateway_pass_headers; s->len; s++) {
            if (s->len == len && ngx_strncmp(s->data, name, len) == 0) {
                break;
            }
        }

        if (s->len == 0) {
            return NGX_OK;
        }
    }

#undef ngx_mg_hdr

    /* kept for the client; the buffer is reused, so copy */

    h = ngx_array_push(&ctx->headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.len = len;
    h->key.data = ngx_pnalloc(r->pool, len + value.len);
    if (h->key.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(h->key.data, r->header_name_start, len);
    h->value.len = value.len;
    h->value.data = h->key.data + len;
    ngx_memcpy(h->value.data, value.data, value.len);
    h->lowcase_key = NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_headers_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    size_t                              size;
    ngx_uint_t                          status;
    ngx_http_model_gateway_backend_t   *b;

    status = ctx->status.code;
    b = ctx->target->backend;

    if (ctx->fail == NGX_HTTP_MG_FAIL_INVALID) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" sent an invalid "
                      "Content-Length", &b->name);
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status == NGX_HTTP_UNAUTHORIZED || status == NGX_HTTP_FORBIDDEN) {

        /* the body may echo the key back: it is never logged */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" rejected the gateway's "
                      "credential with status %ui (response body not "
                      "logged)", &b->name, status);

        ctx->fail = NGX_HTTP_MG_FAIL_AUTH;
        ctx->fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        ctx->fail = NGX_HTTP_MG_FAIL_RATE_LIMITED;
        ctx->fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (mg_status_retryable((int) status)) {
        ctx->fail = NGX_HTTP_MG_FAIL_STATUS;
        ctx->fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status < 200) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" sent unexpected "
                      "status %ui", &b->name, status);
        ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
        ctx->fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status == NGX_HTTP_NO_CONTENT || status == NGX_HTTP_NOT_MODIFIED) {
        ctx->framing = NGX_HTTP_MG_FRAME_LENGTH;
        ctx->length = 0;

    } else if (ctx->framing != NGX_HTTP_MG_FRAME_CHUNKED && ctx->length >= 0)
    {
        ctx->framing = NGX_HTTP_MG_FRAME_LENGTH;
    }

    ctx->content_length = ctx->length;

    /* Bedrock streams are binary AWS event streams, the others SSE */

    ctx->eventstream = (b->type == NGX_HTTP_MG_BEDROCK
                        && ctx->content_type.len >= 34
                        && ngx_strncasecmp(ctx->content_type.data,
                               (u_char *) "application/vnd.amazon.eventstream",
                               34) == 0);

    if (status >= 200 && status < 300 && ctx->stream
        && (ctx->eventstream
            || (ctx->content_type.len >= 17
                && ngx_strncasecmp(ctx->content_type.data,
                                   (u_char *) "text/event-stream", 17)
                   == 0)))
    {
        ctx->mode = NGX_HTTP_MG_BODY_STREAM;

        /* room for one event, allocated once a stream is there */

        size = ctx->lcf->event_max_size;

        if (ctx->sse.buf == NULL) {
            ctx->sse.buf = ngx_palloc(r->pool, 2 * size);
            if (ctx->sse.buf == NULL) {
                return NGX_ERROR;
            }
        }

        ngx_http_model_gateway_events_init(ctx);
        return NGX_OK;
    }

    ctx->mode = NGX_HTTP_MG_BODY_WHOLE;

    if (ctx->framing == NGX_HTTP_MG_FRAME_CLOSE) {
        return NGX_OK;
    }

    if (ctx->framing == NGX_HTTP_MG_FRAME_LENGTH) {
        if (ctx->length > (off_t) ctx->lcf->response_max_size) {
            goto too_big;
        }

        size = (size_t) ctx->length;

    } else {
        size = ngx_min(NGX_HTTP_MG_OUT_CHUNK * 4, ctx->lcf->response_max_size);
    }

    ctx->whole = ngx_create_temp_buf(r->pool, size ? size : 1);
    if (ctx->whole == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;

too_big:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "model gateway: response of backend \"%V\" is larger than "
                  "model_gateway_response_max_size", &b->name);

    ctx->fail = NGX_HTTP_MG_FAIL_TOO_BIG;
    return NGX_HTTP_UPSTREAM_INVALID_HEADER;
}


/* appends body bytes to the response being read whole */

static ngx_int_t
ngx_http_model_gateway_whole_append(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *data, size_t len)
{
    size_t      size, used;
    ngx_buf_t  *b;

    b = ctx->whole;

    if ((size_t) (b->end - b->last) < len) {
        used = b->last - b->pos;

        if (used + len > ctx->lcf->response_max_size) {
            return NGX_DECLINED;
        }

        size = ngx_max(2 * (size_t) (b->end - b->start), used + len);
        size = ngx_min(size, ctx->lcf->response_max_size);

        b = ngx_create_temp_buf(r->pool, size);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_cpymem(b->pos, ctx->whole->pos, used);

        ngx_pfree(r->pool, ctx->whole->start);
        ctx->whole = b;
    }

    b->last = ngx_cpymem(b->last, data, len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_read_whole(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    size_t                n;
    ngx_int_t             rc;
    ngx_buf_t            *b;
    ngx_http_upstream_t  *u;

    u = r->upstream;
    b = &u->buffer;

    while (b->pos < b->last && !ctx->framing_done) {

        if (ctx->framing == NGX_HTTP_MG_FRAME_CHUNKED) {

            rc = ngx_http_parse_chunked(r, b, &ctx->chunked);

            if (rc == NGX_OK) {
                n = ngx_min((off_t) (b->last - b->pos), ctx->chunked.size);

                rc = ngx_http_model_gateway_whole_append(r, ctx, b->pos, n);
                if (rc != NGX_OK) {
                    goto append_failed;
                }

                b->pos += n;
                ctx->chunked.size -= n;
                continue;
            }

            if (rc == NGX_DONE) {
                ctx->framing_done = 1;
                break;
            }

            if (rc == NGX_AGAIN) {
                break;
            }

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: backend \"%V\" sent invalid "
                          "chunked body", &ctx->target->backend->name);
            ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
            return NGX_HTTP_UPSTREAM_INVALID_HEADER;
        }

        /* NGX_HTTP_MG_FRAME_LENGTH */

        n = ngx_min((off_t) (b->last - b->pos), ctx->length);

        rc = ngx_http_model_gateway_whole_append(r, ctx, b->pos, n);
        if (rc != NGX_OK) {
            goto append_failed;
        }

        b->pos += n;
        ctx->length -= n;
    }

    if (ctx->framing == NGX_HTTP_MG_FRAME_LENGTH && ctx->length == 0) {
        ctx->framing_done = 1;
    }

    if (!ctx->framing_done) {

        /* everything so far is copied: the buffer is free for more */

        b->pos = b->start;
        b->last = b->start;
        return NGX_AGAIN;
    }

    ctx->keepalive = (b->pos == b->last && !ctx->upstream_close);

    /*
     * the complete body becomes the upstream buffer, so that nginx hands
     * it to the input filter right after the header
     */

    b->start = ctx->whole->start;
    b->pos = ctx->whole->pos;
    b->last = ctx->whole->last;
    b->end = ctx->whole->end;

    return ngx_http_model_gateway_commit(r, ctx);

append_failed:

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "model gateway: response of backend \"%V\" is larger than "
                  "model_gateway_response_max_size",
                  &ctx->target->backend->name);

    ctx->fail = NGX_HTTP_MG_FAIL_TOO_BIG;
    return NGX_HTTP_UPSTREAM_INVALID_HEADER;
}


/*
 * Takes the body's framing off (chunked, a length, or the connection's
 * end) and feeds the payload to the SSE tokenizer, whose handler sees each
 * event.  Returns 0, the tokenizer's or the handler's nonzero result, or
 * NGX_HTTP_MG_BAD_FRAMING; view->pos tells how far it got.
 */

static int
ngx_http_model_gateway_unframe(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_buf_t *view,
    mg_sse_handler_pt handler)
{
    int        rc;
    size_t     n;
    ngx_int_t  crc;

    rc = 0;

    while (view->pos < view->last && !ctx->framing_done && rc == 0) {

        if (ctx->framing == NGX_HTTP_MG_FRAME_CHUNKED) {

            crc = ngx_http_parse_chunked(r, view, &ctx->chunked);

            if (crc == NGX_OK) {
                n = ngx_min((off_t) (view->last - view->pos),
                            ctx->chunked.size);

                rc = ngx_http_model_gateway_feed(ctx, view->pos, n, handler);

                view->pos += n;
                ctx->chunked.size -= n;
                continue;
            }

            if (crc == NGX_DONE) {
                ctx->framing_done = 1;
                break;
            }

            if (crc == NGX_AGAIN) {
                break;
            }

            return NGX_HTTP_MG_BAD_FRAMING;
        }

        n = view->last - view->pos;

        if (ctx->framing == NGX_HTTP_MG_FRAME_LENGTH) {
            n = ngx_min((off_t) n, ctx->length);
            ctx->length -= n;

            if (ctx->length == 0) {
                ctx->framing_done = 1;
            }
        }

        rc = ngx_http_model_gateway_feed(ctx, view->pos, n, handler);
        view->pos += n;
    }

    return rc;
}


/* the event parser of the current stream, empty */

static void
ngx_http_model_gateway_events_init(ngx_http_model_gateway_ctx_t *ctx)
{
    size_t  size;

    size = ctx->lcf->event_max_size;

    if (ctx->eventstream) {
        mg_es_init(&ctx->es, (u_char *) ctx->sse.buf, size);

    } else {
        mg_sse_init(&ctx->sse, ctx->sse.buf, size, ctx->sse.buf + size,
                    size);
    }
}


/*
 * Stream payload to the event parser; an AWS event stream's messages
 * reach the same handlers as SSE events do, with their kind set.
 */

static int
ngx_http_model_gateway_feed(ngx_http_model_gateway_ctx_t *ctx, u_char *data,
    size_t len, mg_sse_handler_pt handler)
{
    int  rc;

    if (!ctx->eventstream) {
        return mg_sse_feed(&ctx->sse, (char *) data, len, handler, ctx);
    }

    ctx->es_handler = handler;

    rc = mg_es_feed(&ctx->es, data, len, ngx_http_model_gateway_es_message,
                    ctx);

    if (rc == MG_ES_ETOOBIG) {
        return MG_SSE_ETOOBIG;
    }

    if (rc < 0) {
        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "model gateway: backend \"%V\" sent an invalid event "
                      "stream: %s", &ctx->target->backend->name,
                      mg_es_strerror(rc));

        if (ctx->committed) {

            /* what the client's stream ends with; before, a failover */

            ngx_str_set(&ctx->stream_error,
                        "the backend sent an invalid event stream");
        }

        return NGX_HTTP_MG_BAD_EVENTS;
    }

    return rc;
}


static int
ngx_http_model_gateway_es_message(void *data, const mg_es_message_t *msg)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    mg_sse_event_t  ev;

    ngx_memzero(&ev, sizeof(mg_sse_event_t));

    if (msg->message_type) {
        ev.kind = msg->message_type;
        ev.kind_len = msg->message_type_len;

    } else {
        ev.kind = "event";
        ev.kind_len = 5;
    }

    if (ev.kind_len == 9 && ngx_strncmp(ev.kind, "exception", 9) == 0) {
        ev.event = msg->exception_type;
        ev.event_len = msg->exception_type_len;
        ev.data = (char *) msg->payload;
        ev.data_len = msg->payload_len;

    } else if (ev.kind_len == 5 && ngx_strncmp(ev.kind, "error", 5) == 0) {
        ev.event = msg->error_code;
        ev.event_len = msg->error_code_len;
        ev.data = msg->error_message;
        ev.data_len = msg->error_message_len;

    } else {
        ev.event = msg->event_type;
        ev.event_len = msg->event_type_len;
        ev.data = (char *) msg->payload;
        ev.data_len = msg->payload_len;
    }

    /* every message counts, even without a payload */

    if (ev.data == NULL) {
        ev.data = "";
    }

    ev.raw = (char *) msg->raw;
    ev.raw_len = msg->raw_len;

    return ctx->es_handler(ctx, &ev);
}


static size_t
ngx_http_model_gateway_pending(ngx_http_model_gateway_ctx_t *ctx)
{
    return ctx->eventstream ? mg_es_pending(&ctx->es)
                            : mg_sse_pending(&ctx->sse);
}


/*
 * A stream is held in the upstream buffer until its first content event:
 * events are only classified here, and parsed again for the client by the
 * input filter once the gateway has committed to this backend.
 */

static ngx_int_t
ngx_http_model_gateway_read_held(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                   rc;
    ngx_buf_t            *b, view;
    ngx_http_upstream_t  *u;

    u = r->upstream;
    b = &u->buffer;

    ngx_memzero(&view, sizeof(ngx_buf_t));
    view.pos = ctx->scanned;
    view.last = b->last;

    rc = ngx_http_model_gateway_unframe(r, ctx, &view,
                                        ngx_http_model_gateway_held_event);

    if (rc == NGX_HTTP_MG_BAD_FRAMING) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" sent invalid "
                      "chunked stream", &ctx->target->backend->name);
        ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    ctx->scanned = view.pos;

    if (rc == MG_SSE_ETOOBIG) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" sent a stream event "
                      "larger than model_gateway_event_max_size",
                      &ctx->target->backend->name);
        ctx->fail = NGX_HTTP_MG_FAIL_TOO_BIG;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (rc == NGX_HTTP_MG_BAD_EVENTS) {
        ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (ctx->fail != NGX_HTTP_MG_FAIL_NONE) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" answered 200 but its "
                      "stream began with an error event",
                      &ctx->target->backend->name);
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (ctx->committed || ctx->framing_done) {
        return ngx_http_model_gateway_commit(r, ctx);
    }

    if (b->last == b->end) {

        /* nothing but preamble fills the buffer: stop holding it back */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "model gateway: stream of backend \"%V\" had no "
                      "content within model_gateway_buffer_size, "
                      "passing it on", &ctx->target->backend->name);

        return ngx_http_model_gateway_commit(r, ctx);
    }

    return NGX_AGAIN;
}


static int
ngx_http_model_gateway_held_event(void *data, const mg_sse_event_t *ev)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ev->data == NULL) {
        return 0;
    }

    if (mg_sse_is_error(ev)) {
        ctx->fail = ngx_http_model_gateway_translate_stream_fail(
                                  ctx->target->backend->type, ev,
                                  &ctx->fail_status);
        return 1;
    }

    if (ngx_http_model_gateway_translate_preamble(
                                           ctx->target->backend->type, ev))
    {
        /* an error may still follow: keep holding */
        return 0;
    }

    ctx->committed = 1;

    return 1;
}


/*
 * From here on the response belongs to the client: the status, the kept
 * headers and (through the input filter) the body.
 */

static ngx_int_t
ngx_http_model_gateway_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_uint_t                         i;
    ngx_table_elt_t                   *h, *src;
    ngx_http_upstream_t               *u;
    ngx_http_model_gateway_backend_t  *b;

    u = r->upstream;

    ctx->committed = 1;
    ctx->passthrough = (ctx->status.code >= 300);

    u->headers_in.status_n = ctx->status.code;

    if (ngx_http_model_gateway_translated(ctx->target->backend->type)
        && ngx_http_model_gateway_translate_commit(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {

        /* the held events go to the input filter, parsed afresh */

        u->buffer.pos = ctx->body_start;
        ngx_memzero(&ctx->chunked, sizeof(ngx_http_chunked_t));
        ngx_http_model_gateway_events_init(ctx);
        ctx->framing_done = 0;
        ctx->length = ctx->content_length;
        u->headers_in.content_length_n = -1;

    } else if (ctx->whole) {
        u->headers_in.content_length_n = ctx->whole->last - ctx->whole->pos;

    } else {
        u->headers_in.content_length_n = -1;
    }

    if (ctx->content_type.len) {
        r->headers_out.content_type = ctx->content_type;

    } else {
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;

    src = ctx->headers.elts;

    for (i = 0; i < ctx->headers.nelts; i++) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = src[i];
    }

    ngx_http_model_gateway_session_commit(r, ctx);
    ngx_http_model_gateway_state_commit(r, ctx);

    if (ctx->session.len) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-Model-Gateway-Session");
        h->value = *ngx_http_model_gateway_pin_status(ctx);
        h->lowcase_key = NULL;
    }

    if (ctx->lcf->backend_header) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        b = ctx->target->backend;

        h->value.data = ngx_pnalloc(r->pool, b->name.len
                                             + sizeof("; worker=") - 1
                                             + NGX_INT64_LEN);
        if (h->value.data == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-Model-Gateway-Backend");
        h->value.len = ngx_sprintf(h->value.data, "%V; worker=%P", &b->name,
                                   ngx_pid)
                       - h->value.data;
        h->lowcase_key = NULL;
    }

    if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Cache-Control");
        ngx_str_set(&h->value, "no-cache");
        h->lowcase_key = NULL;

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-Accel-Buffering");
        ngx_str_set(&h->value, "no");
        h->lowcase_key = NULL;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_input_filter_init(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    r = ctx->request;
    u = r->upstream;

    u->conf = &ctx->target->backend->body_conf;

    if (ctx->mode == NGX_HTTP_MG_BODY_WHOLE && ctx->whole) {
        u->length = (ctx->whole->last == ctx->whole->pos) ? 0 : -1;
        return NGX_OK;
    }

    u->length = -1;

    if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {

        /*
         * a stream that stalls or runs out of time after content was sent
         * must still end as a stream: wrap nginx's handler to see the
         * timeout before nginx turns it into a dropped connection
         */

        ctx->read_handler = u->read_event_handler;
        u->read_event_handler = ngx_http_model_gateway_stream_read_handler;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_input_filter(void *data, ssize_t bytes)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    int                   rc;
    u_char               *p;
    ngx_buf_t            *b, view;
    ngx_chain_t          *cl, **ll;
    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    r = ctx->request;
    u = r->upstream;
    b = &u->buffer;

    p = b->last;
    b->last += bytes;

    if (ctx->stream_closed) {
        return NGX_OK;
    }

    if (ctx->mode == NGX_HTTP_MG_BODY_WHOLE) {

        /* the body read whole, or one read of a close-delimited one */

        for (cl = u->out_bufs, ll = &u->out_bufs; cl; cl = cl->next) {
            ll = &cl->next;
        }

        cl = ngx_chain_get_free_buf(r->pool, &u->free_bufs);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        *ll = cl;

        cl->buf->flush = 1;
        cl->buf->memory = 1;
        cl->buf->pos = p;
        cl->buf->last = p + bytes;
        cl->buf->tag = u->output.tag;

        if (ctx->whole == NULL) {
            return NGX_OK;
        }

        if (ctx->store_pending && bytes > 0) {

            /*
             * the last byte waits until the id of what this response
             * created is recorded: a client that follows up as soon as
             * it has the whole answer finds it
             */

            ctx->held = ngx_create_temp_buf(r->pool, 1);
            if (ctx->held == NULL) {
                return NGX_ERROR;
            }

            *ctx->held->last++ = p[bytes - 1];
            ctx->held->flush = 1;
            cl->buf->last--;

            if (bytes == 1) {

                /* nothing left to send now: no empty buffer in the chain */

                *ll = NULL;
                cl->next = u->free_bufs;
                u->free_bufs = cl;
            }

            return NGX_OK;
        }

        u->length = 0;

        return NGX_OK;
    }

    ngx_memzero(&view, sizeof(ngx_buf_t));
    view.pos = p;
    view.last = p + bytes;

    ctx->out = NULL;
    ctx->out_buf = NULL;

    rc = ngx_http_model_gateway_unframe(r, ctx, &view,
                                        ngx_http_model_gateway_stream_event);

    if (rc == NGX_HTTP_MG_BAD_FRAMING) {
        ngx_str_set(&ctx->stream_error,
                    "the backend sent an invalid chunked stream");
    }

    if (rc == 2) {
        return NGX_ERROR;
    }

    if (rc == MG_SSE_ETOOBIG) {
        ngx_str_set(&ctx->stream_error, "the backend sent a stream event "
                    "larger than model_gateway_event_max_size");
    }

    if (rc == 0 && ctx->framing_done
        && ngx_http_model_gateway_translate_finish(ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (rc != 0 || ctx->framing_done) {

        if (rc == 0 && view.pos == view.last && !ctx->upstream_close
            && ngx_http_model_gateway_pending(ctx) == 0)
        {
            ctx->keepalive = 1;
        }

        if (rc != 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: stream from backend \"%V\" cut: "
                          "%V", &ctx->target->backend->name,
                          &ctx->stream_error);
            ctx->stream_closed = 1;
        }

        if (rc == 0 && ctx->store_pending) {

            /* the end waits for the response id to be recorded */
            ctx->finish_pending = 1;

        } else {
            u->length = 0;
        }
    }

    if (ctx->out == NULL) {
        return NGX_OK;
    }

    for (cl = u->out_bufs, ll = &u->out_bufs; cl; cl = cl->next) {
        ll = &cl->next;
    }

    *ll = ctx->out;

    if (u->length == 0 && ctx->done_seen && r == r->main && !r->post_action)
    {
        /*
         * the stream is complete and needs no tail: its last events and
         * the end of the response (the last chunk) leave in one write
         * instead of two; the body filter drops the empty last buffer
         * nginx sends after
         */

        for (cl = ctx->out; cl->next; cl = cl->next) { /* void */ }

        cl->buf->last_buf = 1;
        ctx->last_sent = 1;
    }

    return NGX_OK;
}


static int
ngx_http_model_gateway_stream_event(void *data, const mg_sse_event_t *ev)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ctx->on_event(ctx, ev) != NGX_OK) {
        return 2;
    }

    return 0;
}


/* the per-event hook of OpenAI and OpenAI-compatible backends */

static ngx_int_t
ngx_http_model_gateway_openai_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    if (ev->data) {
        if (mg_sse_is_done(ev)) {
            ctx->done_seen = 1;

        } else if (mg_sse_is_error(ev)) {
            ctx->error_seen = 1;
        }
    }

    return ngx_http_model_gateway_emit(ctx, (u_char *) ev->raw, ev->raw_len);
}


/*
 * Appends bytes to this read's output.  Buffers are recycled through the
 * upstream's free list once the client took them, so a long stream needs
 * only as much memory as is in flight to the client.
 */

ngx_int_t
ngx_http_model_gateway_emit(ngx_http_model_gateway_ctx_t *ctx,
    const u_char *data, size_t len)
{
    size_t                size;
    ngx_buf_t            *b;
    ngx_chain_t          *cl, **ll;
    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    if (len == 0) {

        /* an empty buffer would upset nginx's write filter */
        return NGX_OK;
    }

    b = ctx->out_buf;

    if (b && (size_t) (b->end - b->last) >= len) {
        b->last = ngx_cpymem(b->last, data, len);
        return NGX_OK;
    }

    r = ctx->request;
    u = r->upstream;

    cl = ngx_chain_get_free_buf(r->pool, &u->free_bufs);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;

    if (b->start == NULL || b->memory || (size_t) (b->end - b->start) < len)
    {
        size = ngx_max(len, NGX_HTTP_MG_OUT_CHUNK);

        b->start = ngx_palloc(r->pool, size);
        if (b->start == NULL) {
            return NGX_ERROR;
        }

        b->end = b->start + size;
    }

    b->pos = b->start;
    b->last = ngx_cpymem(b->start, data, len);
    b->temporary = 1;
    b->memory = 0;
    b->flush = 1;
    b->last_buf = 0;
    b->tag = u->output.tag;

    ctx->out_buf = b;

    for (ll = &ctx->out; *ll; ll = &(*ll)->next) { /* void */ }

    *ll = cl;

    return NGX_OK;
}


static void
ngx_http_model_gateway_stream_read_handler(ngx_http_request_t *r,
    ngx_http_upstream_t *u)
{
    ngx_connection_t              *c;
    ngx_http_model_gateway_ctx_t  *ctx;

    c = u->peer.connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    if (c->read->timedout && !ctx->stream_closed) {
        c->read->timedout = 0;

        if (ctx->stream_error.len == 0) {
            ngx_str_set(&ctx->stream_error,
                        "the backend sent nothing within the idle timeout");
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: stream from backend \"%V\" cut: %V",
                      &ctx->target->backend->name, &ctx->stream_error);

        /* end the response cleanly: no more reading, then finalize */

        ctx->stream_closed = 1;
        c->read->ready = 0;
        u->length = 0;

    } else if (c->read->timedout) {
        c->read->timedout = 0;
    }

    ctx->read_handler(r, u);
}


#define NGX_HTTP_MG_RESP_ERROR_HEAD                                         \
    "event: error\ndata: {\"type\":\"error\","                              \
    "\"code\":\"stream_interrupted\",\"message\":\""
#define NGX_HTTP_MG_RESP_ERROR_TAIL  "\",\"param\":null}\n\n"


/*
 * A stream that did not end with "data: [DONE]" gets an error event (when
 * it was cut short) and the terminator, so clients see a proper ending.
 */

static ngx_int_t
ngx_http_model_gateway_stream_tail(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char       *p, *last;
    size_t        n;
    ngx_buf_t    *b;
    ngx_chain_t   out;
    ngx_uint_t    cut, responses;

    responses = (ctx->endpoint == MG_EP_RESPONSES
                 || ctx->endpoint == MG_EP_RESPONSE);

    cut = !ctx->error_seen
          && (!ctx->framing_done || ctx->stream_closed
              || ngx_http_model_gateway_pending(ctx));

    if (!cut && responses) {

        /* a Responses stream ends with its own events, no "[DONE]" */
        return NGX_OK;
    }

    n = 0;

    if (cut) {
        if (ctx->stream_error.len == 0) {
            ngx_str_set(&ctx->stream_error,
                        "the backend closed the stream before it ended");

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: stream from backend \"%V\" cut: "
                          "%V", &ctx->target->backend->name,
                          &ctx->stream_error);
        }

        /* the error event is sized to fit: cut short, it is not JSON */

        n = responses
            ? sizeof(NGX_HTTP_MG_RESP_ERROR_HEAD NGX_HTTP_MG_RESP_ERROR_TAIL)
              + mg_json_escape(NULL, 0, (char *) ctx->stream_error.data,
                               ctx->stream_error.len)
            : sizeof("data: \n\n")
              + mg_error_json(NULL, 0, (char *) ctx->stream_error.data,
                              "server_error", NULL, "stream_interrupted");
    }

    b = ngx_create_temp_buf(r->pool, n + sizeof("data: [DONE]\n\n"));
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = b->pos;
    last = b->end;

    if (cut && responses) {
        p = ngx_cpymem(p, NGX_HTTP_MG_RESP_ERROR_HEAD,
                       sizeof(NGX_HTTP_MG_RESP_ERROR_HEAD) - 1);
        p += mg_json_escape((char *) p, last - p,
                            (char *) ctx->stream_error.data,
                            ctx->stream_error.len);
        p = ngx_cpymem(p, NGX_HTTP_MG_RESP_ERROR_TAIL,
                       sizeof(NGX_HTTP_MG_RESP_ERROR_TAIL) - 1);

    } else if (cut) {
        p = ngx_cpymem(p, "data: ", 6);
        p += mg_error_json((char *) p, last - p,
                           (char *) ctx->stream_error.data,
                           "server_error", NULL, "stream_interrupted");
        *p++ = '\n'; *p++ = '\n';
    }

    if (!responses) {
        p = ngx_cpymem(p, "data: [DONE]\n\n", sizeof("data: [DONE]\n\n") - 1);
    }

    b->last = p;
    b->flush = 1;

    out.buf = b;
    out.next = NULL;

    ctx->done_seen = 1;

    return ngx_http_output_filter(r, &out);
}


static void
ngx_http_model_gateway_abort_request(ngx_http_request_t *r)
{
    return;
}


static void
ngx_http_model_gateway_finalize_request(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_chain_t                    out;
    ngx_http_upstream_t           *u;
    ngx_http_model_gateway_ctx_t  *ctx;

    u = r->upstream;
    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    if (ctx->total_timer.timer_set) {
        ngx_del_timer(&ctx->total_timer);
    }

    if (!ctx->committed) {
        ngx_http_model_gateway_session_failed(r, ctx);
    }

    if (ctx->held && u->header_sent && !r->connection->error) {

        /* the backend went away first: never leave the body short */

        out.buf = ctx->held;
        out.next = NULL;
        ctx->held = NULL;

        (void) ngx_http_output_filter(r, &out);
    }

    if (rc == 0 && ctx->framing == NGX_HTTP_MG_FRAME_CLOSE
        && !ctx->stream_closed)
    {
        /* a stream without length or chunks ends with its connection */
        ctx->framing_done = 1;
    }

    if (u->header_sent && ctx->mode == NGX_HTTP_MG_BODY_STREAM
        && !ctx->done_seen && !r->connection->error
        && rc != NGX_HTTP_CLIENT_CLOSED_REQUEST)
    {
        if (rc != 0 && ctx->stream_error.len == 0) {
            ngx_str_set(&ctx->stream_error,
                        "the connection to the backend failed");
        }

        (void) ngx_http_model_gateway_stream_tail(r, ctx);
    }
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

    } else if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {
        ngx_str_set(&ctx->stream_error,
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


/* per-worker caches of idle backend connections */

ngx_int_t
ngx_http_model_gateway_keepalive_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                          i, j;
    ngx_http_model_gateway_cached_t    *items;
    ngx_http_model_gateway_backend_t  **b;

    b = mcf->backends.elts;

    for (i = 0; i < mcf->backends.nelts; i++) {
        ngx_queue_init(&b[i]->cache);
        ngx_queue_init(&b[i]->free);

        if (b[i]->keepalive == 0) {
            continue;
        }

        items = ngx_pcalloc(cycle->pool, b[i]->keepalive
                                  * sizeof(ngx_http_model_gateway_cached_t));
        if (items == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < b[i]->keepalive; j++) {
            items[j].backend = b[i];
            ngx_queue_insert_head(&b[i]->free, &items[j].queue);
        }
    }

    return NGX_OK;
}


static void
ngx_http_model_gateway_keepalive_save(ngx_peer_connection_t *pc,
    ngx_http_model_gateway_backend_t *b)
{
    ngx_msec_t                        age, timeout;
    ngx_queue_t                      *q;
    ngx_connection_t                 *c;
    ngx_http_model_gateway_cached_t  *item;

    c = pc->connection;

    if (b->keepalive == 0
        || c->read->eof || c->read->error || c->read->timedout
        || c->write->error || c->write->timedout
        || ngx_terminate || ngx_exiting)
    {
        return;
    }

    /*
     * a connection is retired, as nginx's upstream keepalive_requests and
     * keepalive_time do, so that no connection lives forever: a backend
     * behind a load balancer gets to rebalance and to drain old servers.
     * c->requests is counted by ngx_http_upstream_connect() and
     * c->start_time set by ngx_event_connect_peer().
     */

    age = ngx_current_msec - c->start_time;

    if (c->requests >= b->keepalive_requests || age >= b->keepalive_time) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "model gateway: keepalive connection retired after "
                       "%ui requests and %M ms to backend \"%V\"",
                       c->requests, age, &b->name);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return;
    }

    if (ngx_queue_empty(&b->free)) {

        /* full: the least recently used connection makes room */

        q = ngx_queue_last(&b->cache);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_model_gateway_cached_t, queue);
        ngx_http_model_gateway_close(item->connection);

    } else {
        q = ngx_queue_head(&b->free);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_model_gateway_cached_t, queue);
    }

    ngx_queue_insert_head(&b->cache, q);

    item->connection = c;
    item->socklen = pc->socklen;
    ngx_memcpy(&item->sockaddr, pc->sockaddr, pc->socklen);

    pc->connection = NULL;

    c->read->delayed = 0;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /* an idle connection is closed when it reaches keepalive_time */

    timeout = b->keepalive_time - age;

    if (timeout > b->keepalive_timeout) {
        timeout = b->keepalive_timeout;
    }

    ngx_add_timer(c->read, timeout);

    c->write->handler = ngx_http_model_gateway_keepalive_dummy_handler;
    c->read->handler = ngx_http_model_gateway_keepalive_close_handler;

    c->data = item;
    c->idle = 1;
    c->log = ngx_cycle->log;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->pool->log = ngx_cycle->log;

    if (c->read->ready) {
        ngx_http_model_gateway_keepalive_close_handler(c->read);
    }
}


static void
ngx_http_model_gateway_keepalive_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "model gateway: keepalive dummy handler");
}


static void
ngx_http_model_gateway_keepalive_close_handler(ngx_event_t *ev)
{
    int                                n;
    char                               buf[1];
    ngx_connection_t                  *c;
    ngx_http_model_gateway_cached_t   *item;
    ngx_http_model_gateway_backend_t  *b;

    c = ev->data;

    if (c->close || c->read->timedout) {
        goto close;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
        ev->ready = 0;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            goto close;
        }

        return;
    }

close:

    item = c->data;
    b = item->backend;

    ngx_http_model_gateway_close(c);

    ngx_queue_remove(&item->queue);
    ngx_queue_insert_head(&b->free, &item->queue);
}


static void
ngx_http_model_gateway_close(ngx_connection_t *c)
{
#if (NGX_HTTP_SSL)

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_model_gateway_close;
            return;
        }
    }

#endif

    ngx_destroy_pool(c->pool);
    ngx_close_connection(c);
}
