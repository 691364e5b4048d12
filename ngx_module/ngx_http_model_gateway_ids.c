
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A node's cache of native id mappings (model_gateway_state_cache TIME):
 * the backend that holds a response or conversation id, as Redis named it
 * for one tenant.  A mapping never changes once written (the object lives
 * in one provider account), so a repeat lookup is safe to answer here
 * with no round trip; only a deletion by an admin or bin/mg-purge can
 * make it wrong, on another node for at most TIME.  Entries live in the
 * node's cache zone (_lru.c), keyed "<redis key> <tenant>", so another
 * tenant's lookup never finds them.
 */


#include "ngx_http_model_gateway_module.h"


#define NGX_HTTP_MG_IDS_NAME_MAX  128


typedef struct {
    ngx_msec_t                         fetched;
    size_t                             len;
    u_char                             backend[NGX_HTTP_MG_IDS_NAME_MAX];
} ngx_http_model_gateway_id_t;


/* "<redis key> <tenant>": a tenant has no space */

static ngx_int_t
ngx_http_model_gateway_ids_name(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *name)
{
    name->len = ctx->state.key.len + 1 + ctx->identity.tenant.len;
    name->data = ngx_pnalloc(r->pool, name->len);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name->data, "%V %V", &ctx->state.key,
                &ctx->identity.tenant);

    return NGX_OK;
}


/* NGX_OK with the backend of ctx->state.key while cached, NGX_DECLINED */

ngx_int_t
ngx_http_model_gateway_ids_get(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *backend)
{
    ngx_str_t                            name;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_id_t         *id;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->cache == NULL || mcf->state_cache == 0) {
        return NGX_DECLINED;
    }

    if (ngx_http_model_gateway_ids_name(r, ctx, &name) != NGX_OK) {
        return NGX_ERROR;
    }

    shpool = (ngx_slab_pool_t *) mcf->cache_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache, &name,
                                        sizeof(ngx_http_model_gateway_id_t),
                                        0);
    if (ln == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_DECLINED;
    }

    id = (ngx_http_model_gateway_id_t *) ln->data;

    if (ngx_current_msec - id->fetched >= mcf->state_cache) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_DECLINED;
    }

    backend->len = id->len;
    backend->data = ngx_pnalloc(r->pool, id->len);

    if (backend->data) {
        ngx_memcpy(backend->data, id->backend, id->len);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return backend->data ? NGX_OK : NGX_ERROR;
}


void
ngx_http_model_gateway_ids_put(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *backend, size_t len)
{
    ngx_str_t                            name;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_id_t         *id;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->cache == NULL || mcf->state_cache == 0
        || len > NGX_HTTP_MG_IDS_NAME_MAX
        || ngx_http_model_gateway_ids_name(r, ctx, &name) != NGX_OK)
    {
        return;
    }

    shpool = (ngx_slab_pool_t *) mcf->cache_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache, &name,
                                        sizeof(ngx_http_model_gateway_id_t),
                                        1);
    if (ln) {
        id = (ngx_http_model_gateway_id_t *) ln->data;
        id->fetched = ngx_current_msec;
        id->len = len;
        ngx_memcpy(id->backend, backend, len);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* the mapping of a Redis key is gone: this node forgets it for a tenant */

void
ngx_http_model_gateway_ids_drop(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->cache == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) mcf->cache_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->cache, name,
                                        sizeof(ngx_http_model_gateway_id_t),
                                        0);
    if (ln) {
        ngx_http_model_gateway_lru_delete(shpool, mcf->cache, ln);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}
