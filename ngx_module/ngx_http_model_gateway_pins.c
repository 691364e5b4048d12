
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A node's cache of session pins (model_gateway_session_cache TIME): a pin
 * read from Redis is trusted for TIME by every worker of the node, so a
 * hot session costs no Redis round trip.  Its idle timeout in Redis is
 * refreshed without waiting, at most once per pin and interval.  A pin
 * this node moves or drops is changed here at once; one another node
 * moves is seen here within TIME (the staleness bound README states).
 * Entries live in the node's cache zone (model_gateway_cache_size, with
 * the id mappings of _state.c), least recently used first out, and
 * survive reloads.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"

#include <hiredis/hiredis.h>


#define NGX_HTTP_MG_PIN_NAME_MAX  128


typedef struct {
    ngx_msec_t                         fetched;   /* read from Redis */
    ngx_msec_t                         refreshed; /* idle timeout renewed */
    int64_t                            born;      /* ms, Redis' clock */
    size_t                             len;
    u_char                             backend[NGX_HTTP_MG_PIN_NAME_MAX];
} ngx_http_model_gateway_pin_t;


static void ngx_http_model_gateway_pins_ignore(void *data,
    redisReply *reply, ngx_int_t rc);


/* model_gateway_session_cache TIME; */

char *
ngx_http_model_gateway_session_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *lcf = conf;

    ngx_str_t                           *value;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (lcf->session_cache != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->session_cache = ngx_parse_time(&value[1], 0);

    if (lcf->session_cache == (ngx_msec_t) NGX_ERROR
        || lcf->session_cache > 60000)
    {
        return "must be a time of at most 60s (0: off)";
    }

    if (lcf->session_cache) {
        mcf = ngx_http_conf_get_module_main_conf(cf,
                                               ngx_http_model_gateway_module);
        mcf->cache_wanted = 1;
    }

    return NGX_CONF_OK;
}


/*
 * The cached pin of the request's session: NGX_OK with its backend (in
 * the request's pool) while fresh, else NGX_DECLINED.  A hit whose idle
 * timeout was not renewed for a while renews it now, not waiting.
 */

ngx_int_t
ngx_http_model_gateway_pins_get(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *backend)
{
    int64_t                              redis_now;
    ngx_msec_t                           now, every;
    ngx_str_t                            args[3];
    ngx_uint_t                           refresh;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_pin_t        *pin;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               ms[NGX_INT64_LEN];

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->cache == NULL || ctx->lcf->session_cache == 0) {
        return NGX_DECLINED;
    }

    shpool = (ngx_slab_pool_t *) mcf->cache_zone->shm.addr;
    now = ngx_current_msec;

    /*
     * a renewal every hundredth of the idle timeout (and not more often
     * than the cache time): a pin may expire that much early
     */

    every = ngx_max(ctx->lcf->session_cache, ctx->lcf->session_idle / 100);

    /* Redis' clock, as the pin's own node has it */

    redis_now = ngx_http_mg_redis_now_for(&ctx->session.pin_key);

    ngx_shmtx_lock(&shpool->mutex);

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache,
                                        &ctx->session.pin_key,
                                        sizeof(ngx_http_model_gateway_pin_t),
                                        0);
    if (ln == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_DECLINED;
    }

    pin = (ngx_http_model_gateway_pin_t *) ln->data;

    if (now - pin->fetched >= ctx->lcf->session_cache
        || redis_now - pin->born >= (int64_t) ctx->lcf->session_max)
    {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_DECLINED;
    }

    backend->len = pin->len;
    backend->data = ngx_pnalloc(r->pool, pin->len);

    if (backend->data == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_ERROR;
    }

    ngx_memcpy(backend->data, pin->backend, pin->len);

    refresh = (now - pin->refreshed >= every);

    if (refresh) {
        pin->refreshed = now;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (refresh) {
        ngx_str_set(&args[0], "PEXPIRE");
        args[1] = ctx->session.pin_key;
        args[2].data = ms;
        args[2].len = ngx_sprintf(ms, "%M", ctx->lcf->session_idle) - ms;

        (void) ngx_http_mg_redis_command(3, args,
                                         ngx_http_model_gateway_pins_ignore,
                                         mcf);
    }

    return NGX_OK;
}


static void
ngx_http_model_gateway_pins_ignore(void *data, redisReply *reply,
    ngx_int_t rc)
{
    return;
}


/*
 * Redis named the session's backend, or this node moved the pin (born -1:
 * keep the age the entry has): the node trusts it for the cache time.
 */

void
ngx_http_model_gateway_pins_put(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *backend, int64_t born)
{
    ngx_uint_t                           fresh;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_pin_t        *pin;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->cache == NULL || ctx->lcf->session_cache == 0
        || ctx->session.pin_key.len == 0)
    {
        return;
    }

    shpool = (ngx_slab_pool_t *) mcf->cache_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    if (backend->len > NGX_HTTP_MG_PIN_NAME_MAX) {
        ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache,
                                        &ctx->session.pin_key,
                                        sizeof(ngx_http_model_gateway_pin_t),
                                        0);
        if (ln) {
            ngx_http_model_gateway_lru_delete(shpool, mcf->cache, ln);
        }

        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache,
                                        &ctx->session.pin_key,
                                        sizeof(ngx_http_model_gateway_pin_t),
                                        1);
    if (ln == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    pin = (ngx_http_model_gateway_pin_t *) ln->data;

    fresh = (pin->len == 0);

    if (born >= 0 || fresh) {
        pin->fetched = ngx_current_msec;
        pin->refreshed = ngx_current_msec;
        pin->born = (born >= 0)
                    ? born : ngx_http_mg_redis_now_for(&ctx->session.pin_key);
    }

    pin->len = backend->len;
    ngx_memcpy(pin->backend, backend->data, backend->len);

    ngx_shmtx_unlock(&shpool->mutex);
}


/* the pin is gone (a new session that no backend served) */

void
ngx_http_model_gateway_pins_drop(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->cache == NULL || ctx->session.pin_key.len == 0) {
        return;
    }

    shpool = (ngx_slab_pool_t *) mcf->cache_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache,
                                        &ctx->session.pin_key,
                                        sizeof(ngx_http_model_gateway_pin_t),
                                        0);
    if (ln) {
        ngx_http_model_gateway_lru_delete(shpool, mcf->cache, ln);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}
