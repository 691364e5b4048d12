
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The response body on its way to the client: unframing (chunked, a
 * length, the connection's end), the SSE and AWS eventstream parsers, the
 * per-event hook, the output chain and the end of a stream.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_upstream.h"


static int ngx_http_model_gateway_feed(ngx_http_model_gateway_ctx_t *ctx,
    u_char *data, size_t len, mg_sse_handler_pt handler);
static int ngx_http_model_gateway_es_message(void *data,
    const mg_es_message_t *msg);
static size_t ngx_http_model_gateway_pending(
    ngx_http_model_gateway_ctx_t *ctx);
static int ngx_http_model_gateway_stream_event(void *data,
    const mg_sse_event_t *ev);
static void ngx_http_model_gateway_stream_read_handler(ngx_http_request_t *r,
    ngx_http_upstream_t *u);
static ngx_int_t ngx_http_model_gateway_stream_tail(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);


/*
 * Takes the body's framing off (chunked, a length, or the connection's
 * end) and feeds the payload to the SSE tokenizer, whose handler sees each
 * event.  Returns 0, the tokenizer's or the handler's nonzero result, or
 * NGX_HTTP_MG_BAD_FRAMING; view->pos tells how far it got.
 */

int
ngx_http_model_gateway_unframe(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_buf_t *view,
    mg_sse_handler_pt handler)
{
    int        rc;
    size_t     n;
    ngx_int_t  crc;

    rc = 0;

    while (view->pos < view->last && !ctx->attempt.framing_done && rc == 0) {

        if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_CHUNKED) {

            crc = ngx_http_parse_chunked(r, view, &ctx->attempt.chunked);

            if (crc == NGX_OK) {
                n = ngx_min((off_t) (view->last - view->pos),
                            ctx->attempt.chunked.size);

                rc = ngx_http_model_gateway_feed(ctx, view->pos, n, handler);

                view->pos += n;
                ctx->attempt.chunked.size -= n;
                continue;
            }

            if (crc == NGX_DONE) {
                ctx->attempt.framing_done = 1;
                break;
            }

            if (crc == NGX_AGAIN) {
                break;
            }

            return NGX_HTTP_MG_BAD_FRAMING;
        }

        n = view->last - view->pos;

        if (ctx->attempt.framing == NGX_HTTP_MG_FRAME_LENGTH) {
            n = ngx_min((off_t) n, ctx->attempt.length);
            ctx->attempt.length -= n;

            if (ctx->attempt.length == 0) {
                ctx->attempt.framing_done = 1;
            }
        }

        rc = ngx_http_model_gateway_feed(ctx, view->pos, n, handler);
        view->pos += n;
    }

    return rc;
}


/* the event parser of the current stream, empty */

void
ngx_http_model_gateway_events_init(ngx_http_model_gateway_ctx_t *ctx)
{
    size_t  size;

    size = ctx->lcf->event_max_size;

    if (ctx->attempt.eventstream) {
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

    if (!ctx->attempt.eventstream) {
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

            ngx_str_set(&ctx->stream.error,
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
    return ctx->attempt.eventstream ? mg_es_pending(&ctx->es)
                                    : mg_sse_pending(&ctx->sse);
}


ngx_int_t
ngx_http_model_gateway_input_filter_init(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    r = ctx->request;
    u = r->upstream;

    u->conf = &ctx->target->backend->body_conf;

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_WHOLE && ctx->attempt.whole) {
        u->length = (ctx->attempt.whole->last == ctx->attempt.whole->pos)
                    ? 0 : -1;
        return NGX_OK;
    }

    u->length = -1;

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {

        /*
         * a stream that stalls or runs out of time after content was sent
         * must still end as a stream: wrap nginx's handler to see the
         * timeout before nginx turns it into a dropped connection
         */

        ctx->stream.read_handler = u->read_event_handler;
        u->read_event_handler = ngx_http_model_gateway_stream_read_handler;
    }

    return NGX_OK;
}


ngx_int_t
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

    if (ctx->stream.closed) {
        return NGX_OK;
    }

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_WHOLE) {

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

        if (ngx_http_model_gateway_usage_body(ctx, p, bytes) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ctx->attempt.whole == NULL) {
            return NGX_OK;
        }

        if (ctx->state.store_pending && bytes > 0) {

            /*
             * the last byte waits until the id of what this response
             * created is recorded: a client that follows up as soon as
             * it has the whole answer finds it
             */

            ctx->state.held = ngx_create_temp_buf(r->pool, 1);
            if (ctx->state.held == NULL) {
                return NGX_ERROR;
            }

            *ctx->state.held->last++ = p[bytes - 1];
            ctx->state.held->flush = 1;
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

    ctx->stream.out = NULL;
    ctx->stream.out_buf = NULL;

    rc = ngx_http_model_gateway_unframe(r, ctx, &view,
                                        ngx_http_model_gateway_stream_event);

    if (rc == NGX_HTTP_MG_BAD_FRAMING) {
        ngx_str_set(&ctx->stream.error,
                    "the backend sent an invalid chunked stream");
    }

    if (rc == 2) {
        return NGX_ERROR;
    }

    if (rc == MG_SSE_ETOOBIG) {
        ngx_str_set(&ctx->stream.error, "the backend sent a stream event "
                    "larger than model_gateway_event_max_size");
    }

    if (rc == 0 && ctx->attempt.framing_done
        && (ngx_http_model_gateway_translate_finish(ctx) != NGX_OK
            || (!ctx->stream.closed
                && ngx_http_model_gateway_memory_finish(ctx) != NGX_OK)))
    {
        return NGX_ERROR;
    }

    if (rc != 0 || ctx->attempt.framing_done) {

        if (rc == 0 && view.pos == view.last && !ctx->attempt.upstream_close
            && ngx_http_model_gateway_pending(ctx) == 0)
        {
            ctx->attempt.keepalive = 1;
        }

        if (rc != 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: stream from backend \"%V\" cut: "
                          "%V", &ctx->target->backend->name,
                          &ctx->stream.error);
            ctx->stream.closed = 1;
        }

        if (rc == 0 && ctx->state.store_pending) {

            /* the end waits for the response id to be recorded */
            ctx->state.finish_pending = 1;

        } else {
            u->length = 0;
        }
    }

    if (ctx->stream.out == NULL) {
        return NGX_OK;
    }

    for (cl = u->out_bufs, ll = &u->out_bufs; cl; cl = cl->next) {
        ll = &cl->next;
    }

    *ll = ctx->stream.out;

    if (u->length == 0 && ctx->stream.done_seen && r == r->main
        && !r->post_action)
    {
        /*
         * the stream is complete and needs no tail: its last events and
         * the end of the response (the last chunk) leave in one write
         * instead of two; the body filter drops the empty last buffer
         * nginx sends after
         */

        for (cl = ctx->stream.out; cl->next; cl = cl->next) { /* void */ }

        cl->buf->last_buf = 1;
        ctx->stream.last_sent = 1;
    }

    return NGX_OK;
}


static int
ngx_http_model_gateway_stream_event(void *data, const mg_sse_event_t *ev)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_http_model_gateway_main_conf_t  *mcf;

    /* down the event chain, from its top */

    mcf = ngx_http_get_module_main_conf(ctx->request,
                                        ngx_http_model_gateway_module);

    if (mcf->event_filter(ctx, ev) != NGX_OK) {
        return 2;
    }

    return 0;
}


/*
 * The event chain's last link: an event's bytes as they are, noting the
 * end ("[DONE]") and an error event of an OpenAI-type stream.
 */

ngx_int_t
ngx_http_model_gateway_write_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    if (ev->data) {
        if (mg_sse_is_done(ev)) {
            ctx->stream.done_seen = 1;

        } else if (mg_sse_is_error(ev)) {
            ctx->stream.error_seen = 1;
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

    b = ctx->stream.out_buf;

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

    ctx->stream.out_buf = b;

    for (ll = &ctx->stream.out; *ll; ll = &(*ll)->next) { /* void */ }

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

    if (c->read->timedout && !ctx->stream.closed) {
        c->read->timedout = 0;

        if (ctx->stream.error.len == 0) {
            ngx_str_set(&ctx->stream.error,
                        "the backend sent nothing within the idle timeout");
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: stream from backend \"%V\" cut: %V",
                      &ctx->target->backend->name, &ctx->stream.error);

        /* end the response cleanly: no more reading, then finalize */

        ctx->stream.closed = 1;
        c->read->ready = 0;
        u->length = 0;

    } else if (c->read->timedout) {
        c->read->timedout = 0;
    }

    ctx->stream.read_handler(r, u);
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
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;
    ngx_uint_t    cut, responses;

    /* a gateway-held stream ends with its own response.failed */

    rc = ngx_http_model_gateway_memory_tail(r, ctx);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    responses = (ctx->endpoint == MG_EP_RESPONSES
                 || ctx->endpoint == MG_EP_RESPONSE);

    cut = !ctx->stream.error_seen
          && (!ctx->attempt.framing_done || ctx->stream.closed
              || ngx_http_model_gateway_pending(ctx));

    if (!cut && responses) {

        /* a Responses stream ends with its own events, no "[DONE]" */
        return NGX_OK;
    }

    n = 0;

    if (cut) {
        if (ctx->stream.error.len == 0) {
            ngx_str_set(&ctx->stream.error,
                        "the backend closed the stream before it ended");

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: stream from backend \"%V\" cut: "
                          "%V", &ctx->target->backend->name,
                          &ctx->stream.error);
        }

        /* the error event is sized to fit: cut short, it is not JSON */

        n = responses
            ? sizeof(NGX_HTTP_MG_RESP_ERROR_HEAD NGX_HTTP_MG_RESP_ERROR_TAIL)
              + mg_json_escape(NULL, 0, (char *) ctx->stream.error.data,
                               ctx->stream.error.len)
            : sizeof("data: \n\n")
              + mg_error_json(NULL, 0, (char *) ctx->stream.error.data,
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
                            (char *) ctx->stream.error.data,
                            ctx->stream.error.len);
        p = ngx_cpymem(p, NGX_HTTP_MG_RESP_ERROR_TAIL,
                       sizeof(NGX_HTTP_MG_RESP_ERROR_TAIL) - 1);

    } else if (cut) {
        p = ngx_cpymem(p, "data: ", 6);
        p += mg_error_json((char *) p, last - p,
                           (char *) ctx->stream.error.data,
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

    ctx->stream.done_seen = 1;

    return ngx_http_output_filter(r, &out);
}


void
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

    /* the done phase: outcome, attempts, timings */

    ngx_http_model_gateway_run_done(r, ctx, rc);

    if (ctx->state.held && u->header_sent && !r->connection->error) {

        /* the backend went away first: never leave the body short */

        out.buf = ctx->state.held;
        out.next = NULL;
        ctx->state.held = NULL;

        (void) ngx_http_output_filter(r, &out);
    }

    if (rc == 0 && ctx->attempt.framing == NGX_HTTP_MG_FRAME_CLOSE
        && !ctx->stream.closed)
    {
        /* a stream without length or chunks ends with its connection */
        ctx->attempt.framing_done = 1;
    }

    if (u->header_sent && ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM
        && !ctx->stream.done_seen && !r->connection->error
        && rc != NGX_HTTP_CLIENT_CLOSED_REQUEST)
    {
        if (rc != 0 && ctx->stream.error.len == 0) {
            ngx_str_set(&ctx->stream.error,
                        "the connection to the backend failed");
        }

        (void) ngx_http_model_gateway_stream_tail(r, ctx);
    }
}
