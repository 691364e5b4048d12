
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Backends that do not speak OpenAI's API (Anthropic Messages, Gemini,
 * Bedrock Converse):
 * the glue around the translators in src/.  The client's chat request is
 * translated once per such target when the body is read (a feature the
 * provider cannot honour rules that target out, and is a 400 if no other
 * target is left); responses, stream events and errors are translated
 * back, streams through the per-event hook.  The providers themselves are
 * rows of the provider table (_providers.c): nothing here names one.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"
#include "mg_xfast.h"


/* texts shorter than this are not worth setting aside */
#define NGX_HTTP_MG_SHRINK_MIN  128


/* the arguments of one translation, for mg_x_translate_shrunk() */

typedef struct {
    ngx_http_model_gateway_ctx_t             *ctx;
    const ngx_http_model_gateway_provider_t  *x;
    ngx_http_model_gateway_target_t          *target;
    int                                      *stream;
    int                                      *include_usage;
    size_t                                    max;  /* the bound */
    mg_xerror_t                              *err;
} ngx_http_model_gateway_xcall_t;


static int ngx_http_model_gateway_translate_fast(
    const ngx_http_model_gateway_provider_t *x,
    ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage);
static int ngx_http_model_gateway_translate_request(void *data,
    const char *p, size_t len, mg_buf_t *out);
static int ngx_http_model_gateway_translate_response(void *data, const char *p,
    size_t len, mg_buf_t *out);
static int ngx_http_model_gateway_translate_answer(
    ngx_http_model_gateway_ctx_t *ctx,
    const ngx_http_model_gateway_provider_t *x, char *p, size_t len,
    mg_buf_t *out, mg_xerror_t *err);
static void ngx_http_model_gateway_translate_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_translate_event(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);
static ngx_int_t ngx_http_model_gateway_translate_pass(
    ngx_http_model_gateway_ctx_t *ctx, u_char *data, size_t len);
static void ngx_http_model_gateway_translate_free(void *data);


static ngx_http_model_gateway_event_pt
    ngx_http_model_gateway_translate_next_event;


ngx_int_t
ngx_http_model_gateway_translate_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                                       rc, stream, include_usage;
    u_char                                   *p;
    ngx_str_t                                *body;
    ngx_uint_t                                i, n, left, translated, shrink;
    ngx_pool_cleanup_t                       *cln;
    mg_buf_t                                  out;
    mg_x_shrink_t                             shrunk;
    mg_xerror_t                               err;
    ngx_http_model_gateway_xcall_t            c;
    ngx_http_model_gateway_target_t          *t;
    const ngx_http_model_gateway_provider_t  *x;

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;

    translated = 0;
    left = 0;

    ngx_memzero(&err, sizeof(mg_xerror_t));
    mg_xerror_set(&err, 400, 0, "invalid_request_error",
                  "unsupported_endpoint", NULL,
                  "The model does not support this endpoint.");

    /* a model declared with api=chat or api=embeddings serves that only */

    for (i = 0; i < n; i++) {
        if (ctx->endpoint == MG_EP_EMBEDDINGS ? t[i].no_embeddings
                                              : t[i].no_chat)
        {
            ctx->tried[i] = 1;

        } else if (t[i].backend->provider->translated) {
            translated = 1;

        } else {
            left += !ctx->tried[i];
        }
    }

    if (!translated) {
        if (left || n == 0) {
            return NGX_OK;
        }

        goto failed;
    }

    ctx->xbody = ngx_pcalloc(r->pool, n * sizeof(ngx_str_t));
    if (ctx->xbody == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->xbody_model = ctx->model_conf;

    ngx_memzero(&shrunk, sizeof(mg_x_shrink_t));
    shrink = 0;

    c.ctx = ctx;
    c.stream = &stream;
    c.include_usage = &include_usage;
    c.err = &err;

    /*
     * no translation may write more than the body limit (or the body,
     * when the gateway built it from stored items: at most the history
     * limit more) and the room a translation adds: each translator stops
     * where it would pass this,
     * and a request that cannot be sent within it is the client's 400
     */

    c.max = ngx_max(ctx->lcf->max_body_size, ctx->body.len) + MG_X_OUT_SLACK;

    for (i = 0; i < n; i++) {
        x = t[i].backend->provider;

        if (!x->translated || ctx->tried[i]) {
            continue;
        }

        if (ctx->endpoint != MG_EP_CHAT) {

            /* translated providers serve chat only */

            ctx->tried[i] = 1;
            mg_xerror_set(&err, 400, 0, "invalid_request_error",
                          "unsupported_endpoint", NULL,
                          "The model does not support this endpoint.");
            continue;
        }

        ngx_memzero(&out, sizeof(mg_buf_t));

        c.x = x;
        c.target = &t[i];

        body = ngx_http_model_gateway_memory_body(ctx, i);

        if (body) {

            /* a gateway-held turn with this target's own state in it */

            rc = x->request(&t[i], body, c.max, &out, &stream,
                            &include_usage, &err);

            goto one;
        }

        /* a plain text chat is translated without a JSON tree */

        rc = ngx_http_model_gateway_translate_fast(x, &t[i], &ctx->body,
                                                   c.max, &out, &stream,
                                                   &include_usage);

        if (rc == MG_XF_DECLINED && !shrink) {

            /*
             * otherwise long message texts are set aside before the
             * translator sees the body, and put back, still escaped,
             * into what it produces: decoding and encoding a long chat
             * history is most of a translation's cost
             */

            shrink = 1;

            if (mg_x_shrink((char *) ctx->body.data, ctx->body.len,
                            NGX_HTTP_MG_SHRINK_MIN, &shrunk)
                != MG_X_OK)
            {
                mg_x_shrink_free(&shrunk);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* texts put back must not pass the bound either */

            shrunk.max = c.max;
        }

        if (rc == MG_XF_DECLINED) {
            rc = mg_x_translate_shrunk(&shrunk, (char *) ctx->body.data,
                                       ctx->body.len,
                                       ngx_http_model_gateway_translate_request,
                                       &c, &out);
        }

    one:

        if (rc != MG_X_OK) {
            mg_buf_free(&out);

            if (rc == MG_X_NOMEM) {
                mg_x_shrink_free(&shrunk);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* not for this backend; another one may serve it */

            ctx->tried[i] = 1;
            continue;
        }

        /* the translation is the request's until it ends: not copied */

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            mg_buf_free(&out);
            mg_x_shrink_free(&shrunk);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_model_gateway_translate_free;
        cln->data = out.data;

        ctx->xbody[i].data = (u_char *) out.data;
        ctx->xbody[i].len = out.len;
        ctx->include_usage = include_usage;

        left++;
    }

    mg_x_shrink_free(&shrunk);

    if (left) {
        return NGX_OK;
    }

failed:

    p = ngx_pnalloc(r->pool, sizeof(err.message));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.message_str.data = p;
    ctx->err.message_str.len = ngx_cpystrn(p, (u_char *) err.message,
                                           sizeof(err.message))
                               - p;

    return ngx_http_model_gateway_fail(r, err.status ? err.status : 400,
                                       err.type ? err.type
                                                : "invalid_request_error",
                                       err.code, err.param, NULL);
}


/* the tree-free path, on the body the handler validated */

static int
ngx_http_model_gateway_translate_fast(
    const ngx_http_model_gateway_provider_t *x,
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage)
{
    mg_xf_opts_t  opts;

    if (x->fast_request == 0) {
        return MG_XF_DECLINED;
    }

    opts.provider = x->fast_request;
    opts.model = (char *) t->provider_model.data;
    opts.model_len = t->provider_model.len;
    opts.default_max_tokens = t->backend->max_tokens;
    opts.valid = 1;
    opts.max_out = max;

    /* a provider that requires max_tokens: its translator's default */

    if (opts.default_max_tokens <= 0) {
        opts.default_max_tokens = x->fast_max_tokens;
    }

    return mg_xf_request(&opts, (char *) body->data, body->len, out, stream,
                         include_usage);
}


static int
ngx_http_model_gateway_translate_request(void *data, const char *p,
    size_t len, mg_buf_t *out)
{
    ngx_str_t                        body;
    ngx_http_model_gateway_xcall_t  *c = data;

    body.data = (u_char *) p;
    body.len = len;

    return c->x->request(c->target, &body, c->max, out, c->stream,
                         c->include_usage, c->err);
}


static int
ngx_http_model_gateway_translate_response(void *data, const char *p,
    size_t len, mg_buf_t *out)
{
    ngx_http_model_gateway_xcall_t  *c = data;

    return c->x->response(p, len, (char *) c->ctx->model.data,
                          c->ctx->model.len, (long) ngx_time(), out, c->err);
}


/*
 * A whole answer takes the same fast path as requests once the backend's
 * JSON is validated: a text set aside is copied to the client as the
 * backend wrote it, so it must be a valid JSON string.
 */

static int
ngx_http_model_gateway_translate_answer(ngx_http_model_gateway_ctx_t *ctx,
    const ngx_http_model_gateway_provider_t *x, char *p, size_t len,
    mg_buf_t *out, mg_xerror_t *err)
{
    int                             rc;
    mg_x_shrink_t                   shrunk;
    ngx_http_model_gateway_xcall_t  c;

    /* an answer of text only is translated without a JSON tree */

    if (x->fast_answer) {
        rc = mg_xf_answer(x->fast_answer, p, len, (char *) ctx->model.data,
                          ctx->model.len, (long) ngx_time(), out);

        if (rc != MG_XF_DECLINED) {
            return (rc == MG_X_NOMEM) ? mg_x_nomem(err) : rc;
        }
    }

    ngx_memzero(&shrunk, sizeof(mg_x_shrink_t));

    if (len >= NGX_HTTP_MG_SHRINK_MIN
        && mg_json_scan(p, len, NULL, 0, 64, NULL) == MG_JSON_OK
        && mg_x_shrink(p, len, NGX_HTTP_MG_SHRINK_MIN, &shrunk) != MG_X_OK)
    {
        mg_x_shrink_free(&shrunk);
        return MG_X_NOMEM;
    }

    c.ctx = ctx;
    c.x = x;
    c.err = err;

    rc = mg_x_translate_shrunk(&shrunk, p, len,
                               ngx_http_model_gateway_translate_response, &c,
                               out);

    mg_x_shrink_free(&shrunk);

    return rc;
}


/*
 * The response of a translated backend, about to be sent: a body read
 * whole is translated (an answer, or an error with the status OpenAI
 * clients expect); a stream gets the translating event hook.
 */

ngx_int_t
ngx_http_model_gateway_translate_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                                       rc;
    u_char                                   *p;
    size_t                                    len;
    mg_buf_t                                  out;
    ngx_buf_t                                *b;
    mg_xerror_t                               err;
    ngx_pool_cleanup_t                       *cln;
    ngx_http_upstream_t                      *u;
    const ngx_http_model_gateway_provider_t  *x;

    u = r->upstream;
    x = ctx->target->backend->provider;

    if (ctx->attempt.mode == NGX_HTTP_MG_BODY_STREAM) {

        ctx->xstream = ngx_pcalloc(r->pool, x->stream_size);
        if (ctx->xstream == NULL) {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        x->stream_init(ctx->xstream, (char *) ctx->model.data,
                       ctx->model.len, (long) ngx_time(),
                       ctx->include_usage);

        /* whatever the provider's framing, the client gets SSE */

        ngx_str_set(&ctx->attempt.content_type, "text/event-stream");

        ctx->xlate = x;
        cln->handler = ngx_http_model_gateway_translate_cleanup;
        cln->data = ctx;

        return NGX_OK;
    }

    if (ctx->attempt.whole == NULL) {
        return NGX_OK;
    }

    ngx_memzero(&out, sizeof(mg_buf_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));

    p = ctx->attempt.whole->pos;
    len = ctx->attempt.whole->last - ctx->attempt.whole->pos;

    if (ctx->attempt.status.code >= 200 && ctx->attempt.status.code < 300) {
        rc = ngx_http_model_gateway_translate_answer(ctx, x, (char *) p, len,
                                                     &out, &err);

    } else {
        x->error((int) ctx->attempt.status.code, &ctx->attempt.errortype,
                 (char *) p, len, &err);
        rc = MG_X_ERROR;
    }

    if (rc == MG_X_NOMEM) {
        mg_buf_free(&out);
        return NGX_ERROR;
    }

    if (rc == MG_X_OK) {
        b = ngx_create_temp_buf(r->pool, out.len ? out.len : 1);
        if (b == NULL) {
            mg_buf_free(&out);
            return NGX_ERROR;
        }

        b->last = ngx_cpymem(b->pos, out.data, out.len);

    } else {

        /* the OpenAI error object, with the mapped status */

        len = mg_error_json(NULL, 0, err.message, err.type, err.param,
                            err.code);

        b = ngx_create_temp_buf(r->pool, len + 1);
        if (b == NULL) {
            mg_buf_free(&out);
            return NGX_ERROR;
        }

        b->last += mg_error_json((char *) b->pos, len + 1, err.message,
                                 err.type, err.param, err.code);

        u->headers_in.status_n = err.status;
        ctx->stream.passthrough = 1;
    }

    mg_buf_free(&out);

    ctx->attempt.whole = b;

    u->buffer.start = b->start;
    u->buffer.pos = b->pos;
    u->buffer.last = b->last;
    u->buffer.end = b->end;

    ngx_str_set(&ctx->attempt.content_type, "application/json");

    return NGX_OK;
}


ngx_int_t
ngx_http_model_gateway_translate_init(ngx_conf_t *cf)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    ngx_http_model_gateway_translate_next_event = mcf->event_filter;
    mcf->event_filter = ngx_http_model_gateway_translate_event;

    return NGX_OK;
}


/*
 * The event chain's link of translated streams: a provider's event is
 * replaced by what the client gets (no event, one, or several, as raw
 * bytes); the events of other streams pass.
 */

static ngx_int_t
ngx_http_model_gateway_translate_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    int           rc;
    size_t        n;
    u_char       *p;
    mg_xerror_t   err;

    if (ctx->xlate == NULL) {
        return ngx_http_model_gateway_translate_next_event(ctx, ev);
    }

    if (ev->data == NULL) {
        return NGX_OK;
    }

    mg_buf_reset(&ctx->xout);

    rc = ctx->xlate->stream_event(ctx->xstream, ev, &ctx->xout, &err);

    switch (rc) {

    case MG_X_DONE:
        ctx->stream.done_seen = 1;

        /* fall through */

    case MG_X_OK:
        return ngx_http_model_gateway_translate_pass(ctx,
                                                     (u_char *) ctx->xout.data,
                                                     ctx->xout.len);

    case MG_X_ERROR:

        /* after content: the client gets the error, then "[DONE]" */

        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "model gateway: stream from backend \"%V\" failed: %s",
                      &ctx->target->backend->name, err.message);

        ctx->stream.error_seen = 1;

        /* sized to fit: an event cut short would not be JSON */

        n = mg_error_json(NULL, 0, err.message, err.type, err.param,
                          err.code);

        p = ngx_pnalloc(ctx->request->pool, n + 9);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, "data: ", 6);
        (void) mg_error_json((char *) p + 6, n + 1, err.message, err.type,
                             err.param, err.code);
        p[6 + n] = '\n';
        p[7 + n] = '\n';

        return ngx_http_model_gateway_translate_pass(ctx, p, n + 8);

    default:
        return NGX_ERROR;
    }
}


/*
 * A translated stream whose provider has no end event of its own (Gemini)
 * gets its final chunks when the HTTP stream ends cleanly.
 */

ngx_int_t
ngx_http_model_gateway_translate_finish(ngx_http_model_gateway_ctx_t *ctx)
{
    int  rc;

    if (ctx->xlate == NULL || ctx->xlate->stream_finish == NULL
        || ctx->stream.done_seen || ctx->stream.error_seen)
    {
        return NGX_OK;
    }

    mg_buf_reset(&ctx->xout);

    rc = ctx->xlate->stream_finish(ctx->xstream, &ctx->xout);

    if (rc == MG_X_DONE) {
        ctx->stream.done_seen = 1;

    } else if (rc == MG_X_ERROR || rc == MG_X_OK) {

        /*
         * the stream ended before the provider said it was complete
         * (Bedrock's finish answers MG_X_OK when messageStop never came)
         */

        ngx_str_set(&ctx->stream.error,
                    "the backend's stream ended before it was complete");
        ctx->stream.closed = 1;

        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "model gateway: stream from backend \"%V\" cut: %V",
                      &ctx->target->backend->name, &ctx->stream.error);

    } else if (rc == MG_X_NOMEM) {
        return NGX_ERROR;
    }

    return ngx_http_model_gateway_translate_pass(ctx,
                                                 (u_char *) ctx->xout.data,
                                                 ctx->xout.len);
}


/* what the client gets instead, down the rest of the chain */

static ngx_int_t
ngx_http_model_gateway_translate_pass(ngx_http_model_gateway_ctx_t *ctx,
    u_char *data, size_t len)
{
    mg_sse_event_t  ev;

    if (len == 0) {
        return NGX_OK;
    }

    ngx_memzero(&ev, sizeof(mg_sse_event_t));

    ev.raw = (char *) data;
    ev.raw_len = len;

    return ngx_http_model_gateway_translate_next_event(ctx, &ev);
}


static void
ngx_http_model_gateway_translate_free(void *data)
{
    free(data);
}


static void
ngx_http_model_gateway_translate_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ctx->xstream) {
        ctx->xlate->stream_free(ctx->xstream);
        ctx->xstream = NULL;
    }

    mg_buf_free(&ctx->xout);
}
