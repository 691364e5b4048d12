
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The fleet's admin state (weights, drains, forced and cleared
 * cool-downs) is one Redis hash, <prefix>:{admin}:backends, with one
 * record per backend (src/mg_admin.h).  Every node reads it every
 * model_gateway_admin_sync and puts it into its shared zone, where
 * balancing and rendezvous hashing read it; one worker of a node reads it
 * (the first whose timer claims the turn), so a node costs Redis one
 * HGETALL a period whatever its worker count.  The hash outlives reloads
 * and restarts: a node that starts reads it before its first period ends.
 */


#include "ngx_http_model_gateway_admin.h"
#include "mg_admin.h"


static void ngx_http_model_gateway_admin_timer(ngx_event_t *ev);
static void ngx_http_model_gateway_admin_read(void *data, redisReply *reply,
    ngx_int_t rc);


static ngx_event_t  ngx_http_model_gateway_admin_ev;
static ngx_str_t    ngx_http_model_gateway_admin_key;


ngx_int_t
ngx_http_model_gateway_admin_init_process(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_event_t  *ev;
    ngx_str_t    *key;

    if (mcf->redis == NULL || mcf->sh == NULL
        || mcf->backends.nelts == 0)
    {
        return NGX_OK;
    }

    key = &ngx_http_model_gateway_admin_key;

    key->len = mcf->redis->prefix.len + sizeof(":{admin}:backends") - 1;
    key->data = ngx_pnalloc(cycle->pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "%V:{admin}:backends", &mcf->redis->prefix);

    ev = &ngx_http_model_gateway_admin_ev;

    ev->handler = ngx_http_model_gateway_admin_timer;
    ev->data = mcf;
    ev->log = cycle->log;

    /* an exiting worker does not wait for it */

    ev->cancelable = 1;

    /* soon after the Redis connection is up: the fleet's state first */

    ngx_add_timer(ev, 100);

    return NGX_OK;
}


ngx_str_t *
ngx_http_model_gateway_admin_hash(void)
{
    return &ngx_http_model_gateway_admin_key;
}


static void
ngx_http_model_gateway_admin_timer(ngx_event_t *ev)
{
    ngx_http_model_gateway_main_conf_t *mcf = ev->data;

    ngx_str_t                      args[2];
    ngx_msec_t                     now;
    ngx_atomic_uint_t              due;
    ngx_http_model_gateway_shm_t  *sh;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    sh = mcf->sh;
    now = ngx_current_msec;

    if (!ngx_http_mg_redis_ready()) {

        /* a node whose workers all wait for Redis reads as soon as one can */

        ngx_add_timer(ev, ngx_min(100, mcf->admin_sync));
        return;
    }

    ngx_add_timer(ev, mcf->admin_sync);

    /*
     * one worker a period: the monotonic clock is the machine's, so all
     * workers compare the same times
     */

    due = sh->admin_poll_at;

    if ((ngx_msec_int_t) (now - (ngx_msec_t) due) < 0
        || !ngx_atomic_cmp_set(&sh->admin_poll_at, due,
                               now + mcf->admin_sync - 10))
    {
        return;
    }

    ngx_str_set(&args[0], "HGETALL");
    args[1] = ngx_http_model_gateway_admin_key;

    (void) ngx_http_mg_redis_command(2, args,
                                     ngx_http_model_gateway_admin_read, mcf);
}


static void
ngx_http_model_gateway_admin_read(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_main_conf_t *mcf = data;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY) {
        if (rc == NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "model gateway: unexpected reply reading the "
                          "admin state");
        }

        /* the next worker's turn comes in a period */

        return;
    }

    ngx_http_model_gateway_admin_apply_all(mcf, reply, ngx_cycle->log);
}


/* the whole hash, as field and value pairs: every backend's record */

void
ngx_http_model_gateway_admin_apply_all(
    ngx_http_model_gateway_main_conf_t *mcf, redisReply *reply,
    ngx_log_t *log)
{
    size_t                              i, j;
    redisReply                         *name, *rec;
    ngx_http_model_gateway_backend_t  **b;

    b = mcf->backends.elts;

    for (i = 0; i < mcf->backends.nelts; i++) {
        rec = NULL;

        for (j = 0; j + 1 < reply->elements; j += 2) {
            name = reply->element[j];

            if (name->type == REDIS_REPLY_STRING
                && reply->element[j + 1]->type == REDIS_REPLY_STRING
                && name->len == b[i]->name.len
                && ngx_memcmp(name->str, b[i]->name.data, name->len) == 0)
            {
                rec = reply->element[j + 1];
                break;
            }
        }

        (void) ngx_http_model_gateway_admin_apply(mcf, b[i],
                                                  rec ? rec->str : "",
                                                  rec ? rec->len : 0, log);
    }

    mcf->sh->admin_synced_at = (ngx_atomic_uint_t) ngx_http_mg_redis_now();
}


/*
 * Puts a backend's record (len 0: none, the configured values) into the
 * shared zone: weight and drain as they are; a forced cool-down as a
 * cool-down of the breaker that ends when it does; a clear not applied
 * yet ends the backend's cool-downs and its models' rate limits.
 */

ngx_int_t
ngx_http_model_gateway_admin_apply(ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b, const char *s, size_t len,
    ngx_log_t *log)
{
    ngx_int_t                         left;
    ngx_uint_t                        i, j;
    ngx_msec_t                        until;
    mg_admin_rec_t                    rec;
    ngx_http_model_gateway_node_t    *bn;
    ngx_http_model_gateway_model_t   *m;
    ngx_http_model_gateway_target_t  *t;

    if (len && mg_admin_parse(s, len, &rec) != 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "model gateway: the admin record of backend \"%V\" "
                      "is malformed, the configured values apply",
                      &b->name);
    }

    if (len == 0) {
        ngx_memzero(&rec, sizeof(mg_admin_rec_t));
    }

    bn = b->node;

    bn->admin_weight = (ngx_atomic_uint_t) rec.weight;
    bn->drain = (ngx_atomic_uint_t) rec.drain;
    bn->forced_until = (ngx_atomic_uint_t) rec.forced_until;

    ngx_shmtx_lock(&mcf->shpool->mutex);

    if (rec.clear && rec.clear != (uint64_t) bn->admin_clear) {
        bn->breaker.cooldown_until = 0;
        bn->breaker.trial_until = 0;
        bn->breaker.window_start = 0;
        bn->breaker.fails = 0;
        bn->breaker.auth_window_start = 0;
        bn->breaker.auth_fails = 0;
        bn->breaker.auth_callers = 0;

        for (i = 0, m = mcf->models.elts; i < mcf->models.nelts; i++) {
            for (j = 0, t = m[i].targets.elts; j < m[i].targets.nelts; j++) {
                if (t[j].backend == b) {
                    t[j].node->breaker.limited_until = 0;
                }
            }
        }

        for (j = 0, t = mcf->state_model.targets.elts;
             j < mcf->state_model.targets.nelts;
             j++)
        {
            if (t[j].backend == b) {
                t[j].node->breaker.limited_until = 0;
            }
        }
    }

    bn->admin_clear = (ngx_atomic_uint_t) rec.clear;

    left = (ngx_int_t) rec.forced_until - ngx_http_mg_redis_now();

    if (rec.forced_until && left > 0) {
        until = ngx_current_msec + (ngx_msec_t) left;

        if (bn->breaker.cooldown_until < until) {
            bn->breaker.cooldown_until = until;
        }
    }

    ngx_shmtx_unlock(&mcf->shpool->mutex);

    return NGX_OK;
}
