
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The error contract: in gateway locations every error response that nginx
 * or the gateway generates (nginx's own 413, 502 and 504 pages included) is
 * an OpenAI error object with "x-should-retry: false".  Backend responses
 * passed through as sent are left alone.
 */


#include "ngx_http_model_gateway_module.h"
#include "mg_outcome.h"


static void ngx_http_model_gateway_final_error(
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t status);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


/*
 * The outcome of a request whose attempts all failed decides what the
 * client is told, whatever status nginx's upstream module chose.
 */

static void
ngx_http_model_gateway_final_error(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t status)
{
    u_char              *p;
    size_t               len;
    ngx_str_t           *s;
    ngx_uint_t           i;
    mg_outcome_t         out;
    mg_outcome_in_t      in;
    ngx_http_request_t  *r;

    r = ctx->request;

    ngx_memzero(&in, sizeof(mg_outcome_in_t));

    in.total_expired = ctx->total_expired;
    in.all_cooling = ctx->all_cooling;
    in.cool_limited = ctx->cool_limited;
    in.cool_wait = ctx->cool_wait;
    in.failures = ctx->failures;
    in.rate_limited = ctx->rate_limited;
    in.min_retry_after_ms = ctx->min_retry_after_ms;
    in.last_fail_status = ctx->last_fail_status;
    in.status = status;

    switch (ctx->last_fail) {

    case NGX_HTTP_MG_FAIL_FIRST_BYTE:
    case NGX_HTTP_MG_FAIL_IDLE:
    case NGX_HTTP_MG_FAIL_CONNECT_TIMEOUT:
        in.last_fail = MG_OUTCOME_FAIL_TIMEOUT;
        break;

    case NGX_HTTP_MG_FAIL_AUTH:
        in.last_fail = MG_OUTCOME_FAIL_AUTH;
        break;

    case NGX_HTTP_MG_FAIL_STATUS:
        in.last_fail = MG_OUTCOME_FAIL_STATUS;
        break;

    case NGX_HTTP_MG_FAIL_TOO_BIG:
        in.last_fail = MG_OUTCOME_FAIL_TOO_BIG;
        break;

    default:
        in.last_fail = MG_OUTCOME_FAIL_OTHER;
    }

    mg_outcome(&in, &out);

    ctx->err.status = out.status;
    ctx->err.type = out.type;
    ctx->err.code = out.code;
    ctx->err.message = out.message;

    if (out.retry_after) {
        ctx->err.retry_after = out.retry_after;
    }

    if (!out.list_attempts) {
        return;
    }

    /* which backends failed how: operators' names, never secrets */

    len = sizeof("The model backend failed (attempts: ).") - 1;

    s = ctx->attempt_log.elts;
    for (i = 0; i < ctx->attempt_log.nelts; i++) {
        len += s[i].len + 2;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {

        /* out.message: without the names */

        return;
    }

    ctx->err.message_str.data = p;
    p = ngx_cpymem(p, "The model backend failed (attempts: ",
                   sizeof("The model backend failed (attempts: ") - 1);

    for (i = 0; i < ctx->attempt_log.nelts; i++) {
        if (i) {
            *p++ = ','; *p++ = ' ';
        }

        p = ngx_cpymem(p, s[i].data, s[i].len);
    }

    *p++ = ')'; *p++ = '.';

    ctx->err.message_str.len = p - ctx->err.message_str.data;
    ctx->err.message = NULL;
}


ngx_int_t
ngx_http_model_gateway_error_json(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *out)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   status;
    const char  *msg, *type;

    status = ctx->err.status;
    msg = ctx->err.message;
    type = ctx->err.type;

    if (msg == NULL && ctx->err.message_str.len) {
        p = ngx_pnalloc(r->pool, ctx->err.message_str.len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        (void) ngx_cpystrn(p, ctx->err.message_str.data,
                           ctx->err.message_str.len + 1);
        msg = (const char *) p;
    }

    if (msg == NULL) {
        switch (status) {
        case NGX_HTTP_BAD_REQUEST:
            msg = "The request could not be parsed.";
            break;
        case NGX_HTTP_NOT_FOUND:
            msg = "Not found.";
            break;
        case NGX_HTTP_NOT_ALLOWED:
            msg = "This method is not allowed on this endpoint.";
            break;
        case NGX_HTTP_REQUEST_TIME_OUT:
            msg = "The client did not send the request in time.";
            break;
        case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
            msg = "The request body exceeds the gateway's limit "
                  "(model_gateway_max_body_size).";
            ctx->err.code = "request_too_large";
            break;
        case NGX_HTTP_REQUEST_URI_TOO_LARGE:
        case NGX_HTTP_REQUEST_HEADER_TOO_LARGE:
            msg = "The request line or headers are too large.";
            break;
        case NGX_HTTP_SERVICE_UNAVAILABLE:
            msg = "No backend is available for this model.";
            break;
        case NGX_HTTP_GATEWAY_TIME_OUT:
            msg = "The model backend timed out.";
            break;
        case NGX_HTTP_BAD_GATEWAY:
            msg = "The model backend failed.";
            break;
        default:
            msg = (status >= 500) ? "The gateway failed to handle the "
                                    "request."
                                  : "The request was rejected.";
        }
    }

    if (type == NULL) {
        type = (status >= 500) ? "server_error" : "invalid_request_error";
    }

    len = mg_error_json(NULL, 0, msg, type, ctx->err.param, ctx->err.code);

    out->data = ngx_pnalloc(r->pool, len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    out->len = mg_error_json((char *) out->data, len + 1, msg, type,
                             ctx->err.param, ctx->err.code);

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                           json;
    ngx_table_elt_t                    *h;
    ngx_http_model_gateway_ctx_t       *ctx;
    ngx_http_model_gateway_loc_conf_t  *lcf;

    if (r != r->main || r->err_status < NGX_HTTP_BAD_REQUEST) {
        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_model_gateway_module);

    if (!lcf->enable) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (ctx->err.status == 0) {
        if (ctx->failures || ctx->total_expired || ctx->all_cooling) {
            ngx_http_model_gateway_final_error(ctx, r->err_status);

        } else {
            ctx->err.status = r->err_status;
        }
    }

    if (ngx_http_model_gateway_error_json(r, ctx, &json) != NGX_OK) {
        return NGX_ERROR;
    }

    r->err_status = ctx->err.status;
    r->headers_out.status = ctx->err.status;
    r->headers_out.status_line.len = 0;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;
    r->headers_out.content_length_n = json.len;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "x-should-retry");
    ngx_str_set(&h->value, "false");
    h->lowcase_key = NULL;

    if (ctx->err.retry_after > 0) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (h->value.data == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.len = ngx_sprintf(h->value.data, "%i", ctx->err.retry_after)
                       - h->value.data;
        h->lowcase_key = NULL;
    }

    if (ngx_http_model_gateway_limits_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->err.status == NGX_HTTP_NOT_ALLOWED) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");

        if (ctx->endpoint == MG_EP_MODELS || ctx->endpoint == MG_EP_MODEL) {
            ngx_str_set(&h->value, "GET, HEAD");

        } else {
            ngx_str_set(&h->value, "POST");
        }

        h->lowcase_key = NULL;
    }

    ctx->err.body = ngx_calloc_buf(r->pool);
    if (ctx->err.body == NULL) {
        return NGX_ERROR;
    }

    ctx->err.body->pos = json.data;
    ctx->err.body->last = json.data + json.len;
    ctx->err.body->memory = 1;
    ctx->err.body->last_buf = 1;
    ctx->err.body->last_in_chain = 1;
    ctx->err.rendering = 1;

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_model_gateway_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_uint_t                     last;
    ngx_chain_t                   *cl, out;
    ngx_http_model_gateway_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->stream.last_sent) {

        /* the stream's last buffer already ended the response */

        if (in && in->next == NULL && in->buf->last_buf
            && ngx_buf_size(in->buf) == 0)
        {
            return ngx_http_next_body_filter(r, NULL);
        }

        return ngx_http_next_body_filter(r, in);
    }

    if (!ctx->err.rendering) {
        return ngx_http_next_body_filter(r, in);
    }

    /* nginx's HTML page is swallowed; the JSON goes out in its place */

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            last = 1;
        }

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (ctx->err.sent) {
        return ngx_http_next_body_filter(r, NULL);
    }

    if (!last) {
        return NGX_OK;
    }

    ctx->err.sent = 1;

    out.buf = ctx->err.body;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}


ngx_int_t
ngx_http_model_gateway_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_model_gateway_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_model_gateway_body_filter;

    return NGX_OK;
}
