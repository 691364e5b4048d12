
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


/* a counter of the shared-memory fallback */
typedef struct {
    ngx_str_node_t                     sn;      /* its name, in name[] */
    ngx_queue_t                        queue;   /* LRU */
    mg_limit_state_t                   state;
    u_char                             busy;    /* in the check under way */
    u_char                             name[1];
} ngx_http_model_gateway_lnode_t;


typedef struct {
    ngx_rbtree_t                       rbtree;
    ngx_rbtree_node_t                  sentinel;
    ngx_queue_t                        lru;
} ngx_http_model_gateway_lshm_t;



static ngx_http_model_gateway_lnode_t *ngx_http_model_gateway_limits_node(
    ngx_slab_pool_t *shpool, ngx_http_model_gateway_lshm_t *sh,
    ngx_str_t *name, ngx_uint_t create);


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
    ngx_http_model_gateway_lshm_t       *sh;
    ngx_http_model_gateway_lnode_t      *ln[NGX_HTTP_MG_LIMITS_MAX];
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
    sh = mcf->limit_sh;

    refused = NGX_HTTP_MG_LIMITS_MAX;
    retry = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < l->n; i++) {
        ln[i] = NULL;

        if (l->kind[i] == MG_LIMIT_BUDGET) {
            continue;
        }

        limit = ngx_max(l->limit[i] / mcf->limit_nodes, 1);

        ln[i] = ngx_http_model_gateway_limits_node(shpool, sh, &l->keys[i],
                                                   1);
        if (ln[i] == NULL) {

            /*
             * the zone is full, down to this request's own counters,
             * which are never evicted under it: this one is not counted
             */

            continue;
        }

        ln[i]->busy = 1;

        mg_limit_take(&ln[i]->state, &next[i], l->kind[i], limit,
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
                ln[i]->state = next[i];
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


/* a counter by name, made if missing; the least recently used goes first */

static ngx_http_model_gateway_lnode_t *
ngx_http_model_gateway_limits_node(ngx_slab_pool_t *shpool,
    ngx_http_model_gateway_lshm_t *sh, ngx_str_t *name, ngx_uint_t create)
{
    uint32_t                         hash;
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_str_node_t                  *sn;
    ngx_http_model_gateway_lnode_t  *ln;

    hash = ngx_crc32_short(name->data, name->len);

    sn = ngx_str_rbtree_lookup(&sh->rbtree, name, hash);

    if (sn) {
        ln = (ngx_http_model_gateway_lnode_t *) sn;
        ngx_queue_remove(&ln->queue);
        ngx_queue_insert_head(&sh->lru, &ln->queue);
        return ln;
    }

    if (!create) {
        return NULL;
    }

    for (i = 0; i < 3; i++) {
        ln = ngx_slab_calloc_locked(shpool,
                                    offsetof(ngx_http_model_gateway_lnode_t,
                                             name)
                                    + name->len);
        if (ln) {
            break;
        }

        if (ngx_queue_empty(&sh->lru)) {
            return NULL;
        }

        q = ngx_queue_last(&sh->lru);
        ln = ngx_queue_data(q, ngx_http_model_gateway_lnode_t, queue);

        if (ln->busy) {

            /* the oldest is a counter of the request being checked */

            return NULL;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&sh->rbtree, &ln->sn.node);
        ngx_slab_free_locked(shpool, ln);
        ln = NULL;
    }

    if (ln == NULL) {
        return NULL;
    }

    ln->sn.node.key = hash;
    ln->sn.str.len = name->len;
    ln->sn.str.data = ln->name;
    ngx_memcpy(ln->name, name->data, name->len);

    ngx_rbtree_insert(&sh->rbtree, &ln->sn.node);
    ngx_queue_insert_head(&sh->lru, &ln->queue);

    return ln;
}


ngx_int_t
ngx_http_model_gateway_limits_init_zone(ngx_shm_zone_t *shm_zone,
    void *data)
{
    ngx_http_model_gateway_main_conf_t *omcf = data;

    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_lshm_t       *sh;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = shm_zone->data;

    if (omcf) {

        /* a reload keeps the counters */

        mcf->limit_sh = omcf->limit_sh;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        mcf->limit_sh = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_model_gateway_lshm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->lru);

    shpool->data = sh;
    mcf->limit_sh = sh;

    shpool->log_nomem = 0;

    return NGX_OK;
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
    ngx_slab_pool_t                 *shpool;
    ngx_http_model_gateway_lnode_t  *ln;

    now = (int64_t) ngx_time() * 1000 + (int64_t) ngx_timeofday()->msec;

    shpool = (ngx_slab_pool_t *) mcf->limit_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < l->n; i++) {
        if (l->which[i] == 0 || l->kind[i] == MG_LIMIT_BUDGET) {
            continue;
        }

        ln = ngx_http_model_gateway_limits_node(shpool, mcf->limit_sh,
                                                &l->keys[i], 0);
        if (ln) {
            limit = ngx_max(l->limit[i] / mcf->limit_nodes, 1);
            mg_limit_adjust(&ln->state, l->kind[i], limit, delta, l->day,
                            now);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}
