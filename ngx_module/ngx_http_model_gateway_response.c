
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The response of one attempt up to the commit: status line and headers,
 * a body read whole, or a stream held until its first content event.  Any
 * failure found here can still go to another backend; the commit hands
 * the response to the client.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_upstream.h"
#include "ngx_http_model_gateway_providers.h"


static ngx_int_t ngx_http_model_gateway_header_line(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_headers_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_read_whole(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_read_held(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static int ngx_http_model_gateway_held_event(void *data,
    const mg_sse_event_t *ev);
static ngx_int_t ngx_http_model_gateway_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);


/* response headers passed to the client: the rest are the gateway's */

static ngx_str_t  ngx_http_model_gateway_pass_headers[] = {
    ngx_string("x-request-id"),
    ngx_string("openai-processing-ms"),
    ngx_string("openai-version"),
    ngx_null_string
};


ngx_int_t
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

    if (!ctx->attempt.received) {
        ctx->attempt.received = 1;
        ctx->first_byte_at = ngx_current_msec;
    }

    ngx_add_timer(u->peer.connection->read,
                  ctx->target->backend->idle_timeout);

    if (ctx->attempt.resp_state == NGX_HTTP_MG_RESP_STATUS) {

        rc = ngx_http_parse_status_line(r, b, &ctx->attempt.status);

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

        ctx->attempt.resp_state = NGX_HTTP_MG_RESP_HEADERS;
    }

    if (ctx->attempt.resp_state == NGX_HTTP_MG_RESP_HEADERS) {

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

        ctx->attempt.resp_state = NGX_HTTP_MG_RESP_BODY;
        ctx->attempt.body_start = b->pos;
        ctx->attempt.scanned = b->pos;

        if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_CLOSE
            && ctx->attempt.mode == NGX_HTTP_MG_BODY_WHOLE)
        {
            /*
             * a body delimited by the connection's end cannot be known to
             * be complete before nginx sees that end, which it only passes
             * on after the header: an OpenAI-type response is sent as it
             * comes, but a provider's answer that must be translated
             * whole never reaches the client raw
             */

            if (ctx->target->backend->provider->translated) {
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

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {
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
        ctx->attempt.length = ngx_atoof(value.data, value.len);
        if (ctx->attempt.length < 0) {
            ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
        }

        return NGX_OK;
    }

    if (ngx_mg_hdr("transfer-encoding")) {
        if (ngx_strlcasestrn(value.data, value.data + value.len,
                             (u_char *) "chunked", 7 - 1)
            != NULL)
        {
            ctx->attempt.framing = NGX_HTTP_MG_FRAME_CHUNKED;
        }

        return NGX_OK;
    }

    if (ngx_mg_hdr("connection")) {
        if (ngx_strlcasestrn(value.data, value.data + value.len,
                             (u_char *) "close", 5 - 1)
            != NULL)
        {
            ctx->attempt.upstream_close = 1;
        }

        return NGX_OK;
    }

    if (ngx_mg_hdr("content-type")) {
        ctx->attempt.content_type.data = ngx_pstrdup(r->pool, &value);
        if (ctx->attempt.content_type.data == NULL) {
            return NGX_ERROR;
        }

        ctx->attempt.content_type.len = value.len;
        return NGX_OK;
    }

    if (ngx_mg_hdr("x-amzn-errortype")) {

        /* Bedrock names its exception here */

        ctx->attempt.errortype.data = ngx_pstrdup(r->pool, &value);
        if (ctx->attempt.errortype.data == NULL) {
            return NGX_ERROR;
        }

        ctx->attempt.errortype.len = value.len;
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

    if (len > 12 && ngx_strncmp(name, "x-ratelimit-", 12) == 0) {

        /*
         * the operator's own account limits: with identity on, clients
         * get the gateway's limits instead (_limits.c)
         */

        if (ctx->lcf->auth) {
            return NGX_OK;
        }

    } else {

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

    status = ctx->attempt.status.code;
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
        ctx->attempt.fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        ctx->fail = NGX_HTTP_MG_FAIL_RATE_LIMITED;
        ctx->attempt.fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (mg_status_retryable((int) status)) {
        ctx->fail = NGX_HTTP_MG_FAIL_STATUS;
        ctx->attempt.fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status < 200) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" sent unexpected "
                      "status %ui", &b->name, status);
        ctx->fail = NGX_HTTP_MG_FAIL_INVALID;
        ctx->attempt.fail_status = status;
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    if (status == NGX_HTTP_NO_CONTENT || status == NGX_HTTP_NOT_MODIFIED) {
        ctx->attempt.framing = NGX_HTTP_MG_FRAME_LENGTH;
        ctx->attempt.length = 0;

    } else if (ctx->attempt.framing != NGX_HTTP_MG_FRAME_CHUNKED
               && ctx->attempt.length >= 0)
    {
        ctx->attempt.framing = NGX_HTTP_MG_FRAME_LENGTH;
    }

    ctx->content_length = ctx->attempt.length;

    /* a provider's stream may be a binary AWS event stream, or SSE */

    ctx->attempt.eventstream = (b->provider->eventstream
                        && ctx->attempt.content_type.len >= 34
                        && ngx_strncasecmp(ctx->attempt.content_type.data,
                               (u_char *) "application/vnd.amazon.eventstream",
                               34) == 0);

    if (status >= 200 && status < 300 && ctx->streaming
        && (ctx->attempt.eventstream
            || (ctx->attempt.content_type.len >= 17
                && ngx_strncasecmp(ctx->attempt.content_type.data,
                                   (u_char *) "text/event-stream", 17)
                   == 0)))
    {
        ctx->attempt.mode = NGX_HTTP_MG_BODY_STREAM;

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

    ctx->attempt.mode = NGX_HTTP_MG_BODY_WHOLE;

    if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_CLOSE) {
        return NGX_OK;
    }

    if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_LENGTH) {
        if (ctx->attempt.length > (off_t) ctx->lcf->response_max_size) {
            goto too_big;
        }

        size = (size_t) ctx->attempt.length;

    } else {
        size = ngx_min(NGX_HTTP_MG_OUT_CHUNK * 4, ctx->lcf->response_max_size);
    }

    ctx->attempt.whole = ngx_create_temp_buf(r->pool, size ? size : 1);
    if (ctx->attempt.whole == NULL) {
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

    b = ctx->attempt.whole;

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

        b->last = ngx_cpymem(b->pos, ctx->attempt.whole->pos, used);

        ngx_pfree(r->pool, ctx->attempt.whole->start);
        ctx->attempt.whole = b;
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

    while (b->pos < b->last && !ctx->attempt.framing_done) {

        if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_CHUNKED) {

            rc = ngx_http_parse_chunked(r, b, &ctx->attempt.chunked);

            if (rc == NGX_OK) {
                n = ngx_min((off_t) (b->last - b->pos),
                            ctx->attempt.chunked.size);

                rc = ngx_http_model_gateway_whole_append(r, ctx, b->pos, n);
                if (rc != NGX_OK) {
                    goto append_failed;
                }

                b->pos += n;
                ctx->attempt.chunked.size -= n;
                continue;
            }

            if (rc == NGX_DONE) {
                ctx->attempt.framing_done = 1;
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

        n = ngx_min((off_t) (b->last - b->pos), ctx->attempt.length);

        rc = ngx_http_model_gateway_whole_append(r, ctx, b->pos, n);
        if (rc != NGX_OK) {
            goto append_failed;
        }

        b->pos += n;
        ctx->attempt.length -= n;
    }

    if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_LENGTH
        && ctx->attempt.length == 0)
    {
        ctx->attempt.framing_done = 1;
    }

    if (!ctx->attempt.framing_done) {

        /* everything so far is copied: the buffer is free for more */

        b->pos = b->start;
        b->last = b->start;
        return NGX_AGAIN;
    }

    ctx->attempt.keepalive = (b->pos == b->last
                              && !ctx->attempt.upstream_close);

    /*
     * the complete body becomes the upstream buffer, so that nginx hands
     * it to the input filter right after the header
     */

    b->start = ctx->attempt.whole->start;
    b->pos = ctx->attempt.whole->pos;
    b->last = ctx->attempt.whole->last;
    b->end = ctx->attempt.whole->end;

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
    view.pos = ctx->attempt.scanned;
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

    ctx->attempt.scanned = view.pos;

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

    if (ctx->committed || ctx->attempt.framing_done) {
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

    const ngx_http_model_gateway_provider_t  *p;

    if (ev->data == NULL) {
        return 0;
    }

    p = ctx->target->backend->provider;

    if (mg_sse_is_error(ev)) {
        ctx->fail = p->stream_fail
                    ? p->stream_fail(ev, &ctx->attempt.fail_status)
                    : NGX_HTTP_MG_FAIL_STREAM_ERROR;
        return 1;
    }

    if (p->preamble && p->preamble(ev)) {
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
    ctx->stream.passthrough = (ctx->attempt.status.code >= 300);

    u->headers_in.status_n = ctx->attempt.status.code;

    if (ctx->target->backend->provider->translated
        && ngx_http_model_gateway_translate_commit(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {

        /* the held events go to the input filter, parsed afresh */

        u->buffer.pos = ctx->attempt.body_start;
        ngx_memzero(&ctx->attempt.chunked, sizeof(ngx_http_chunked_t));
        ngx_http_model_gateway_events_init(ctx);
        ctx->attempt.framing_done = 0;
        ctx->attempt.length = ctx->content_length;
        u->headers_in.content_length_n = -1;

    } else if (ctx->attempt.whole) {
        u->headers_in.content_length_n = ctx->attempt.whole->last
                                         - ctx->attempt.whole->pos;

    } else {
        u->headers_in.content_length_n = -1;
    }

    if (ctx->attempt.content_type.len) {
        r->headers_out.content_type = ctx->attempt.content_type;

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

    /* the commit phase: sessions, stored objects, what registered */

    if (ngx_http_model_gateway_run_commit(r, ctx) != NGX_OK) {
        return NGX_ERROR;
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

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {
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
