
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Conversations: POST /conversations in a location whose
 * mode is "gateway", and every call about an id the gateway made
 * ("conv_mgw_..."), answered from Redis without a backend (one script,
 * MCONV, per call):
 *
 *   POST   /conversations                    create (metadata, items)
 *   GET    /conversations/{id}               the conversation
 *   POST   /conversations/{id}               new metadata
 *   DELETE /conversations/{id}               it and its items
 *   GET    /conversations/{id}/items         a page of items
 *   POST   /conversations/{id}/items         items added
 *   GET    /conversations/{id}/items/{item}  one item
 *   DELETE /conversations/{id}/items/{item}  one item removed
 *
 * A response with "conversation" reads the conversation's items as its
 * history and appends its input and output to them (_memory.c,
 * _memory_answer.c).
 */


#include "ngx_http_model_gateway_memory.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>


/* OpenAI's limit of items added at once */
#define NGX_HTTP_MG_CONV_ITEMS_MAX  20


typedef enum {
    NGX_HTTP_MG_CONV_NEW = 0,
    NGX_HTTP_MG_CONV_GET,
    NGX_HTTP_MG_CONV_META,
    NGX_HTTP_MG_CONV_DEL,
    NGX_HTTP_MG_CONV_ITEMS,
    NGX_HTTP_MG_CONV_ADD,
    NGX_HTTP_MG_CONV_ITEM,
    NGX_HTTP_MG_CONV_DELITEM
} ngx_http_model_gateway_conv_op_e;


typedef struct {
    ngx_http_request_t                *request;
    ngx_http_model_gateway_ctx_t      *ctx;
    ngx_http_model_gateway_conv_op_e   op;
    ngx_str_t                          id;
    ngx_str_t                          item;
    ngx_str_t                          object;      /* new, meta */
    mg_buf_t                           lines;       /* new, add */
    size_t                             nlines;
    ngx_http_mg_redis_cmd_t           *cmd;
} ngx_http_model_gateway_conv_t;


static void ngx_http_model_gateway_conv_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_conv_parse(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv);
static ngx_int_t ngx_http_model_gateway_conv_start(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv);
static void ngx_http_model_gateway_conv_done(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_conv_answer(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_conv_send(ngx_http_request_t *r,
    mg_buf_t *b);
static ngx_int_t ngx_http_model_gateway_conv_not_found(
    ngx_http_request_t *r, ngx_http_model_gateway_conv_t *cv,
    ngx_uint_t item);
static ngx_int_t ngx_http_model_gateway_conv_unavailable(
    ngx_http_request_t *r);
static void ngx_http_model_gateway_conv_cleanup(void *data);


/* 1 if a conversation id is one the gateway made */

ngx_uint_t
ngx_http_model_gateway_memory_conv_id(u_char *id, size_t len)
{
    return len > sizeof(NGX_HTTP_MG_MEMORY_CONV) - 1
           && ngx_strncmp(id, NGX_HTTP_MG_MEMORY_CONV,
                          sizeof(NGX_HTTP_MG_MEMORY_CONV) - 1) == 0;
}


ngx_int_t
ngx_http_model_gateway_memory_conversations(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *id, size_t len, u_char *rest,
    size_t rest_len)
{
    ngx_int_t                            rc;
    ngx_uint_t                           body;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_model_gateway_conv_t       *cv;
    ngx_http_model_gateway_main_conf_t  *mcf;

    while (rest_len && rest[rest_len - 1] == '/') {
        rest_len--;
    }

    cv = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_conv_t));
    if (cv == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_model_gateway_conv_cleanup;
    cln->data = cv;

    cv->request = r;
    cv->ctx = ctx;
    cv->id.data = id;
    cv->id.len = len;

    body = 0;

    if (id == NULL) {
        if (r->method != NGX_HTTP_POST) {
            goto not_allowed;
        }

        cv->op = NGX_HTTP_MG_CONV_NEW;
        body = 1;

    } else if (rest_len == 0) {

        switch (r->method) {
        case NGX_HTTP_GET:
        case NGX_HTTP_HEAD:
            cv->op = NGX_HTTP_MG_CONV_GET;
            break;
        case NGX_HTTP_POST:
            cv->op = NGX_HTTP_MG_CONV_META;
            body = 1;
            break;
        case NGX_HTTP_DELETE:
            cv->op = NGX_HTTP_MG_CONV_DEL;
            break;
        default:
            goto not_allowed;
        }

    } else if (rest_len == sizeof("/items") - 1
               && ngx_strncmp(rest, "/items", rest_len) == 0)
    {
        if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
            cv->op = NGX_HTTP_MG_CONV_ITEMS;

        } else if (r->method == NGX_HTTP_POST) {
            cv->op = NGX_HTTP_MG_CONV_ADD;
            body = 1;

        } else {
            goto not_allowed;
        }

    } else if (rest_len > sizeof("/items/") - 1
               && ngx_strncmp(rest, "/items/", sizeof("/items/") - 1) == 0
               && ngx_strlchr(rest + sizeof("/items/") - 1, rest + rest_len,
                              '/')
                  == NULL)
    {
        cv->item.data = rest + sizeof("/items/") - 1;
        cv->item.len = rest_len - (sizeof("/items/") - 1);

        if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
            cv->op = NGX_HTTP_MG_CONV_ITEM;

        } else if (r->method == NGX_HTTP_DELETE) {
            cv->op = NGX_HTTP_MG_CONV_DELITEM;

        } else {
            goto not_allowed;
        }

    } else {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "unknown_url", NULL,
                                           "Invalid URL.");
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->redis == NULL || !ngx_http_mg_redis_ready()) {
        return ngx_http_model_gateway_conv_unavailable(r);
    }

    if (body) {
        r->request_body_in_single_buf = 1;
        ctx->conversation = cv;

        rc = ngx_http_read_client_request_body(r,
                                           ngx_http_model_gateway_conv_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_model_gateway_conv_start(r, cv);

    if (rc == NGX_AGAIN) {
        r->main->count++;
        return NGX_DONE;
    }

    return rc;

not_allowed:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_NOT_ALLOWED,
                                       "invalid_request_error",
                                       "method_not_allowed", NULL,
                                       "This method is not allowed on this "
                                       "endpoint.");
}


static void
ngx_http_model_gateway_conv_body(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_model_gateway_ctx_t   *ctx;
    ngx_http_model_gateway_conv_t  *cv;

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL || ctx->conversation == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cv = ctx->conversation;

    rc = ngx_http_model_gateway_conv_parse(r, cv);

    if (rc == NGX_OK) {
        rc = ngx_http_model_gateway_conv_start(r, cv);

        if (rc == NGX_AGAIN) {
            return;
        }
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The body of new, meta and add: {"metadata": ..., "items": [...]}, or
 * {"items": [...]} for add.
 */

static ngx_int_t
ngx_http_model_gateway_conv_parse(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv)
{
    int                            rc;
    u_char                        *p, rnd[NGX_HTTP_MG_MEMORY_ID_BYTES];
    size_t                         n;
    mg_buf_t                       meta, obj;
    mg_xerror_t                    err;
    ngx_chain_t                   *cl;
    ngx_http_model_gateway_ctx_t  *ctx;
    mg_json_field_t                f[2] = {
        { "metadata", 8, MG_JSON_NONE, 0, 0, 0 },
        { "items", 5, MG_JSON_NONE, 0, 0, 0 }
    };

    ctx = cv->ctx;

    if (r->request_body && r->request_body->bufs) {
        cl = r->request_body->bufs;

        if (cl->next == NULL && !cl->buf->in_file) {
            ctx->body.data = cl->buf->pos;
            ctx->body.len = cl->buf->last - cl->buf->pos;

        } else if (ngx_http_model_gateway_body_in_memory(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->body.len == 0) {
        if (cv->op != NGX_HTTP_MG_CONV_NEW) {
            goto not_object;
        }

        ngx_str_set(&ctx->body, "{}");
    }

    if (mg_json_scan((char *) ctx->body.data, ctx->body.len, f, 2, 64, NULL)
        != MG_JSON_OK
        || f[0].dup || f[1].dup)
    {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_json", NULL,
                                           "We could not parse the JSON "
                                           "body of your request.");
    }

    p = ctx->body.data;
    while (p < ctx->body.data + ctx->body.len
           && (*p == ' ' || *p == '\t' || *p == CR || *p == LF))
    {
        p++;
    }

    if (p == ctx->body.data + ctx->body.len || *p != '{') {
        goto not_object;
    }

    ngx_memzero(&err, sizeof(mg_xerror_t));
    ngx_memzero(&meta, sizeof(mg_buf_t));
    ngx_memzero(&obj, sizeof(mg_buf_t));

    if (cv->op == NGX_HTTP_MG_CONV_ADD) {
        if (f[1].type != MG_JSON_ARRAY) {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "missing_required_parameter",
                                           "items", "Missing required "
                                           "parameter: 'items'.");
        }

    } else if (cv->op == NGX_HTTP_MG_CONV_META) {
        if (f[0].type == MG_JSON_NONE) {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "missing_required_parameter",
                                           "metadata", "Missing required "
                                           "parameter: 'metadata'.");
        }
    }

    if (cv->op != NGX_HTTP_MG_CONV_ADD) {
        rc = mg_mem_metadata(f[0].type == MG_JSON_NONE
                             ? NULL : (char *) ctx->body.data + f[0].start,
                             f[0].len, &meta, &err);
        if (rc != MG_X_OK) {
            mg_buf_free(&meta);
            return ngx_http_model_gateway_memory_error(r, &err);
        }
    }

    if (f[1].type != MG_JSON_NONE && cv->op != NGX_HTTP_MG_CONV_META) {
        rc = mg_mem_items((char *) ctx->body.data + f[1].start, f[1].len,
                          ngx_http_model_gateway_memory_item_id, NULL,
                          &cv->lines, &n, &err);
        if (rc != MG_X_OK) {
            mg_buf_free(&meta);
            return ngx_http_model_gateway_memory_error(r, &err);
        }

        if (cv->lines.len > ctx->lcf->history_max_bytes) {
            mg_buf_free(&meta);
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "context_length_exceeded",
                                           "items",
                                           "The items are larger than "
                                           "model_gateway_history_max_bytes "
                                           "allows.");
        }

        if (n > NGX_HTTP_MG_CONV_ITEMS_MAX) {
            mg_buf_free(&meta);
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_value", "items",
                                           "At most 20 items can be added "
                                           "at a time.");
        }

        cv->nlines = n;
    }

    if (cv->op == NGX_HTTP_MG_CONV_ADD) {
        return NGX_OK;
    }

    if (cv->op == NGX_HTTP_MG_CONV_NEW) {

        /* "conv_mgw_" and 32 hex digits */

        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            mg_buf_free(&meta);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cv->id.data = ngx_pnalloc(r->pool,
                                  sizeof(NGX_HTTP_MG_MEMORY_CONV) - 1
                                  + 2 * sizeof(rnd));
        if (cv->id.data == NULL) {
            mg_buf_free(&meta);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(cv->id.data, NGX_HTTP_MG_MEMORY_CONV,
                       sizeof(NGX_HTTP_MG_MEMORY_CONV) - 1);
        cv->id.len = ngx_hex_dump(p, rnd, sizeof(rnd)) - cv->id.data;

        rc = mg_mem_conversation((char *) cv->id.data, cv->id.len,
                                 (long long) ngx_time(), meta.data, meta.len,
                                 &obj);

    } else {

        /* meta: the script puts the object together, its created_at kept */

        rc = mg_buf_printf(&obj, ",\"metadata\":%.*s}", (int) meta.len,
                           meta.data);
    }

    mg_buf_free(&meta);

    if (rc != MG_X_OK) {
        mg_buf_free(&obj);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cv->object.len = obj.len;
    cv->object.data = ngx_pnalloc(r->pool, obj.len);
    if (cv->object.data == NULL) {
        mg_buf_free(&obj);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(cv->object.data, obj.data, obj.len);
    mg_buf_free(&obj);

    return NGX_OK;

not_object:

    return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request_error",
                                       "invalid_type", NULL,
                                       "The request body must be a JSON "
                                       "object.");
}


/* NGX_AGAIN when MCONV is sent; else a status, the error set */

static ngx_int_t
ngx_http_model_gateway_conv_start(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv)
{
    u_char                              *p;
    ngx_int_t                            max;
    ngx_str_t                            kind, none, args[8];
    ngx_uint_t                           nargs;
    ngx_http_mg_redis_cmd_t             *cmd;
    ngx_http_model_gateway_ctx_t        *ctx;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               rnd[NGX_HTTP_MG_MEMORY_ID_BYTES];
    u_char                               lid[2 * NGX_HTTP_MG_MEMORY_ID_BYTES];
    u_char                               ttl[NGX_INT64_LEN];
    u_char                               lim[NGX_INT_T_LEN];
    u_char                               maxb[NGX_SIZE_T_LEN];
    u_char                               now[NGX_TIME_T_LEN];

    static ngx_str_t  ops[] = {
        ngx_string("new"), ngx_string("get"), ngx_string("meta"),
        ngx_string("del"), ngx_string("items"), ngx_string("add"),
        ngx_string("item"), ngx_string("delitem")
    };

    ctx = cv->ctx;
    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    ngx_str_set(&kind, "c:");

    if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &cv->id, &args[0])
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&kind, "l:");
    ngx_str_null(&none);

    if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &none, &args[1])
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[2] = ops[cv->op];
    nargs = 3;

    p = ngx_sprintf(ttl, "%M", mcf->conversation_ttl);

    switch (cv->op) {

    case NGX_HTTP_MG_CONV_NEW:
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        args[3].data = lid;
        args[3].len = ngx_hex_dump(lid, rnd, sizeof(rnd)) - lid;
        args[4] = cv->object;
        args[5].data = ttl;
        args[5].len = p - ttl;
        args[6].data = (u_char *) cv->lines.data;
        args[6].len = cv->lines.len;
        args[7].data = now;
        args[7].len = ngx_sprintf(now, "%T", ngx_time()) - now;
        nargs = 8;
        break;

    case NGX_HTTP_MG_CONV_META:
        args[3].data = ngx_pnalloc(r->pool, cv->id.len + sizeof("{\"id\":\"\","
                                   "\"object\":\"conversation\","
                                   "\"created_at\":"));
        if (args[3].data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        args[3].len = ngx_sprintf(args[3].data, "{\"id\":\"%V\",\"object\":"
                                  "\"conversation\",\"created_at\":",
                                  &cv->id)
                      - args[3].data;
        args[4] = cv->object;
        nargs = 5;
        break;

    case NGX_HTTP_MG_CONV_ADD:
        args[3].data = (u_char *) cv->lines.data;
        args[3].len = cv->lines.len;
        args[4].data = ttl;
        args[4].len = p - ttl;
        nargs = 5;
        break;

    case NGX_HTTP_MG_CONV_ITEMS:
        if (ngx_http_arg(r, (u_char *) "order", 5, &args[3]) != NGX_OK) {
            ngx_str_set(&args[3], "desc");
        }

        if (!(args[3].len == 3 && ngx_strncmp(args[3].data, "asc", 3) == 0)
            && !(args[3].len == 4
                 && ngx_strncmp(args[3].data, "desc", 4) == 0))
        {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_value", "order",
                                           "Invalid 'order': expected 'asc' "
                                           "or 'desc'.");
        }

        if (ngx_http_arg(r, (u_char *) "limit", 5, &args[4]) == NGX_OK) {
            max = ngx_atoi(args[4].data, args[4].len);

            if (max < 1 || max > 100) {
                return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_value", "limit",
                                           "Invalid 'limit': expected an "
                                           "integer from 1 to 100.");
            }

        } else {
            args[4].data = lim;
            args[4].len = ngx_sprintf(lim, "20") - lim;
        }

        if (ngx_http_arg(r, (u_char *) "after", 5, &args[5]) != NGX_OK) {
            ngx_str_null(&args[5]);
        }

        /* a page never outgrows a reply: at most the history's bytes */

        args[6].data = maxb;
        args[6].len = ngx_sprintf(maxb, "%uz", ctx->lcf->history_max_bytes)
                      - maxb;

        nargs = 7;
        break;

    case NGX_HTTP_MG_CONV_ITEM:
    case NGX_HTTP_MG_CONV_DELITEM:
        args[3] = cv->item;
        nargs = 4;
        break;

    default:
        break;
    }

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_MCONV, nargs, args,
                                   ngx_http_model_gateway_conv_done, cv);
    if (cmd == NULL) {
        return ngx_http_model_gateway_conv_unavailable(r);
    }

    cv->cmd = cmd;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_conv_cleanup(void *data)
{
    ngx_http_model_gateway_conv_t *cv = data;

    if (cv->cmd) {
        ngx_http_mg_redis_cancel(cv->cmd);
        cv->cmd = NULL;
    }

    mg_buf_free(&cv->lines);
}


static void
ngx_http_model_gateway_conv_done(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_model_gateway_conv_t *cv = data;

    ngx_int_t            next;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = cv->request;
    c = r->connection;
    cv->cmd = NULL;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "model gateway: conversation \"%V\": the store "
                      "failed", &cv->id);

        next = ngx_http_model_gateway_conv_unavailable(r);

    } else {
        next = ngx_http_model_gateway_conv_answer(r, cv, reply);
    }

    ngx_http_finalize_request(r, next);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_model_gateway_conv_answer(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv, redisReply *reply)
{
    int           rc;
    size_t        i, n, *lens;
    u_char       *p, *end, *q;
    mg_buf_t      out;
    const char  **items;

    switch (reply->element[0]->integer) {

    case 0:
        return ngx_http_model_gateway_conv_not_found(r, cv, 0);

    case 2:
        return ngx_http_model_gateway_conv_not_found(r, cv, 1);

    case 1:
        break;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: the items of conversation \"%V\" are "
                      "missing (evicted? see maxmemory-policy)", &cv->id);

        return ngx_http_model_gateway_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "server_error", "history_missing",
                                           NULL, "Items of this conversation "
                                           "are missing from the store.");
    }

    for (i = 1; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING
            && !(i == 1 && cv->op == NGX_HTTP_MG_CONV_ITEMS))
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_memzero(&out, sizeof(mg_buf_t));

    switch (cv->op) {

    case NGX_HTTP_MG_CONV_NEW:
        rc = mg_buf_append(&out, (char *) cv->object.data, cv->object.len);
        break;

    case NGX_HTTP_MG_CONV_DEL:
        rc = mg_buf_printf(&out, "{\"id\":\"%.*s\",\"object\":"
                           "\"conversation.deleted\",\"deleted\":true}",
                           (int) cv->id.len, cv->id.data);
        break;

    case NGX_HTTP_MG_CONV_ADD:

        /* the items added, as they were stored: one a line */

        items = ngx_palloc(r->pool, (cv->nlines + 1) * sizeof(char *));
        lens = ngx_palloc(r->pool, (cv->nlines + 1) * sizeof(size_t));
        if (items == NULL || lens == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = (u_char *) cv->lines.data;
        end = p + cv->lines.len;

        for (n = 0; p < end && n < cv->nlines; n++) {
            q = ngx_strlchr(p, end, '\n');
            if (q == NULL) {
                q = end;
            }

            items[n] = (char *) p;
            lens[n] = q - p;
            p = q + 1;
        }

        rc = mg_mem_page(items, lens, n, 0, &out);
        break;

    case NGX_HTTP_MG_CONV_ITEMS:
        n = reply->elements - 2;

        items = ngx_palloc(r->pool, (n + 1) * sizeof(char *));
        lens = ngx_palloc(r->pool, (n + 1) * sizeof(size_t));
        if (items == NULL || lens == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (i = 0; i < n; i++) {
            items[i] = reply->element[i + 2]->str;
            lens[i] = reply->element[i + 2]->len;
        }

        rc = mg_mem_page(items, lens, n,
                         reply->element[1]->type == REDIS_REPLY_INTEGER
                         && reply->element[1]->integer == 1,
                         &out);
        break;

    default:

        /* get, meta, item, delitem: the object or the item */

        if (reply->elements != 2) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc = mg_buf_append(&out, reply->element[1]->str,
                           reply->element[1]->len);
        break;
    }

    if (rc != MG_X_OK) {
        mg_buf_free(&out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_model_gateway_conv_send(r, &out);
}


/* sends what b holds, and frees it */

static ngx_int_t
ngx_http_model_gateway_conv_send(ngx_http_request_t *r, mg_buf_t *b)
{
    ngx_str_t  json;

    json.len = b->len;
    json.data = ngx_pnalloc(r->pool, b->len ? b->len : 1);

    if (json.data == NULL) {
        mg_buf_free(b);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(json.data, b->data, b->len);
    mg_buf_free(b);

    return ngx_http_model_gateway_send_json(r, &json);
}


static ngx_int_t
ngx_http_model_gateway_conv_not_found(ngx_http_request_t *r,
    ngx_http_model_gateway_conv_t *cv, ngx_uint_t item)
{
    ngx_str_t  *id;

    id = item ? &cv->item : &cv->id;

    if (item && cv->op == NGX_HTTP_MG_CONV_ITEMS) {

        /* "after" named no item of the conversation */

        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "invalid_value", "after",
                                           "No item found with the id given "
                                           "as 'after'.");
    }

    return ngx_http_model_gateway_memory_not_found(r,
                                           item ? "Item" : "Conversation", id,
                                           item ? "item_not_found"
                                                : "conversation_not_found",
                                           NULL);
}


static ngx_int_t
ngx_http_model_gateway_conv_unavailable(ngx_http_request_t *r)
{
    return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "server_error",
                                       "state_store_unavailable", NULL,
                                       "The store of gateway-held "
                                       "conversations is unavailable.");
}
