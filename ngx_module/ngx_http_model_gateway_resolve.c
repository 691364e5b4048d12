
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Re-resolution of backend host names.  They are resolved when the
 * configuration loads; with nginx's "resolver" configured at http level,
 * each worker also re-resolves them asynchronously as their DNS answers
 * expire, because cloud endpoints move.  A failed lookup keeps the
 * addresses in use.
 */


#include "ngx_http_model_gateway_module.h"


#define NGX_HTTP_MG_MAX_ADDRS  16


/* one set of addresses; each backend has two and switches between them */

typedef struct {
    ngx_addr_t       addrs[NGX_HTTP_MG_MAX_ADDRS];
    ngx_sockaddr_t   sockaddrs[NGX_HTTP_MG_MAX_ADDRS];
    u_char           text[NGX_HTTP_MG_MAX_ADDRS][NGX_SOCKADDR_STRLEN];
} ngx_http_model_gateway_addrs_t;


static void ngx_http_model_gateway_resolve_handler(ngx_event_t *ev);
static void ngx_http_model_gateway_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_model_gateway_resolve_again(
    ngx_http_model_gateway_backend_t *b, time_t sec);


ngx_int_t
ngx_http_model_gateway_resolve_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                          i;
    ngx_http_conf_ctx_t                *hctx;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_model_gateway_backend_t  **b;

    hctx = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
    clcf = hctx->loc_conf[ngx_http_core_module.ctx_index];

    /* nginx gives every location a resolver; one without servers is none */

    if (clcf->resolver == NULL || clcf->resolver->connections.nelts == 0) {
        return NGX_OK;
    }

    /* a "resolve" backend waits for its first answer with no address */

    b = mcf->backends.elts;
    for (i = 0; i < mcf->backends.nelts; i++) {
        if (b[i]->resolve && !b[i]->connect_set) {
            b[i]->naddrs = 0;
        }
    }

    b = mcf->backends.elts;

    for (i = 0; i < mcf->backends.nelts; i++) {
        if (b[i]->connect_set
            || ngx_inet_addr(b[i]->host.data, b[i]->host.len) != INADDR_NONE)
        {
            continue;
        }

        b[i]->raddrs = ngx_pcalloc(cycle->pool,
                                   2 * sizeof(ngx_http_model_gateway_addrs_t));
        if (b[i]->raddrs == NULL) {
            return NGX_ERROR;
        }

        b[i]->resolver = clcf->resolver;
        b[i]->resolver_timeout = clcf->resolver_timeout;

        b[i]->resolve_ev.handler = ngx_http_model_gateway_resolve_handler;
        b[i]->resolve_ev.data = b[i];
        b[i]->resolve_ev.log = cycle->log;
        b[i]->resolve_ev.cancelable = 1;

        /*
         * the answer from load time has no known TTL: ask again soon;
         * a "resolve" backend has no address before its first answer
         */

        ngx_add_timer(&b[i]->resolve_ev,
                      b[i]->resolve ? 1 : 1000 + (ngx_random() % 1000));
    }

    return NGX_OK;
}


static void
ngx_http_model_gateway_resolve_handler(ngx_event_t *ev)
{
    ngx_http_model_gateway_backend_t *b = ev->data;

    ngx_resolver_ctx_t  *ctx;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ctx = ngx_resolve_start(b->resolver, NULL);

    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        ngx_http_model_gateway_resolve_again(b, 30);
        return;
    }

    ctx->name = b->host;
    ctx->handler = ngx_http_model_gateway_resolved;
    ctx->data = b;
    ctx->timeout = b->resolver_timeout;
    ctx->cancelable = 1;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        ngx_http_model_gateway_resolve_again(b, 30);
    }
}


static void
ngx_http_model_gateway_resolved(ngx_resolver_ctx_t *ctx)
{
    ngx_http_model_gateway_backend_t *b = ctx->data;

    time_t                           valid;
    ngx_uint_t                       i, j, n, changed;
    ngx_http_model_gateway_addrs_t  *set;

    if (ctx->state) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "model gateway: backend \"%V\": %V could not be "
                      "resolved (%i: %s), keeping its addresses",
                      &b->name, &ctx->name, ctx->state,
                      ngx_resolver_strerror(ctx->state));

        ngx_resolve_name_done(ctx);
        ngx_http_model_gateway_resolve_again(b, 10);
        return;
    }

    valid = ctx->valid - ngx_time();
    n = ngx_min(ctx->naddrs, NGX_HTTP_MG_MAX_ADDRS);

    /* compared as sets: DNS servers rotate the order of their answers */

    changed = (n != b->naddrs);

    for (i = 0; i < n && !changed; i++) {
        for (j = 0; j < b->naddrs; j++) {
            if (ngx_cmp_sockaddr(ctx->addrs[i].sockaddr,
                                 ctx->addrs[i].socklen,
                                 b->addrs[j].sockaddr, b->addrs[j].socklen,
                                 0)
                == NGX_OK)
            {
                break;
            }
        }

        changed = (j == b->naddrs);
    }

    if (changed && n) {

        /*
         * the new set goes to the slot not in use, so attempts that picked
         * an address from the current one keep valid pointers
         */

        set = b->raddrs;

        if (b->addrs == set[0].addrs) {
            set = &set[1];
        }

        for (i = 0; i < n; i++) {
            ngx_memcpy(&set->sockaddrs[i], ctx->addrs[i].sockaddr,
                       ctx->addrs[i].socklen);
            ngx_inet_set_port(&set->sockaddrs[i].sockaddr, b->port);

            set->addrs[i].sockaddr = &set->sockaddrs[i].sockaddr;
            set->addrs[i].socklen = ctx->addrs[i].socklen;
            set->addrs[i].name.data = set->text[i];
            set->addrs[i].name.len = ngx_sock_ntop(&set->sockaddrs[i].sockaddr,
                                                   ctx->addrs[i].socklen,
                                                   set->text[i],
                                                   NGX_SOCKADDR_STRLEN, 1);
        }

        b->addrs = set->addrs;
        b->naddrs = n;

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "model gateway: backend \"%V\": %V now resolves to "
                      "%V%s", &b->name, &ctx->name, &set->addrs[0].name,
                      n > 1 ? " and more" : "");
    }

    ngx_resolve_name_done(ctx);

    ngx_http_model_gateway_resolve_again(b, valid);
}


static void
ngx_http_model_gateway_resolve_again(ngx_http_model_gateway_backend_t *b,
    time_t sec)
{
    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (sec < 1) {
        sec = 1;
    }

    ngx_add_timer(&b->resolve_ev, (ngx_msec_t) sec * 1000);
}
