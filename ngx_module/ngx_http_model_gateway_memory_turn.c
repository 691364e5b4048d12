
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses, a turn's request: the route step reads the
 * chain (MREAD: one Redis script, however long the chain, forks
 * included), holds it to the history limits, and makes the chat request
 * any chat backend of the model gets, with the provider-only state of a
 * target's own origin for that target alone.
 */


#include "ngx_http_model_gateway_memory.h"
#include "ngx_http_model_gateway_providers.h"
#include "mg_history.h"

#include <hiredis/hiredis.h>


static void ngx_http_model_gateway_memory_read(void *data,
    redisReply *reply, ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_memory_build(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_memory_history(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply, mg_buf_t *hist);
static int ngx_http_model_gateway_memory_chat(
    ngx_http_model_gateway_memory_t *m, mg_buf_t *hist, mg_resp_opts_t *o,
    mg_xerror_t *err);
static ngx_int_t ngx_http_model_gateway_memory_replay(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_buf_t *hist, mg_resp_opts_t *o);
static void ngx_http_model_gateway_memory_prefer(
    ngx_http_model_gateway_ctx_t *ctx, redisReply *name);


/*
 * The route step: a turn that continues a chain reads it first (MREAD);
 * one that starts a chain is built at once.
 */

ngx_int_t
ngx_http_model_gateway_memory_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                              *p;
    ngx_int_t                            rc;
    ngx_str_t                            kind, none, args[4];
    ngx_http_model_gateway_memory_t     *m;
    ngx_http_mg_redis_cmd_t             *cmd;
    u_char                               items[NGX_INT_T_LEN];
    u_char                               bytes[NGX_SIZE_T_LEN];

    m = ctx->memory;

    if (m == NULL) {
        return NGX_DECLINED;
    }

    if (m->conv.len) {
        ngx_str_set(&kind, "c:");

        if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &m->conv,
                                               &m->conv_key)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        args[0] = m->conv_key;

    } else if (m->prev.len) {
        ngx_str_set(&kind, "r:");

        if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &m->prev,
                                               &args[0])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {

        /* a new chain: routed as any request is (a session may pin it) */

        rc = ngx_http_model_gateway_memory_build(r, ctx, NULL);

        return (rc == NGX_OK) ? NGX_DECLINED : rc;
    }

    ngx_str_set(&kind, "l:");
    ngx_str_null(&none);

    if (ngx_http_model_gateway_memory_base(r, ctx, &kind, &none, &m->lists)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    args[1] = m->lists;

    p = ngx_sprintf(items, "%ui", ctx->lcf->history_max_items);
    args[2].data = items;
    args[2].len = p - items;

    p = ngx_sprintf(bytes, "%uz", ctx->lcf->history_max_bytes);
    args[3].data = bytes;
    args[3].len = p - bytes;

    cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_MREAD, 4, args,
                                   ngx_http_model_gateway_memory_read, ctx);
    if (cmd == NULL) {
        return ngx_http_model_gateway_memory_unavailable(r);
    }

    m->cmd = cmd;

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_memory_read(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    ngx_int_t                         next;
    ngx_http_request_t               *r;
    ngx_http_model_gateway_memory_t  *m;

    r = ctx->request;
    m = ctx->memory;
    m->cmd = NULL;
    r->read_event_handler = ngx_http_block_reading;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: reading the chain of \"%V%V\" failed",
                      &m->prev, &m->conv);

        next = ngx_http_model_gateway_memory_unavailable(r);

    } else if (reply->element[0]->integer == 0) {

        ngx_http_model_gateway_metrics_state(r, NGX_HTTP_MG_STATE_MISS);

        next = m->conv.len
               ? ngx_http_model_gateway_memory_not_found(r, "Conversation",
                                                 &m->conv,
                                                 "conversation_not_found",
                                                 "conversation")
               : ngx_http_model_gateway_memory_not_found(r,
                                                 "Previous response",
                                                 &m->prev,
                                                 "previous_response_not_found",
                                                 "previous_response_id");

    } else if (reply->element[0]->integer != 1 || reply->elements < 5) {

        /* never a shorter history: a chain with a hole is an error */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: the chain of \"%V%V\" has lost items "
                      "(evicted? see maxmemory-policy)", &m->prev, &m->conv);

        next = ngx_http_model_gateway_fail(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "server_error", "history_missing",
                                           m->conv.len
                                           ? "conversation"
                                           : "previous_response_id",
                                           "Items of this response's chain "
                                           "are missing from the store.");

    } else {
        ngx_http_model_gateway_metrics_state(r, NGX_HTTP_MG_STATE_READ);
        next = ngx_http_model_gateway_memory_build(r, ctx, reply);
    }

    ngx_http_model_gateway_route_done(r, next == NGX_OK ? NGX_DECLINED
                                                        : next);
}


/*
 * The chat request of this turn: the client's Responses request, after
 * the stored items of the chain (reply: MREAD's, or NULL), held to the
 * history limits.
 */

static ngx_int_t
ngx_http_model_gateway_memory_build(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply)
{
    int                               rc, stream;
    size_t                            max;
    ngx_int_t                         nrc;
    mg_buf_t                          hist;
    mg_xerror_t                       err;
    mg_resp_opts_t                    o;
    ngx_http_model_gateway_memory_t  *m;
    mg_json_field_t                   f[1] = {
        { "model", 5, MG_JSON_NONE, 0, 0, 0 }
    };

    m = ctx->memory;

    ngx_memzero(&o, sizeof(mg_resp_opts_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));
    ngx_memzero(&hist, sizeof(mg_buf_t));

    /* the history never makes a request more than it adds */

    max = ctx->lcf->max_body_size + ctx->lcf->history_max_bytes
          + MG_X_OUT_SLACK;
    o.max_out = max;

    /* the input items get their ids now: stored, they are copied as text */

    o.input_id = ngx_http_model_gateway_memory_item_id;

    /* the input, as it is stored (and what the history limits count) */

    rc = mg_resp_request((char *) m->request.data, m->request.len, NULL, 0,
                         &o, &m->chat, &m->echo, &m->input, &stream, &err);

    /*
     * a turn is stored whole or not at all, and must fit the history
     * limit: one that could not would be a chain nobody can continue (and
     * a reply larger than Redis' replies may be)
     */

    if (rc == MG_X_OK && (m->store || m->conv.len)
        && m->input.len > ctx->lcf->history_max_bytes)
    {
        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "context_length_exceeded",
                                           "input",
                                           "The input is larger than "
                                           "model_gateway_history_max_bytes "
                                           "allows a stored turn to be.");
    }

    o.input_id = NULL;

    if (rc == MG_X_OK && reply) {
        mg_buf_reset(&m->chat);

        nrc = ngx_http_model_gateway_memory_history(r, ctx, reply, &hist);
        if (nrc != NGX_OK) {
            mg_buf_free(&hist);
            return nrc;
        }

        rc = ngx_http_model_gateway_memory_chat(m, &hist, &o, &err);

        if (rc == MG_X_OK) {
            nrc = ngx_http_model_gateway_memory_replay(r, ctx, &hist, &o);
            if (nrc != NGX_OK) {
                mg_buf_free(&hist);
                return nrc;
            }
        }

        mg_buf_free(&hist);
    }

    if (rc == MG_X_NOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != MG_X_OK) {
        return ngx_http_model_gateway_memory_error(r, &err);
    }

    /* from here on, a chat completions request like any other */

    ctx->body.data = (u_char *) m->chat.data;
    ctx->body.len = m->chat.len;
    ctx->endpoint = MG_EP_CHAT;
    ngx_str_set(&ctx->uri_suffix, "/chat/completions");

    if (mg_json_scan(m->chat.data, m->chat.len, f, 1, 64, NULL) != MG_JSON_OK
        || f[0].type != MG_JSON_STRING)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->model_start = f[0].start;
    ctx->model_len = f[0].len;

    if (reply) {
        ngx_http_model_gateway_memory_prefer(ctx, reply->element[1]);
    }

    nrc = ngx_http_model_gateway_translate_prepare(r, ctx);

    return nrc;
}


/*
 * The chat request of a turn with a history, into m->chat.  Decoding and
 * encoding the long texts of a history is most of the work, so they are
 * set aside first (mg_x_shrink(), as the translators do) and put back,
 * still escaped, into the chat request; when that cannot be done, the
 * whole history goes through.
 */

static int
ngx_http_model_gateway_memory_chat(ngx_http_model_gateway_memory_t *m,
    mg_buf_t *hist, mg_resp_opts_t *o, mg_xerror_t *err)
{
    int            rc, stream;
    mg_buf_t       shrunk;
    mg_x_shrink_t  s;

    rc = mg_x_shrink(hist->data, hist->len, 128, &s);

    if (rc != MG_X_OK) {
        mg_x_shrink_free(&s);
        return rc;
    }

    if (s.n) {
        ngx_memzero(&shrunk, sizeof(mg_buf_t));

        rc = mg_resp_request((char *) m->request.data, m->request.len,
                             s.body.data, s.body.len, o, &shrunk, NULL, NULL,
                             &stream, err);

        if (rc == MG_X_OK) {
            s.max = mg_x_out_max(o->max_out);

            rc = mg_x_expand(&s, hist->data, shrunk.data, shrunk.len,
                             &m->chat);

            if (rc == MG_X_ERROR) {
                mg_buf_reset(&m->chat);
            }
        }

        mg_buf_free(&shrunk);
        mg_x_shrink_free(&s);

        if (rc != MG_X_ERROR) {
            return rc;
        }
    }

    mg_x_shrink_free(&s);

    return mg_resp_request((char *) m->request.data, m->request.len,
                           hist->data, hist->len, o, &m->chat, NULL, NULL,
                           &stream, err);
}


/*
 * The stored items (MREAD: {1, backend, more, list, end, items...}) and
 * this turn's input, held to the limits as truncation says; the kept
 * history is written to hist.
 */

static ngx_int_t
ngx_http_model_gateway_memory_history(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, redisReply *reply, mg_buf_t *hist)
{
    int                               rc;
    size_t                            i, n, from, ninput, bytes;
    const char                      **items;
    size_t                           *lens;
    mg_buf_t                          all;
    mg_xerror_t                       err;
    mg_history_opts_t                 o;
    mg_history_result_t               res;
    ngx_http_model_gateway_memory_t  *m;

    m = ctx->memory;

    if (reply->element[3]->type != REDIS_REPLY_STRING
        || reply->element[4]->type != REDIS_REPLY_STRING)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    m->parent_list.len = reply->element[3]->len;
    m->parent_list.data = ngx_pnalloc(r->pool, m->parent_list.len + 1);
    m->parent_end.len = reply->element[4]->len;
    m->parent_end.data = ngx_pnalloc(r->pool, m->parent_end.len + 1);

    if (m->parent_list.data == NULL || m->parent_end.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(m->parent_list.data, reply->element[3]->str,
               m->parent_list.len);
    ngx_memcpy(m->parent_end.data, reply->element[4]->str,
               m->parent_end.len);

    n = reply->elements - 5;

    items = ngx_palloc(r->pool, (n + 1) * sizeof(char *));
    lens = ngx_palloc(r->pool, (n + 1) * sizeof(size_t));
    if (items == NULL || lens == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (reply->element[5 + i]->type != REDIS_REPLY_STRING) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        items[i] = reply->element[5 + i]->str;
        lens[i] = reply->element[5 + i]->len;
    }

    ngx_memzero(&o, sizeof(mg_history_opts_t));
    o.max_items = ctx->lcf->history_max_items;
    o.max_bytes = ctx->lcf->history_max_bytes;
    o.truncation = (char *) m->truncation.data;
    o.truncation_len = m->truncation.len;

    from = 0;

    if (reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[2]->integer == 1)
    {
        /*
         * the chain is longer than the limits: only "auto" may go on, from
         * the first whole turn of what was read
         */

        if (!(m->truncation.len == 4
              && ngx_strncmp(m->truncation.data, "auto", 4) == 0))
        {
            return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "context_length_exceeded",
                                           "input",
                                           "The response chain is longer "
                                           "than the history limits; use "
                                           "truncation 'auto' to drop its "
                                           "oldest turns.");
        }

        from = mg_mem_turn_start(items, lens, n);
    }

    ngx_memzero(&all, sizeof(mg_buf_t));
    ngx_memzero(&err, sizeof(mg_xerror_t));

    ninput = mg_mem_count(m->input.data, m->input.len);

    /*
     * within both limits as it is (the stored items are compact JSON, so
     * their lengths are what the limiter counts, and the input's array is
     * longer than its items): the history goes as it was read, without
     * the limiter's parse of every item
     */

    for (bytes = m->input.len, i = from; i < n; i++) {
        bytes += lens[i];
    }

    if (n - from + ninput <= o.max_items && bytes <= o.max_bytes) {
        return mg_mem_array(items + from, lens + from, n - from, hist)
               == MG_X_OK ? NGX_OK : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* history and input in one array: "[h1,h2" + "," + "i1,i2]" */

    if (mg_mem_array(items + from, lens + from, n - from, &all) != MG_X_OK) {
        mg_buf_free(&all);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ninput) {
        all.len--;

        if ((n - from && mg_buf_append(&all, ",", 1) != MG_X_OK)
            || mg_buf_append(&all, m->input.data + 1, m->input.len - 1)
               != MG_X_OK)
        {
            mg_buf_free(&all);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    rc = mg_history_limit(all.data, all.len, ninput, &o, NULL, hist, &res,
                          &err);

    mg_buf_free(&all);

    if (rc == MG_X_NOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != MG_X_OK) {
        return ngx_http_model_gateway_memory_error(r, &err);
    }

    return NGX_OK;
}


/* a chain prefers the backend of its last turn (its prompt cache) */

static void
ngx_http_model_gateway_memory_prefer(ngx_http_model_gateway_ctx_t *ctx,
    redisReply *name)
{
    ngx_uint_t                        i, n;
    ngx_http_model_gateway_target_t  *t;

    if (name->type != REDIS_REPLY_STRING) {
        return;
    }

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;

    for (i = 0; i < n; i++) {
        if (!ctx->tried[i] && t[i].backend->name.len == name->len
            && ngx_strncmp(t[i].backend->name.data, name->str, name->len)
               == 0)
        {
            ctx->preferred = i;
            return;
        }
    }
}


/*
 * Provider-only state (Gemini's thought signatures, mg_responses.h) goes
 * back only to the provider and model that made it: a target that made
 * some of the history's gets a chat request of its own, with that state
 * (ngx_http_model_gateway_memory_body()); every other target gets the
 * request without (ctx->body).
 */

static ngx_int_t
ngx_http_model_gateway_memory_replay(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, mg_buf_t *hist, mg_resp_opts_t *o)
{
    int                               rc, stream;
    u_char                           *origin, *p, *q, *end;
    size_t                            len;
    ngx_uint_t                        i, k, n;
    mg_buf_t                          body;
    mg_xerror_t                       err;
    ngx_http_model_gateway_target_t  *t;
    ngx_http_model_gateway_memory_t  *m;
    u_char                            needle[256];

    m = ctx->memory;

    p = (u_char *) hist->data;
    end = p + hist->len;

    if (!mg_mem_has_state(hist->data, hist->len)) {
        return NGX_OK;
    }

    t = ctx->model_conf->targets.elts;
    n = ctx->model_conf->targets.nelts;

    m->replay = ngx_pcalloc(r->pool, n * sizeof(ngx_str_t));
    if (m->replay == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (!t[i].backend->provider->translated || ctx->tried[i]) {
            continue;
        }

        origin = ngx_http_model_gateway_memory_origin(r->pool, &t[i]);
        if (origin == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_strlen(origin);

        if (len + sizeof("\"origin\":\"\"") > sizeof(needle)) {
            continue;
        }

        q = ngx_sprintf(needle, "\"origin\":\"%s\"", origin);

        if (ngx_strlcasestrn(p, end, needle, q - needle - 1) == NULL) {
            continue;
        }

        /* targets of one origin share its request */

        for (k = 0; k < i; k++) {
            if (m->replay[k].len
                && t[k].backend->provider == t[i].backend->provider
                && t[k].provider_model.len == t[i].provider_model.len
                && ngx_strncmp(t[k].provider_model.data,
                               t[i].provider_model.data,
                               t[i].provider_model.len) == 0)
            {
                m->replay[i] = m->replay[k];
                break;
            }
        }

        if (m->replay[i].len) {
            continue;
        }

        ngx_memzero(&body, sizeof(mg_buf_t));

        o->replay = (char *) origin;

        rc = mg_resp_request((char *) m->request.data, m->request.len,
                             hist->data, hist->len, o, &body, NULL, NULL,
                             &stream, &err);

        o->replay = NULL;

        if (rc == MG_X_NOMEM) {
            mg_buf_free(&body);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == MG_X_OK) {
            m->replay[i].data = ngx_pnalloc(r->pool, body.len);
            if (m->replay[i].data == NULL) {
                mg_buf_free(&body);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(m->replay[i].data, body.data, body.len);
            m->replay[i].len = body.len;
        }

        mg_buf_free(&body);
    }

    return NGX_OK;
}


/* the chat request of target i when it is not ctx->body, or NULL */

ngx_str_t *
ngx_http_model_gateway_memory_body(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t i)
{
    if (ctx->memory == NULL || ctx->memory->replay == NULL
        || ctx->memory->replay[i].len == 0)
    {
        return NULL;
    }

    return &ctx->memory->replay[i];
}


/* "PROVIDER/MODEL": where provider-only state comes from, NUL-terminated */

u_char *
ngx_http_model_gateway_memory_origin(ngx_pool_t *pool,
    ngx_http_model_gateway_target_t *t)
{
    u_char  *p;

    p = ngx_pnalloc(pool, t->backend->provider->name.len + 1
                          + t->provider_model.len + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_sprintf(p, "%V/%V", &t->backend->provider->name, &t->provider_model)
        = '\0';

    return p;
}
