
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Leases (model_gateway_limit_batch N): when a request is charged in
 * Redis, the LIMIT script also charges, where it fits, N - 1 more of the
 * same cost on each counter and grants them to the node.  The node's next
 * requests of that key and tenant are admitted from the lease in shared
 * memory, with no round trip, until it runs out or
 * model_gateway_limit_lease passes; then what is left goes back to Redis
 * (a SETTLE of the unused units, sent with the settlements).
 *
 * Leased units are charged in Redis before they are used, so the fleet
 * never admits more than the limits allow (as without leases, the token
 * reservations are settled to the real usage afterwards).  What a lease
 * costs is the other way: while a node holds unused units, the others may
 * be refused that much early, at most (N - 1) requests' worth per counter
 * and node, for at most the lease time.
 *
 * Leases live in the limits zone (_limits_local.c's, with _lru.c), named
 * by their counter's key and "#"; the worker that took one remembers when
 * it ends, to give back what is left.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "ngx_http_model_gateway_limits.h"
#include "mg_limit.h"


#define NGX_HTTP_MG_LEASES_MAX      4096
#define NGX_HTTP_MG_LEASE_NAME_MAX  1024


typedef struct {
    int64_t                            avail;     /* leased, not used */
    int64_t                            day;       /* UTC day of the lease */
    ngx_msec_t                         expires;
    uint64_t                           remaining; /* in Redis, when leased */
    int64_t                            reset;
} ngx_http_model_gateway_lease_t;


/* a lease this worker took: to give back what is left when it ends */
typedef struct {
    ngx_queue_t                        queue;
    ngx_msec_t                         expires;
    uint64_t                           limit;
    u_char                             kind;
    size_t                             len;
    u_char                             name[1];   /* the counter's key */
} ngx_http_model_gateway_lease_end_t;


static ngx_int_t ngx_http_model_gateway_lease_name(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *name);
static void ngx_http_model_gateway_lease_expire(ngx_event_t *ev);


static ngx_queue_t   ngx_http_model_gateway_lease_ends;
static ngx_uint_t    ngx_http_model_gateway_nlease_ends;
static ngx_event_t   ngx_http_model_gateway_lease_ev;


/* "<counter key>#" */

static ngx_int_t
ngx_http_model_gateway_lease_name(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *name)
{
    name->len = key->len + 1;
    name->data = ngx_pnalloc(r->pool, name->len);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(name->data, key->data, key->len) = '#';

    return NGX_OK;
}


/* the lease to ask for counter i: N - 1 more of the request's cost */

uint64_t
ngx_http_model_gateway_limits_lease_ask(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t i)
{
    uint64_t                             cost;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(ctx->request,
                                        ngx_http_model_gateway_module);

    if (mcf->limit_batch <= 1 || mcf->limit_zone == NULL
        || ngx_http_model_gateway_nlease_ends >= NGX_HTTP_MG_LEASES_MAX)
    {
        return 0;
    }

    cost = (ctx->limits.which[i] == 0) ? 1 : ctx->limits.reserved;

    return cost * (mcf->limit_batch - 1);
}


/*
 * Redis granted units of counter i with the request's charge: the node
 * keeps them (with any it had) until the lease time passes.
 */

void
ngx_http_model_gateway_limits_lease_grant(ngx_http_model_gateway_ctx_t *ctx,
    ngx_uint_t i, int64_t units, uint64_t remaining, int64_t reset)
{
    int64_t                              old, old_day;
    ngx_str_t                            name, *key;
    ngx_msec_t                           now;
    ngx_slab_pool_t                     *shpool;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_lease_t      *ls;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_limits_t     *l;
    ngx_http_model_gateway_lease_end_t  *end;
    ngx_http_model_gateway_main_conf_t  *mcf;

    r = ctx->request;
    l = &ctx->limits;
    key = &l->keys[i];

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    end = NULL;

    if (key->len + 1 > NGX_HTTP_MG_LEASE_NAME_MAX) {
        goto lost;
    }

    end = ngx_alloc(offsetof(ngx_http_model_gateway_lease_end_t, name)
                    + key->len, r->connection->log);

    if (end == NULL
        || ngx_http_model_gateway_lease_name(r, key, &name) != NGX_OK)
    {
        goto lost;
    }

    now = ngx_current_msec;
    shpool = (ngx_slab_pool_t *) mcf->limit_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    ln = ngx_http_model_gateway_lru_get(shpool, mcf->limit_sh, &name,
                                     sizeof(ngx_http_model_gateway_lease_t),
                                     1);
    if (ln == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        goto lost;
    }

    ls = (ngx_http_model_gateway_lease_t *) ln->data;

    /*
     * what is left of a lease of another UTC day goes back now; one of
     * today stays usable, with this lease's end
     */

    old = 0;
    old_day = ls->day;

    if (ls->avail > 0 && ls->day != l->day) {
        old = ls->avail;
        ls->avail = 0;
    }

    ls->avail += units;
    ls->day = l->day;
    ls->expires = now + mcf->limit_lease;
    ls->remaining = remaining;
    ls->reset = reset;

    ngx_shmtx_unlock(&shpool->mutex);

    if (old) {
        ngx_http_model_gateway_limits_pend(mcf, key, l->kind[i], l->limit[i],
                                           old_day, -old);
    }

    end->expires = now + mcf->limit_lease;
    end->limit = l->limit[i];
    end->kind = l->kind[i];
    end->len = key->len;
    ngx_memcpy(end->name, key->data, key->len);

    if (ngx_http_model_gateway_nlease_ends == 0) {
        ngx_queue_init(&ngx_http_model_gateway_lease_ends);

        ngx_http_model_gateway_lease_ev.handler =
                                         ngx_http_model_gateway_lease_expire;
        ngx_http_model_gateway_lease_ev.log = ngx_cycle->log;
        ngx_http_model_gateway_lease_ev.data = mcf;

        /* not cancelable: an exiting worker gives its leases back first */
    }

    ngx_queue_insert_tail(&ngx_http_model_gateway_lease_ends, &end->queue);
    ngx_http_model_gateway_nlease_ends++;

    if (!ngx_http_model_gateway_lease_ev.timer_set) {
        ngx_add_timer(&ngx_http_model_gateway_lease_ev, mcf->limit_lease);
    }

    return;

lost:

    /* no room to keep it: it goes back at once */

    if (end) {
        ngx_free(end);
    }

    ngx_http_model_gateway_limits_pend(mcf, key, l->kind[i], l->limit[i],
                                       l->day, -units);
}


/*
 * A request admitted from the node's leases, when every counter it is
 * charged has one, of today and in time, with its cost left: NGX_OK, and
 * the charge is settled in Redis as any.  Else NGX_DECLINED: Redis asks.
 */

ngx_int_t
ngx_http_model_gateway_limits_lease_take(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx)
{
    int64_t                              today, cost;
    ngx_str_t                            name;
    ngx_uint_t                           i;
    ngx_msec_t                           now;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_lease_t      *ls[NGX_HTTP_MG_LIMITS_MAX];
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_limits_t     *l;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->limit_batch <= 1 || mcf->limit_zone == NULL) {
        return NGX_DECLINED;
    }

    l = &ctx->limits;
    now = ngx_current_msec;
    today = (int64_t) ngx_time() / 86400;

    shpool = (ngx_slab_pool_t *) mcf->limit_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < l->n; i++) {
        if (ngx_http_model_gateway_lease_name(r, &l->keys[i], &name)
            != NGX_OK)
        {
            goto declined;
        }

        ln = ngx_http_model_gateway_lru_get(shpool, mcf->limit_sh, &name,
                                     sizeof(ngx_http_model_gateway_lease_t),
                                     0);
        if (ln == NULL) {
            goto declined;
        }

        ls[i] = (ngx_http_model_gateway_lease_t *) ln->data;
        cost = (l->which[i] == 0) ? 1 : (int64_t) l->reserved;

        if (ls[i]->expires <= now || ls[i]->avail < cost
            || ls[i]->day != today)
        {
            goto declined;
        }
    }

    for (i = 0; i < l->n; i++) {
        cost = (l->which[i] == 0) ? 1 : (int64_t) l->reserved;
        ls[i]->avail -= cost;

        /* what Redis had left, and what this node still holds */

        ngx_http_model_gateway_limits_result(ctx, i, l->limit[i],
                                 ls[i]->remaining + (uint64_t) ls[i]->avail,
                                 ls[i]->reset);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    l->charged = NGX_HTTP_MG_CHARGED_REDIS;
    l->day = today;

    return NGX_OK;

declined:

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_DECLINED;
}


/*
 * The leases this worker took that have ended: their unused units go back
 * to Redis, unless a later lease (of any worker) took the counter over.
 */

static void
ngx_http_model_gateway_lease_expire(ngx_event_t *ev)
{
    int64_t                              left, day;
    ngx_str_t                            key, name;
    ngx_msec_t                           now;
    ngx_queue_t                         *q;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_lease_t      *ls;
    ngx_http_model_gateway_lru_node_t   *ln;
    ngx_http_model_gateway_lease_end_t  *end;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               buf[NGX_HTTP_MG_LEASE_NAME_MAX];

    mcf = ev->data;
    now = ngx_current_msec;
    shpool = (ngx_slab_pool_t *) mcf->limit_zone->shm.addr;

    while (!ngx_queue_empty(&ngx_http_model_gateway_lease_ends)) {
        q = ngx_queue_head(&ngx_http_model_gateway_lease_ends);
        end = ngx_queue_data(q, ngx_http_model_gateway_lease_end_t, queue);

        if ((ngx_msec_int_t) (end->expires - now) > 0 && !ngx_exiting) {
            ngx_add_timer(ev, end->expires - now);
            return;
        }

        ngx_queue_remove(q);
        ngx_http_model_gateway_nlease_ends--;

        left = 0;
        day = 0;

        {
            *ngx_cpymem(buf, end->name, end->len) = '#';
            name.data = buf;
            name.len = end->len + 1;

            ngx_shmtx_lock(&shpool->mutex);

            ln = ngx_http_model_gateway_lru_get(shpool, mcf->limit_sh, &name,
                                     sizeof(ngx_http_model_gateway_lease_t),
                                     0);
            if (ln) {
                ls = (ngx_http_model_gateway_lease_t *) ln->data;

                if (ls->avail > 0
                    && ((ngx_msec_int_t) (ls->expires - now) <= 0
                        || ngx_exiting))
                {
                    left = ls->avail;
                    day = ls->day;
                    ls->avail = 0;
                }
            }

            ngx_shmtx_unlock(&shpool->mutex);
        }

        if (left) {
            key.data = end->name;
            key.len = end->len;

            ngx_http_model_gateway_limits_pend(mcf, &key, end->kind,
                                               end->limit, day, -left);
        }

        ngx_free(end);
    }
}
