
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Per-worker caches of idle backend connections, one per backend, as
 * nginx's upstream keepalive module keeps them.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_upstream.h"


static void ngx_http_model_gateway_keepalive_dummy_handler(ngx_event_t *ev);
static void ngx_http_model_gateway_keepalive_close_handler(ngx_event_t *ev);
static void ngx_http_model_gateway_close(ngx_connection_t *c);


/* per-worker caches of idle backend connections */

ngx_int_t
ngx_http_model_gateway_keepalive_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                          i, j;
    ngx_http_model_gateway_cached_t    *items;
    ngx_http_model_gateway_backend_t  **b;

    b = mcf->backends.elts;

    for (i = 0; i < mcf->backends.nelts; i++) {
        ngx_queue_init(&b[i]->cache);
        ngx_queue_init(&b[i]->free);

        if (b[i]->keepalive == 0) {
            continue;
        }

        items = ngx_pcalloc(cycle->pool, b[i]->keepalive
                                  * sizeof(ngx_http_model_gateway_cached_t));
        if (items == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < b[i]->keepalive; j++) {
            items[j].backend = b[i];
            ngx_queue_insert_head(&b[i]->free, &items[j].queue);
        }
    }

    return NGX_OK;
}


/*
 * An idle connection to the peer's address for the backend (the cache is
 * per backend, so the host name matches too): NGX_DONE with it in pc, or
 * NGX_OK when none is left and a new one must be made.
 */

ngx_int_t
ngx_http_model_gateway_keepalive_get(ngx_peer_connection_t *pc,
    ngx_http_model_gateway_backend_t *b)
{
    ngx_queue_t                      *q;
    ngx_connection_t                 *c;
    ngx_http_model_gateway_cached_t  *item;

    for (q = ngx_queue_head(&b->cache);
         q != ngx_queue_sentinel(&b->cache);
         q = ngx_queue_next(q))
    {
        item = ngx_queue_data(q, ngx_http_model_gateway_cached_t, queue);
        c = item->connection;

        if (ngx_memn2cmp((u_char *) &item->sockaddr, (u_char *) pc->sockaddr,
                         item->socklen, pc->socklen)
            != 0)
        {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&b->free, q);

        c->idle = 0;
        c->sent = 0;
        c->data = NULL;
        c->log = pc->log;
        c->read->log = pc->log;
        c->write->log = pc->log;
        c->pool->log = pc->log;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        pc->connection = c;
        pc->cached = 1;

        return NGX_DONE;
    }

    return NGX_OK;
}


void
ngx_http_model_gateway_keepalive_save(ngx_peer_connection_t *pc,
    ngx_http_model_gateway_backend_t *b)
{
    ngx_msec_t                        age, timeout;
    ngx_queue_t                      *q;
    ngx_connection_t                 *c;
    ngx_http_model_gateway_cached_t  *item;

    c = pc->connection;

    if (b->keepalive == 0
        || c->read->eof || c->read->error || c->read->timedout
        || c->write->error || c->write->timedout
        || ngx_terminate || ngx_exiting)
    {
        return;
    }

    /*
     * a connection is retired, as nginx's upstream keepalive_requests and
     * keepalive_time do, so that no connection lives forever: a backend
     * behind a load balancer gets to rebalance and to drain old servers.
     * c->requests is counted by ngx_http_upstream_connect() and
     * c->start_time set by ngx_event_connect_peer().
     */

    age = ngx_current_msec - c->start_time;

    if (c->requests >= b->keepalive_requests || age >= b->keepalive_time) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "model gateway: keepalive connection retired after "
                       "%ui requests and %M ms to backend \"%V\"",
                       c->requests, age, &b->name);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return;
    }

    if (ngx_queue_empty(&b->free)) {

        /* full: the least recently used connection makes room */

        q = ngx_queue_last(&b->cache);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_model_gateway_cached_t, queue);
        ngx_http_model_gateway_close(item->connection);

    } else {
        q = ngx_queue_head(&b->free);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_model_gateway_cached_t, queue);
    }

    ngx_queue_insert_head(&b->cache, q);

    item->connection = c;
    item->socklen = pc->socklen;
    ngx_memcpy(&item->sockaddr, pc->sockaddr, pc->socklen);

    pc->connection = NULL;

    c->read->delayed = 0;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /* an idle connection is closed when it reaches keepalive_time */

    timeout = b->keepalive_time - age;

    if (timeout > b->keepalive_timeout) {
        timeout = b->keepalive_timeout;
    }

    ngx_add_timer(c->read, timeout);

    c->write->handler = ngx_http_model_gateway_keepalive_dummy_handler;
    c->read->handler = ngx_http_model_gateway_keepalive_close_handler;

    c->data = item;
    c->idle = 1;
    c->log = ngx_cycle->log;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->pool->log = ngx_cycle->log;

    if (c->read->ready) {
        ngx_http_model_gateway_keepalive_close_handler(c->read);
    }
}


static void
ngx_http_model_gateway_keepalive_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "model gateway: keepalive dummy handler");
}


static void
ngx_http_model_gateway_keepalive_close_handler(ngx_event_t *ev)
{
    int                                n;
    char                               buf[1];
    ngx_connection_t                  *c;
    ngx_http_model_gateway_cached_t   *item;
    ngx_http_model_gateway_backend_t  *b;

    c = ev->data;

    if (c->close || c->read->timedout) {
        goto close;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
        ev->ready = 0;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            goto close;
        }

        return;
    }

close:

    item = c->data;
    b = item->backend;

    ngx_http_model_gateway_close(c);

    ngx_queue_remove(&item->queue);
    ngx_queue_insert_head(&b->free, &item->queue);
}


static void
ngx_http_model_gateway_close(ngx_connection_t *c)
{
#if (NGX_HTTP_SSL)

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_model_gateway_close;
            return;
        }
    }

#endif

    ngx_destroy_pool(c->pool);
    ngx_close_connection(c);
}
