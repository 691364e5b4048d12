
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The life of the worker's Redis connection: connect (with a fresh DNS
 * lookup when a resolver is configured), TLS, the AUTH, SELECT, SCRIPT
 * LOAD and TIME handshake, and on any failure one close that fails every
 * waiter and a reconnect with exponential backoff.  The commands that
 * travel on it are _redis.c's.
 */


#include "ngx_http_model_gateway_redis_conn.h"


ngx_http_mg_redis_t  *ngx_http_mg_redis;


static void ngx_http_mg_redis_resolve(ngx_http_mg_redis_t *rd);
static void ngx_http_mg_redis_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_mg_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_mg_redis_write_handler(ngx_event_t *ev);
#if (NGX_HTTP_SSL)
static void ngx_http_mg_redis_ssl_handshake(ngx_connection_t *c);
#endif


ngx_int_t
ngx_http_mg_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_http_mg_redis_t                   *rd;
    ngx_http_conf_ctx_t                   *hctx;
    ngx_http_core_loc_conf_t              *clcf;
    ngx_http_model_gateway_redis_stats_t  *stats;

    ngx_http_mg_redis = NULL;
    ngx_http_mg_cluster = NULL;

    if (mcf->redis == NULL) {
        return NGX_OK;
    }

    /* this worker's slot of the metrics, counted from zero */

    stats = ngx_http_model_gateway_redis_stats();

    if (stats) {
        ngx_memzero(stats, sizeof(ngx_http_model_gateway_redis_stats_t));
        stats->pid = ngx_pid;
    }

    /* a connection per primary, made as the slot map names them */

    if (mcf->redis->cluster_seeds) {
        return ngx_http_mg_cluster_init(cycle, mcf);
    }

    rd = ngx_http_mg_redis_create(cycle, mcf);
    if (rd == NULL) {
        return NGX_ERROR;
    }

    /*
     * with sentinels, the primary's address is theirs to say, before each
     * connect, and a subscription follows their failovers
     */

    if (mcf->redis->sentinels) {
        rd->name = mcf->redis->sentinel_master;

        if (ngx_http_mg_sentinel_init(rd, cycle) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_mg_redis = rd;

        ngx_http_mg_sentinel_discover(rd);

        return NGX_OK;
    }

    ngx_memcpy(&rd->sockaddr, mcf->redis->addr.sockaddr,
               mcf->redis->addr.socklen);
    rd->socklen = mcf->redis->addr.socklen;
    rd->name = mcf->redis->addr.name;

    /*
     * with nginx's resolver, a host name is looked up again before each
     * reconnect: a managed Redis that failed over may have moved
     */

    if (mcf->redis->named) {
        hctx = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
        clcf = hctx->loc_conf[ngx_http_core_module.ctx_index];

        if (clcf->resolver && clcf->resolver->connections.nelts) {
            rd->resolver = clcf->resolver;
            rd->resolver_timeout = clcf->resolver_timeout;
        }
    }

    ngx_http_mg_redis = rd;

    ngx_http_mg_redis_connect(rd);

    return NGX_OK;
}


/*
 * A connection's state, not connected yet; a cluster's nodes share the
 * worker's slot of the metrics.
 */

ngx_http_mg_redis_t *
ngx_http_mg_redis_create(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_http_mg_redis_t  *rd;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_http_mg_redis_t));
    if (rd == NULL) {
        return NULL;
    }

    rd->mcf = mcf;
    rd->log = cycle->log;
    rd->state = NGX_HTTP_MG_REDIS_DOWN;
    rd->backoff = 100;

    rd->stats = ngx_http_model_gateway_redis_stats();

    ngx_queue_init(&rd->inflight);
    ngx_queue_init(&rd->free);
    ngx_queue_init(&rd->waiting);

    rd->out = ngx_create_temp_buf(cycle->pool, 16384);
    if (rd->out == NULL) {
        return NULL;
    }

    rd->timer.handler = ngx_http_mg_redis_timer_handler;
    rd->timer.data = rd;
    rd->timer.log = cycle->log;

    /*
     * not cancelable: while a command is in flight, a worker that is
     * shutting down (reload, quit) must not look idle and exit under the
     * requests that wait for it; the timer only runs while commands are
     * in flight, and never longer than model_gateway_redis_timeout
     */

    rd->timer.cancelable = 0;

    rd->reconnect.handler = ngx_http_mg_redis_reconnect_handler;
    rd->reconnect.data = rd;
    rd->reconnect.log = cycle->log;
    rd->reconnect.cancelable = 1;

    return rd;
}


void
ngx_http_mg_redis_exit_process(void)
{
    ngx_http_mg_redis_t  *rd;

    if (ngx_http_mg_cluster) {
        ngx_http_mg_cluster_exit();
        return;
    }

    rd = ngx_http_mg_redis;

    if (rd == NULL) {
        return;
    }

    if (rd->stats && rd->stats->pid == (ngx_atomic_uint_t) ngx_pid) {
        rd->stats->pid = 0;
    }

    ngx_http_mg_redis_drop(rd);

    if (rd->sentinel) {
        ngx_http_mg_sentinel_exit(rd);
    }

    ngx_http_mg_redis = NULL;
}


/*
 * The process ends: nothing is logged (Redis is not down) and no waiter
 * is resumed into a fallback that could not finish anyway; a graceful
 * exit has none left, a fast one abandons its requests.
 */

void
ngx_http_mg_redis_drop(ngx_http_mg_redis_t *rd)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_cmd_t  *cmd;

    ngx_http_mg_redis_close(rd);

    while (!ngx_queue_empty(&rd->inflight)) {
        q = ngx_queue_head(&rd->inflight);
        ngx_queue_remove(q);
        rd->ninflight--;

        cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);
        ngx_http_mg_redis_release(rd, cmd);
    }

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    rd->state = NGX_HTTP_MG_REDIS_DOWN;
}


ngx_uint_t
ngx_http_mg_redis_ready(void)
{
    if (ngx_http_mg_cluster) {
        return ngx_http_mg_cluster_ready();
    }

    return ngx_http_mg_redis
           && ngx_http_mg_redis->state == NGX_HTTP_MG_REDIS_READY;
}


void
ngx_http_mg_redis_connect(ngx_http_mg_redis_t *rd)
{
    ngx_err_t                       err;
    ngx_int_t                       rc;
    ngx_connection_t               *c;
    ngx_http_mg_redis_conf_t       *rcf;

    rcf = rd->mcf->redis;

    if (rd->state != NGX_HTTP_MG_REDIS_DOWN) {
        return;
    }

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ngx_memzero(&rd->peer, sizeof(ngx_peer_connection_t));

    /*
     * nginx logs a failed connect() at "error" itself, once per attempt:
     * its line is kept out, and the failure is logged here, at "error"
     * when Redis goes down and at "info" for each reconnect attempt
     */

    rd->connect_log = *rd->log;

    if (rd->connect_log.log_level > NGX_LOG_CRIT) {
        rd->connect_log.log_level = NGX_LOG_CRIT;
    }

    rd->peer.sockaddr = &rd->sockaddr.sockaddr;
    rd->peer.socklen = rd->socklen;
    rd->peer.name = &rd->name;
    rd->peer.get = ngx_event_get_peer;
    rd->peer.log = &rd->connect_log;
    rd->peer.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&rd->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        err = ngx_socket_errno;

        if (rd->peer.connection) {
            ngx_close_connection(rd->peer.connection);
            rd->peer.connection = NULL;
        }

        ngx_http_mg_redis_fail(rd, err, "connect() failed");
        return;
    }

    /*
     * the connection's own errors (a reset, TLS) are logged by nginx at
     * "info": the line that counts is the "down" one
     */

    c = rd->peer.connection;
    c->log = rd->log;
    c->read->log = rd->log;
    c->write->log = rd->log;
    c->log_error = NGX_ERROR_INFO;
    c->data = rd;
    c->read->handler = ngx_http_mg_redis_read_handler;
    c->write->handler = ngx_http_mg_redis_write_handler;
    c->idle = 0;

    /* nginx's SSL allocates from the connection's pool */

    c->pool = ngx_create_pool(512, rd->log);
    if (c->pool == NULL) {
        ngx_http_mg_redis_fail(rd, 0, "out of memory");
        return;
    }

    rd->state = NGX_HTTP_MG_REDIS_CONNECTING;

    rd->reader = redisReaderCreate();
    if (rd->reader == NULL) {
        ngx_http_mg_redis_fail(rd, 0, "out of memory");
        return;
    }

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, rcf->connect_timeout);
        return;
    }

    ngx_http_mg_redis_write_handler(c->write);
}


static void
ngx_http_mg_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_mg_redis_t *rd = ev->data;

    if (ngx_exiting || ngx_terminate || rd->retired) {
        return;
    }

    if (rd->sentinel) {
        ngx_http_mg_sentinel_discover(rd);
        return;
    }

    if (rd->resolver) {
        ngx_http_mg_redis_resolve(rd);
        return;
    }

    ngx_http_mg_redis_connect(rd);
}


static void
ngx_http_mg_redis_resolve(ngx_http_mg_redis_t *rd)
{
    ngx_resolver_ctx_t  *ctx;

    ctx = ngx_resolve_start(rd->resolver, NULL);

    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        ngx_http_mg_redis_connect(rd);
        return;
    }

    ctx->name = rd->mcf->redis->host;
    ctx->handler = ngx_http_mg_redis_resolved;
    ctx->data = rd;
    ctx->timeout = rd->resolver_timeout;
    ctx->cancelable = 1;

    rd->resolving = 1;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        rd->resolving = 0;
        ngx_http_mg_redis_connect(rd);
    }
}


static void
ngx_http_mg_redis_resolved(ngx_resolver_ctx_t *ctx)
{
    ngx_http_mg_redis_t *rd = ctx->data;

    rd->resolving = 0;

    if (ctx->state) {

        /* keep the address it had: it may be right again */

        ngx_log_error((rd->logged_down ? NGX_LOG_INFO : NGX_LOG_WARN),
                      rd->log, 0,
                      "model gateway: redis host %V could not be resolved "
                      "(%i: %s)", &ctx->name, ctx->state,
                      ngx_resolver_strerror(ctx->state));

    } else if (ctx->naddrs) {
        ngx_memcpy(&rd->sockaddr, ctx->addrs[0].sockaddr,
                   ctx->addrs[0].socklen);
        rd->socklen = ctx->addrs[0].socklen;
        ngx_inet_set_port(&rd->sockaddr.sockaddr, rd->mcf->redis->port);

        rd->name.data = rd->text;
        rd->name.len = ngx_sock_ntop(&rd->sockaddr.sockaddr, rd->socklen,
                                     rd->text, NGX_SOCKADDR_STRLEN, 1);
    }

    ngx_resolve_name_done(ctx);

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_http_mg_redis_connect(rd);
}


/*
 * The sentinels' answer (sa NULL: none of them knew the primary): the
 * connection is made to it, or stays down until the next attempt.
 */

void
ngx_http_mg_redis_discovered(ngx_http_mg_redis_t *rd, ngx_sockaddr_t *sa,
    socklen_t socklen)
{
    rd->discovering = 0;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (sa == NULL) {
        ngx_http_mg_redis_fail(rd, 0, "no sentinel named the primary");
        return;
    }

    ngx_memcpy(&rd->sockaddr, sa, socklen);
    rd->socklen = socklen;

    rd->name.data = rd->text;
    rd->name.len = ngx_sock_ntop(&rd->sockaddr.sockaddr, rd->socklen,
                                 rd->text, NGX_SOCKADDR_STRLEN, 1);

    ngx_http_mg_redis_connect(rd);
}


/*
 * A sentinel's +switch-master for our master: the connection to the old
 * primary is dropped (its waiters fall back, as for any lost connection)
 * and the new one is connected to at once, without waiting for a failed
 * command or the backoff.
 */

void
ngx_http_mg_redis_switch(ngx_http_mg_redis_t *rd, ngx_sockaddr_t *sa,
    socklen_t socklen)
{
    u_char     text[NGX_SOCKADDR_STRLEN];
    ngx_str_t  to;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    to.data = text;
    to.len = ngx_sock_ntop(&sa->sockaddr, socklen, text,
                           NGX_SOCKADDR_STRLEN, 1);

    /* a READONLY reply and the sentinels may have brought it there first */

    if (rd->state != NGX_HTTP_MG_REDIS_DOWN
        && ngx_cmp_sockaddr(&sa->sockaddr, socklen, &rd->sockaddr.sockaddr,
                            rd->socklen, 1)
           == NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "model gateway: redis sentinel %V: +switch-master %V "
                      "to %V, already connected",
                      ngx_http_mg_sentinel_via(rd),
                      &rd->mcf->redis->sentinel_master, &to);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "model gateway: redis sentinel %V: +switch-master %V to "
                  "%V, following", ngx_http_mg_sentinel_via(rd),
                  &rd->mcf->redis->sentinel_master, &to);

    if (rd->discovering) {
        ngx_http_mg_sentinel_cancel(rd);
        rd->discovering = 0;
    }

    if (rd->state != NGX_HTTP_MG_REDIS_DOWN) {
        ngx_http_mg_redis_fail(rd, 0, "the primary moved (+switch-master)");
    }

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    rd->backoff = 100;

    ngx_http_mg_redis_discovered(rd, sa, socklen);
}


static void
ngx_http_mg_redis_write_handler(ngx_event_t *wev)
{
    ngx_err_t                  err;
    ngx_connection_t          *c;
    ngx_http_mg_redis_t       *rd;
    ngx_http_mg_redis_conf_t  *rcf;

    c = wev->data;
    rd = c->data;
    rcf = rd->mcf->redis;

    if (wev->timedout) {
        ngx_http_mg_redis_fail(rd, 0, "connect timed out");
        return;
    }

    if (rd->state == NGX_HTTP_MG_REDIS_CONNECTING && c->ssl == NULL
        && rd->handshake == 0)
    {
        err = ngx_http_model_gateway_client_error(c);

        if (err) {
            ngx_http_mg_redis_fail(rd, err, "connect() failed");
            return;
        }

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

#if (NGX_HTTP_SSL)

        if (rcf->ssl) {
            if (ngx_ssl_create_connection(rcf->ssl, c, NGX_SSL_CLIENT)
                != NGX_OK)
            {
                ngx_http_mg_redis_fail(rd, 0, "TLS setup failed");
                return;
            }

            if (rcf->ssl_sni) {
                (void) SSL_set_tlsext_host_name(c->ssl->connection,
                                                (char *) rcf->ssl_name.data);
            }

            if (ngx_ssl_handshake(c) == NGX_AGAIN) {
                ngx_add_timer(c->write, rcf->connect_timeout);
                c->ssl->handler = ngx_http_mg_redis_ssl_handshake;
                return;
            }

            ngx_http_mg_redis_ssl_handshake(c);
            return;
        }

#endif

        ngx_http_mg_redis_handshake(rd);
        return;
    }

    ngx_http_mg_redis_flush(rd);
}


#if (NGX_HTTP_SSL)

static void
ngx_http_mg_redis_ssl_handshake(ngx_connection_t *c)
{
    long                       rc;
    ngx_http_mg_redis_t       *rd;
    ngx_http_mg_redis_conf_t  *rcf;

    rd = c->data;
    rcf = rd->mcf->redis;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (!c->ssl->handshaked) {
        ngx_http_mg_redis_fail(rd, 0, "TLS handshake failed");
        return;
    }

    if (rcf->ssl_verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_log_error((rd->logged_down ? NGX_LOG_INFO : NGX_LOG_ERR),
                          rd->log, 0,
                          "model gateway: redis certificate verify error: "
                          "(%l:%s) from %V", rc,
                          X509_verify_cert_error_string(rc), &rd->name);
            ngx_http_mg_redis_fail(rd, 0, "TLS certificate not trusted");
            return;
        }

        if (ngx_ssl_check_host(c, &rcf->ssl_name) != NGX_OK) {
            ngx_log_error((rd->logged_down ? NGX_LOG_INFO : NGX_LOG_ERR),
                          rd->log, 0,
                          "model gateway: redis certificate does not match "
                          "\"%V\" from %V", &rcf->ssl_name, &rd->name);
            ngx_http_mg_redis_fail(rd, 0, "TLS certificate name mismatch");
            return;
        }
    }

    c->read->handler = ngx_http_mg_redis_read_handler;
    c->write->handler = ngx_http_mg_redis_write_handler;

    ngx_http_mg_redis_handshake(rd);
}

#endif


/*
 * Drops the connection, fails every waiter at once and schedules a
 * reconnect with exponential backoff.  An outage is logged once, at
 * "error", when it starts (and "is up" when it ends); the failed
 * reconnect attempts in between are logged at "info".
 */

void
ngx_http_mg_redis_fail(ngx_http_mg_redis_t *rd, ngx_err_t err,
    const char *why)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_cmd_t  *cmd;

    ngx_http_mg_redis_close(rd);

    if (!rd->logged_down) {

        /*
         * a cluster's seed or former node that no map names: a warning,
         * the map says what is missing (and no seed at all, an error)
         */

        ngx_log_error(((rd->cluster && !ngx_http_mg_cluster_member(rd))
                       ? NGX_LOG_WARN : NGX_LOG_ERR), rd->log, err,
                      "model gateway: redis %V is down%s%s",
                      &rd->name, why ? ": " : "", why ? why : "");
        rd->logged_down = 1;

    } else {
        ngx_log_error(NGX_LOG_INFO, rd->log, err,
                      "model gateway: redis %V reconnect failed%s%s",
                      &rd->name, why ? ": " : "", why ? why : "");
    }

    rd->state = NGX_HTTP_MG_REDIS_DOWN;

    /* the waiters' handlers may queue new commands: they fail at once */

    while (!ngx_queue_empty(&rd->inflight)) {
        q = ngx_queue_head(&rd->inflight);
        ngx_queue_remove(q);
        rd->ninflight--;

        cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);
        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
    }

    if (rd->cluster) {

        /* a primary lost may be a failover: the slot map is read again */

        ngx_http_mg_cluster_node_down(rd);

    } else if (rd->stats) {
        rd->stats->up = 0;
        rd->stats->inflight = 0;
    }

    /* (a waiter's handler may have had the connection made again) */

    if (ngx_exiting || ngx_terminate || rd->reconnect.timer_set
        || rd->resolving || rd->discovering || rd->retired
        || rd->state != NGX_HTTP_MG_REDIS_DOWN)
    {
        return;
    }

    ngx_add_timer(&rd->reconnect, rd->backoff + ngx_random() % 50);

    rd->backoff = ngx_min(rd->backoff * 2, 5000);
}


/*
 * An address a sentinel or a cluster node gave: an IP address (not a host
 * name: nothing is resolved here) and a port.
 */

ngx_int_t
ngx_http_mg_redis_addr(u_char *ip, size_t len, ngx_int_t port,
    ngx_sockaddr_t *sa, socklen_t *socklen)
{
    in_addr_t  a;

    if (port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));

    a = ngx_inet_addr(ip, len);

    if (a != INADDR_NONE) {
        sa->sockaddr_in.sin_family = AF_INET;
        sa->sockaddr_in.sin_addr.s_addr = a;
        *socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(ip, len, sa->sockaddr_in6.sin6_addr.s6_addr)
               == NGX_OK)
    {
        sa->sockaddr_in6.sin6_family = AF_INET6;
        *socklen = sizeof(struct sockaddr_in6);
#endif

    } else {
        return NGX_ERROR;
    }

    ngx_inet_set_port(&sa->sockaddr, (in_port_t) port);

    return NGX_OK;
}


/* closes the connection, if any; the waiters stay in the queue */

void
ngx_http_mg_redis_close(ngx_http_mg_redis_t *rd)
{
    ngx_http_model_gateway_client_close(&rd->peer);

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    rd->out->pos = rd->out->start;
    rd->out->last = rd->out->start;
    rd->handshake = 0;
    rd->reply_size = 0;
}
