
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Anthropic Messages backends: the glue around src/mg_anthropic.c.  The
 * client's chat request is translated once per Anthropic target when the
 * body is read (a feature Anthropic cannot honour rules that target out,
 * and is a 400 if no other target is left); responses, stream events and
 * errors are translated back through the per-event hook.
 */


#include "ngx_http_model_gateway_module.h"
#include "mg_anthropic.h"


static void ngx_http_model_gateway_anthropic_cleanup(void *data);


ngx_int_t
ngx_http_model_gateway_anthropic_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                                rc, stream, include_usage;
    u_char                            *p;
    ngx_uint_t                         i, n, left, anthropic;
    mg_buf_t                           out;
    mg_xerror_t                        err;
    mg_anthropic_opts_t                opts;
    ngx_http_model_gateway_target_t   *t;
    ngx_http_model_gateway_backend_t  *b;

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;

    anthropic = 0;
    left = 0;

    for (i = 0; i < n; i++) {
        if (t[i].backend->type == NGX_HTTP_MG_ANTHROPIC) {
            anthropic = 1;
        }
    }

    if (!anthropic) {
        return NGX_OK;
    }

    ctx->xbody = ngx_pcalloc(r->pool, n * sizeof(ngx_str_t));
    if (ctx->xbody == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&err, sizeof(mg_xerror_t));

    for (i = 0; i < n; i++) {
        b = t[i].backend;

        if (b->type != NGX_HTTP_MG_ANTHROPIC) {
            left += !ctx->tried[i];
            continue;
        }

        if (ctx->endpoint != MG_EP_CHAT) {

            /* Anthropic serves chat only */

            ctx->tried[i] = 1;
            mg_xerror_set(&err, 400, 0, "invalid_request_error",
                          "unsupported_endpoint", NULL,
                          "The model does not support this endpoint.");
            continue;
        }

        ngx_memzero(&out, sizeof(mg_buf_t));

        opts.model = (char *) t[i].provider_model.data;
        opts.model_len = t[i].provider_model.len;
        opts.default_max_tokens = b->max_tokens;

        rc = mg_anthropic_request((char *) ctx->body.data, ctx->body.len,
                                  &opts, &out, &stream, &include_usage,
                                  &err);

        if (rc != MG_X_OK) {
            mg_buf_free(&out);

            if (rc == MG_X_NOMEM) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* not for this backend; another one may serve it */

            ctx->tried[i] = 1;
            continue;
        }

        p = ngx_pnalloc(r->pool, out.len);
        if (p == NULL) {
            mg_buf_free(&out);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(p, out.data, out.len);
        ctx->xbody[i].data = p;
        ctx->xbody[i].len = out.len;
        ctx->include_usage = include_usage;

        mg_buf_free(&out);

        left += !ctx->tried[i];
    }

    if (left) {
        return NGX_OK;
    }

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


/* a stream event Anthropic sends before any content */

ngx_uint_t
ngx_http_model_gateway_anthropic_preamble(const mg_sse_event_t *ev)
{
    if (ev->event == NULL) {
        return 0;
    }

#define ngx_mg_ev(s)                                                        \
    (ev->event_len == sizeof(s) - 1                                         \
     && ngx_strncmp(ev->event, s, ev->event_len) == 0)

    return ngx_mg_ev("message_start") || ngx_mg_ev("ping")
           || ngx_mg_ev("content_block_start");

#undef ngx_mg_ev
}


/*
 * The response of an Anthropic backend, about to be sent: a body read
 * whole is translated (an answer, or an error with the status OpenAI
 * clients expect); a stream gets the translating event hook.
 */

ngx_int_t
ngx_http_model_gateway_anthropic_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                     rc;
    u_char                 *p;
    size_t                  len;
    mg_buf_t                out;
    ngx_buf_t              *b;
    mg_xerror_t             err;
    ngx_pool_cleanup_t     *cln;
    ngx_http_upstream_t    *u;

    u = r->upstream;

    if (ctx->mode == NGX_HTTP_MG_BODY_STREAM) {

        ctx->anthropic = ngx_pcalloc(r->pool, sizeof(mg_anthropic_stream_t));
        if (ctx->anthropic == NULL) {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        mg_anthropic_stream_init(ctx->anthropic, (char *) ctx->model.data,
                                 ctx->model.len, (long) ngx_time(),
                                 ctx->include_usage);

        cln->handler = ngx_http_model_gateway_anthropic_cleanup;
        cln->data = ctx;

        ctx->on_event = ngx_http_model_gateway_anthropic_event;

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
        rc = mg_anthropic_response((char *) p, len, (char *) ctx->model.data,
                                   ctx->model.len, (long) ngx_time(), &out,
                                   &err);

    } else {
        mg_anthropic_error((int) ctx->status.code, (char *) p, len, &err);
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


/* the per-event hook of Anthropic streams */

ngx_int_t
ngx_http_model_gateway_anthropic_event(ngx_http_model_gateway_ctx_t *ctx,
    const mg_sse_event_t *ev)
{
    int           rc;
    size_t        n;
    mg_xerror_t   err;
    u_char        buf[512];

    if (ev->data == NULL) {
        return NGX_OK;
    }

    mg_buf_reset(&ctx->xout);

    rc = mg_anthropic_stream_event(ctx->anthropic, ev->event, ev->event_len,
                                   ev->data, ev->data_len, &ctx->xout, &err);

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

        n = mg_error_json((char *) buf + 6, sizeof(buf) - 8, err.message,
                          err.type, err.param, err.code);
        n = ngx_min(n, sizeof(buf) - 8);

        ngx_memcpy(buf, "data: ", 6);
        buf[6 + n] = '\n';
        buf[7 + n] = '\n';

        return ngx_http_model_gateway_emit(ctx, buf, n + 8);

    default:
        return NGX_ERROR;
    }
}


static void
ngx_http_model_gateway_anthropic_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ctx->anthropic) {
        mg_anthropic_stream_free(ctx->anthropic);
        ctx->anthropic = NULL;
    }

    mg_buf_free(&ctx->xout);
}
