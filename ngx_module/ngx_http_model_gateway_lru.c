
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Named entries in a shared memory zone, found in nginx's string rbtree
 * and evicted least recently used first when the zone is full (never one
 * marked busy by the caller).  Each entry carries a payload of a fixed
 * size for its user: the per-node limit counters (_limits_local.c), and
 * in the node's cache zone the session pins (_pins.c) and the id
 * mappings (_state.c).  The caller holds the zone's mutex around every
 * call.
 */


#include "ngx_http_model_gateway_module.h"


static ngx_int_t ngx_http_model_gateway_cache_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);


static ngx_str_t  ngx_http_model_gateway_cache_name =
    ngx_string("model_gateway_cache");


#define ngx_http_model_gateway_lru_payload(size)                            \
    ngx_align(size, sizeof(uint64_t))


/* an entry by name, made if missing (create); NULL if none or no room */

ngx_http_model_gateway_lru_node_t *
ngx_http_model_gateway_lru_get(ngx_slab_pool_t *shpool,
    ngx_http_model_gateway_lru_t *lru, ngx_str_t *name, size_t size,
    ngx_uint_t create)
{
    size_t                              payload;
    uint32_t                            hash;
    ngx_uint_t                          i;
    ngx_queue_t                        *q;
    ngx_str_node_t                     *sn;
    ngx_http_model_gateway_lru_node_t  *ln;

    hash = ngx_murmur_hash2(name->data, name->len);

    sn = ngx_str_rbtree_lookup(&lru->rbtree, name, hash);

    if (sn) {
        ln = (ngx_http_model_gateway_lru_node_t *) sn;
        ngx_queue_remove(&ln->queue);
        ngx_queue_insert_head(&lru->lru, &ln->queue);
        return ln;
    }

    if (!create) {
        return NULL;
    }

    payload = ngx_http_model_gateway_lru_payload(size);

    for (i = 0; i < 3; i++) {
        ln = ngx_slab_calloc_locked(shpool,
                                   offsetof(ngx_http_model_gateway_lru_node_t,
                                            data)
                                   + payload + name->len);
        if (ln) {
            break;
        }

        if (ngx_queue_empty(&lru->lru)) {
            return NULL;
        }

        q = ngx_queue_last(&lru->lru);
        ln = ngx_queue_data(q, ngx_http_model_gateway_lru_node_t, queue);

        if (ln->busy) {

            /* the oldest is in use by the caller itself */

            return NULL;
        }

        ngx_http_model_gateway_lru_delete(shpool, lru, ln);
        ln = NULL;
    }

    if (ln == NULL) {
        return NULL;
    }

    ln->sn.node.key = hash;
    ln->sn.str.len = name->len;
    ln->sn.str.data = ln->data + payload;
    ngx_memcpy(ln->sn.str.data, name->data, name->len);

    ngx_rbtree_insert(&lru->rbtree, &ln->sn.node);
    ngx_queue_insert_head(&lru->lru, &ln->queue);

    return ln;
}


void
ngx_http_model_gateway_lru_delete(ngx_slab_pool_t *shpool,
    ngx_http_model_gateway_lru_t *lru, ngx_http_model_gateway_lru_node_t *ln)
{
    ngx_queue_remove(&ln->queue);
    ngx_rbtree_delete(&lru->rbtree, &ln->sn.node);
    ngx_slab_free_locked(shpool, ln);
}


/*
 * The zone's init: an empty LRU, or the one a reload or another process
 * made already (entries survive reloads).
 */

ngx_int_t
ngx_http_model_gateway_lru_init_zone(ngx_shm_zone_t *shm_zone,
    ngx_http_model_gateway_lru_t **out)
{
    ngx_slab_pool_t               *shpool;
    ngx_http_model_gateway_lru_t  *lru;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists || shpool->data) {
        *out = shpool->data;
        return NGX_OK;
    }

    lru = ngx_slab_alloc(shpool, sizeof(ngx_http_model_gateway_lru_t));
    if (lru == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&lru->rbtree, &lru->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&lru->lru);

    shpool->data = lru;
    shpool->log_nomem = 0;

    *out = lru;

    return NGX_OK;
}


/*
 * The node's cache zone (session pins, id mappings), once something is
 * to be cached: from init_main_conf
 */

ngx_int_t
ngx_http_model_gateway_cache_zone(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_shm_zone_t  *shm_zone;

    if (!mcf->cache_wanted) {
        return NGX_OK;
    }

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_model_gateway_cache_name,
                                     mcf->cache_size,
                                     &ngx_http_model_gateway_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_model_gateway_cache_init_zone;
    shm_zone->data = mcf;

    mcf->cache_zone = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = shm_zone->data;

    return ngx_http_model_gateway_lru_init_zone(shm_zone, &mcf->cache);
}
