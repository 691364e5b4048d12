
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Limits while Redis is away and they fail open: each node counts alone
 * in a shared memory zone (model_gateway_limit_zone_size), every limit
 * divided by model_gateway_limit_nodes, with the rules of src/mg_limit.c.
 * Counters are found by name in nginx's string rbtree; the least recently
 * used goes first when the zone is full, never one the check under way
 * holds.  The zone, and so the counters, survive reloads.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "ngx_http_model_gateway_limits.h"
#include "mg_limit.h"

#include <hiredis/hiredis.h>


/* a counter of the shared-memory fallback: its LRU entry's payload */
#define ngx_http_model_gateway_limits_state(ln)                             \
    ((mg_limit_state_t *) (ln)->data)


/*
 * Redis is away.  Closed: 503.  Open: this node counts alone in shared
 * memory, each limit divided by the number of nodes; a budget is not
 * known here and is not checked.
 */

ngx_int_t
ngx_http_model_gateway_limits_local(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int64_t                              now, retry;
    uint64_t                             limit;
    ngx_uint_t                           i, refused;
    ngx_slab_pool_t                     *shpool;
    mg_limit_state_t                     next[NGX_HTTP_MG_LIMITS_MAX];
    mg_limit_result_t                    res;
    ngx_http_model_gateway_lru_node_t   *ln[NGX_HTTP_MG_LIMITS_MAX];
    ngx_http_model_gateway_limits_t     *l;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    l = &ctx->limits;

    if (mcf->limit_fallback == NGX_HTTP_MG_LIMIT_CLOSED) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "model gateway: limits could not be checked in "
                      "Redis");

        ctx->err.retry_after = 1;

        return ngx_http_model_gateway_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "server_error",
                                           "limit_store_unavailable", NULL,
                                           "The store of rate limits is "
                                           "unavailable.");
    }

    now = (int64_t) ngx_time() * 1000 + (int64_t) ngx_timeofday()->msec;

    shpool = (ngx_slab_pool_t *) mcf->limit_zone->shm.addr;

    refused = NGX_HTTP_MG_LIMITS_MAX;
    retry = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < l->n; i++) {
        ln[i] = NULL;

        if (l->kind[i] == MG_LIMIT_BUDGET) {
            continue;
        }

        limit = ngx_max(l->limit[i] / mcf->limit_nodes, 1);

        ln[i] = ngx_http_model_gateway_lru_get(shpool, mcf->limit_sh,
                                               &l->keys[i],
                                               sizeof(mg_limit_state_t), 1);
        if (ln[i] == NULL) {

            /*
             * the zone is full, down to this request's own counters,
             * which are never evicted under it: this one is not counted
             */

            continue;
        }

        ln[i]->busy = 1;

        mg_limit_take(ngx_http_model_gateway_limits_state(ln[i]), &next[i],
                      l->kind[i], limit,
                      l->which[i] == 0 ? 1 : l->reserved, now, &res);

        ngx_http_model_gateway_limits_result(ctx, i, limit, res.remaining,
                                             res.reset_ms);

        /* the refusal that decides: one that never fits, else the longest */

        if (!res.ok
            && (refused == NGX_HTTP_MG_LIMITS_MAX
                || (res.retry_ms < 0 && retry >= 0)
                || (retry >= 0 && res.retry_ms > retry)))
        {
            refused = i;
            retry = res.retry_ms;
        }
    }

    for (i = 0; i < l->n; i++) {
        if (ln[i]) {
            ln[i]->busy = 0;
        }
    }

    if (refused == NGX_HTTP_MG_LIMITS_MAX) {
        for (i = 0; i < l->n; i++) {
            if (ln[i]) {
                *ngx_http_model_gateway_limits_state(ln[i]) = next[i];
            }
        }

        l->charged = NGX_HTTP_MG_CHARGED_LOCAL;
        l->day = now / MG_LIMIT_DAY_MS;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (refused != NGX_HTTP_MG_LIMITS_MAX) {
        return ngx_http_model_gateway_limits_refuse(r, ctx, refused, retry);
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_model_gateway_limits_init_zone(ngx_shm_zone_t *shm_zone,
    void *data)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = shm_zone->data;

    return ngx_http_model_gateway_lru_init_zone(shm_zone,
                                               &mcf->limit_sh);
}


/* a settlement of counters charged here while Redis was away */

void
ngx_http_model_gateway_limits_local_adjust(
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_limits_t *l, int64_t delta)
{
    int64_t                          now;
    uint64_t                         limit;
    ngx_uint_t                       i;
    ngx_slab_pool_t                    *shpool;
    ngx_http_model_gateway_lru_node_t  *ln;

    now = (int64_t) ngx_time() * 1000 + (int64_t) ngx_timeofday()->msec;

    shpool = (ngx_slab_pool_t *) mcf->limit_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < l->n; i++) {
        if (l->which[i] == 0 || l->kind[i] == MG_LIMIT_BUDGET) {
            continue;
        }

        ln = ngx_http_model_gateway_lru_get(shpool, mcf->limit_sh,
                                            &l->keys[i],
                                            sizeof(mg_limit_state_t), 0);
        if (ln) {
            limit = ngx_max(l->limit[i] / mcf->limit_nodes, 1);
            mg_limit_adjust(ngx_http_model_gateway_limits_state(ln),
                            l->kind[i], limit, delta, l->day, now);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}
