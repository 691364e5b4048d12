
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Who is calling.  In a location where identity is configured, the access
 * phase decides the caller's tenant (and key id) before the body is read,
 * so a caller without one costs no more than its headers; every stored
 * object is then keyed by that tenant.  The identity comes from nginx's
 * own variables, for deployments that already authenticate (auth_request,
 * mTLS, njs): model_gateway_identity $tenant [$key_id]; or from a gateway
 * key the client presents, found in a key file or in Redis (_keys.c).
 * With both, variables that are set win, and a key is required when they
 * are empty.
 *
 * Requests that present the same key while Redis is looking it up wait
 * for that one lookup: a burst of one new key costs one HGETALL.
 *
 * A refusal is one 401 whatever was wrong (no key, a malformed, unknown,
 * expired or revoked one), so a caller learns nothing of which keys
 * exist.  The key itself is never logged; the log at info level says why.
 *
 * The key's policy is applied once the body is known (the route step):
 * a model it may not use is as unknown as one that does not exist, and a
 * request for more tokens than its cap is refused naming the cap.
 */


#include "ngx_http_model_gateway_module.h"

#include <hiredis/hiredis.h>
#include "ngx_http_model_gateway_redis.h"


#define NGX_HTTP_MG_NAME_MAX  64


/* one HGETALL in flight, and the requests that wait for its answer */
typedef struct {
    ngx_str_node_t                     sn;      /* the key's hash */
    u_char                             hash[MG_KEY_HASH_LEN];
    ngx_queue_t                        waiters; /* ctx->identity.wait */
} ngx_http_model_gateway_lookup_t;


static ngx_rbtree_t        ngx_http_model_gateway_lookups;
static ngx_rbtree_node_t   ngx_http_model_gateway_lookups_sentinel;
static ngx_uint_t          ngx_http_model_gateway_lookups_ready;


static ngx_int_t ngx_http_model_gateway_identity_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_identity_key(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_loc_conf_t *lcf);
static ngx_int_t ngx_http_model_gateway_identity_accept(
    ngx_http_request_t *r, ngx_http_model_gateway_ctx_t *ctx,
    const mg_key_t *k, ngx_uint_t copy);
static ngx_int_t ngx_http_model_gateway_identity_refuse(
    ngx_http_request_t *r, const char *why, const mg_key_t *k);
static ngx_int_t ngx_http_model_gateway_identity_unavailable(
    ngx_http_request_t *r);
static void ngx_http_model_gateway_identity_found(void *data,
    redisReply *reply, ngx_int_t rc);
static ngx_int_t ngx_http_model_gateway_identity_record(ngx_log_t *log,
    const u_char *hash, redisReply *reply, mg_key_t *k);
static void ngx_http_model_gateway_identity_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_identity_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);


/* model_gateway_identity TENANT [KEY_ID]; */

char *
ngx_http_model_gateway_identity(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *lcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_complex_value_t         **cv[2];
    ngx_http_compile_complex_value_t   ccv;

    if (lcf->identity_tenant != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    cv[0] = &lcf->identity_tenant;
    cv[1] = &lcf->identity_key_id;
    lcf->identity_key_id = NULL;

    for (i = 1; i < cf->args->nelts; i++) {
        *cv[i - 1] = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (*cv[i - 1] == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = *cv[i - 1];

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_model_gateway_identity_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_model_gateway_identity_handler;

    return ngx_http_model_gateway_route_add(cf,
                                        ngx_http_model_gateway_identity_route,
                                        NGX_HTTP_MG_ROUTE_IDENTITY);
}


static ngx_int_t
ngx_http_model_gateway_identity_handler(ngx_http_request_t *r)
{
    ngx_str_t                           tenant, key_id;
    ngx_http_model_gateway_ctx_t       *ctx;
    ngx_http_model_gateway_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_model_gateway_module);

    if (!lcf->enable || !lcf->auth || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->identity.done) {
        return NGX_DECLINED;
    }

    if (ctx->identity.lookup) {
        /* Redis has not answered yet */
        return NGX_AGAIN;
    }

    if (ctx->identity.status) {
        /* decided when Redis answered */
        return ctx->identity.status;
    }

    if (lcf->identity_tenant == NULL) {
        return ngx_http_model_gateway_identity_key(r, ctx, lcf);
    }

    if (ngx_http_complex_value(r, lcf->identity_tenant, &tenant) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (tenant.len == 0 && (lcf->key_file || lcf->key_redis)) {

        /* nginx did not say who calls: a gateway key must */

        return ngx_http_model_gateway_identity_key(r, ctx, lcf);
    }

    ngx_str_null(&key_id);

    if (lcf->identity_key_id
        && ngx_http_complex_value(r, lcf->identity_key_id, &key_id)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * the tenant names Redis keys of its own: a value that is not a plain
     * name (an empty one above all) identifies nobody
     */

    if (ngx_http_model_gateway_name_ok(&tenant, NGX_HTTP_MG_NAME_MAX)
        != NGX_OK
        || (key_id.len
            && ngx_http_model_gateway_name_ok(&key_id, NGX_HTTP_MG_NAME_MAX)
               != NGX_OK))
    {
        if (tenant.len) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "model gateway: the identity's tenant or key id "
                          "is not a name of 1 to 64 letters, digits, "
                          "\".\", \"_\" or \"-\"");
        }

        return ngx_http_model_gateway_fail(r, NGX_HTTP_UNAUTHORIZED,
                                           "invalid_request_error",
                                           "invalid_api_key", NULL,
                                           "Invalid or missing API key.");
    }

    ctx->identity.tenant = tenant;
    ctx->identity.key_id = key_id;
    ctx->identity.done = 1;

    return NGX_DECLINED;
}


/*
 * The key file first (no I/O), then the worker's cache, then Redis: the
 * request waits in the access phase for its answer.
 */

static ngx_int_t
ngx_http_model_gateway_identity_key(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_loc_conf_t *lcf)
{
    u_char                              *p;
    ngx_str_t                            key, args[2], prefix, hash;
    const mg_key_t                      *k;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_model_gateway_lookup_t     *lk;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (ngx_http_model_gateway_key_presented(r, &key) != NGX_OK) {
        return ngx_http_model_gateway_identity_refuse(r, "no key", NULL);
    }

    if (!mg_key_presented_ok((char *) key.data, key.len)) {
        return ngx_http_model_gateway_identity_refuse(r, "a malformed key",
                                                      NULL);
    }

    if (mg_key_hash((char *) key.data, key.len, ctx->identity.hash) != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "model gateway: SHA-256 of a key failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lcf->key_file) {
        k = ngx_http_model_gateway_keys_find(lcf->key_file,
                                             ctx->identity.hash);
        if (k) {
            return ngx_http_model_gateway_identity_accept(r, ctx, k, 0);
        }
    }

    if (!lcf->key_redis) {
        return ngx_http_model_gateway_identity_refuse(r, "an unknown key",
                                                      NULL);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (ngx_http_model_gateway_key_cache_get(mcf, ctx->identity.hash, &k)
        == NGX_OK)
    {
        if (k == NULL) {
            return ngx_http_model_gateway_identity_refuse(r, "an unknown key "
                                                          "(cached)", NULL);
        }

        return ngx_http_model_gateway_identity_accept(r, ctx, k, 1);
    }

    /*
     * Redis down: refused, not let in.  Letting unknown keys in would
     * open the gateway to anyone while Redis is away
     */

    if (!ngx_http_mg_redis_ready()) {
        return ngx_http_model_gateway_identity_unavailable(r);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the same key already asked for: wait for that answer */

    if (!ngx_http_model_gateway_lookups_ready) {
        ngx_rbtree_init(&ngx_http_model_gateway_lookups,
                        &ngx_http_model_gateway_lookups_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_http_model_gateway_lookups_ready = 1;
    }

    hash.data = ctx->identity.hash;
    hash.len = MG_KEY_HASH_LEN;

    lk = (ngx_http_model_gateway_lookup_t *)
             ngx_str_rbtree_lookup(&ngx_http_model_gateway_lookups, &hash,
                                   ngx_crc32_short(hash.data, hash.len));

    if (lk == NULL) {

        /* HGETALL <prefix>:key:{<hash hex>}, as bin/mg-key writes it */

        prefix = mcf->redis->prefix;

        ngx_str_set(&args[0], "HGETALL");

        args[1].len = prefix.len + sizeof(":key:{}") - 1
                      + 2 * MG_KEY_HASH_LEN;
        args[1].data = ngx_pnalloc(r->pool, args[1].len);
        if (args[1].data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_sprintf(args[1].data, "%V:key:{", &prefix);
        p = ngx_hex_dump(p, ctx->identity.hash, MG_KEY_HASH_LEN);
        *p = '}';

        /*
         * the lookup belongs to the worker, not to a request: any of its
         * waiters may go away before Redis answers
         */

        lk = ngx_alloc(sizeof(ngx_http_model_gateway_lookup_t),
                       r->connection->log);
        if (lk == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_mg_redis_command(2, args,
                                      ngx_http_model_gateway_identity_found,
                                      lk)
            == NULL)
        {
            ngx_free(lk);
            return ngx_http_model_gateway_identity_unavailable(r);
        }

        ngx_memcpy(lk->hash, ctx->identity.hash, MG_KEY_HASH_LEN);
        lk->sn.str.data = lk->hash;
        lk->sn.str.len = MG_KEY_HASH_LEN;
        lk->sn.node.key = ngx_crc32_short(lk->hash, MG_KEY_HASH_LEN);
        ngx_queue_init(&lk->waiters);

        ngx_rbtree_insert(&ngx_http_model_gateway_lookups, &lk->sn.node);
    }

    ngx_queue_insert_tail(&lk->waiters, &ctx->identity.wait);
    ctx->identity.lookup = lk;

    cln->handler = ngx_http_model_gateway_identity_cleanup;
    cln->data = ctx;

    /* a client that goes away finalizes the request: it stops waiting */

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/*
 * The key as each SDK sends it: "Authorization: Bearer K" (OpenAI),
 * "x-api-key: K" (Anthropic), "api-key: K" (Azure OpenAI).
 */

ngx_int_t
ngx_http_model_gateway_key_presented(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char           *p, *end;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found[2];

    h = r->headers_in.authorization;

    if (h && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        p = h->value.data + 7;
        end = h->value.data + h->value.len;

        while (p < end && *p == ' ') {
            p++;
        }

        key->data = p;
        key->len = end - p;

        return NGX_OK;
    }

    found[0] = NULL;
    found[1] = NULL;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("x-api-key") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "x-api-key",
                               sizeof("x-api-key") - 1) == 0)
        {
            n = 0;

        } else if (h[i].key.len == sizeof("api-key") - 1
                   && ngx_strncasecmp(h[i].key.data, (u_char *) "api-key",
                                      sizeof("api-key") - 1) == 0)
        {
            n = 1;

        } else {
            continue;
        }

        if (found[n] == NULL) {
            found[n] = &h[i];
        }
    }

    h = found[0] ? found[0] : found[1];

    if (h == NULL) {
        return NGX_DECLINED;
    }

    *key = h->value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_identity_accept(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, const mg_key_t *k, ngx_uint_t copy)
{
    if (mg_key_expired(k, (int64_t) ngx_time())) {
        return ngx_http_model_gateway_identity_refuse(r, "an expired key", k);
    }

    /*
     * a cached record may be dropped while the request runs: it keeps a
     * copy of its own; the key file's records live as long as the
     * configuration the request holds
     */

    if (copy) {
        k = ngx_http_model_gateway_key_copy(r->pool, k);
        if (k == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->identity.key = k;
    ctx->identity.tenant.data = (u_char *) k->tenant;
    ctx->identity.tenant.len = k->tenant_len;
    ctx->identity.key_id.data = (u_char *) k->id;
    ctx->identity.key_id.len = k->id_len;
    ctx->identity.done = 1;

    return NGX_DECLINED;
}


/* one answer whatever was wrong; the log says why, never with the key */

static ngx_int_t
ngx_http_model_gateway_identity_refuse(ngx_http_request_t *r,
    const char *why, const mg_key_t *k)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "model gateway: refused %s%s%s%s", why,
                  k ? " (id \"" : "", k ? k->id : "", k ? "\")" : "");

    return ngx_http_model_gateway_fail(r, NGX_HTTP_UNAUTHORIZED,
                                       "invalid_request_error",
                                       "invalid_api_key", NULL,
                                       "Invalid or missing API key.");
}


static ngx_int_t
ngx_http_model_gateway_identity_unavailable(ngx_http_request_t *r)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "model gateway: a key could not be looked up in Redis");

    return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "server_error",
                                       "key_store_unavailable", NULL,
                                       "The store of API keys is "
                                       "unavailable.");
}


static void
ngx_http_model_gateway_identity_cleanup(void *data)
{
    ngx_http_model_gateway_ctx_t *ctx = data;

    /* the lookup goes on for the others, and fills the cache */

    if (ctx->identity.lookup) {
        ngx_queue_remove(&ctx->identity.wait);
        ctx->identity.lookup = NULL;
    }
}


/*
 * Redis answered a lookup: the record is read once, cached, and each
 * request that waited for it goes on (a copy of the record in its pool).
 */

static void
ngx_http_model_gateway_identity_found(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_lookup_t *lk = data;

    mg_key_t                            *k;
    ngx_log_t                           *log;
    ngx_int_t                            status;
    ngx_uint_t                           what;
    ngx_queue_t                         *q;
    ngx_connection_t                    *c;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_ctx_t        *ctx;
    ngx_http_model_gateway_main_conf_t  *mcf;

    enum { FOUND = 0, UNKNOWN, INVALID, FAILED };

    ngx_rbtree_delete(&ngx_http_model_gateway_lookups, &lk->sn.node);

    log = ngx_cycle->log;

    if (!ngx_queue_empty(&lk->waiters)) {
        ctx = ngx_queue_data(ngx_queue_head(&lk->waiters),
                             ngx_http_model_gateway_ctx_t, identity.wait);
        log = ctx->request->connection->log;
    }

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_model_gateway_module);

    k = NULL;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY) {
        what = FAILED;

    } else if (reply->elements == 0) {

        /* unknown: remembered, so that the same key costs no lookup */

        ngx_http_model_gateway_key_cache_put(mcf, lk->hash, NULL);
        what = UNKNOWN;

    } else {
        k = ngx_alloc(sizeof(mg_key_t), log);

        if (k == NULL) {
            what = FAILED;

        } else if (ngx_http_model_gateway_identity_record(log, lk->hash,
                                                          reply, k)
                   != NGX_OK)
        {
            /* a broken record lets nobody in, and is not asked again */

            ngx_http_model_gateway_key_cache_put(mcf, lk->hash, NULL);
            what = INVALID;

        } else {
            ngx_http_model_gateway_key_cache_put(mcf, lk->hash, k);
            what = FOUND;
        }
    }

    /* a waiter resumed may end, and others with it: one at a time */

    while (!ngx_queue_empty(&lk->waiters)) {
        q = ngx_queue_head(&lk->waiters);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_http_model_gateway_ctx_t, identity.wait);
        ctx->identity.lookup = NULL;

        r = ctx->request;
        c = r->connection;
        r->read_event_handler = ngx_http_block_reading;

        switch (what) {

        case FOUND:
            status = ngx_http_model_gateway_identity_accept(r, ctx, k, 1);
            break;

        case UNKNOWN:
            status = ngx_http_model_gateway_identity_refuse(r, "an unknown "
                                                            "key", NULL);
            break;

        case INVALID:
            status = ngx_http_model_gateway_identity_refuse(r, "a key with "
                                                            "an invalid "
                                                            "record", NULL);
            break;

        default:
            status = ngx_http_model_gateway_identity_unavailable(r);
        }

        if (status != NGX_DECLINED) {
            ctx->identity.status = status;
        }

        r->write_event_handler = ngx_http_core_run_phases;
        ngx_http_core_run_phases(r);

        ngx_http_run_posted_requests(c);
    }

    if (k) {
        ngx_free(k);
    }

    ngx_free(lk);
}


/* the fields of HGETALL, read as the key file's, and its own hash checked */

static ngx_int_t
ngx_http_model_gateway_identity_record(ngx_log_t *log, const u_char *hash,
    redisReply *reply, mg_key_t *k)
{
    char         err[MG_KEY_ERR_LEN];
    size_t       i;
    redisReply  *name, *value;

    mg_key_init(k);

    if (reply->elements % 2) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "model gateway: a key record in Redis has an odd "
                      "number of fields");
        return NGX_ERROR;
    }

    for (i = 0; i < reply->elements; i += 2) {
        name = reply->element[i];
        value = reply->element[i + 1];

        if (name->type != REDIS_REPLY_STRING
            || value->type != REDIS_REPLY_STRING)
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "model gateway: a key record in Redis has a "
                          "field that is not a string");
            return NGX_ERROR;
        }

        if (mg_key_set(k, name->str, name->len, value->str, value->len, err)
            != MG_KEY_OK)
        {
            goto invalid;
        }
    }

    if (mg_key_complete(k, err) != MG_KEY_OK) {
        goto invalid;
    }

    if (!mg_key_hash_eq(k->hash, hash)) {
        ngx_snprintf((u_char *) err, MG_KEY_ERR_LEN,
                     "its hash is not the one of its name%Z");
        goto invalid;
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "model gateway: the key record of id \"%s\" in Redis is "
                  "invalid: %s", (k->set & MG_KEY_F_ID) ? k->id : "",
                  err);

    return NGX_ERROR;
}


/*
 * A tenant, a key id or an object id: 1 to max of A-Z a-z 0-9 . _ -
 * (no ":", "{", "}" or "|": they would break the Redis key layout)
 */

ngx_int_t
ngx_http_model_gateway_name_ok(ngx_str_t *s, size_t max)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > max) {
        return NGX_DECLINED;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * The key's policy, once the body is known: a model it may not use is
 * answered as an unknown model is, and a request for more tokens than its
 * cap is refused naming the cap (clamping it silently would change the
 * answer behind the client's back).
 */

static ngx_int_t
ngx_http_model_gateway_identity_route(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char          *p;
    size_t           len;
    uint64_t         cap;
    ngx_uint_t       i;
    const mg_key_t  *k;

    /* in the order of ctx->tokens_asked */

    static const char  *fields[] = {
        "max_tokens", "max_completion_tokens", "max_output_tokens"
    };

    k = ctx->identity.key;

    if (k == NULL) {
        return NGX_DECLINED;
    }

    if (ctx->model.len
        && !mg_key_model_allowed(k, (char *) ctx->model.data, ctx->model.len))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "model gateway: the key \"%s\" may not use the model "
                      "\"%V\"", k->id, &ctx->model);

        len = ngx_min(ctx->model.len, 256);

        p = ngx_pnalloc(r->pool, sizeof("The model `` does not exist or "
                                        "you do not have access to it.")
                                 + len);
        if (p == NULL) {
            return NGX_ERROR;
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

    if (k->max_tokens == 0) {
        return NGX_DECLINED;
    }

    for (i = 0; i < NGX_HTTP_MG_TOKEN_FIELDS; i++) {
        if (!(ctx->tokens_asked_set & (1 << i))) {
            continue;
        }

        cap = mg_key_tokens_over(k, ctx->tokens_asked[i]);

        if (cap == 0) {
            continue;
        }

        p = ngx_pnalloc(r->pool, 128);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->err.message_str.data = p;
        ctx->err.message_str.len =
            ngx_snprintf(p, 128, "'%s' is above this key's limit of %uL "
                         "tokens.", fields[i], cap)
            - p;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error",
                                           "integer_above_max_value",
                                           fields[i], NULL);
    }

    return NGX_DECLINED;
}


/*
 * GET /models for a key limited to some models: the rendered list with
 * only the entries it may use, each of which starts with {"id":"NAME".
 * NGX_DECLINED: the whole list applies.
 */

ngx_int_t
ngx_http_model_gateway_models_allowed(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *json)
{
    u_char                              *p, *q, *e, *end, *out;
    ngx_uint_t                           n;
    const mg_key_t                      *k;
    ngx_http_model_gateway_main_conf_t  *mcf;

    k = ctx->identity.key;

    if (k == NULL || k->nmodels == 0) {
        return NGX_DECLINED;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    out = ngx_pnalloc(r->pool, mcf->models_json.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    json->data = out;

    p = mcf->models_json.data;
    end = p + mcf->models_json.len;

    q = ngx_strlcasestrn(p, end, (u_char *) "\"data\":[", 7);
    if (q == NULL) {
        return NGX_DECLINED;
    }

    q += sizeof("\"data\":[") - 1;
    out = ngx_cpymem(out, p, q - p);
    p = q;
    n = 0;

    for ( ;; ) {
        p = ngx_strlcasestrn(p, end, (u_char *) "{\"id\":\"", 6);
        if (p == NULL) {
            break;
        }

        q = p + sizeof("{\"id\":\"") - 1;

        e = ngx_strlchr(q, end, '"');
        if (e == NULL) {
            break;
        }

        if (!mg_key_model_allowed(k, (char *) q, e - q)) {
            p = e;
            continue;
        }

        e = ngx_strlchr(e, end, '}');
        if (e == NULL) {
            break;
        }

        if (n++) {
            *out++ = ',';
        }

        out = ngx_cpymem(out, p, e + 1 - p);
        p = e + 1;
    }

    out = ngx_cpymem(out, "]}", 2);

    json->len = out - json->data;

    return NGX_OK;
}
