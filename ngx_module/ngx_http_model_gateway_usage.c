
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The tokens every answer used (ctx->usage), final before the done phase
 * runs, so that what reads them there (rate limits) sees every provider
 * counted the same way:
 *
 *   a body read whole   its usage, found from its end (src/mg_usage.c) in
 *                       the OpenAI-shaped body the client gets, translated
 *                       or not; an answer that ends with its connection
 *                       keeps a bounded tail for it
 *   an OpenAI stream    a link of the event chain reads the usage chunk of
 *                       a chat stream, or the response of a Responses
 *                       stream's last event
 *   a translated one    the same link reads the translator's counts after
 *                       each event
 *
 * A chat stream to an OpenAI-type backend ends with its usage chunk only
 * when stream_options.include_usage asks for it: unless the client asked,
 * or the backend has "stream_usage off", the request asks for it and the
 * chunk is taken out of what the client gets.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"


/* what is watched for the usage of the answer committed */
#define NGX_HTTP_MG_USAGE_NONE       0
#define NGX_HTTP_MG_USAGE_BODY       1
#define NGX_HTTP_MG_USAGE_CHAT       2
#define NGX_HTTP_MG_USAGE_RESPONSES  3
#define NGX_HTTP_MG_USAGE_XLATE      4

/*
 * how far from the end of a body its usage is looked for: past the
 * Responses object's members that may follow it (metadata: 16 pairs of
 * at most 64 and 512 characters); also the tail kept of an answer that
 * ends with its connection
 */
#define NGX_HTTP_MG_USAGE_TAIL       16384


static ngx_int_t ngx_http_model_gateway_usage_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_usage_event(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);
static ngx_int_t ngx_http_model_gateway_usage_tail(
    ngx_http_model_gateway_ctx_t *ctx, u_char *data, size_t len);
static void ngx_http_model_gateway_usage_set(
    ngx_http_model_gateway_ctx_t *ctx, long long prompt,
    long long completion, long long cached);


static ngx_http_model_gateway_event_pt  ngx_http_model_gateway_usage_next;


ngx_int_t
ngx_http_model_gateway_usage_init(ngx_conf_t *cf)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (ngx_http_model_gateway_commit_add(cf,
                                          ngx_http_model_gateway_usage_commit)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * above translation: a provider's event is translated first, then its
     * translator's counts are read
     */

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    ngx_http_model_gateway_usage_next = mcf->event_filter;
    mcf->event_filter = ngx_http_model_gateway_usage_event;

    return NGX_OK;
}


/*
 * A chat stream's request, read: what makes it ask for the usage chunk
 * when the client did not.
 */

void
ngx_http_model_gateway_usage_request(ngx_http_model_gateway_ctx_t *ctx,
    mg_json_field_t *stream_options)
{
    ctx->usage.edit = (mg_usage_stream_options((char *) ctx->body.data,
                                               ctx->body.len, stream_options,
                                               &ctx->usage.request)
                       == MG_USAGE_EDIT);
}


/* the current attempt's request asks for the usage chunk itself */

ngx_uint_t
ngx_http_model_gateway_usage_edit(ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_http_model_gateway_backend_t  *b;

    b = ctx->target->backend;

    return ctx->usage.edit && b->stream_usage && !b->provider->translated;
}


static ngx_int_t
ngx_http_model_gateway_usage_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_uint_t  watch;

    ctx->usage.known = 0;

    if (ctx->attempt.status.code < 200 || ctx->attempt.status.code >= 300
        || ctx->stream.passthrough)
    {
        return NGX_OK;
    }

    /*
     * answers that make tokens: not a stored response read again
     * (responses/{id}), which would count it twice
     */

    if (ctx->endpoint != MG_EP_CHAT && ctx->endpoint != MG_EP_EMBEDDINGS
        && ctx->state.kind != NGX_HTTP_MG_STATE_NEW_RESPONSE)
    {
        return NGX_OK;
    }

    if (ctx->attempt.mode != NGX_HTTP_MG_BODY_STREAM) {
        watch = NGX_HTTP_MG_USAGE_BODY;

    } else if (ctx->xlate) {
        watch = NGX_HTTP_MG_USAGE_XLATE;

    } else if (ctx->endpoint == MG_EP_CHAT) {
        watch = NGX_HTTP_MG_USAGE_CHAT;
        ctx->usage.strip = ngx_http_model_gateway_usage_edit(ctx);

    } else {
        watch = NGX_HTTP_MG_USAGE_RESPONSES;
    }

    ctx->usage.watch = watch;

    return NGX_OK;
}


/*
 * The bytes of an answer that is not a stream, as they go to the client:
 * a body read whole (translated, if it was) in one call, or each read of
 * one that ends with its connection.
 */

ngx_int_t
ngx_http_model_gateway_usage_body(ngx_http_model_gateway_ctx_t *ctx,
    u_char *data, size_t len)
{
    size_t      n;
    mg_usage_t  u;

    if (ctx->usage.watch != NGX_HTTP_MG_USAGE_BODY || len == 0) {
        return NGX_OK;
    }

    if (ctx->attempt.whole == NULL) {
        return ngx_http_model_gateway_usage_tail(ctx, data, len);
    }

    /* usage is one of the last members: never a scan of a whole body */

    n = ngx_min(len, NGX_HTTP_MG_USAGE_TAIL);

    if (mg_usage_tail((char *) data + len - n, n, &u) == MG_USAGE_FOUND) {
        ngx_http_model_gateway_usage_set(ctx, u.prompt, u.completion,
                                          u.cached);
    }

    return NGX_OK;
}


/*
 * An answer that ends with its connection: its last bytes are kept, and
 * looked at whenever they may end the JSON document; a later read that
 * does not end one undoes what an earlier one found.
 */

static ngx_int_t
ngx_http_model_gateway_usage_tail(ngx_http_model_gateway_ctx_t *ctx,
    u_char *data, size_t len)
{
    u_char      *p;
    size_t       keep;
    ngx_buf_t   *b;
    mg_usage_t   u;

    b = ctx->usage.tail;

    if (b == NULL) {
        b = ngx_create_temp_buf(ctx->request->pool, NGX_HTTP_MG_USAGE_TAIL);
        if (b == NULL) {
            return NGX_ERROR;
        }

        ctx->usage.tail = b;
    }

    if (len >= NGX_HTTP_MG_USAGE_TAIL) {
        b->last = ngx_cpymem(b->pos, data + len - NGX_HTTP_MG_USAGE_TAIL,
                             NGX_HTTP_MG_USAGE_TAIL);

    } else {
        if ((size_t) (b->end - b->last) < len) {
            keep = NGX_HTTP_MG_USAGE_TAIL - len;
            ngx_memmove(b->pos, b->last - keep, keep);
            b->last = b->pos + keep;
        }

        b->last = ngx_cpymem(b->last, data, len);
    }

    ctx->usage.known = 0;

    for (p = b->last; p > b->pos; p--) {
        if (p[-1] != ' ' && p[-1] != CR && p[-1] != LF && p[-1] != '\t') {
            break;
        }
    }

    if (p > b->pos && p[-1] == '}'
        && mg_usage_tail((char *) b->pos, b->last - b->pos, &u)
           == MG_USAGE_FOUND)
    {
        ngx_http_model_gateway_usage_set(ctx, u.prompt, u.completion,
                                          u.cached);
    }

    return NGX_OK;
}


/*
 * The event chain's link of usage: every event of a stream that makes
 * tokens is looked at, and a chat stream's usage chunk that only the
 * gateway asked for is dropped.
 */

static ngx_int_t
ngx_http_model_gateway_usage_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    int           only;
    ngx_int_t     rc;
    mg_usage_t    u;
    mg_x_usage_t  xu;

    switch (ctx->usage.watch) {

    case NGX_HTTP_MG_USAGE_XLATE:

        rc = ngx_http_model_gateway_usage_next(ctx, ev);

        if (ctx->xstream && ctx->xlate->stream_usage
            && ctx->xlate->stream_usage(ctx->xstream, &xu))
        {
            ngx_http_model_gateway_usage_set(ctx, xu.prompt, xu.completion,
                                              xu.cached);
        }

        return rc;

    case NGX_HTTP_MG_USAGE_CHAT:

        if (ev->data == NULL || ev->data_len == 0 || ev->data[0] == '[') {
            break;
        }

        if (mg_usage_chunk(ev->data, ev->data_len, &u, &only)
            != MG_USAGE_FOUND)
        {
            break;
        }

        ngx_http_model_gateway_usage_set(ctx, u.prompt, u.completion,
                                          u.cached);

        if (only && ctx->usage.strip) {

            /* the client did not ask for it: as if never sent */
            return NGX_OK;
        }

        break;

    case NGX_HTTP_MG_USAGE_RESPONSES:

        if (ev->data == NULL) {
            break;
        }

        /* the event's name, when it has one, spares a scan of the rest */

#define ngx_mg_ev(s)                                                        \
    (ev->event_len == sizeof(s) - 1                                         \
     && ngx_strncmp(ev->event, s, sizeof(s) - 1) == 0)

        if (ev->event_len
            && !ngx_mg_ev("response.completed")
            && !ngx_mg_ev("response.incomplete")
            && !ngx_mg_ev("response.failed"))
        {
            break;
        }

#undef ngx_mg_ev

        if (mg_usage_responses_event(ev->data, ev->data_len, &u)
            == MG_USAGE_FOUND)
        {
            ngx_http_model_gateway_usage_set(ctx, u.prompt, u.completion,
                                          u.cached);
        }

        break;

    default: /* NGX_HTTP_MG_USAGE_NONE, NGX_HTTP_MG_USAGE_BODY */
        break;
    }

    return ngx_http_model_gateway_usage_next(ctx, ev);
}


static void
ngx_http_model_gateway_usage_set(ngx_http_model_gateway_ctx_t *ctx,
    long long prompt, long long completion, long long cached)
{
    ctx->usage.prompt = (prompt > 0) ? (uint64_t) prompt : 0;
    ctx->usage.completion = (completion > 0) ? (uint64_t) completion : 0;
    ctx->usage.cached = (cached > 0) ? (uint64_t) cached : 0;
    ctx->usage.known = 1;
}
