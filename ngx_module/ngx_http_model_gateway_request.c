
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The request of one attempt, built in peer.get for the backend chosen.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_upstream.h"
#include "ngx_http_model_gateway_providers.h"


static ngx_str_t  ngx_http_model_gateway_accept_json =
    ngx_string("application/json");


static ngx_uint_t ngx_http_model_gateway_usage_splice(
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *part, ngx_uint_t n);


/*
 * The request for the current attempt: the client's JSON body with only
 * the model id replaced (spliced, not re-serialized), and the backend's own
 * path, host and key.
 */

ngx_int_t
ngx_http_model_gateway_build_request(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                                   *p;
    size_t                                    len, body_len;
    ngx_buf_t                                *b;
    ngx_int_t                                 rc;
    ngx_uint_t                                i, n;
    ngx_chain_t                              *cl, **ll;
    ngx_str_t                                 part[5], suffix, sign;
    const ngx_str_t                          *accept;
    ngx_http_upstream_t                      *u;
    ngx_http_model_gateway_target_t          *t;
    ngx_http_model_gateway_backend_t         *be;
    const ngx_http_model_gateway_provider_t  *pv;

    u = r->upstream;
    t = ctx->target;
    be = t->backend;
    pv = be->provider;
    suffix = ctx->uri_suffix;
    ngx_str_null(&sign);

    /* xbody is indexed by the targets it was translated for */

    i = t - (ngx_http_model_gateway_target_t *) ctx->model_conf->targets.elts;

    if (ctx->xbody && ctx->xbody_model == ctx->model_conf
        && ctx->xbody[i].len)
    {
        /*
         * translated for this backend when the body was read; the
         * provider's own path, and a signature when it signs requests
         */

        part[0] = ctx->xbody[i];
        n = 1;

        if (pv->path(r, ctx, t, &suffix) != NGX_OK) {
            return NGX_ERROR;
        }

        if (pv->sign && pv->sign(r, be, &suffix, &part[0], &sign) != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!pv->translated && pv->path
               && (rc = pv->path(r, ctx, t, &suffix)) != NGX_DECLINED)
    {
        /* the model is in the path: the body goes as the client sent it */

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        part[0] = ctx->body;
        n = 1;

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

    if (part[0].data == ctx->body.data
        && ngx_http_model_gateway_usage_edit(ctx))
    {
        n = ngx_http_model_gateway_usage_splice(ctx, part, n);
    }

    body_len = 0;
    for (i = 0; i < n; i++) {
        body_len += part[i].len;
    }

    accept = ctx->streaming ? &pv->accept_stream
                            : &ngx_http_model_gateway_accept_json;

    len = sizeof("  HTTP/1.1" CRLF) - 1 + r->method_name.len + be->path.len
          + suffix.len
          + sizeof("Host: " CRLF) - 1 + be->host_header.len
          + be->auth_header.len + sign.len
          + sizeof("Content-Type: application/json" CRLF) - 1
          + sizeof("Content-Length: " CRLF) - 1 + NGX_SIZE_T_LEN
          + sizeof("Accept-Encoding: identity" CRLF) - 1
          + sizeof("Accept: " CRLF) - 1 + accept->len
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
                    "Accept: %V" CRLF
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


/*
 * A chat stream whose client did not ask for its usage asks for it
 * (_usage.c): one more splice in the client's body, in the part that
 * holds it (never the model id's).
 */

static ngx_uint_t
ngx_http_model_gateway_usage_splice(ngx_http_model_gateway_ctx_t *ctx,
    ngx_str_t *part, ngx_uint_t n)
{
    u_char           *at;
    ngx_uint_t        i, k;
    mg_usage_edit_t  *e;

    e = &ctx->usage.request;
    at = ctx->body.data + e->at;

    for (i = 0; i < n; i++) {
        if (part[i].data >= ctx->body.data
            && part[i].data <= at
            && at + e->cut <= part[i].data + part[i].len
            && part[i].data + part[i].len <= ctx->body.data + ctx->body.len)
        {
            break;
        }
    }

    if (i == n) {
        return n;
    }

    for (k = n - 1; k > i; k--) {
        part[k + 2] = part[k];
    }

    part[i + 2].data = at + e->cut;
    part[i + 2].len = part[i].data + part[i].len - (at + e->cut);
    part[i + 1].data = (u_char *) e->text;
    part[i + 1].len = e->len;
    part[i].len = at - part[i].data;

    return n + 2;
}
