
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, the answer side: the chat completion a backend
 * answered (translated to OpenAI's shape already, whatever its provider)
 * becomes the Responses object, or its chat stream the Responses events;
 * then the turn's items are written to Redis (one script, MWRITE), and
 * the answer's end waits for that write, as a stored id does in
 * _state.c: a client that follows up as soon as it has the answer finds
 * the response.  A write that fails leaves the answer as it is (it has
 * been paid for): the error is logged, and the response id is unknown to
 * follow-ups.
 */


#include "ngx_http_model_gateway_memory.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>


static ngx_int_t ngx_http_model_gateway_memory_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_memory_opts(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_resp_answer_opts_t *o);
static ngx_int_t ngx_http_model_gateway_memory_whole(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_resp_answer_opts_t *o);
static int ngx_http_model_gateway_memory_convert(
    ngx_http_model_gateway_memory_t *m, char *p, size_t len,
    mg_resp_answer_opts_t *o, mg_xerror_t *err);
static ngx_int_t ngx_http_model_gateway_memory_event(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);
static ngx_int_t ngx_http_model_gateway_memory_chunk(
    ngx_http_model_gateway_ctx_t *ctx, const char *data, size_t len);
static ngx_int_t ngx_http_model_gateway_memory_end(
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_memory_pass(
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_memory_write(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static void ngx_http_model_gateway_memory_written(void *data,
    redisReply *reply, ngx_int_t rc);


static ngx_http_model_gateway_event_pt  ngx_http_model_gateway_memory_next;


ngx_int_t
ngx_http_model_gateway_memory_answer_init(ngx_conf_t *cf)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (ngx_http_model_gateway_commit_add(cf,
                                          ngx_http_model_gateway_memory_commit)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* below translation: the link sees chat chunks, whatever the provider */

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    ngx_http_model_gateway_memory_next = mcf->event_filter;
    mcf->event_filter = ngx_http_model_gateway_memory_event;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_memory_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    mg_xerror_t                       err;
    mg_resp_answer_opts_t             o;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (m == NULL || ctx->stream.passthrough
        || ctx->attempt.status.code < 200 || ctx->attempt.status.code >= 300)
    {
        return NGX_OK;
    }

    if (ngx_http_model_gateway_memory_opts(r, ctx, &o) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->attempt.mode != NGX_HTTP_MG_BODY_STREAM) {
        return ngx_http_model_gateway_memory_whole(r, ctx, &o);
    }

    m->st = calloc(1, sizeof(mg_resp_stream_t));
    if (m->st == NULL) {
        return NGX_ERROR;
    }

    if (mg_resp_stream_init(m->st, &o, &err) != MG_X_OK) {
        mg_resp_stream_free(m->st);
        free(m->st);
        m->st = NULL;
        return NGX_ERROR;
    }

    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    return NGX_OK;
}


/* what a response object is made of: its id, model, time and echo */

static ngx_int_t
ngx_http_model_gateway_memory_opts(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_resp_answer_opts_t *o)
{
    u_char                           *id, *model;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    id = ngx_pnalloc(r->pool, m->id.len + 1);
    model = ngx_pnalloc(r->pool, ctx->model.len + 1);
    if (id == NULL || model == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_cpystrn(id, m->id.data, m->id.len + 1);
    (void) ngx_cpystrn(model, ctx->model.data, ctx->model.len + 1);

    ngx_memzero(o, sizeof(mg_resp_answer_opts_t));

    o->id = (char *) id;
    o->model = (char *) model;
    o->created_at = m->created_at;
    o->echo = m->echo.data;
    o->echo_len = m->echo.len;
    o->item_id = ngx_http_model_gateway_memory_item_id;

    /* what the answer's provider-only state is kept for */

    o->origin = (char *) ngx_http_model_gateway_memory_origin(r->pool,
                                                              ctx->target);
    if (o->origin == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a chat completion read whole: the response object instead */

static ngx_int_t
ngx_http_model_gateway_memory_whole(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_resp_answer_opts_t *o)
{
    int                               rc;
    size_t                            len;
    ngx_buf_t                        *b;
    mg_xerror_t                       err;
    ngx_http_upstream_t              *u;
    ngx_http_model_gateway_memory_t  *m;

    u = r->upstream;
    m = ctx->memory;

    if (ctx->attempt.whole == NULL) {

        /* an answer without a length ends with its connection: unread */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: backend \"%V\" answered without a "
                      "length, which gateway-held Responses cannot convert",
                      &ctx->target->backend->name);
        return NGX_ERROR;
    }

    ngx_memzero(&err, sizeof(mg_xerror_t));

    rc = ngx_http_model_gateway_memory_convert(m,
                        (char *) ctx->attempt.whole->pos,
                        ctx->attempt.whole->last - ctx->attempt.whole->pos,
                        o, &err);

    if (rc == MG_X_NOMEM) {
        return NGX_ERROR;
    }

    if (rc == MG_X_OK) {
        b = ngx_create_temp_buf(r->pool, m->object.len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_cpymem(b->pos, m->object.data, m->object.len);

    } else {
        len = mg_error_json(NULL, 0, err.message, err.type, err.param,
                            err.code);

        b = ngx_create_temp_buf(r->pool, len + 1);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last += mg_error_json((char *) b->pos, len + 1, err.message,
                                 err.type, err.param, err.code);

        u->headers_in.status_n = err.status;
        ctx->stream.passthrough = 1;
    }

    ctx->attempt.whole = b;

    u->buffer.start = b->start;
    u->buffer.pos = b->pos;
    u->buffer.last = b->last;
    u->buffer.end = b->end;
    u->headers_in.content_length_n = b->last - b->pos;

    if (rc == MG_X_OK && m->store) {
        return ngx_http_model_gateway_memory_write(r, ctx);
    }

    return NGX_OK;
}


/*
 * The chat completion -> the response object (m->object) and its output
 * items (m->items).  Its long texts are set aside first and put back
 * still escaped (mg_x_shrink(), as the translators do): decoding and
 * encoding them is most of the work.
 */

static int
ngx_http_model_gateway_memory_convert(ngx_http_model_gateway_memory_t *m,
    char *p, size_t len, mg_resp_answer_opts_t *o, mg_xerror_t *err)
{
    int            rc;
    mg_buf_t       obj, items;
    mg_x_shrink_t  s;

    ngx_memzero(&s, sizeof(mg_x_shrink_t));

    if (mg_json_scan(p, len, NULL, 0, 64, NULL) == MG_JSON_OK
        && mg_x_shrink(p, len, 128, &s) != MG_X_OK)
    {
        mg_x_shrink_free(&s);
        return MG_X_NOMEM;
    }

    if (s.n) {
        ngx_memzero(&obj, sizeof(mg_buf_t));
        ngx_memzero(&items, sizeof(mg_buf_t));

        rc = mg_resp_answer(s.body.data, s.body.len, o, &obj, &items, err);

        if (rc == MG_X_OK) {
            rc = mg_x_expand(&s, p, obj.data, obj.len, &m->object);
        }

        if (rc == MG_X_OK) {
            rc = mg_x_expand(&s, p, items.data, items.len, &m->items);
        }

        mg_buf_free(&obj);
        mg_buf_free(&items);
        mg_x_shrink_free(&s);

        if (rc != MG_X_ERROR) {
            return rc;
        }

        mg_buf_reset(&m->object);
        mg_buf_reset(&m->items);
    }

    mg_x_shrink_free(&s);

    return mg_resp_answer(p, len, o, &m->object, &m->items, err);
}


/*
 * The event chain's link of gateway-held streams: chat chunks in,
 * Responses events out.  A chunk of an OpenAI-type backend is an event
 * of its own; a translated backend's come as the bytes its translator
 * wrote, "data: CHUNK\n\n" each.
 */

static ngx_int_t
ngx_http_model_gateway_memory_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    const char                       *p, *end, *q;
    ngx_int_t                         rc;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (m == NULL || m->st == NULL) {
        return ngx_http_model_gateway_memory_next(ctx, ev);
    }

    if (ev->data) {
        return ngx_http_model_gateway_memory_chunk(ctx, ev->data,
                                                   ev->data_len);
    }

    p = ev->raw;
    end = p + ev->raw_len;

    while (p < end) {
        q = (const char *) ngx_strlcasestrn((u_char *) p, (u_char *) end,
                                            (u_char *) "\n\n", 2 - 1);
        if (q == NULL) {
            q = end;
        }

        if (q - p > 6 && ngx_strncmp(p, "data: ", 6) == 0) {
            rc = ngx_http_model_gateway_memory_chunk(ctx, p + 6, q - p - 6);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        p = q + 2;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_memory_chunk(ngx_http_model_gateway_ctx_t *ctx,
    const char *data, size_t len)
{
    int                               rc;
    json_t                           *chunk;
    mg_xerror_t                       err;
    json_error_t                      jerr;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (m->ended) {
        return NGX_OK;
    }

    if (len == 6 && ngx_strncmp(data, "[DONE]", 6) == 0) {
        return ngx_http_model_gateway_memory_end(ctx);
    }

    mg_buf_reset(&m->out);
    ngx_memzero(&err, sizeof(mg_xerror_t));

    chunk = json_loadb(data, len, 0, &jerr);

    if (chunk == NULL) {
        mg_xerror_set(&err, 502, 0, "server_error", NULL, NULL,
                      "The backend sent a stream event that is not JSON.");
        rc = MG_X_ERROR;

    } else {
        rc = mg_resp_stream_chunk(m->st, chunk, &m->out, &err);
        json_decref(chunk);
    }

    if (rc == MG_X_NOMEM) {
        return NGX_ERROR;
    }

    if (rc == MG_X_ERROR) {

        /* a failed stream ends with response.failed and is not stored */

        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "model gateway: stream from backend \"%V\" failed: %s",
                      &ctx->target->backend->name, err.message);

        if (mg_resp_stream_fail(m->st, err.message, &m->out, &err)
            == MG_X_NOMEM)
        {
            return NGX_ERROR;
        }

        m->ended = 1;
        ctx->stream.done_seen = 1;
    }

    return ngx_http_model_gateway_memory_pass(ctx);
}


/* the chat stream's end: the final events, held until the turn is stored */

static ngx_int_t
ngx_http_model_gateway_memory_end(ngx_http_model_gateway_ctx_t *ctx)
{
    int                               rc;
    ngx_buf_t                        *b;
    mg_xerror_t                       err;
    ngx_http_request_t               *r;
    ngx_http_model_gateway_memory_t  *m;

    r = ctx->request;
    m = ctx->memory;

    mg_buf_reset(&m->out);

    rc = mg_resp_stream_end(m->st, &m->out, &m->items, &err);

    if (rc == MG_X_NOMEM) {
        return NGX_ERROR;
    }

    m->ended = 1;
    ctx->stream.done_seen = 1;

    if (rc != MG_X_DONE) {
        (void) mg_resp_stream_fail(m->st, err.message, &m->out, &err);
        return ngx_http_model_gateway_memory_pass(ctx);
    }

    if (!m->store) {
        return ngx_http_model_gateway_memory_pass(ctx);
    }

    if (mg_resp_stream_object(m->st, &m->object) != MG_X_OK
        || ngx_http_model_gateway_memory_write(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ctx->state.store_pending) {

        /* not written (logged): the answer goes out all the same */

        return ngx_http_model_gateway_memory_pass(ctx);
    }

    b = ngx_create_temp_buf(r->pool, m->out.len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->pos, m->out.data, m->out.len);
    b->flush = 1;

    ctx->state.held = b;

    return NGX_OK;
}


/* the events made, down the rest of the chain */

static ngx_int_t
ngx_http_model_gateway_memory_pass(ngx_http_model_gateway_ctx_t *ctx)
{
    mg_sse_event_t                    ev;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (m->out.len == 0) {
        return NGX_OK;
    }

    ngx_memzero(&ev, sizeof(mg_sse_event_t));

    ev.raw = m->out.data;
    ev.raw_len = m->out.len;

    return ngx_http_model_gateway_memory_next(ctx, &ev);
}


/*
 * The backend's stream ended cleanly without "data: [DONE]" (some
 * OpenAI-compatible servers leave it out): the end all the same, as a
 * chat stream gets its "[DONE]" then.  Called by the input filter, so
 * that the final events wait for the write as they would.
 */

ngx_int_t
ngx_http_model_gateway_memory_finish(ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (m == NULL || m->st == NULL || m->ended) {
        return NGX_OK;
    }

    return ngx_http_model_gateway_memory_end(ctx);
}


/*
 * A stream cut short (the backend gone, stalled, out of time): it ends
 * with response.failed, and nothing is stored.  NGX_DECLINED when the
 * request is not a gateway-held stream.
 */

ngx_int_t
ngx_http_model_gateway_memory_tail(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_buf_t                        *b;
    ngx_chain_t                       out;
    mg_xerror_t                       err;
    ngx_http_model_gateway_memory_t  *m;
    char                              msg[256];

    m = ctx->memory;

    if (m == NULL || m->st == NULL) {
        return NGX_DECLINED;
    }

    ctx->stream.done_seen = 1;

    if (m->ended) {
        return NGX_OK;
    }

    m->ended = 1;

    (void) ngx_cpystrn((u_char *) msg, ctx->stream.error.data,
                       ngx_min(ctx->stream.error.len + 1, sizeof(msg)));

    mg_buf_reset(&m->out);

    if (mg_resp_stream_fail(m->st, ctx->stream.error.len ? msg : NULL,
                            &m->out, &err)
        != MG_X_DONE
        || m->out.len == 0)
    {
        return NGX_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, m->out.len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->pos, m->out.data, m->out.len);
    b->flush = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * MWRITE: the turn's input and output items, and the response.  On
 * success ctx->state.store_pending is set, and the answer's end waits.
 */

static ngx_int_t
ngx_http_model_gateway_memory_write(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                              *p;
    size_t                               ninput, nitems;
    ngx_str_t                            kind, none, list, args[12];
    mg_buf_t                             lines;
    ngx_http_mg_redis_cmd_t             *cmd;
    ngx_http_model_gateway_memory_t     *m;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               ttl[NGX_INT64_LEN];
    u_char                               lttl[NGX_INT64_LEN];
    u_char                               nin[NGX_SIZE_T_LEN];
    u_char                               rnd[NGX_HTTP_MG_MEMORY_ID_BYTES];
    u_char                               lid[2 * NGX_HTTP_MG_MEMORY_ID_BYTES];

    m = ctx->memory;
    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    ngx_memzero(&lines, sizeof(mg_buf_t));

    /* both arrays are jansson's compact JSON, their items with ids */

    if (mg_mem_lines(m->input.data, m->input.len, &lines, &ninput)
        != MG_X_OK
        || mg_mem_lines(m->items.data, m->items.len, &lines, &nitems)
           != MG_X_OK)
    {
        mg_buf_free(&lines);
        return NGX_ERROR;
    }

    if (lines.len + m->object.len > ctx->lcf->history_max_bytes) {
        mg_buf_free(&lines);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "model gateway: \"%V\" not stored: the turn is larger "
                      "than model_gateway_history_max_bytes, follow-ups will "
                      "not find it", &m->id);
        return NGX_OK;
    }

    ngx_str_set(&kind, "r:");

    if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &m->id, &args[0])
        != NGX_OK)
    {
        mg_buf_free(&lines);
        return NGX_ERROR;
    }

    if (m->lists.len == 0) {
        ngx_str_set(&kind, "l:");
        ngx_str_null(&none);

        if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &none,
                                               &m->lists)
            != NGX_OK)
        {
            mg_buf_free(&lines);
            return NGX_ERROR;
        }
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        mg_buf_free(&lines);
        return NGX_ERROR;
    }

    list.data = lid;
    list.len = ngx_hex_dump(lid, rnd, sizeof(rnd)) - lid;

    args[1] = m->lists;
    args[2] = m->parent_list;
    args[3] = m->parent_end;
    args[4] = list;

    p = ngx_sprintf(ttl, "%M", mcf->response_ttl);
    args[5].data = ttl;
    args[5].len = p - ttl;

    /* a conversation's list: appended to, kept as the conversation is */

    args[10] = m->conv_key;
    args[11] = args[5];

    if (m->conv.len) {
        ngx_str_null(&args[3]);

        p = ngx_sprintf(lttl, "%M", mcf->conversation_ttl);
        args[11].data = lttl;
        args[11].len = p - lttl;
    }

    p = ngx_sprintf(nin, "%uz", ninput);
    args[6].data = nin;
    args[6].len = p - nin;

    args[7].data = (u_char *) m->object.data;
    args[7].len = m->object.len;
    args[8] = ctx->target->backend->name;
    args[9].data = (u_char *) lines.data;
    args[9].len = lines.len;

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_MWRITE, 12, args,
                                   ngx_http_model_gateway_memory_written,
                                   ctx);

    /* the arguments are copied */

    mg_buf_free(&lines);

    if (cmd == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: could not store \"%V\": redis "
                      "unavailable, follow-ups will not find it", &m->id);
        return NGX_OK;
    }

    m->cmd = cmd;
    ctx->state.store_pending = 1;

    return NGX_OK;
}


static void
ngx_http_model_gateway_memory_written(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_http_request_t               *r;
    ngx_http_model_gateway_memory_t  *m;

    r = ctx->request;
    m = ctx->memory;

    m->cmd = NULL;
    ctx->state.store_pending = 0;

    ngx_http_model_gateway_metrics_state(r,
                                   (rc == NGX_OK
                                    && reply->type == REDIS_REPLY_INTEGER
                                    && reply->integer == 1)
                                   ? NGX_HTTP_MG_STATE_WRITE
                                   : NGX_HTTP_MG_STATE_WRITE_FAILED);

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: storing \"%V\" failed, follow-ups "
                      "will not find it", &m->id);

    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: storing \"%V\" failed: the chain of "
                      "\"%V%V\" is gone", &m->id, &m->prev, &m->conv);
    }

    ngx_http_model_gateway_state_release(ctx);
}
