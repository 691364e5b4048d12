
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Settling a request's token charge when it is over (_limits.c reserved
 * it): the usage the answer reported, else the reservation or nothing.
 * Settlements of Redis counters wait in the worker and go summed per
 * counter, one SETTLE each per model_gateway_limit_settle_interval.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "ngx_http_model_gateway_limits.h"
#include "mg_limit.h"

#include <hiredis/hiredis.h>


/* a settlement that waits for the next flush (per worker) */
typedef struct {
    ngx_str_node_t                     sn;      /* the counter's key */
    int64_t                            day;
    int64_t                            delta;
    uint64_t                           limit;
    u_char                             kind;
    u_char                             name[1];
} ngx_http_model_gateway_pending_t;


#define NGX_HTTP_MG_PENDING_MAX  4096


static ngx_rbtree_t        ngx_http_model_gateway_pending;
static ngx_rbtree_node_t   ngx_http_model_gateway_pending_sentinel;
static ngx_uint_t          ngx_http_model_gateway_pending_ready;
static ngx_uint_t          ngx_http_model_gateway_npending;
static ngx_event_t         ngx_http_model_gateway_settle_ev;



static void ngx_http_model_gateway_limits_flush(ngx_event_t *ev);
static void ngx_http_model_gateway_limits_ignore(void *data,
    redisReply *reply, ngx_int_t rc);


/*
 * The request is over: its token charge becomes what it used.  Usage the
 * answer reported is the truth; without it a request that reached a
 * backend (answered, or left by its client) keeps its reservation, and
 * one that never got an answer is charged nothing.  Sent without waiting:
 * nothing of the request is needed once it is written.
 */

void
ngx_http_model_gateway_limits_settle(ngx_http_model_gateway_ctx_t *ctx)
{
    int64_t                              delta;
    uint64_t                             used;
    ngx_uint_t                           i;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_limits_t     *l;
    ngx_http_model_gateway_main_conf_t  *mcf;

    l = &ctx->limits;
    r = ctx->request;

    if (!l->charged) {
        return;
    }

    if (ctx->usage.known) {
        used = ctx->usage.prompt + ctx->usage.completion;

    } else if (ctx->committed
               || (ctx->attempts && r->connection->error))
    {
        used = l->reserved;

    } else {
        used = 0;
    }

    delta = (int64_t) used - (int64_t) l->reserved;

    if (delta == 0) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (l->charged == NGX_HTTP_MG_CHARGED_REDIS) {
        for (i = 0; i < l->n; i++) {
            if (l->which[i] != 0) {
                ngx_http_model_gateway_limits_pend(mcf, &l->keys[i],
                                                   l->kind[i], l->limit[i],
                                                   l->day, delta);
            }
        }

        return;
    }

    ngx_http_model_gateway_limits_local_adjust(mcf, l, delta);
}


/*
 * Settlements wait in the worker for model_gateway_limit_settle_interval
 * and go to Redis summed per counter, one SETTLE of one key each: a
 * counter's requests cost one command per interval, not one each.  The
 * request's memory is not used: its pool is being destroyed.
 */

void
ngx_http_model_gateway_limits_pend(ngx_http_model_gateway_main_conf_t *mcf,
    ngx_str_t *name, u_char kind, uint64_t limit, int64_t day, int64_t delta)
{
    uint32_t                            hash;
    ngx_str_node_t                     *sn;
    ngx_http_model_gateway_pending_t   *pd;

    if (!ngx_http_model_gateway_pending_ready) {
        ngx_rbtree_init(&ngx_http_model_gateway_pending,
                        &ngx_http_model_gateway_pending_sentinel,
                        ngx_str_rbtree_insert_value);

        ngx_http_model_gateway_settle_ev.handler =
                                        ngx_http_model_gateway_limits_flush;
        ngx_http_model_gateway_settle_ev.log = ngx_cycle->log;
        ngx_http_model_gateway_settle_ev.data = mcf;

        /* not cancelable: an exiting worker flushes before it goes */

        ngx_http_model_gateway_pending_ready = 1;
    }

    hash = ngx_murmur_hash2(name->data, name->len);

    sn = ngx_str_rbtree_lookup(&ngx_http_model_gateway_pending, name, hash);

    if (sn) {
        pd = (ngx_http_model_gateway_pending_t *) sn;

        if (pd->day == day) {
            pd->delta += delta;
            pd->limit = limit;
            return;
        }

        /* a new UTC day began: what the old one holds goes first */

        ngx_http_model_gateway_limits_flush(&ngx_http_model_gateway_settle_ev);
    }

    if (ngx_http_model_gateway_npending >= NGX_HTTP_MG_PENDING_MAX) {
        ngx_http_model_gateway_limits_flush(&ngx_http_model_gateway_settle_ev);
    }

    pd = ngx_alloc(offsetof(ngx_http_model_gateway_pending_t, name)
                   + name->len, ngx_cycle->log);
    if (pd == NULL) {
        return;
    }

    pd->sn.node.key = hash;
    pd->sn.str.len = name->len;
    pd->sn.str.data = pd->name;
    pd->day = day;
    pd->delta = delta;
    pd->limit = limit;
    pd->kind = kind;
    ngx_memcpy(pd->name, name->data, name->len);

    ngx_rbtree_insert(&ngx_http_model_gateway_pending, &pd->sn.node);
    ngx_http_model_gateway_npending++;

    if (mcf->limit_settle_interval == 0 || ngx_exiting) {
        ngx_http_model_gateway_limits_flush(&ngx_http_model_gateway_settle_ev);
        return;
    }

    if (!ngx_http_model_gateway_settle_ev.timer_set) {
        ngx_add_timer(&ngx_http_model_gateway_settle_ev,
                      mcf->limit_settle_interval);
    }
}


/*
 * At most a quarter of model_gateway_redis_max_inflight per tick, so that
 * settling never takes the room of requests waiting on Redis; the rest
 * waits for the next tick.  With Redis away they are dropped: the
 * reservations stand.
 */

static void
ngx_http_model_gateway_limits_flush(ngx_event_t *ev)
{
    u_char                              *p;
    ngx_str_t                            args[6];
    ngx_uint_t                           lost, sent, cap;
    ngx_rbtree_node_t                   *node, *sentinel;
    ngx_http_model_gateway_pending_t    *pd;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               buf[3 * NGX_INT64_LEN + 2];

    mcf = ev->data;

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    cap = mcf->redis ? ngx_max(mcf->redis->max_inflight / 4, 1) : 0;
    sentinel = ngx_http_model_gateway_pending.sentinel;
    lost = 0;
    sent = 0;

    while (ngx_http_model_gateway_pending.root != sentinel) {
        node = ngx_rbtree_min(ngx_http_model_gateway_pending.root, sentinel);
        pd = (ngx_http_model_gateway_pending_t *) node;

        if (pd->delta && !ngx_http_mg_redis_ready()) {
            lost++;

        } else if (pd->delta) {

            if (sent >= cap) {
                break;
            }

            p = buf;

            args[0] = pd->sn.str;
            ngx_str_set(&args[1], "1");

            args[2].data = p;
            p = ngx_sprintf(p, "%L", pd->day);
            args[2].len = p - args[2].data;

            args[3].data = p;
            p = ngx_sprintf(p, "%L", pd->delta);
            args[3].len = p - args[3].data;

            args[4].data = &pd->kind;
            args[4].len = 1;

            args[5].data = p;
            p = ngx_sprintf(p, "%uL", pd->limit);
            args[5].len = p - args[5].data;

            /* the reply touches nothing: the data is the event */

            if (ngx_http_mg_redis_script_keys(NGX_HTTP_MG_SCRIPT_SETTLE, 1, 6,
                                         args,
                                         ngx_http_model_gateway_limits_ignore,
                                         ev)
                == NULL)
            {
                /* in-flight limit: the next tick */
                break;
            }

            sent++;
        }

        ngx_rbtree_delete(&ngx_http_model_gateway_pending, node);
        ngx_free(pd);
        ngx_http_model_gateway_npending--;
    }

    if (ngx_http_model_gateway_pending.root != sentinel) {
        ngx_add_timer(ev, ngx_max(mcf->limit_settle_interval, 10));
    }

    if (lost) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "model gateway: the token usage of %ui limit "
                      "counters could not be settled: redis unavailable",
                      lost);
    }
}


static void
ngx_http_model_gateway_limits_ignore(void *data, redisReply *reply,
    ngx_int_t rc)
{
    return;
}

