
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The content handler: endpoint dispatch (the URI after the location
 * prefix, GET /models, the methods an endpoint takes), the start of the
 * body read, and the route step that runs before the upstream starts.
 * The body itself is _body.c's.
 */


#include "ngx_http_model_gateway_module.h"


static ngx_int_t ngx_http_model_gateway_models(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *id, size_t id_len);
static void ngx_http_model_gateway_body_handler(ngx_http_request_t *r);
static void ngx_http_model_gateway_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);


ngx_http_model_gateway_ctx_t *
ngx_http_model_gateway_get_ctx(ngx_http_request_t *r)
{
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;
    ctx->lcf = ngx_http_get_module_loc_conf(r, ngx_http_model_gateway_module);
    ctx->start = ngx_current_msec;
    ctx->min_retry_after_ms = -1;
    ctx->retry_after_ms = -1;
    ctx->session.pinned = -1;
    ctx->preferred = -1;
    ctx->session.hashed = -1;

    ngx_http_set_ctx(r, ctx, ngx_http_model_gateway_module);

    return ctx;
}


/*
 * Records an error the gateway answers itself and returns its status; the
 * filter module renders it as an OpenAI error object.
 */

ngx_int_t
ngx_http_model_gateway_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *message)
{
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.status = status;
    ctx->err.type = type;
    ctx->err.code = code;
    ctx->err.param = param;
    ctx->err.message = message;

    return status;
}


/* letters, digits, "-", "_", "." and "/", with no "." or ".." segment */

static ngx_uint_t
ngx_http_model_gateway_safe_path(u_char *p, size_t len)
{
    u_char  *end, *seg;

    end = p + len;
    seg = p;

    for ( ;; ) {
        if (p == end || *p == '/') {
            if ((p - seg == 1 && seg[0] == '.')
                || (p - seg == 2 && seg[0] == '.' && seg[1] == '.'))
            {
                return 0;
            }

            if (p == end) {
                return 1;
            }

            seg = p + 1;

        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                     || (*p >= '0' && *p <= '9')
                     || *p == '-' || *p == '_' || *p == '.'))
        {
            return 0;
        }

        p++;
    }
}


ngx_int_t
ngx_http_model_gateway_handler(ngx_http_request_t *r)
{
    u_char                        *p;
    size_t                         len;
    ngx_int_t                      rc;
    const char                    *id;
    size_t                         id_len;
    ngx_str_t                      arg;
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_model_gateway_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->lcf->auth && !ctx->identity.done) {

        /* "satisfy any" let another access module pass it over */

        return ngx_http_model_gateway_fail(r, NGX_HTTP_UNAUTHORIZED,
                                           "invalid_request_error",
                                           "invalid_api_key", NULL,
                                           "Invalid or missing API key.");
    }

    /*
     * the location prefix is the SDK's base_url, so the endpoint is what
     * follows it: "/llm/v1/chat/completions" under "location /llm/"
     */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    len = r->uri.len;

    if (!clcf->exact_match
#if (NGX_PCRE)
        && clcf->regex == NULL
#endif
        && !clcf->named
        && clcf->name.len <= len
        && ngx_strncmp(clcf->name.data, p, clcf->name.len) == 0)
    {
        p += clcf->name.len;
        len -= clcf->name.len;
    }

    ctx->endpoint = mg_endpoint_match((char *) p, len, &id, &id_len);

    /* an endpoint the key may not use does not exist for it */

    if (ctx->identity.key
        && !mg_key_endpoint_allowed(ctx->identity.key,
                                    mg_key_endpoint_of(ctx->endpoint)))
    {
        goto unknown;
    }

    switch (ctx->endpoint) {

    case MG_EP_MODELS:
    case MG_EP_MODEL:

        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            goto not_allowed;
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_model_gateway_models(r, ctx,
                                             (u_char *) id, id_len);

    case MG_EP_CHAT:
        ngx_str_set(&ctx->uri_suffix, "/chat/completions");
        break;

    case MG_EP_EMBEDDINGS:
        ngx_str_set(&ctx->uri_suffix, "/embeddings");
        break;

    case MG_EP_RESPONSES:
        ngx_str_set(&ctx->uri_suffix, "/responses");
        ctx->state.kind = NGX_HTTP_MG_STATE_NEW_RESPONSE;
        break;

    case MG_EP_CONVERSATIONS:

        if (ctx->lcf->responses == NGX_HTTP_MG_RESPONSES_GATEWAY) {

            /* created by the gateway: no model names where it lives */

            return ngx_http_model_gateway_memory_conversations(r, ctx, NULL,
                                                               0, NULL, 0);
        }

        ngx_str_set(&ctx->uri_suffix, "/conversations");
        ctx->state.kind = NGX_HTTP_MG_STATE_NEW_CONVERSATION;
        break;

    case MG_EP_RESPONSE:
    case MG_EP_CONVERSATION:

        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_DELETE|NGX_HTTP_POST))) {
            goto not_allowed;
        }

        if (ctx->endpoint == MG_EP_CONVERSATION
            && ngx_http_model_gateway_memory_conv_id((u_char *) id, id_len))
        {
            return ngx_http_model_gateway_memory_conversations(r, ctx,
                                                   (u_char *) id, id_len,
                                                   (u_char *) id + id_len,
                                                   r->uri.data + r->uri.len
                                                   - (u_char *) id - id_len);
        }

        if (ctx->endpoint == MG_EP_RESPONSE
            && ngx_http_model_gateway_memory_id((u_char *) id, id_len))
        {
            /* a response the gateway holds itself */

            return ngx_http_model_gateway_memory_serve(r, ctx,
                                                   (u_char *) id, id_len,
                                                   (u_char *) id + id_len,
                                                   r->uri.data + r->uri.len
                                                   - (u_char *) id - id_len);
        }

        ctx->state.kind = (ctx->endpoint == MG_EP_RESPONSE)
                          ? NGX_HTTP_MG_STATE_RESPONSE
                          : NGX_HTTP_MG_STATE_CONVERSATION;
        ctx->state.id.data = (u_char *) id;
        ctx->state.id.len = id_len;

        /*
         * the backend gets the same object path ("/responses/ID/...")
         * and query after its own prefix
         */

        p = (u_char *) id - ((ctx->endpoint == MG_EP_RESPONSE)
                             ? sizeof("responses/") - 1
                             : sizeof("conversations/") - 1);

        len = r->uri.data + r->uri.len - p;

        /*
         * r->uri is decoded: what follows the id must be plain path
         * characters, or a "%0D%0A" in it would let a client write its
         * own request to the backend, signed with the gateway's key
         */

        if (!ngx_http_model_gateway_safe_path(p, len)) {
            goto unknown;
        }

        ctx->uri_suffix.data = ngx_pnalloc(r->pool,
                                           1 + len + 1 + r->args.len);
        if (ctx->uri_suffix.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->uri_suffix.len = ngx_sprintf(ctx->uri_suffix.data, "/%*s%s%V",
                                          len, p, r->args.len ? "?" : "",
                                          &r->args)
                              - ctx->uri_suffix.data;

        /* GET /v1/responses/{id}?stream=true streams a stored response */

        if (r->method == NGX_HTTP_GET
            && ngx_http_arg(r, (u_char *) "stream", 6, &arg) == NGX_OK
            && arg.len == 4 && ngx_strncmp(arg.data, "true", 4) == 0)
        {
            ctx->streaming = 1;
        }

        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r,
                                           ngx_http_model_gateway_body_handler);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;

    default:
        goto unknown;
    }

    if (r->method != NGX_HTTP_POST) {
        goto not_allowed;
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_model_gateway_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;

unknown:

    {
        p = ngx_pnalloc(r->pool, sizeof("Invalid URL ( )") - 1
                                 + r->method_name.len + r->uri.len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->err.message_str.data = p;
        ctx->err.message_str.len = ngx_sprintf(p, "Invalid URL (%V %V)",
                                               &r->method_name, &r->uri)
                                   - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "unknown_url", NULL, NULL);
    }

not_allowed:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_ALLOWED,
                                       "invalid_request_error",
                                       "method_not_allowed", NULL,
                                       "This method is not allowed on this "
                                       "endpoint.");
}


ngx_int_t
ngx_http_model_gateway_send_json(ngx_http_request_t *r, ngx_str_t *json)
{
    return ngx_http_model_gateway_send_json_status(r, NGX_HTTP_OK, json);
}


ngx_int_t
ngx_http_model_gateway_send_json_status(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *json)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = json->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = json->data;
    b->last = json->data + json->len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_model_gateway_models(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *id, size_t id_len)
{
    u_char                              *p, *q, *end;
    ngx_str_t                            json;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (id == NULL) {
        switch (ngx_http_model_gateway_models_allowed(r, ctx, &json)) {

        case NGX_OK:
            return ngx_http_model_gateway_send_json(r, &json);

        case NGX_DECLINED:
            return ngx_http_model_gateway_send_json(r, &mcf->models_json);

        default:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* a model the key may not use is answered as one that does not exist */

    if (ctx->identity.key
        && !mg_key_model_allowed(ctx->identity.key, (char *) id, id_len))
    {
        goto unknown;
    }

    /*
     * one model: cut its object out of the rendered list, where every
     * entry starts with {"id":"NAME"
     */

    p = mcf->models_json.data;
    end = p + mcf->models_json.len;

    for ( ;; ) {
        p = ngx_strlcasestrn(p, end, (u_char *) "{\"id\":\"", 6);
        if (p == NULL) {
            break;
        }

        q = p + 7;

        if ((size_t) (end - q) > id_len
            && ngx_strncmp(q, id, id_len) == 0
            && q[id_len] == '"')
        {
            q = ngx_strlchr(q, end, '}');
            if (q == NULL) {
                break;
            }

            json.data = p;
            json.len = q + 1 - p;

            return ngx_http_model_gateway_send_json(r, &json);
        }

        p = q;
    }

unknown:

    p = ngx_pnalloc(r->pool, sizeof("The model `` does not exist.") - 1
                             + id_len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->err.message_str.data = p;
    ctx->err.message_str.len = ngx_sprintf(p, "The model `%*s` does not "
                                           "exist.", id_len, id) - p;

    return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error",
                                       "model_not_found", "model", NULL);
}


static void
ngx_http_model_gateway_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_model_gateway_parse_body(r, ctx);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (ngx_http_model_gateway_headers_collect(r, ctx) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->route_index = 0;

    ngx_http_model_gateway_route(r, ctx);
}


static void
ngx_http_model_gateway_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_int_t                             rc;
    ngx_http_model_gateway_route_t       *h;
    ngx_http_model_gateway_main_conf_t   *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    h = mcf->route_handlers.elts;

    while (ctx->route_index < mcf->route_handlers.nelts) {

        rc = h[ctx->route_index].handler(r, ctx);

        if (rc == NGX_AGAIN) {
            /* the handler calls ngx_http_model_gateway_route_done() */
            return;
        }

        ctx->route_index++;

        if (rc == NGX_OK) {
            break;
        }

        if (rc != NGX_DECLINED) {
            ngx_http_finalize_request(r, rc == NGX_ERROR
                                         ? NGX_HTTP_INTERNAL_SERVER_ERROR
                                         : rc);
            return;
        }
    }

    if (ctx->xbody && ctx->xbody_model != ctx->model_conf) {

        /* routing chose other candidates: translate for those */

        rc = ngx_http_model_gateway_translate_prepare(r, ctx);
        if (rc != NGX_OK) {
            ngx_http_finalize_request(r, rc);
            return;
        }
    }

    rc = ngx_http_model_gateway_upstream_start(r, ctx);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * Resumes a request whose route handler returned NGX_AGAIN.  It must be
 * called from the event that completed the handler's work (never after the
 * request was finalized: the handler's cleanup must cancel that work).
 */

void
ngx_http_model_gateway_route_done(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t              *c;
    ngx_http_model_gateway_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    if (rc != NGX_OK && rc != NGX_DECLINED) {
        ngx_http_finalize_request(r, rc == NGX_ERROR
                                     ? NGX_HTTP_INTERNAL_SERVER_ERROR : rc);

    } else {
        ctx->route_index++;

        if (rc == NGX_OK) {
            ctx->route_index = NGX_MAX_UINT32_VALUE;
        }

        ngx_http_model_gateway_route(r, ctx);
    }

    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_model_gateway_build_models_json(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    u_char                          *p;
    size_t                           len;
    time_t                           now;
    ngx_uint_t                       i;
    ngx_http_model_gateway_model_t  *m;

    /*
     * the answer of GET /v1/models never changes until a reload, so it is
     * rendered once here; names were checked to need no JSON escaping
     */

    now = ngx_time();
    m = mcf->models.elts;

    len = sizeof("{\"object\":\"list\",\"data\":[]}") - 1;

    for (i = 0; i < mcf->models.nelts; i++) {
        len += sizeof("{\"id\":\"\",\"object\":\"model\",\"created\":,"
                      "\"owned_by\":\"model-gateway\"},") - 1
               + m[i].name.len + NGX_TIME_T_LEN;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    mcf->models_json.data = p;

    p = ngx_cpymem(p, "{\"object\":\"list\",\"data\":[",
                   sizeof("{\"object\":\"list\",\"data\":[") - 1);

    for (i = 0; i < mcf->models.nelts; i++) {
        p = ngx_sprintf(p, "%s{\"id\":\"%V\",\"object\":\"model\","
                        "\"created\":%T,\"owned_by\":\"model-gateway\"}",
                        i ? "," : "", &m[i].name, now);
    }

    p = ngx_cpymem(p, "]}", 2);

    mcf->models_json.len = p - mcf->models_json.data;

    return NGX_OK;
}
