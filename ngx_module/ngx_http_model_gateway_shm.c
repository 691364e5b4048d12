
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * State every worker shares: per backend (requests in flight, latency,
 * failures, cool-down, half-open trial) and per backend and model (round
 * robin weights, rate-limit cool-down).  Nodes are keyed by name in a
 * shared memory zone, so a reload keeps the state of backends that still
 * exist.  Critical sections are a few loads and stores under the zone's
 * mutex; requests in flight are atomics.
 */


#include "ngx_http_model_gateway_module.h"
#include "mg_balance.h"
#include "mg_breaker.h"


static ngx_int_t ngx_http_model_gateway_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_model_gateway_node_t *ngx_http_model_gateway_node(
    ngx_slab_pool_t *shpool, ngx_http_model_gateway_shm_t *sh,
    ngx_str_t *name, ngx_str_t *name2);
static mg_breaker_outcome_e ngx_http_model_gateway_outcome(
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t failed);


static ngx_str_t  ngx_http_model_gateway_zone_name =
    ngx_string("model_gateway");


/*
 * What tells this build's zone from another's: the sizes of its parts,
 * and a version for what sizes do not show (how the tenants' table is
 * hashed: 2 is murmur2)
 */

#define NGX_HTTP_MG_ZONE_VERSION  2

static size_t
ngx_http_model_gateway_layout(void)
{
    return (sizeof(ngx_http_model_gateway_node_t) * 65536
            + sizeof(ngx_http_model_gateway_shm_t)) * 16
           + NGX_HTTP_MG_ZONE_VERSION;
}


ngx_int_t
ngx_http_model_gateway_zone_add(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_shm_zone_t  *shm_zone;

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_model_gateway_zone_name,
                                     mcf->zone_size,
                                     &ngx_http_model_gateway_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_model_gateway_init_zone;
    shm_zone->data = mcf;
    shm_zone->noreuse = 0;

    mcf->shm_zone = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_model_gateway_main_conf_t *omcf = data;

    ngx_uint_t                           i, j;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_shm_t        *sh;
    ngx_http_model_gateway_model_t      *m;
    ngx_http_model_gateway_target_t     *t;
    ngx_http_model_gateway_backend_t   **b;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (omcf) {

        /* a reload: same zone, same nodes, found again by name */
        sh = omcf->sh;

    } else if (shm_zone->shm.exists) {
        sh = shpool->data;

    } else {
        sh = NULL;
    }

    if (sh && sh->layout != ngx_http_model_gateway_layout()) {

        /*
         * a module built with other nodes: they are left where they are
         * (a few hundred bytes each) and found no more
         */

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "model gateway: the shared zone was made by another "
                      "build of the module, its state starts afresh");
        sh = NULL;
    }

    if (sh == NULL) {
        sh = ngx_slab_alloc(shpool, sizeof(ngx_http_model_gateway_shm_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(sh, sizeof(ngx_http_model_gateway_shm_t));
        ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_rbtree_insert_value);
        sh->rotate = 0;
        sh->layout = ngx_http_model_gateway_layout();

        shpool->data = sh;
        shpool->log_nomem = 0;
    }

    mcf->shpool = shpool;
    mcf->sh = sh;

    /* the tenants' table: kept over a reload that keeps its size */

    if (sh->who == NULL || sh->nwho != mcf->metrics_tenants) {
        if (sh->who) {
            ngx_slab_free(shpool, sh->who);
        }

        sh->nwho = 0;
        sh->who = ngx_slab_calloc(shpool, (mcf->metrics_tenants + 1)
                                  * sizeof(ngx_http_model_gateway_who_t));
        if (sh->who == NULL) {
            goto nomem;
        }

        sh->nwho = mcf->metrics_tenants;
    }

    b = mcf->backends.elts;
    for (i = 0; i < mcf->backends.nelts; i++) {
        b[i]->node = ngx_http_model_gateway_node(shpool, sh, &b[i]->name,
                                                 NULL);
        if (b[i]->node == NULL) {
            goto nomem;
        }
    }

    m = mcf->models.elts;
    for (i = 0; i < mcf->models.nelts; i++) {
        t = m[i].targets.elts;

        for (j = 0; j < m[i].targets.nelts; j++) {
            t[j].node = ngx_http_model_gateway_node(shpool, sh,
                                                    &t[j].backend->name,
                                                    &m[i].name);
            if (t[j].node == NULL) {
                goto nomem;
            }
        }
    }

    /* requests that name no model have pair state of their own */

    t = mcf->state_model.targets.elts;

    for (j = 0; j < mcf->state_model.targets.nelts; j++) {
        t[j].node = ngx_http_model_gateway_node(shpool, sh,
                                                &t[j].backend->name,
                                                &mcf->state_model.name);
        if (t[j].node == NULL) {
            goto nomem;
        }
    }

    return NGX_OK;

nomem:

    ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                  "model gateway: the shared zone is too small for the "
                  "configured backends, raise model_gateway_zone_size");
    return NGX_ERROR;
}


/* finds or creates the node of "name" or of the pair "name" + "name2" */

static ngx_http_model_gateway_node_t *
ngx_http_model_gateway_node(ngx_slab_pool_t *shpool,
    ngx_http_model_gateway_shm_t *sh, ngx_str_t *name, ngx_str_t *name2)
{
    u_char                         *p;
    size_t                          len;
    uint32_t                        hash;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_http_model_gateway_node_t  *n;
    u_char                          key[512];

    len = name->len + (name2 ? 1 + name2->len : 0);
    if (len > sizeof(key)) {
        return NULL;
    }

    p = ngx_cpymem(key, name->data, name->len);

    if (name2) {
        *p++ = '\0';
        p = ngx_cpymem(p, name2->data, name2->len);
    }

    hash = ngx_crc32_short(key, len);

    ngx_shmtx_lock(&shpool->mutex);

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        n = (ngx_http_model_gateway_node_t *) node;

        if (n->len == len && ngx_memcmp(n->name, key, len) == 0) {
            ngx_shmtx_unlock(&shpool->mutex);
            return n;
        }

        node = node->right;
    }

    n = ngx_slab_calloc_locked(shpool,
                               sizeof(ngx_http_model_gateway_node_t) + len);
    if (n == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NULL;
    }

    n->node.key = hash;
    n->len = len;
    ngx_memcpy(n->name, key, len);

    ngx_rbtree_insert(&sh->rbtree, &n->node);

    ngx_shmtx_unlock(&shpool->mutex);

    return n;
}


/*
 * Chooses the backend of the next attempt among the targets not tried
 * yet, skipping those cooling down; returns the target index or -1 and
 * then tells in ctx why nothing was available.
 */

ngx_int_t
ngx_http_model_gateway_balance(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int                                  n;
    size_t                               left;
    ngx_msec_t                           now, until;
    ngx_uint_t                           i, ntargets;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_node_t       *bn, *pn;
    ngx_http_model_gateway_target_t     *t;
    ngx_http_model_gateway_main_conf_t  *mcf;
    mg_breaker_wait_t                    cool;
    mg_breaker_state_e                   state;
    unsigned char                        eligible[NGX_HTTP_MG_MAX_TARGETS];
    mg_wrr_peer_t                        wrr[NGX_HTTP_MG_MAX_TARGETS];
    mg_balance_peer_t                    peers[NGX_HTTP_MG_MAX_TARGETS];

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    shpool = mcf->shpool;

    t = ctx->model_conf->targets.elts;
    ntargets = ctx->model_conf->targets.nelts;

    now = ngx_current_msec;
    cool.wait = 0;
    cool.limited = 0;
    left = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ntargets; i++) {
        bn = t[i].backend->node;
        pn = t[i].node;

        eligible[i] = 0;

        if (ctx->tried[i] || t[i].backend->naddrs == 0 || bn->drain) {

            /*
             * tried already, a "resolve" host not resolved yet, or drained
             * by the operator
             */
            continue;
        }

        state = mg_breaker_check(&bn->breaker, &pn->breaker, now, &until);

        if (state != MG_BREAKER_AVAILABLE) {
            mg_breaker_wait_add(&cool, state, until);
            continue;
        }

        eligible[i] = 1;
        left++;

        peers[i].weight = ngx_http_model_gateway_weight(t[i].backend);
        peers[i].outstanding = bn->outstanding;
        peers[i].ewma_us = bn->ewma_us;
        peers[i].priority = t[i].backend->priority;

        wrr[i].weight = peers[i].weight;
        wrr[i].current = pn->wrr_current;
    }

    if (left == 0) {
        ngx_shmtx_unlock(&shpool->mutex);

        ctx->cool_wait = cool.wait;
        ctx->cool_limited = cool.limited;

        return -1;
    }

    if (ctx->preferred >= 0 && eligible[ctx->preferred]) {

        /* a session's pinned backend goes first */

        n = ctx->preferred;
        goto picked;
    }

    (void) mg_priority_filter(peers, ntargets, eligible);

    switch (ctx->policy) {

    case NGX_HTTP_MG_BALANCE_LEAST_OUTSTANDING:
        n = mg_lor_pick(peers, ntargets, eligible, mcf->sh->rotate++);
        break;

    case NGX_HTTP_MG_BALANCE_PEAK_EWMA:
        n = mg_ewma_pick(peers, ntargets, eligible, mcf->sh->rotate++);
        break;

    default: /* NGX_HTTP_MG_BALANCE_ROUND_ROBIN */
        n = mg_wrr_pick(wrr, ntargets, eligible);

        for (i = 0; i < ntargets; i++) {
            if (eligible[i]) {
                ((ngx_http_model_gateway_node_t *) t[i].node)->wrr_current =
                                                                 wrr[i].current;
            }
        }
    }

picked:

    bn = t[n].backend->node;

    if (mg_breaker_pick(&bn->breaker, now,
                        t[n].backend->connect_timeout
                        + t[n].backend->first_byte_timeout))
    {
        ctx->trial = 1;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    (void) ngx_atomic_fetch_add(&bn->outstanding, 1);
    ctx->counted = 1;
    ctx->attempt_start = now;

    return n;
}


/*
 * Who sent a request, for the credential rule: a nonzero hash of its
 * tenant and key id, or 0 where identity is off.
 */

static uint32_t
ngx_http_model_gateway_caller(ngx_http_model_gateway_ctx_t *ctx)
{
    uint32_t  crc;

    if (ctx->identity.tenant.len == 0) {
        return 0;
    }

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, ctx->identity.tenant.data,
                     ctx->identity.tenant.len);
    ngx_crc32_update(&crc, (u_char *) "/", 1);
    ngx_crc32_update(&crc, ctx->identity.key_id.data,
                     ctx->identity.key_id.len);
    ngx_crc32_final(crc);

    return crc ? crc : 1;
}


/*
 * Records how an attempt ended (failed: 0 success, 1 failure, 2 no
 * verdict): requests in flight, latency, failures and cool-downs.
 */

void
ngx_http_model_gateway_balance_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t failed)
{
    ngx_msec_t                           now;
    ngx_slab_pool_t                     *shpool;
    mg_breaker_conf_t                    conf;
    mg_breaker_event_e                   event;
    ngx_http_model_gateway_node_t       *bn, *pn;
    ngx_http_model_gateway_backend_t    *b;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (!ctx->counted) {
        return;
    }

    ctx->counted = 0;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    shpool = mcf->shpool;

    b = ctx->target->backend;
    bn = b->node;
    pn = ctx->target->node;
    now = ngx_current_msec;

    conf.max_fails = mcf->max_fails;
    conf.fail_window = mcf->fail_window;
    conf.cooldown = mcf->cooldown;
    conf.retry_after_max = mcf->retry_after_max;
    conf.rate_limit_cooldown = mcf->rate_limit_cooldown;

    (void) ngx_atomic_fetch_add(&bn->outstanding, -1);
    (void) ngx_atomic_fetch_add(&pn->metrics.attempts[failed ? 1 : 0], 1);

    ngx_shmtx_lock(&shpool->mutex);

    if (failed != 2 && ctx->first_byte_at) {
        bn->ewma_us = mg_ewma_update(bn->ewma_us,
                              (uint64_t) (ctx->first_byte_at
                                          - ctx->attempt_start) * 1000,
                              now - bn->ewma_stamp, mcf->ewma_decay);
        bn->ewma_stamp = now;
    }

    event = mg_breaker_done(&bn->breaker, &pn->breaker, &conf,
                            ngx_http_model_gateway_outcome(ctx, failed),
                            ctx->trial, (long) ctx->retry_after_ms,
                            ngx_http_model_gateway_caller(ctx), now);

    ngx_shmtx_unlock(&shpool->mutex);

    ctx->trial = 0;

    switch (event) {

    case MG_BREAKER_PASSED_TRIAL:
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "model gateway: backend \"%V\" passed its trial "
                      "request, in use again", &b->name);
        break;

    case MG_BREAKER_NOTHING:
    case MG_BREAKER_EXTENDED:

        /* a cool-down is logged once, by whichever worker starts it */

        break;

    default:
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "model gateway: backend \"%V\" cools down for %M ms: "
                      "%s", &b->name, mcf->cooldown,
                      mg_breaker_reason(event));
    }
}


/* what an attempt's end says of the backend's health */

static mg_breaker_outcome_e
ngx_http_model_gateway_outcome(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t failed)
{
    if (failed == 0) {
        return MG_BREAKER_SUCCESS;
    }

    if (failed == 2) {

        /* no verdict: a stale keepalive connection, a client gone */

        return MG_BREAKER_NO_VERDICT;
    }

    switch (ctx->fail) {

    case NGX_HTTP_MG_FAIL_RATE_LIMITED:
        return MG_BREAKER_RATE_LIMITED;

    case NGX_HTTP_MG_FAIL_AUTH:
        return MG_BREAKER_REFUSED;

    case NGX_HTTP_MG_FAIL_TOO_BIG:
    case NGX_HTTP_MG_FAIL_TOTAL_TIMEOUT:

        /* not the backend's health */

        return MG_BREAKER_NOT_HEALTH;

    default:
        return MG_BREAKER_FAILURE;
    }
}
