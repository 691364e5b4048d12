
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Request and token limits per key and per tenant.  A key's record may
 * carry rpm, tpm, tpd and budget; a tenant's come from
 * model_gateway_tenant_limits.  The counters live in Redis, so every node
 * of a fleet shares them: one script (LIMIT) checks and charges all of a
 * request's counters at once, and also looks up its session pin, so a
 * request with a cached key costs one round trip for limits and session.
 *
 * Tokens are reserved before the request (its body bytes divided by
 * model_gateway_limit_bytes_per_token, plus the output tokens it asks for
 * or model_gateway_limit_default_max_tokens), once however many backends
 * it tries, and settled when the request is freed: the real usage when the
 * answer said it, else the reservation if a backend may have worked on it,
 * else nothing.
 *
 * While Redis is away, limits fail closed (503) or open: then each node
 * counts in shared memory, every limit divided by model_gateway_limit_nodes.
 *
 * Every answer of a location with identity carries the gateway's own
 * x-ratelimit-* headers (the backend's, the operator's account limits, are
 * dropped in _response.c).
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "ngx_http_model_gateway_limits.h"
#include "mg_limit.h"

#include <hiredis/hiredis.h>


static const char  *ngx_http_model_gateway_limit_names[] = {
    "rpm", "tpm", "tpd", "budget"
};


static ngx_int_t ngx_http_model_gateway_limits_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_limits_collect(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_limits_add(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t which, uint64_t limit,
    ngx_uint_t of_key);
static uint64_t ngx_http_model_gateway_limits_estimate(
    ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_main_conf_t *mcf);
static ngx_int_t ngx_http_model_gateway_limits_send(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t pin);
static void ngx_http_model_gateway_limits_reply(void *data,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_model_gateway_limits_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_limits_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_limits_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_model_gateway_tenant_cmp(const void *a,
    const void *b);


static ngx_str_t  ngx_http_model_gateway_limits_zone_name =
    ngx_string("model_gateway_limits");


/* model_gateway_tenant_limits NAME|* rpm=N tpm=N tpd=N budget=N; */

char *
ngx_http_model_gateway_tenant_limits(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    u_char                             *eq, c;
    size_t                              n;
    ngx_str_t                          *value, name;
    ngx_uint_t                          i, j;
    ngx_http_model_gateway_tenant_t    *t;

    value = cf->args->elts;

    if (mcf->tenant_limits == NULL) {
        mcf->tenant_limits = ngx_array_create(cf->pool, 4,
                                      sizeof(ngx_http_model_gateway_tenant_t));
        if (mcf->tenant_limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    t = mcf->tenant_limits->elts;

    for (i = 0; i < mcf->tenant_limits->nelts; i++) {
        if (t[i].name.len == value[1].len
            && ngx_strncmp(t[i].name.data, value[1].data, value[1].len) == 0)
        {
            return "is duplicate for this tenant";
        }
    }

    if (!(value[1].len == 1 && value[1].data[0] == '*')) {
        if (value[1].len == 0 || value[1].len > MG_KEY_ID_MAX) {
            return "needs a tenant of 1 to 64 characters, or \"*\"";
        }

        for (i = 0; i < value[1].len; i++) {
            c = value[1].data[i];

            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '.' || c == '_'
                  || c == '-'))
            {
                return "needs a tenant of letters, digits, \".\", \"_\" "
                       "or \"-\", or \"*\"";
            }
        }
    }

    t = ngx_array_push(mcf->tenant_limits);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(t, sizeof(ngx_http_model_gateway_tenant_t));
    t->name = value[1];

    for (i = 2; i < cf->args->nelts; i++) {
        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
        if (eq == NULL) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = eq - value[i].data;

        for (j = 0; j < 4; j++) {
            n = ngx_strlen(ngx_http_model_gateway_limit_names[j]);

            if (name.len == n
                && ngx_strncmp(name.data,
                               ngx_http_model_gateway_limit_names[j], n) == 0)
            {
                break;
            }
        }

        if (j == 4 || t->limit[j]) {
            goto invalid;
        }

        t->limit[j] = (uint64_t) ngx_atoof(eq + 1,
                                           value[i].data + value[i].len
                                           - eq - 1);

        if ((off_t) t->limit[j] <= 0 || t->limit[j] > MG_KEY_LIMIT_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": a limit is 1 to 10^15", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid or repeated parameter \"%V\": expected "
                       "rpm=N, tpm=N, tpd=N or budget=N", &value[i]);

    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_model_gateway_limits_init(ngx_conf_t *cf)
{
    ngx_uint_t                           i, n;
    ngx_shm_zone_t                      *shm_zone;
    ngx_http_model_gateway_tenant_t     *t;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

    /* tenants are found by a binary search; "*" is the default */

    if (mcf->tenant_limits) {
        t = mcf->tenant_limits->elts;
        n = mcf->tenant_limits->nelts;

        ngx_sort(t, n, sizeof(ngx_http_model_gateway_tenant_t),
                 ngx_http_model_gateway_tenant_cmp);

        for (i = 0; i < n; i++) {
            if (t[i].name.len == 1 && t[i].name.data[0] == '*') {
                mcf->tenant_default = &t[i];
            }
        }
    }

    shm_zone = ngx_shared_memory_add(cf,
                                     &ngx_http_model_gateway_limits_zone_name,
                                     mcf->limit_zone_size,
                                     &ngx_http_model_gateway_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_model_gateway_limits_init_zone;
    shm_zone->data = mcf;
    mcf->limit_zone = shm_zone;

    if (ngx_http_model_gateway_route_add(cf,
                                         ngx_http_model_gateway_limits_route,
                                         NGX_HTTP_MG_ROUTE_LIMITS)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_model_gateway_commit_add(cf,
                                          ngx_http_model_gateway_limits_commit);
}


static ngx_int_t
ngx_http_model_gateway_tenant_cmp(const void *a, const void *b)
{
    const ngx_http_model_gateway_tenant_t  *x = a, *y = b;

    if (x->name.len != y->name.len) {
        return (ngx_int_t) x->name.len - (ngx_int_t) y->name.len;
    }

    return ngx_strncmp(x->name.data, y->name.data, x->name.len);
}


static ngx_int_t
ngx_http_model_gateway_limits_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_int_t                            rc;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (!ctx->lcf->auth || ctx->identity.tenant.len == 0) {
        return NGX_DECLINED;
    }

    rc = ngx_http_model_gateway_limits_collect(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->limits.n == 0) {
        return NGX_DECLINED;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    ctx->limits.reserved = ngx_http_model_gateway_limits_estimate(ctx, mcf);

    /* whatever happens next, the charge is settled when the request ends */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_model_gateway_limits_cleanup;
    cln->data = ctx;

    /* units the node leased before: no round trip */

    if (ngx_http_model_gateway_limits_lease_take(r, ctx) == NGX_OK) {
        return NGX_DECLINED;
    }

    if (mcf->redis && ngx_http_mg_redis_ready()) {

        /*
         * the session's pin rides in the same script, unless an object id
         * routes the request instead (the state step, after this one)
         */

        rc = NGX_DECLINED;

        if (!ngx_http_model_gateway_state_by_id(ctx)) {
            rc = ngx_http_model_gateway_session_prepare(r, ctx);

            if (rc != NGX_OK && rc != NGX_DECLINED && rc != NGX_DONE) {
                return rc;
            }
        }

        rc = ngx_http_model_gateway_limits_send(r, ctx, rc == NGX_OK);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    return ngx_http_model_gateway_limits_local(r, ctx);
}


/* the limits of the key, then of its tenant; their Redis keys */

static ngx_int_t
ngx_http_model_gateway_limits_collect(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    uint64_t                             kl[4];
    ngx_int_t                            lo, hi, mid, c;
    ngx_str_t                           *tenant;
    ngx_uint_t                           i;
    const mg_key_t                      *k;
    ngx_http_model_gateway_tenant_t     *t, *found;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    k = ctx->identity.key;

    if (k) {
        kl[0] = k->rpm;
        kl[1] = k->tpm;
        kl[2] = k->tpd;
        kl[3] = k->budget;

        for (i = 0; i < 4; i++) {
            if (kl[i]
                && ngx_http_model_gateway_limits_add(r, ctx, i, kl[i], 1)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (mcf->tenant_limits == NULL) {
        return NGX_OK;
    }

    tenant = &ctx->identity.tenant;
    t = mcf->tenant_limits->elts;
    found = NULL;

    lo = 0;
    hi = (ngx_int_t) mcf->tenant_limits->nelts - 1;

    while (lo <= hi) {
        mid = (lo + hi) / 2;

        c = (t[mid].name.len != tenant->len)
            ? (ngx_int_t) t[mid].name.len - (ngx_int_t) tenant->len
            : ngx_strncmp(t[mid].name.data, tenant->data, tenant->len);

        if (c == 0) {
            found = &t[mid];
            break;
        }

        if (c < 0) {
            lo = mid + 1;

        } else {
            hi = mid - 1;
        }
    }

    if (found == NULL) {
        found = mcf->tenant_default;
    }

    if (found == NULL) {
        return NGX_OK;
    }

    for (i = 0; i < 4; i++) {
        if (found->limit[i]
            && ngx_http_model_gateway_limits_add(r, ctx, i, found->limit[i],
                                                 0)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * <prefix>:{<tenant>}:rl:key:<id>:rpm, <prefix>:{<tenant>}:rl:tpm: every
 * counter of a request carries its tenant's hash tag, as its session pin
 * does, so the one script that touches them all runs on one Redis Cluster
 * slot.
 */

static ngx_int_t
ngx_http_model_gateway_limits_add(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t which, uint64_t limit,
    ngx_uint_t of_key)
{
    u_char                              *p;
    size_t                               len;
    ngx_uint_t                           n;
    ngx_http_model_gateway_limits_t     *l;
    ngx_http_model_gateway_main_conf_t  *mcf;

    static const u_char  kinds[] = {
        MG_LIMIT_RATE, MG_LIMIT_RATE, MG_LIMIT_DAY, MG_LIMIT_BUDGET
    };

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    l = &ctx->limits;
    n = l->n;

    len = (mcf->redis ? mcf->redis->prefix.len : sizeof("mg") - 1)
          + sizeof(":{}:rl:key:") - 1 + ctx->identity.tenant.len
          + ctx->identity.key_id.len + sizeof(":budget") - 1;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    l->keys[n].data = p;

    if (mcf->redis) {
        p = ngx_cpymem(p, mcf->redis->prefix.data, mcf->redis->prefix.len);

    } else {
        p = ngx_cpymem(p, "mg", 2);
    }

    /* on every request: plain copies, not ngx_sprintf() */

    p = ngx_cpymem(p, ":{", 2);
    p = ngx_cpymem(p, ctx->identity.tenant.data, ctx->identity.tenant.len);
    p = ngx_cpymem(p, "}:rl:", 5);

    if (of_key) {
        p = ngx_cpymem(p, "key:", 4);
        p = ngx_cpymem(p, ctx->identity.key_id.data,
                       ctx->identity.key_id.len);
        *p++ = ':';
    }

    p = ngx_cpymem(p, ngx_http_model_gateway_limit_names[which],
                   ngx_strlen(ngx_http_model_gateway_limit_names[which]));

    l->keys[n].len = p - l->keys[n].data;
    l->kind[n] = kinds[which];
    l->which[n] = (u_char) which;
    l->of_key[n] = (u_char) of_key;
    l->limit[n] = limit;
    l->n++;

    return NGX_OK;
}


/*
 * The tokens a request may use: its body counted at bytes per token, and
 * the output it asks for (max_tokens, max_completion_tokens or
 * max_output_tokens, the largest), or the configured default.  Only
 * chat, new responses and embeddings (no output) run a model; other calls
 * cost no tokens.
 */

static uint64_t
ngx_http_model_gateway_limits_estimate(ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    uint64_t    out;
    ngx_uint_t  i;

    switch (ctx->endpoint) {

    case MG_EP_CHAT:
    case MG_EP_RESPONSES:
    case MG_EP_EMBEDDINGS:
        break;

    default:

        /* stored objects, conversations: no model runs */

        return 0;
    }

    if (ctx->body.len == 0) {
        return 0;
    }

    out = 0;

    if (ctx->endpoint != MG_EP_EMBEDDINGS) {

        if (ctx->tokens_asked_set == 0) {
            out = mcf->limit_default_max_tokens;
        }

        for (i = 0; i < NGX_HTTP_MG_TOKEN_FIELDS; i++) {
            if (ctx->tokens_asked_set & (1 << i)) {
                out = ngx_max(out, ngx_min(ctx->tokens_asked[i],
                                           MG_KEY_LIMIT_MAX));
            }
        }
    }

    return mg_limit_estimate(ctx->body.len, mcf->limit_bytes_per_token, out);
}


/*
 * EVALSHA LIMIT: the counters, then the pin when there is one.  Returns
 * NGX_AGAIN when sent, NGX_DECLINED when Redis cannot take it.
 */

static ngx_int_t
ngx_http_model_gateway_limits_send(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t pin)
{
    u_char                            *p;
    ngx_str_t                          args[NGX_HTTP_MG_LIMITS_MAX * 5 + 5];
    ngx_uint_t                         i, n, a;
    ngx_http_mg_redis_cmd_t           *cmd;
    ngx_http_model_gateway_limits_t   *l;
    ngx_http_model_gateway_target_t   *t;

    l = &ctx->limits;
    n = l->n;

    p = ngx_pnalloc(r->pool, (n * 3 + 3) * NGX_INT64_LEN + n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    a = 0;

    for (i = 0; i < n; i++) {
        args[a++] = l->keys[i];
    }

    if (pin) {
        args[a++] = ctx->session.pin_key;
    }

    args[a].data = p;
    p = ngx_sprintf(p, "%ui", n);
    args[a].len = p - args[a].data;
    a++;

    for (i = 0; i < n; i++) {
        args[a].data = p;
        *p++ = l->kind[i];
        args[a++].len = 1;

        args[a].data = p;
        p = ngx_sprintf(p, "%uL", l->limit[i]);
        args[a].len = p - args[a].data;
        a++;

        args[a].data = p;
        p = ngx_sprintf(p, "%uL", l->which[i] == 0 ? 1 : l->reserved);
        args[a].len = p - args[a].data;
        a++;

        args[a].data = p;
        p = ngx_sprintf(p, "%uL",
                        ngx_http_model_gateway_limits_lease_ask(ctx, i));
        args[a].len = p - args[a].data;
        a++;
    }

    if (pin) {
        t = ctx->model_conf->targets.elts;

        args[a++] = t[ctx->session.hashed].backend->name;

        args[a].data = p;
        p = ngx_sprintf(p, "%M", ctx->lcf->session_idle);
        args[a].len = p - args[a].data;
        a++;

        args[a].data = p;
        p = ngx_sprintf(p, "%M", ctx->lcf->session_max);
        args[a].len = p - args[a].data;
        a++;
    }

    cmd = ngx_http_mg_redis_script_keys(NGX_HTTP_MG_SCRIPT_LIMIT,
                                        n + (pin ? 1 : 0), a, args,
                                        ngx_http_model_gateway_limits_reply,
                                        ctx);
    if (cmd == NULL) {
        return NGX_DECLINED;
    }

    l->cmd = cmd;
    l->pin = pin;

    /* a client that goes away finalizes the request, which cancels */

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_limits_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    size_t                             i, n;
    int64_t                            retry;
    ngx_int_t                          next;
    redisReply                       **e;
    ngx_http_request_t                *r;
    ngx_http_model_gateway_limits_t   *l;

    r = ctx->request;
    l = &ctx->limits;
    l->cmd = NULL;
    r->read_event_handler = ngx_http_block_reading;

    n = l->n;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 4 + 3 * n)
    {
        if (rc == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: unexpected reply to the limits "
                          "script%s%*s",
                          reply->type == REDIS_REPLY_ERROR ? ": " : "",
                          (size_t) (reply->type == REDIS_REPLY_ERROR
                                    ? ngx_min(reply->len, 200) : 0),
                          reply->str);
        }

        goto fallback;
    }

    e = reply->element;

    for (i = 0; i < 4 + 3 * n; i++) {
        if (e[i]->type != REDIS_REPLY_INTEGER) {
            goto fallback;
        }
    }

    for (i = 0; i < n; i++) {
        ngx_http_model_gateway_limits_result(ctx, i, l->limit[i],
                                             (uint64_t) e[4 + 3 * i]->integer,
                                             e[5 + 3 * i]->integer);
    }

    if (e[0]->integer == 0) {
        i = (size_t) e[1]->integer;
        retry = e[2]->integer;

        if (i < 1 || i > n) {
            goto fallback;
        }

        ngx_http_model_gateway_route_done(r,
                   ngx_http_model_gateway_limits_refuse(r, ctx, i - 1, retry));
        return;
    }

    l->charged = NGX_HTTP_MG_CHARGED_REDIS;
    l->day = e[3]->integer;

    /* what the node may admit alone from now on */

    for (i = 0; i < n; i++) {
        if (e[6 + 3 * i]->integer > 0) {
            ngx_http_model_gateway_limits_lease_grant(ctx, i,
                                           e[6 + 3 * i]->integer,
                                           (uint64_t) e[4 + 3 * i]->integer,
                                           e[5 + 3 * i]->integer);
        }
    }

    if (l->pin) {
        if (reply->elements != 6 + 3 * n
            || e[4 + 3 * n]->type != REDIS_REPLY_STRING
            || e[5 + 3 * n]->type != REDIS_REPLY_INTEGER)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: the limits script did not name "
                          "the session's backend");
            ngx_http_model_gateway_route_done(r, NGX_DECLINED);
            return;
        }

        next = ngx_http_model_gateway_session_resolved(r, ctx,
                                                       e[4 + 3 * n]->str,
                                                       e[4 + 3 * n]->len,
                                                       e[5 + 3 * n]->integer
                                                       != 0);
        ngx_http_model_gateway_route_done(r, next);
        return;
    }

    ngx_http_model_gateway_route_done(r, NGX_DECLINED);
    return;

fallback:

    /* as if Redis were down: the session step then falls back on its own */

    next = ngx_http_model_gateway_limits_local(r, ctx);
    ngx_http_model_gateway_route_done(r, next);
}


/*
 * What the headers report: of the request limits, and of the per minute
 * and per day token limits, the one with the least left.
 */

void
ngx_http_model_gateway_limits_result(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t i, uint64_t limit, uint64_t remaining, int64_t reset)
{
    ngx_http_model_gateway_limit_hdr_t  *h;

    if (ctx->limits.kind[i] == MG_LIMIT_BUDGET) {
        return;
    }

    h = &ctx->limits.hdr[ctx->limits.which[i] == 0 ? 0 : 1];

    if (h->set && (remaining > h->remaining
                   || (remaining == h->remaining && reset <= h->reset)))
    {
        return;
    }

    h->set = 1;
    h->limit = limit;
    h->remaining = remaining;
    h->reset = reset;
}


/*
 * 429 rate_limit_exceeded with Retry-After, or for a spent budget
 * insufficient_quota, as OpenAI answers an account out of credit.
 */

ngx_int_t
ngx_http_model_gateway_limits_refuse(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t i, int64_t retry)
{
    u_char                           *p;
    uint64_t                          cost;
    ngx_str_t                         who;
    const char                       *what;
    ngx_http_model_gateway_limits_t  *l;

    static const char  *whats[] = {
        "requests per minute", "tokens per minute", "tokens per day",
        "token budget"
    };

    l = &ctx->limits;
    cost = (l->which[i] == 0) ? 1 : l->reserved;
    what = whats[l->which[i]];

    if (l->of_key[i]) {
        who = ctx->identity.key_id;

    } else {
        who = ctx->identity.tenant;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "model gateway: %s \"%V\" refused by its limit of %uL %s "
                  "(the request: %uL)", l->of_key[i] ? "key" : "tenant",
                  &who, l->limit[i], what, cost);

    p = ngx_pnalloc(r->pool, 256 + who.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->err.message_str.data = p;

    if (l->kind[i] == MG_LIMIT_BUDGET) {
        ctx->err.message_str.len =
            ngx_sprintf(p, "The token budget of %s '%V' is used up "
                        "(budget: %uL).", l->of_key[i] ? "key" : "tenant",
                        &who, l->limit[i])
            - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                           "insufficient_quota",
                                           "insufficient_quota", NULL,
                                           NULL);
    }

    if (retry < 0) {
        ctx->err.message_str.len =
            ngx_sprintf(p, "Request too large for %s '%V' on %s: limit "
                        "%uL, requested %uL.",
                        l->of_key[i] ? "key" : "tenant", &who, what,
                        l->limit[i], cost)
            - p;

    } else {
        ctx->err.retry_after = (ngx_int_t) ((retry + 999) / 1000);
        ctx->err.retry_after = ngx_max(ctx->err.retry_after, 1);
        l->retry_ms = ngx_max(retry, 1);

        ctx->err.message_str.len =
            ngx_sprintf(p, "Rate limit reached for %s '%V' on %s: limit "
                        "%uL, requested %uL. Please try again in %uLs.",
                        l->of_key[i] ? "key" : "tenant", &who, what,
                        l->limit[i], cost, (uint64_t) ctx->err.retry_after)
            - p;
    }

    return ngx_http_model_gateway_fail(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                       l->which[i] == 0 ? "requests"
                                                        : "tokens",
                                       "rate_limit_exceeded", NULL, NULL);
}


static ngx_int_t
ngx_http_model_gateway_limits_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    return ngx_http_model_gateway_limits_headers(r, ctx);
}


/*
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens}, the reset as
 * OpenAI writes it ("6m0s"); on every answer, errors included (_filter.c
 * calls this for those).
 */

ngx_int_t
ngx_http_model_gateway_limits_headers(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                              *p;
    ngx_str_t                            v;
    ngx_uint_t                           i;
    ngx_http_model_gateway_limit_hdr_t  *h;

    static ngx_str_t  names[2][3] = {
        { ngx_string("x-ratelimit-limit-requests"),
          ngx_string("x-ratelimit-remaining-requests"),
          ngx_string("x-ratelimit-reset-requests") },
        { ngx_string("x-ratelimit-limit-tokens"),
          ngx_string("x-ratelimit-remaining-tokens"),
          ngx_string("x-ratelimit-reset-tokens") }
    };
    static ngx_str_t  retry_after_ms = ngx_string("retry-after-ms");

    if (ctx->limits.headers_done) {
        return NGX_OK;
    }

    ctx->limits.headers_done = 1;

    for (i = 0; i < 2; i++) {
        h = &ctx->limits.hdr[i];

        if (!h->set) {
            continue;
        }

        p = ngx_pnalloc(r->pool, 2 * NGX_INT64_LEN + MG_LIMIT_DURATION_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = ngx_sprintf(p, "%uL", h->limit) - p;
        p += v.len;

        if (ngx_http_model_gateway_limits_header(r, &names[i][0], &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = ngx_sprintf(p, "%uL", h->remaining) - p;
        p += v.len;

        if (ngx_http_model_gateway_limits_header(r, &names[i][1], &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = mg_limit_duration((char *) p, h->reset);

        if (ngx_http_model_gateway_limits_header(r, &names[i][2], &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->limits.retry_ms) {

        /* the OpenAI SDKs wait this long before they retry */

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = ngx_sprintf(p, "%L", ctx->limits.retry_ms) - p;

        if (ngx_http_model_gateway_limits_header(r, &retry_after_ms, &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_limits_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value = *value;
    h->lowcase_key = NULL;

    return NGX_OK;
}


static void
ngx_http_model_gateway_limits_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    if (ctx->limits.cmd) {
        ngx_http_mg_redis_cancel(ctx->limits.cmd);
        ctx->limits.cmd = NULL;
    }

    ngx_http_model_gateway_limits_settle(ctx);
}
