
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Backends that do not speak OpenAI's API (Anthropic Messages, Gemini,
 * Bedrock Converse):
 * the glue around the translators in src/.  The client's chat request is
 * translated once per such target when the body is read (a feature the
 * provider cannot honour rules that target out, and is a 400 if no other
 * target is left); responses, stream events and errors are translated
 * back, streams through the per-event hook.  Each provider is a row of
 * functions below.
 */


#include "ngx_http_model_gateway_module.h"
#include "mg_anthropic.h"
#include "mg_gemini.h"
#include "mg_bedrock.h"
#include "mg_xfast.h"


/* texts shorter than this are not worth setting aside */
#define NGX_HTTP_MG_SHRINK_MIN  128


struct ngx_http_model_gateway_xlate_s {
    int          fast_request;      /* MG_XF_*, or 0: no tree-free path */
    int          fast_answer;
    int        (*request)(ngx_http_model_gateway_target_t *t,
                          ngx_str_t *body, size_t max, mg_buf_t *out,
                          int *stream, int *include_usage,
                          mg_xerror_t *err);
    int        (*response)(const char *body, size_t len, const char *model,
                           size_t model_len, long created, mg_buf_t *out,
                           mg_xerror_t *err);
    void       (*error)(int status, ngx_str_t *errortype, const char *body,
                        size_t len, mg_xerror_t *err);
    size_t       stream_size;
    void       (*stream_init)(void *st, const char *model, size_t model_len,
                              long created, int include_usage);
    int        (*stream_event)(void *st, const mg_sse_event_t *ev,
                               mg_buf_t *out, mg_xerror_t *err);
    int        (*stream_finish)(void *st, mg_buf_t *out);
    void       (*stream_free)(void *st);
};


/* the arguments of one translation, for mg_x_translate_shrunk() */

typedef struct {
    ngx_http_model_gateway_ctx_t     *ctx;
    ngx_http_model_gateway_xlate_t   *x;
    ngx_http_model_gateway_target_t  *target;
    int                              *stream;
    int                              *include_usage;
    size_t                            max;     /* the translation's bound */
    mg_xerror_t                      *err;
} ngx_http_model_gateway_xcall_t;


static int ngx_http_model_gateway_anthropic_request(
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);
static void ngx_http_model_gateway_anthropic_error(int status,
    ngx_str_t *errortype, const char *body, size_t len, mg_xerror_t *err);
static void ngx_http_model_gateway_anthropic_init(void *st, const char *model,
    size_t model_len, long created, int include_usage);
static int ngx_http_model_gateway_anthropic_stream(void *st,
    const mg_sse_event_t *ev, mg_buf_t *out, mg_xerror_t *err);
static void ngx_http_model_gateway_anthropic_free(void *st);

static int ngx_http_model_gateway_gemini_request(
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);
static void ngx_http_model_gateway_gemini_error(int status,
    ngx_str_t *errortype, const char *body, size_t len, mg_xerror_t *err);
static void ngx_http_model_gateway_gemini_init(void *st, const char *model,
    size_t model_len, long created, int include_usage);
static int ngx_http_model_gateway_gemini_stream(void *st,
    const mg_sse_event_t *ev, mg_buf_t *out, mg_xerror_t *err);
static int ngx_http_model_gateway_gemini_finish(void *st, mg_buf_t *out);
static void ngx_http_model_gateway_gemini_free(void *st);

static int ngx_http_model_gateway_bedrock_request(
    ngx_http_model_gateway_target_t *t, ngx_str_t *body, size_t max,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);
static void ngx_http_model_gateway_bedrock_error(int status,
    ngx_str_t *errortype, const char *body, size_t len, mg_xerror_t *err);
static void ngx_http_model_gateway_bedrock_init(void *st, const char *model,
    size_t model_len, long created, int include_usage);
static int ngx_http_model_gateway_bedrock_stream(void *st,
    const mg_sse_event_t *ev, mg_buf_t *out, mg_xerror_t *err);
static int ngx_http_model_gateway_bedrock_finish(void *st, mg_buf_t *out);
static void ngx_http_model_gateway_bedrock_free(void *st);

static ngx_http_model_gateway_xlate_t *ngx_http_model_gateway_xlate(
    ngx_uint_t type);
static int ngx_http_model_gateway_translate_fast(
    ngx_http_model_gateway_xlate_t *x, ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage);
static int ngx_http_model_gateway_translate_request(void *data,
    const char *p, size_t len, mg_buf_t *out);
static int ngx_http_model_gateway_translate_response(void *data, const char *p,
    size_t len, mg_buf_t *out);
static int ngx_http_model_gateway_translate_answer(
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_xlate_t *x,
    char *p, size_t len, mg_buf_t *out, mg_xerror_t *err);
static void ngx_http_model_gateway_translate_cleanup(void *data);
static void ngx_http_model_gateway_translate_free(void *data);


static ngx_http_model_gateway_xlate_t  ngx_http_model_gateway_anthropic = {
    MG_XF_ANTHROPIC,
    MG_XF_ANTHROPIC,
    ngx_http_model_gateway_anthropic_request,
    mg_anthropic_response,
    ngx_http_model_gateway_anthropic_error,
    sizeof(mg_anthropic_stream_t),
    ngx_http_model_gateway_anthropic_init,
    ngx_http_model_gateway_anthropic_stream,
    NULL,
    ngx_http_model_gateway_anthropic_free
};


static ngx_http_model_gateway_xlate_t  ngx_http_model_gateway_gemini = {
    MG_XF_GEMINI,
    MG_XF_GEMINI,
    ngx_http_model_gateway_gemini_request,
    mg_gemini_response,
    ngx_http_model_gateway_gemini_error,
    sizeof(mg_gemini_stream_t),
    ngx_http_model_gateway_gemini_init,
    ngx_http_model_gateway_gemini_stream,
    ngx_http_model_gateway_gemini_finish,
    ngx_http_model_gateway_gemini_free
};


static ngx_http_model_gateway_xlate_t  ngx_http_model_gateway_bedrock = {
    MG_XF_BEDROCK,
    MG_XF_BEDROCK,
    ngx_http_model_gateway_bedrock_request,
    mg_bedrock_response,
    ngx_http_model_gateway_bedrock_error,
    sizeof(mg_bedrock_stream_t),
    ngx_http_model_gateway_bedrock_init,
    ngx_http_model_gateway_bedrock_stream,
    ngx_http_model_gateway_bedrock_finish,
    ngx_http_model_gateway_bedrock_free
};


static ngx_http_model_gateway_xlate_t *
ngx_http_model_gateway_xlate(ngx_uint_t type)
{
    switch (type) {
    case NGX_HTTP_MG_ANTHROPIC:
        return &ngx_http_model_gateway_anthropic;
    case NGX_HTTP_MG_GEMINI:
        return &ngx_http_model_gateway_gemini;
    case NGX_HTTP_MG_BEDROCK:
        return &ngx_http_model_gateway_bedrock;
    default:
        return NULL;
    }
}


ngx_uint_t
ngx_http_model_gateway_translated(ngx_uint_t type)
{
    return ngx_http_model_gateway_xlate(type) != NULL;
}


ngx_int_t
ngx_http_model_gateway_translate_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                                rc, stream, include_usage;
    u_char                            *p;
    ngx_uint_t                         i, n, left, translated, shrink;
    ngx_pool_cleanup_t                *cln;
    mg_buf_t                           out;
    mg_x_shrink_t                      shrunk;
    mg_xerror_t                        err;
    ngx_http_model_gateway_xcall_t     c;
    ngx_http_model_gateway_xlate_t    *x;
    ngx_http_model_gateway_target_t   *t;
    ngx_http_model_gateway_backend_t  *b;

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

        } else if (ngx_http_model_gateway_translated(t[i].backend->type)) {
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
     * no translation may write more than the body limit and the room a
     * translation adds: each translator stops where it would pass this,
     * and a request that cannot be sent within it is the client's 400
     */

    c.max = ctx->lcf->max_body_size + MG_X_OUT_SLACK;

    for (i = 0; i < n; i++) {
        b = t[i].backend;
        x = ngx_http_model_gateway_xlate(b->type);

        if (x == NULL || ctx->tried[i]) {
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

    ctx->err_message_str.data = p;
    ctx->err_message_str.len = ngx_cpystrn(p, (u_char *) err.message,
                                           sizeof(err.message))
                               - p;

    return ngx_http_model_gateway_fail(r, err.status ? err.status : 400,
                                       err.type ? err.type
                                                : "invalid_request_error",
                                       err.code, err.param, NULL);
}


/* the tree-free path, on the body the handler validated */

static int
ngx_http_model_gateway_translate_fast(ngx_http_model_gateway_xlate_t *x,
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

    /* Anthropic requires max_tokens: its translator's default applies */

    if (opts.provider == MG_XF_ANTHROPIC && opts.default_max_tokens <= 0) {
        opts.default_max_tokens = MG_ANTHROPIC_MAX_TOKENS;
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
    ngx_http_model_gateway_xlate_t *x, char *p, size_t len, mg_buf_t *out,
    mg_xerror_t *err)
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


/* a stream event Anthropic or Bedrock sends before any content */

ngx_uint_t
ngx_http_model_gateway_translate_preamble(ngx_uint_t type,
    const mg_sse_event_t *ev)
{
    if (ev->event == NULL) {
        return 0;
    }

#define ngx_mg_ev(s)                                                        \
    (ev->event_len == sizeof(s) - 1                                         \
     && ngx_strncmp(ev->event, s, ev->event_len) == 0)

    switch (type) {

    case NGX_HTTP_MG_ANTHROPIC:
        return ngx_mg_ev("message_start") || ngx_mg_ev("ping")
               || ngx_mg_ev("content_block_start");

    case NGX_HTTP_MG_BEDROCK:

        /* a tool call's contentBlockStart is content: it names the call */

        return ngx_mg_ev("messageStart");

    default:
        return 0;
    }

#undef ngx_mg_ev
}


/*
 * How an error event that came before any content fails the attempt: a
 * Bedrock throttlingException counts as a 429 (the pair cools down and the
 * client gets 429 if nothing else serves), serviceUnavailableException as
 * a 503; anything else is a failed stream.
 */

ngx_http_model_gateway_fail_e
ngx_http_model_gateway_translate_stream_fail(ngx_uint_t type,
    const mg_sse_event_t *ev, ngx_int_t *status)
{
    mg_xerror_t  err;

    if (type != NGX_HTTP_MG_BEDROCK || ev->kind == NULL) {
        return NGX_HTTP_MG_FAIL_STREAM_ERROR;
    }

    ngx_memzero(&err, sizeof(mg_xerror_t));

    mg_bedrock_error(0, ev->event, ev->event_len, ev->data, ev->data_len,
                     &err);

    if (err.status == NGX_HTTP_TOO_MANY_REQUESTS) {
        *status = NGX_HTTP_TOO_MANY_REQUESTS;
        return NGX_HTTP_MG_FAIL_RATE_LIMITED;
    }

    if (err.status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        *status = NGX_HTTP_SERVICE_UNAVAILABLE;
        return NGX_HTTP_MG_FAIL_STATUS;
    }

    return NGX_HTTP_MG_FAIL_STREAM_ERROR;
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
    int                     rc;
    u_char                 *p;
    size_t                  len;
    mg_buf_t                out;
    ngx_buf_t              *b;
    mg_xerror_t                      err;
    ngx_pool_cleanup_t              *cln;
    ngx_http_upstream_t             *u;
    ngx_http_model_gateway_xlate_t  *x;

    u = r->upstream;
    x = ngx_http_model_gateway_xlate(ctx->target->backend->type);

    if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {

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

        ngx_str_set(&ctx->content_type, "text/event-stream");

        ctx->xlate = x;
        cln->handler = ngx_http_model_gateway_translate_cleanup;
        cln->data = ctx;

        ctx->on_event = ngx_http_model_gateway_translate_event;

        return NGX_OK;
    }

    if (ctx->whole == NULL) {
        return NGX_OK;
    }

    ngx_memzero(&out, sizeof(mg_buf_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));

    p = ctx->whole->pos;
    len = ctx->whole->last - ctx->whole->pos;

    if (ctx->status.code >= 200 && ctx->status.code < 300) {
        rc = ngx_http_model_gateway_translate_answer(ctx, x, (char *) p, len,
                                                     &out, &err);

    } else {
        x->error((int) ctx->status.code, &ctx->errortype, (char *) p, len,
                 &err);
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
        ctx->passthrough = 1;
    }

    mg_buf_free(&out);

    ctx->whole = b;

    u->buffer.start = b->start;
    u->buffer.pos = b->pos;
    u->buffer.last = b->last;
    u->buffer.end = b->end;

    ngx_str_set(&ctx->content_type, "application/json");

    return NGX_OK;
}


/* the per-event hook of translated streams */

ngx_int_t
ngx_http_model_gateway_translate_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    int           rc;
    size_t        n;
    u_char       *p;
    mg_xerror_t   err;

    if (ev->data == NULL) {
        return NGX_OK;
    }

    mg_buf_reset(&ctx->xout);

    rc = ctx->xlate->stream_event(ctx->xstream, ev, &ctx->xout, &err);

    switch (rc) {

    case MG_X_DONE:
        ctx->done_seen = 1;

        /* fall through */

    case MG_X_OK:
        return ngx_http_model_gateway_emit(ctx, (u_char *) ctx->xout.data,
                                           ctx->xout.len);

    case MG_X_ERROR:

        /* after content: the client gets the error, then "[DONE]" */

        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "model gateway: stream from backend \"%V\" failed: %s",
                      &ctx->target->backend->name, err.message);

        ctx->error_seen = 1;

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

        return ngx_http_model_gateway_emit(ctx, p, n + 8);

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
        || ctx->done_seen || ctx->error_seen)
    {
        return NGX_OK;
    }

    mg_buf_reset(&ctx->xout);

    rc = ctx->xlate->stream_finish(ctx->xstream, &ctx->xout);

    if (rc == MG_X_DONE) {
        ctx->done_seen = 1;

    } else if (rc == MG_X_ERROR || rc == MG_X_OK) {

        /*
         * the stream ended before the provider said it was complete
         * (Bedrock's finish answers MG_X_OK when messageStop never came)
         */

        ngx_str_set(&ctx->stream_error,
                    "the backend's stream ended before it was complete");
        ctx->stream_closed = 1;

        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "model gateway: stream from backend \"%V\" cut: %V",
                      &ctx->target->backend->name, &ctx->stream_error);

    } else if (rc == MG_X_NOMEM) {
        return NGX_ERROR;
    }

    return ngx_http_model_gateway_emit(ctx, (u_char *) ctx->xout.data,
                                       ctx->xout.len);
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


/* the providers */

static int
ngx_http_model_gateway_anthropic_request(ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    mg_anthropic_opts_t  opts;

    ngx_memzero(&opts, sizeof(mg_anthropic_opts_t));

    opts.model = (char *) t->provider_model.data;
    opts.model_len = t->provider_model.len;
    opts.default_max_tokens = t->backend->max_tokens;
    opts.max_out = max;

    return mg_anthropic_request((char *) body->data, body->len, &opts, out,
                                stream, include_usage, err);
}


static void
ngx_http_model_gateway_anthropic_error(int status, ngx_str_t *errortype,
    const char *body, size_t len, mg_xerror_t *err)
{
    mg_anthropic_error(status, body, len, err);
}


static void
ngx_http_model_gateway_anthropic_init(void *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    mg_anthropic_stream_init(st, model, model_len, created, include_usage);
}


static int
ngx_http_model_gateway_anthropic_stream(void *st, const mg_sse_event_t *ev,
    mg_buf_t *out, mg_xerror_t *err)
{
    return mg_anthropic_stream_event(st, ev->event, ev->event_len, ev->data,
                                     ev->data_len, out, err);
}


static void
ngx_http_model_gateway_anthropic_free(void *st)
{
    mg_anthropic_stream_free(st);
}


static int
ngx_http_model_gateway_gemini_request(ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    mg_gemini_opts_t  opts;

    ngx_memzero(&opts, sizeof(mg_gemini_opts_t));

    opts.default_max_tokens = t->backend->max_tokens;
    opts.max_out = max;

    return mg_gemini_request((char *) body->data, body->len, &opts, out,
                             stream, include_usage, err);
}


static void
ngx_http_model_gateway_gemini_error(int status, ngx_str_t *errortype,
    const char *body, size_t len, mg_xerror_t *err)
{
    mg_gemini_error(status, body, len, err);
}


static void
ngx_http_model_gateway_gemini_init(void *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    mg_gemini_stream_init(st, model, model_len, created, include_usage);
}


static int
ngx_http_model_gateway_gemini_stream(void *st, const mg_sse_event_t *ev,
    mg_buf_t *out, mg_xerror_t *err)
{
    return mg_gemini_stream_event(st, ev->data, ev->data_len, out, err);
}


static int
ngx_http_model_gateway_gemini_finish(void *st, mg_buf_t *out)
{
    return mg_gemini_stream_finish(st, out);
}


static void
ngx_http_model_gateway_gemini_free(void *st)
{
    mg_gemini_stream_free(st);
}


static int
ngx_http_model_gateway_bedrock_request(ngx_http_model_gateway_target_t *t,
    ngx_str_t *body, size_t max, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err)
{
    mg_bedrock_opts_t  opts;

    ngx_memzero(&opts, sizeof(mg_bedrock_opts_t));

    opts.default_max_tokens = t->backend->max_tokens;
    opts.max_out = max;

    return mg_bedrock_request((char *) body->data, body->len, &opts, out,
                              stream, include_usage, err);
}


static void
ngx_http_model_gateway_bedrock_error(int status, ngx_str_t *errortype,
    const char *body, size_t len, mg_xerror_t *err)
{
    mg_bedrock_error(status, (char *) errortype->data, errortype->len, body,
                     len, err);
}


static void
ngx_http_model_gateway_bedrock_init(void *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    mg_bedrock_stream_init(st, model, model_len, created, include_usage);
}


/* an eventstream message, as the glue's decoder handed it on */

static int
ngx_http_model_gateway_bedrock_stream(void *st, const mg_sse_event_t *ev,
    mg_buf_t *out, mg_xerror_t *err)
{
    return mg_bedrock_stream_event(st, ev->kind, ev->kind_len, ev->event,
                                   ev->event_len, ev->data, ev->data_len,
                                   out, err);
}


static int
ngx_http_model_gateway_bedrock_finish(void *st, mg_buf_t *out)
{
    return mg_bedrock_stream_finish(st, out);
}


static void
ngx_http_model_gateway_bedrock_free(void *st)
{
    mg_bedrock_stream_free(st);
}
