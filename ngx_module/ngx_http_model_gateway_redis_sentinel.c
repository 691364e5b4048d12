
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Sentinel: the primary's address asked of the sentinels before each
 * connect of the worker's Redis connection (SENTINEL
 * get-master-addr-by-name, one sentinel after the other, starting with
 * the one that answered last), and a subscription to one sentinel's
 * +switch-master that makes the connection follow a failover at once.
 * Both are short exchanges on nginx's event loop: nothing here ever
 * blocks a worker or keeps an exiting one alive.  The connection itself,
 * with its ROLE check, is _redis_conn.c's.
 */


#include "ngx_http_model_gateway_redis_conn.h"


/* a sentinel's replies are short: more is a broken peer */
#define NGX_HTTP_MG_SENTINEL_MAX_REPLY  65536


typedef struct {
    ngx_http_mg_redis_t          *rd;
    ngx_peer_connection_t         peer;
    redisReader                  *reader;
    u_char                       *out;          /* ngx_alloc()ed */
    size_t                        out_len;
    size_t                        sent;
    ngx_uint_t                    index;        /* the sentinel asked */
    ngx_uint_t                    tried;
    ngx_uint_t                    auth;         /* its reply pending */
    ngx_event_t                   retry;        /* the subscription's */
    ngx_msec_t                    backoff;
    unsigned                      subscribe:1;
    unsigned                      subscribed:1;
    unsigned                      active:1;
    unsigned                      connected:1;
} ngx_http_mg_sentinel_conn_t;


struct ngx_http_mg_sentinel_s {
    ngx_http_mg_sentinel_conn_t   lookup;
    ngx_http_mg_sentinel_conn_t   sub;
    ngx_uint_t                    last;         /* answered last */
    ngx_uint_t                    logged;       /* a bit per sentinel */
    ngx_str_t                     via;
    ngx_log_t                     connect_log;
};


static void ngx_http_mg_sentinel_start(ngx_http_mg_sentinel_conn_t *sc);
static void ngx_http_mg_sentinel_write_handler(ngx_event_t *wev);
static void ngx_http_mg_sentinel_send(ngx_http_mg_sentinel_conn_t *sc);
#if (NGX_HTTP_SSL)
static void ngx_http_mg_sentinel_ssl_handshake(ngx_connection_t *c);
#endif
static void ngx_http_mg_sentinel_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_mg_sentinel_prepare(
    ngx_http_mg_sentinel_conn_t *sc);
static ngx_int_t ngx_http_mg_sentinel_reply(ngx_http_mg_sentinel_conn_t *sc,
    redisReply *reply);
static ngx_int_t ngx_http_mg_sentinel_message(ngx_http_mg_sentinel_conn_t *sc,
    redisReply *reply);
static void ngx_http_mg_sentinel_failed(ngx_http_mg_sentinel_conn_t *sc,
    ngx_err_t err, const char *why);
static void ngx_http_mg_sentinel_close(ngx_http_mg_sentinel_conn_t *sc);
static void ngx_http_mg_sentinel_retry_handler(ngx_event_t *ev);


ngx_int_t
ngx_http_mg_sentinel_init(ngx_http_mg_redis_t *rd, ngx_cycle_t *cycle)
{
    ngx_addr_t              *addr;
    ngx_http_mg_sentinel_t  *s;

    s = ngx_pcalloc(cycle->pool, sizeof(ngx_http_mg_sentinel_t));
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->lookup.rd = rd;
    s->sub.rd = rd;
    s->sub.subscribe = 1;
    s->sub.backoff = 100;

    /* the subscription's backoff never keeps an exiting worker */

    s->sub.retry.handler = ngx_http_mg_sentinel_retry_handler;
    s->sub.retry.data = &s->sub;
    s->sub.retry.log = cycle->log;
    s->sub.retry.cancelable = 1;

    /* nginx's own connect() error lines are kept out, as in _redis_conn.c */

    s->connect_log = *cycle->log;

    if (s->connect_log.log_level > NGX_LOG_CRIT) {
        s->connect_log.log_level = NGX_LOG_CRIT;
    }

    addr = rd->mcf->redis->sentinels->elts;
    s->via = addr[0].name;

    /* the workers spread their subscriptions over the sentinels */

    s->sub.index = ngx_pid % rd->mcf->redis->sentinels->nelts;

    rd->sentinel = s;

    ngx_http_mg_sentinel_start(&s->sub);

    return NGX_OK;
}


void
ngx_http_mg_sentinel_discover(ngx_http_mg_redis_t *rd)
{
    ngx_http_mg_sentinel_t  *s;

    s = rd->sentinel;

    if (s->lookup.active) {
        return;
    }

    rd->discovering = 1;

    s->lookup.index = s->last;
    s->lookup.tried = 0;

    ngx_http_mg_sentinel_start(&s->lookup);
}


void
ngx_http_mg_sentinel_cancel(ngx_http_mg_redis_t *rd)
{
    ngx_http_mg_sentinel_close(&rd->sentinel->lookup);
}


ngx_str_t *
ngx_http_mg_sentinel_via(ngx_http_mg_redis_t *rd)
{
    return &rd->sentinel->via;
}


void
ngx_http_mg_sentinel_exit(ngx_http_mg_redis_t *rd)
{
    ngx_http_mg_sentinel_t  *s;

    s = rd->sentinel;

    ngx_http_mg_sentinel_close(&s->lookup);
    ngx_http_mg_sentinel_close(&s->sub);

    if (s->sub.retry.timer_set) {
        ngx_del_timer(&s->sub.retry);
    }

    rd->sentinel = NULL;
}


static void
ngx_http_mg_sentinel_start(ngx_http_mg_sentinel_conn_t *sc)
{
    ngx_err_t                  err;
    ngx_int_t                  rc;
    ngx_addr_t                *addr;
    ngx_connection_t          *c;
    ngx_http_mg_redis_t       *rd;
    ngx_http_mg_sentinel_t    *s;
    ngx_http_mg_redis_conf_t  *rcf;

    rd = sc->rd;
    s = rd->sentinel;
    rcf = rd->mcf->redis;
    addr = rcf->sentinels->elts;

    ngx_memzero(&sc->peer, sizeof(ngx_peer_connection_t));

    sc->active = 1;
    sc->connected = 0;
    sc->subscribed = 0;

    sc->peer.sockaddr = addr[sc->index].sockaddr;
    sc->peer.socklen = addr[sc->index].socklen;
    sc->peer.name = &addr[sc->index].name;
    sc->peer.get = ngx_event_get_peer;
    sc->peer.log = &s->connect_log;
    sc->peer.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&sc->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        err = ngx_socket_errno;
        ngx_http_mg_sentinel_failed(sc, err, "connect() failed");
        return;
    }

    c = sc->peer.connection;
    c->log = rd->log;
    c->read->log = rd->log;
    c->write->log = rd->log;
    c->log_error = NGX_ERROR_INFO;
    c->data = sc;
    c->read->handler = ngx_http_mg_sentinel_read_handler;
    c->write->handler = ngx_http_mg_sentinel_write_handler;
    c->idle = 0;

    /* an exiting worker does not wait for a sentinel */

    c->read->cancelable = 1;
    c->write->cancelable = 1;

    /* nginx's SSL allocates from the connection's pool */

    c->pool = ngx_create_pool(512, rd->log);
    if (c->pool == NULL) {
        ngx_http_mg_sentinel_failed(sc, 0, "out of memory");
        return;
    }

    sc->reader = redisReaderCreate();
    if (sc->reader == NULL) {
        ngx_http_mg_sentinel_failed(sc, 0, "out of memory");
        return;
    }

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, rcf->connect_timeout);
        return;
    }

    ngx_http_mg_sentinel_write_handler(c->write);
}


static void
ngx_http_mg_sentinel_write_handler(ngx_event_t *wev)
{
    ngx_err_t                     err;
    ngx_connection_t             *c;
    ngx_http_mg_sentinel_conn_t  *sc;
#if (NGX_HTTP_SSL)
    u_char                        name[256];
    ngx_str_t                    *hosts;
    ngx_http_mg_redis_conf_t     *rcf;
#endif

    c = wev->data;
    sc = c->data;

    if (wev->timedout) {
        ngx_http_mg_sentinel_failed(sc, 0, "timed out");
        return;
    }

    if (!sc->connected) {
        err = ngx_http_model_gateway_client_error(c);

        if (err) {
            ngx_http_mg_sentinel_failed(sc, err, "connect() failed");
            return;
        }

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        sc->connected = 1;

#if (NGX_HTTP_SSL)

        rcf = sc->rd->mcf->redis;

        if (rcf->sentinel_ssl) {
            if (ngx_ssl_create_connection(rcf->sentinel_ssl, c,
                                          NGX_SSL_CLIENT)
                != NGX_OK)
            {
                ngx_http_mg_sentinel_failed(sc, 0, "TLS setup failed");
                return;
            }

            hosts = rcf->sentinel_hosts->elts;

            ngx_cpystrn(name, hosts[sc->index].data,
                        ngx_min(hosts[sc->index].len + 1, sizeof(name)));
            (void) SSL_set_tlsext_host_name(c->ssl->connection,
                                            (char *) name);

            if (ngx_ssl_handshake(c) == NGX_AGAIN) {
                ngx_add_timer(c->write, rcf->connect_timeout);
                c->ssl->handler = ngx_http_mg_sentinel_ssl_handshake;
                return;
            }

            ngx_http_mg_sentinel_ssl_handshake(c);
            return;
        }

#endif

        ngx_http_mg_sentinel_send(sc);
        return;
    }

    ngx_http_mg_sentinel_send(sc);
}


#if (NGX_HTTP_SSL)

static void
ngx_http_mg_sentinel_ssl_handshake(ngx_connection_t *c)
{
    long                          rc;
    ngx_str_t                    *hosts;
    ngx_http_mg_sentinel_conn_t  *sc;
    ngx_http_mg_redis_conf_t     *rcf;

    sc = c->data;
    rcf = sc->rd->mcf->redis;
    hosts = rcf->sentinel_hosts->elts;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (!c->ssl->handshaked) {
        ngx_http_mg_sentinel_failed(sc, 0, "TLS handshake failed");
        return;
    }

    if (rcf->sentinel_ssl_verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_http_mg_sentinel_failed(sc, 0,
                                        "TLS certificate not trusted");
            return;
        }

        if (ngx_ssl_check_host(c, &hosts[sc->index]) != NGX_OK) {
            ngx_http_mg_sentinel_failed(sc, 0,
                                        "TLS certificate name mismatch");
            return;
        }
    }

    c->read->handler = ngx_http_mg_sentinel_read_handler;
    c->write->handler = ngx_http_mg_sentinel_write_handler;

    ngx_http_mg_sentinel_send(sc);
}

#endif


/* the request goes out once connected (and TLS done), then what is left */

static void
ngx_http_mg_sentinel_send(ngx_http_mg_sentinel_conn_t *sc)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = sc->peer.connection;

    if (sc->out == NULL) {
        if (ngx_http_mg_sentinel_prepare(sc) != NGX_OK) {
            ngx_http_mg_sentinel_failed(sc, 0, "cannot prepare the request");
            return;
        }

        /* the replies, each step under the connect timeout */

        ngx_add_timer(c->read, sc->rd->mcf->redis->connect_timeout);
    }

    while (sc->sent < sc->out_len) {
        n = c->send(c, sc->out + sc->sent, sc->out_len - sc->sent);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            ngx_http_mg_sentinel_failed(sc, ngx_socket_errno, "write error");
            return;
        }

        sc->sent += n;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_http_mg_sentinel_failed(sc, 0, "event error");
    }
}


/* AUTH when the sentinels want it, then the one command */

static ngx_int_t
ngx_http_mg_sentinel_prepare(ngx_http_mg_sentinel_conn_t *sc)
{
    int                        n[2];
    char                      *cmd[2];
    size_t                     lens[4];
    ngx_uint_t                 i, argc, ncmd;
    const char                *argv[4];
    ngx_http_mg_redis_conf_t  *rcf;

    rcf = sc->rd->mcf->redis;
    ncmd = 0;
    sc->auth = 0;

    if (rcf->sentinel_password.len) {
        argc = 0;
        argv[argc] = "AUTH"; lens[argc++] = 4;

        if (rcf->sentinel_user.len) {
            argv[argc] = (char *) rcf->sentinel_user.data;
            lens[argc++] = rcf->sentinel_user.len;
        }

        argv[argc] = (char *) rcf->sentinel_password.data;
        lens[argc++] = rcf->sentinel_password.len;

        n[ncmd] = redisFormatCommandArgv(&cmd[ncmd], (int) argc, argv, lens);
        if (n[ncmd] < 0) {
            return NGX_ERROR;
        }

        ncmd++;
        sc->auth = 1;
    }

    if (sc->subscribe) {
        argv[0] = "SUBSCRIBE"; lens[0] = 9;
        argv[1] = "+switch-master"; lens[1] = 14;
        argc = 2;

    } else {
        argv[0] = "SENTINEL"; lens[0] = 8;
        argv[1] = "get-master-addr-by-name"; lens[1] = 23;
        argv[2] = (char *) rcf->sentinel_master.data;
        lens[2] = rcf->sentinel_master.len;
        argc = 3;
    }

    n[ncmd] = redisFormatCommandArgv(&cmd[ncmd], (int) argc, argv, lens);
    if (n[ncmd] < 0) {
        if (ncmd) {
            free(cmd[0]);
        }

        return NGX_ERROR;
    }

    ncmd++;

    sc->out_len = 0;

    for (i = 0; i < ncmd; i++) {
        sc->out_len += n[i];
    }

    sc->out = ngx_alloc(sc->out_len, sc->rd->log);

    if (sc->out) {
        sc->out_len = 0;

        for (i = 0; i < ncmd; i++) {
            ngx_memcpy(sc->out + sc->out_len, cmd[i], n[i]);
            sc->out_len += n[i];
        }
    }

    /* the password's copies are not left behind in freed memory */

    for (i = 0; i < ncmd; i++) {
        ngx_explicit_memzero(cmd[i], n[i]);
        free(cmd[i]);
    }

    sc->sent = 0;

    return sc->out ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_mg_sentinel_read_handler(ngx_event_t *rev)
{
    void                         *r;
    ssize_t                       n;
    ngx_int_t                     rc;
    ngx_connection_t             *c;
    ngx_http_mg_sentinel_conn_t  *sc;
    u_char                        buf[4096];

    c = rev->data;
    sc = c->data;

    if (rev->timedout) {
        ngx_http_mg_sentinel_failed(sc, 0, "timed out");
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_http_mg_sentinel_failed(sc, 0, "connection closed");
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_mg_sentinel_failed(sc, ngx_socket_errno, "read error");
            return;
        }

        if (redisReaderFeed(sc->reader, (char *) buf, n) != REDIS_OK
            || sc->reader->len > NGX_HTTP_MG_SENTINEL_MAX_REPLY)
        {
            ngx_http_mg_sentinel_failed(sc, 0, "protocol error");
            return;
        }

        for ( ;; ) {
            r = NULL;

            if (redisReaderGetReply(sc->reader, &r) != REDIS_OK) {
                ngx_http_mg_sentinel_failed(sc, 0, "protocol error");
                return;
            }

            if (r == NULL) {
                break;
            }

            rc = ngx_http_mg_sentinel_reply(sc, r);

            freeReplyObject(r);

            if (rc != NGX_OK) {

                /* done, or failed: the connection is closed */

                return;
            }
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_mg_sentinel_failed(sc, 0, "event error");
    }
}


/* NGX_OK: go on reading; otherwise the connection was closed */

static ngx_int_t
ngx_http_mg_sentinel_reply(ngx_http_mg_sentinel_conn_t *sc,
    redisReply *reply)
{
    u_char                     why[128];
    socklen_t                  socklen;
    ngx_addr_t                *addr;
    ngx_sockaddr_t             sa;
    ngx_connection_t          *c;
    ngx_http_mg_redis_t       *rd;
    ngx_http_mg_sentinel_t    *s;

    rd = sc->rd;
    s = rd->sentinel;
    c = sc->peer.connection;
    addr = rd->mcf->redis->sentinels->elts;

    if (reply->type == REDIS_REPLY_ERROR) {

        /* only the sentinel's own text, never the password */

        *ngx_snprintf(why, sizeof(why) - 1, "%s: %*s",
                      sc->auth ? "AUTH refused" : "error",
                      (size_t) ngx_min(reply->len, 80), reply->str)
            = '\0';

        ngx_http_mg_sentinel_failed(sc, 0, (char *) why);
        return NGX_ERROR;
    }

    if (sc->auth) {
        sc->auth = 0;
        return NGX_OK;
    }

    if (sc->subscribe) {
        return ngx_http_mg_sentinel_message(sc, reply);
    }

    /* SENTINEL get-master-addr-by-name: [ip, port], or nil */

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        ngx_http_mg_sentinel_failed(sc, 0,
                                    (reply->type == REDIS_REPLY_NIL)
                                    ? "does not know the master"
                                    : "unexpected reply");
        return NGX_ERROR;
    }

    if (ngx_http_mg_redis_addr((u_char *) reply->element[0]->str,
                               reply->element[0]->len,
                               ngx_atoi((u_char *) reply->element[1]->str,
                                        reply->element[1]->len),
                               &sa, &socklen)
        != NGX_OK)
    {
        ngx_http_mg_sentinel_failed(sc, 0, "gave an invalid address");
        return NGX_ERROR;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    s->last = sc->index;
    s->via = addr[sc->index].name;
    s->logged &= ~((ngx_uint_t) 1 << sc->index);

    ngx_http_mg_sentinel_close(sc);

    ngx_http_mg_redis_discovered(rd, &sa, socklen);

    return NGX_DONE;
}


/*
 * The subscription's replies: SUBSCRIBE's confirmation, then RESP2 push
 * messages, ["message", "+switch-master", "NAME OLDIP OLDPORT NEWIP
 * NEWPORT"].
 */

static ngx_int_t
ngx_http_mg_sentinel_message(ngx_http_mg_sentinel_conn_t *sc,
    redisReply *reply)
{
    u_char                    *p, *end, *f[5];
    size_t                     fl[5];
    socklen_t                  socklen;
    ngx_str_t                 *master;
    ngx_uint_t                 i;
    ngx_addr_t                *addr;
    redisReply               **e;
    ngx_sockaddr_t             sa;
    ngx_connection_t          *c;
    ngx_http_mg_redis_t       *rd;

    rd = sc->rd;
    c = sc->peer.connection;
    master = &rd->mcf->redis->sentinel_master;
    addr = rd->mcf->redis->sentinels->elts;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_http_mg_sentinel_failed(sc, 0, "unexpected reply");
        return NGX_ERROR;
    }

    e = reply->element;

    if (!sc->subscribed) {
        if (e[0]->len != 9 || ngx_strncmp(e[0]->str, "subscribe", 9) != 0) {
            ngx_http_mg_sentinel_failed(sc, 0, "unexpected reply");
            return NGX_ERROR;
        }

        /* subscribed: messages come when they come, with no timeout */

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        sc->subscribed = 1;
        sc->backoff = 100;
        rd->sentinel->logged &= ~((ngx_uint_t) 1 << sc->index);

        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "model gateway: redis sentinel %V: subscribed to "
                      "+switch-master", &addr[sc->index].name);
        return NGX_OK;
    }

    if (e[0]->len != 7 || ngx_strncmp(e[0]->str, "message", 7) != 0
        || e[2]->type != REDIS_REPLY_STRING)
    {
        return NGX_OK;
    }

    p = (u_char *) e[2]->str;
    end = p + e[2]->len;

    for (i = 0; i < 5; i++) {
        while (p < end && *p == ' ') {
            p++;
        }

        f[i] = p;

        while (p < end && *p != ' ') {
            p++;
        }

        fl[i] = p - f[i];

        if (fl[i] == 0) {
            return NGX_OK;
        }
    }

    if (fl[0] != master->len || ngx_strncmp(f[0], master->data, fl[0]) != 0)
    {
        return NGX_OK;
    }

    if (ngx_http_mg_redis_addr(f[3], fl[3], ngx_atoi(f[4], fl[4]), &sa,
                               &socklen)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "model gateway: redis sentinel %V: invalid "
                      "+switch-master \"%*s\"", &addr[sc->index].name,
                      (size_t) ngx_min(e[2]->len, 200), e[2]->str);
        return NGX_OK;
    }

    rd->sentinel->via = addr[sc->index].name;

    ngx_http_mg_redis_switch(rd, &sa, socklen);

    return NGX_OK;
}


/*
 * One sentinel failed: a lookup asks the next one (all failed: the
 * connection stays down and retries with its backoff); the subscription
 * goes to the next one after its own backoff.  A sentinel's failure is
 * logged at "error" the first time, at "info" until it answers again.
 */

static void
ngx_http_mg_sentinel_failed(ngx_http_mg_sentinel_conn_t *sc, ngx_err_t err,
    const char *why)
{
    ngx_uint_t               n, bit;
    ngx_addr_t              *addr;
    ngx_http_mg_redis_t     *rd;
    ngx_http_mg_sentinel_t  *s;

    rd = sc->rd;
    s = rd->sentinel;
    addr = rd->mcf->redis->sentinels->elts;
    n = rd->mcf->redis->sentinels->nelts;
    bit = (ngx_uint_t) 1 << sc->index;

    ngx_http_mg_sentinel_close(sc);

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_log_error(((s->logged & bit) ? NGX_LOG_INFO : NGX_LOG_ERR), rd->log,
                  err, "model gateway: redis sentinel %V%s: %s",
                  &addr[sc->index].name,
                  sc->subscribe ? " (subscription)" : "", why);

    s->logged |= bit;
    sc->index = (sc->index + 1) % n;

    if (sc->subscribe) {
        ngx_add_timer(&sc->retry, sc->backoff + ngx_random() % 50);
        sc->backoff = ngx_min(sc->backoff * 2, 5000);
        return;
    }

    if (++sc->tried < n) {
        ngx_http_mg_sentinel_start(sc);
        return;
    }

    ngx_http_mg_redis_discovered(rd, NULL, 0);
}


static void
ngx_http_mg_sentinel_close(ngx_http_mg_sentinel_conn_t *sc)
{
    ngx_http_model_gateway_client_close(&sc->peer);

    if (sc->reader) {
        redisReaderFree(sc->reader);
        sc->reader = NULL;
    }

    if (sc->out) {
        ngx_explicit_memzero(sc->out, sc->out_len);
        ngx_free(sc->out);
        sc->out = NULL;
    }

    sc->active = 0;
    sc->subscribed = 0;
}


static void
ngx_http_mg_sentinel_retry_handler(ngx_event_t *ev)
{
    ngx_http_mg_sentinel_conn_t *sc = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_http_mg_sentinel_start(sc);
}
