
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The request body: made one string in memory, validated by the
 * single-pass scanner, the members the gateway reads (model, stream,
 * stream_options, the object ids of the Responses and Conversations APIs)
 * picked out and refused when duplicated, and the candidates of its model
 * found.
 */


#include "ngx_http_model_gateway_module.h"


static void ngx_http_model_gateway_tokens_asked(
    ngx_http_model_gateway_ctx_t *ctx, mg_json_field_t *f);
static ngx_int_t ngx_http_model_gateway_json_string(ngx_http_request_t *r,
    u_char *tok, size_t len, ngx_str_t *out);
static ngx_int_t ngx_http_model_gateway_conversation_id(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *p, size_t len,
    mg_json_type_t type);
static ngx_int_t ngx_http_model_gateway_state_model(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_main_conf_t *mcf);


/*
 * Makes the complete request body one contiguous ngx_str_t, ctx->body, as
 * the parser, the translators and every attempt at a backend expect.
 *
 * While the body arrives nginx keeps at most client_body_buffer_size of it
 * in memory and writes the rest to a temporary file in
 * client_body_temp_path, so a slow client pins no more memory than with
 * plain nginx.  Only once the body is complete is it read back, with one
 * allocation of its full length and ngx_read_file() of the file part.
 * That read is the same blocking, file-backed read nginx itself does for
 * buffered request bodies (ngx_output_chain() reads in_file buffers when
 * the proxy module sends a body without sendfile); the file was just
 * written, so the read is normally served from the page cache, it happens
 * once per request and its size is limited by model_gateway_max_body_size.
 */

ngx_int_t
ngx_http_model_gateway_body_in_memory(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char       *p;
    off_t         len, size, pos;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len > (off_t) NGX_MAX_SIZE_T_VALUE) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    p = ngx_pnalloc(r->pool, len ? (size_t) len : 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body.data = p;
    ctx->body.len = (size_t) len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        pos = b->file_pos;

        while (pos < b->file_last) {
            size = b->file_last - pos;

            n = ngx_read_file(b->file, p, (size_t) size, pos);

            if (n == NGX_ERROR) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (n == 0) {
                ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                              "model gateway: request body file \"%V\" "
                              "ended at %O of %O bytes",
                              &b->file->name, pos, b->file_last);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            p += n;
            pos += n;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "model gateway: request body of %O bytes, from a file: %d",
                   len, r->request_body->temp_file != NULL);

    return NGX_OK;
}


/*
 * The output tokens a request asks for, per field: a key's cap and the
 * limits' reservation read them.  "1e6" or "4096.5" asks for tokens too;
 * a number too long to read asks for more than any cap.
 */

static void
ngx_http_model_gateway_tokens_asked(ngx_http_model_gateway_ctx_t *ctx,
    mg_json_field_t *f)
{
    u_char      num[32];
    double      d;
    uint64_t    v;
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_MG_TOKEN_FIELDS; i++) {
        if (f[i].type != MG_JSON_NUMBER) {
            continue;
        }

        if (f[i].len >= sizeof(num)) {
            v = NGX_HTTP_MG_TOKENS_HUGE;

        } else {
            ngx_memcpy(num, ctx->body.data + f[i].start, f[i].len);
            num[f[i].len] = '\0';

            d = strtod((char *) num, NULL);

            v = (d <= 0) ? 0
                : (d >= (double) NGX_HTTP_MG_TOKENS_HUGE)
                  ? NGX_HTTP_MG_TOKENS_HUGE
                  : (uint64_t) d + ((double) (uint64_t) d < d);
        }

        ctx->tokens_asked[i] = v;
        ctx->tokens_asked_set |= 1 << i;
    }
}


ngx_int_t
ngx_http_model_gateway_parse_body(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                              *p;
    size_t                               len;
    ssize_t                              n;
    ngx_int_t                            rc;
    ngx_uint_t                           i;
    ngx_chain_t                         *cl;
    mg_json_error_t                      err;
    ngx_http_model_gateway_model_t      *m;
    ngx_http_model_gateway_policy_t     *pol;
    ngx_http_model_gateway_main_conf_t  *mcf;

    enum { F_MODEL = 0, F_MESSAGES, F_STREAM, F_INPUT, F_PREVIOUS,
           F_CONVERSATION, F_STREAM_OPTIONS, F_MAX_TOKENS,
           F_N = F_MAX_TOKENS + NGX_HTTP_MG_TOKEN_FIELDS };

    mg_json_field_t  f[F_N] = {
        { "model", 5, MG_JSON_NONE, 0, 0, 0 },
        { "messages", 8, MG_JSON_NONE, 0, 0, 0 },
        { "stream", 6, MG_JSON_NONE, 0, 0, 0 },
        { "input", 5, MG_JSON_NONE, 0, 0, 0 },
        { "previous_response_id", 20, MG_JSON_NONE, 0, 0, 0 },
        { "conversation", 12, MG_JSON_NONE, 0, 0, 0 },
        { "stream_options", 14, MG_JSON_NONE, 0, 0, 0 },
        { "max_tokens", 10, MG_JSON_NONE, 0, 0, 0 },
        { "max_completion_tokens", 21, MG_JSON_NONE, 0, 0, 0 },
        { "max_output_tokens", 17, MG_JSON_NONE, 0, 0, 0 }
    };

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if ((ctx->state.kind == NGX_HTTP_MG_STATE_RESPONSE
         || ctx->state.kind == NGX_HTTP_MG_STATE_CONVERSATION
         || ctx->state.kind == NGX_HTTP_MG_STATE_NEW_CONVERSATION)
        && (r->request_body == NULL || r->request_body->bufs == NULL
            || (r->request_body->bufs->next == NULL
                && ngx_buf_size(r->request_body->bufs->buf) == 0)))
    {
        /* an object by its id, or a new conversation: no body needed */

        return ngx_http_model_gateway_state_model(r, ctx, mcf);
    }

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error", NULL,
                                           NULL, "The request body is "
                                           "empty; a JSON object is "
                                           "expected.");
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {

        /* the body fitted in client_body_buffer_size: used in place */

        ctx->body.data = cl->buf->pos;
        ctx->body.len = cl->buf->last - cl->buf->pos;

    } else {
        rc = ngx_http_model_gateway_body_in_memory(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    rc = mg_json_scan((char *) ctx->body.data, ctx->body.len, f, F_N, 64,
                      &err);

    if (rc != MG_JSON_OK) {
        p = ngx_pnalloc(r->pool, 160);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->err.message_str.data = p;
        ctx->err.message_str.len =
            ngx_snprintf(p, 160, "We could not parse the JSON body of your "
                         "request: %s at byte %uz.",
                         rc == MG_JSON_EDEPTH ? "nesting is too deep"
                                              : err.message,
                         err.offset)
            - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_json", NULL, NULL);
    }

    for (p = ctx->body.data; p < ctx->body.data + ctx->body.len; p++) {
        if (*p != ' ' && *p != '\t' && *p != CR && *p != LF) {
            break;
        }
    }

    if (*p != '{') {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_type", NULL,
                                           "The request body must be a "
                                           "JSON object.");
    }

    /*
     * the gateway routes on the last of duplicate members; a backend that
     * reads the first would run another model than the one routed (or
     * more tokens than a key's cap and its limits allowed)
     */

    for (i = 0; i < F_N; i++) {
        if (f[i].dup) {
            p = ngx_pnalloc(r->pool, sizeof("The request body has more "
                                            "than one \"\" member.")
                                     + f[i].name_len);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ctx->err.message_str.data = p;
            ctx->err.message_str.len =
                ngx_sprintf(p, "The request body has more than one "
                            "\"%s\" member.", f[i].name)
                - p;

            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                               "invalid_request_error",
                                               "invalid_json", f[i].name,
                                               NULL);
        }
    }

    if (ctx->state.kind == NGX_HTTP_MG_STATE_RESPONSE
        || ctx->state.kind == NGX_HTTP_MG_STATE_CONVERSATION
        || ctx->state.kind == NGX_HTTP_MG_STATE_NEW_CONVERSATION)
    {
        return ngx_http_model_gateway_state_model(r, ctx, mcf);
    }

    if (ctx->state.kind == NGX_HTTP_MG_STATE_NEW_RESPONSE) {

        if (f[F_PREVIOUS].type == MG_JSON_STRING) {
            rc = ngx_http_model_gateway_json_string(r, ctx->body.data
                                                       + f[F_PREVIOUS].start,
                                                    f[F_PREVIOUS].len,
                                                    &ctx->state.id);
            if (rc != NGX_OK) {
                return rc;
            }

            ctx->state.via = NGX_HTTP_MG_STATE_RESPONSE;

        } else if (f[F_PREVIOUS].type != MG_JSON_NONE
                   && f[F_PREVIOUS].type != MG_JSON_NULL)
        {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_type",
                                           "previous_response_id",
                                           "'previous_response_id' must be "
                                           "a string.");
        }

        if (f[F_CONVERSATION].type != MG_JSON_NONE
            && f[F_CONVERSATION].type != MG_JSON_NULL)
        {
            rc = ngx_http_model_gateway_conversation_id(r, ctx,
                                               ctx->body.data
                                               + f[F_CONVERSATION].start,
                                               f[F_CONVERSATION].len,
                                               f[F_CONVERSATION].type);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        ctx->streaming = (f[F_STREAM].type == MG_JSON_TRUE);
    }

    if (f[F_MODEL].type == MG_JSON_NONE) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "missing_required_parameter",
                                           "model", "you must provide a "
                                           "model parameter");
    }

    if (f[F_MODEL].type != MG_JSON_STRING || f[F_MODEL].len <= 2) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_type", "model",
                                           "model must be a non-empty "
                                           "string");
    }

    if (ctx->endpoint == MG_EP_CHAT) {

        if (f[F_MESSAGES].type == MG_JSON_NONE) {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "missing_required_parameter",
                                           "messages", "Missing required "
                                           "parameter: 'messages'.");
        }

        if (f[F_MESSAGES].type != MG_JSON_ARRAY) {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_type", "messages",
                                           "'messages' must be an array.");
        }

        /* "[" optional whitespace "]" is an empty array */

        p = ctx->body.data + f[F_MESSAGES].start + 1;
        while (*p == ' ' || *p == '\t' || *p == CR || *p == LF) {
            p++;
        }

        if (*p == ']') {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "empty_array", "messages",
                                           "'messages' must contain at "
                                           "least one message.");
        }

        ctx->streaming = (f[F_STREAM].type == MG_JSON_TRUE);

        if (ctx->streaming) {
            ngx_http_model_gateway_usage_request(ctx,
                                                 &f[F_STREAM_OPTIONS]);
        }

    } else if (ctx->endpoint == MG_EP_EMBEDDINGS
               && f[F_INPUT].type == MG_JSON_NONE)
    {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "missing_required_parameter",
                                           "input", "Missing required "
                                           "parameter: 'input'.");
    }

    ngx_http_model_gateway_tokens_asked(ctx, &f[F_MAX_TOKENS]);

    ctx->model_start = f[F_MODEL].start;
    ctx->model_len = f[F_MODEL].len;

    ctx->model.data = ngx_pnalloc(r->pool, f[F_MODEL].len);
    if (ctx->model.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = mg_json_unescape((char *) ctx->body.data + f[F_MODEL].start,
                         f[F_MODEL].len, (char *) ctx->model.data,
                         f[F_MODEL].len);
    if (n <= 0) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_type", "model",
                                           "model must be a non-empty "
                                           "string");
    }

    ctx->model.len = n;

    m = mcf->models.elts;
    for (i = 0; i < mcf->models.nelts; i++) {
        if (m[i].name.len == ctx->model.len
            && ngx_memcmp(m[i].name.data, ctx->model.data, ctx->model.len)
               == 0)
        {
            ctx->model_conf = &m[i];
            break;
        }
    }

    if (ctx->model_conf == NULL) {
        len = ngx_min(ctx->model.len, 256);

        p = ngx_pnalloc(r->pool, sizeof("The model `` does not exist or "
                                        "you do not have access to it.")
                                 + len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->err.message_str.data = p;
        ctx->err.message_str.len =
            ngx_sprintf(p, "The model `%*s` does not exist or you do not "
                        "have access to it.", len, ctx->model.data)
            - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "model_not_found", "model", NULL);
    }

    ctx->tried = ngx_pcalloc(r->pool, ctx->model_conf->targets.nelts);
    if (ctx->tried == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->state.kind == NGX_HTTP_MG_STATE_NEW_RESPONSE) {

        /* gateway mode: the chat request is built in the route step */

        rc = ngx_http_model_gateway_memory_prepare(r, ctx);
        if (rc != NGX_OK && rc != NGX_DECLINED) {
            return rc;
        }

    } else {
        rc = NGX_DECLINED;
    }

    if (rc == NGX_DECLINED) {
        rc = ngx_http_model_gateway_translate_prepare(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx->policy = ctx->lcf->balance;

    if (ctx->lcf->balance_models) {
        pol = ctx->lcf->balance_models->elts;

        for (i = 0; i < ctx->lcf->balance_models->nelts; i++) {
            if (pol[i].model.len == ctx->model.len
                && ngx_memcmp(pol[i].model.data, ctx->model.data,
                              ctx->model.len) == 0)
            {
                ctx->policy = pol[i].policy;
                break;
            }
        }
    }

    return NGX_OK;
}


/* unescapes a JSON string token into the request pool */

static ngx_int_t
ngx_http_model_gateway_json_string(ngx_http_request_t *r, u_char *tok,
    size_t len, ngx_str_t *out)
{
    ssize_t  n;

    out->data = ngx_pnalloc(r->pool, len);
    if (out->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = mg_json_unescape((char *) tok, len, (char *) out->data, len);

    if (n <= 0 || n > 200) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_value", NULL,
                                           "An object id must be a "
                                           "non-empty string of at most "
                                           "200 characters.");
    }

    out->len = n;

    return NGX_OK;
}


/* "conversation": "conv_..." or {"id": "conv_..."} */

static ngx_int_t
ngx_http_model_gateway_conversation_id(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *p, size_t len,
    mg_json_type_t type)
{
    size_t          start, vlen;
    mg_json_type_t  t;

    if (type == MG_JSON_OBJECT) {
        t = mg_json_member((char *) p, len, "id", 2, &start, &vlen);

        if (t != MG_JSON_STRING) {
            goto invalid;
        }

        p += start;
        len = vlen;

    } else if (type != MG_JSON_STRING) {
        goto invalid;
    }

    if (ctx->state.via == NGX_HTTP_MG_STATE_NONE) {
        ctx->state.via = NGX_HTTP_MG_STATE_CONVERSATION;
        return ngx_http_model_gateway_json_string(r, p, len, &ctx->state.id);
    }

    return NGX_OK;

invalid:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request_error",
                                       "invalid_type", "conversation",
                                       "'conversation' must be a string or "
                                       "an object with an 'id'.");
}


/*
 * Requests about a stored object (and new conversations) name no model:
 * their candidates are every OpenAI-type backend, narrowed down by the
 * state route handler.
 */

static ngx_int_t
ngx_http_model_gateway_state_model(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_main_conf_t *mcf)
{
    if (mcf->state_model.targets.nelts == 0) {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "unknown_url", NULL,
                                           "No backend serves the OpenAI "
                                           "Responses and Conversations "
                                           "APIs.");
    }

    ctx->model_conf = &mcf->state_model;
    ngx_str_null(&ctx->model);

    if (ctx->body.data == NULL) {
        ngx_str_set(&ctx->body, "");
    }

    ctx->tried = ngx_pcalloc(r->pool, ctx->model_conf->targets.nelts);
    if (ctx->tried == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->policy = ctx->lcf->balance;

    return NGX_OK;
}
