
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Redis client: one connection per worker, owned by nginx (its event
 * loop, its timers), with hiredis used only for the protocol (the reply
 * reader and the command formatter).  Commands are pipelined and answered
 * in order; one timer watches the oldest command in flight, and a command
 * that times out drops the connection and fails every waiter at once, so
 * no request ever waits longer than the command timeout.  Reconnects back
 * off exponentially.  Waiters live in worker memory, never in a request's
 * pool: a request that goes away only clears its waiter's data pointer.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"

#include <hiredis/hiredis.h>


#define NGX_HTTP_MG_REDIS_DOWN        0
#define NGX_HTTP_MG_REDIS_CONNECTING  1
#define NGX_HTTP_MG_REDIS_READY       2

#define NGX_HTTP_MG_REDIS_MAX_ARGS    8


struct ngx_http_mg_redis_cmd_s {
    ngx_queue_t                    queue;
    ngx_http_mg_redis_handler_pt   handler;
    void                          *data;        /* NULL: cancelled */
    ngx_msec_t                     deadline;
    ngx_int_t                      script;      /* -1: not a script */
    ngx_uint_t                     nargs;
    ngx_str_t                      args[NGX_HTTP_MG_REDIS_MAX_ARGS];
    unsigned                       internal:1;
    unsigned                       retried:1;
};


typedef struct {
    ngx_http_model_gateway_main_conf_t  *mcf;
    ngx_log_t                           *log;
    ngx_uint_t                           state;
    ngx_peer_connection_t                peer;
    redisReader                         *reader;
    ngx_queue_t                          inflight;
    ngx_uint_t                           ninflight;
    ngx_queue_t                          free;
    ngx_buf_t                           *out;
    ngx_event_t                          timer;     /* oldest command */
    ngx_event_t                          reconnect;
    ngx_msec_t                           backoff;
    ngx_uint_t                           handshake; /* replies pending */
    ngx_int_t                            clock_offset; /* Redis - ours, ms */
    size_t                               reply_size; /* read of the next */
    ngx_resolver_t                      *resolver;
    ngx_msec_t                           resolver_timeout;
    ngx_sockaddr_t                       sockaddr;  /* last resolved */
    socklen_t                            socklen;
    u_char                               text[NGX_SOCKADDR_STRLEN];
    ngx_str_t                            name;
    ngx_log_t                            connect_log;
    u_char                               why[256];
    unsigned                             logged_down:1;
    unsigned                             resolving:1;
} ngx_http_mg_redis_t;


static ngx_http_mg_redis_t  *ngx_http_mg_redis;


static void ngx_http_mg_redis_connect(ngx_http_mg_redis_t *rd);
static void ngx_http_mg_redis_resolve(ngx_http_mg_redis_t *rd);
static void ngx_http_mg_redis_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_http_mg_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_mg_redis_write_handler(ngx_event_t *ev);
static void ngx_http_mg_redis_read_handler(ngx_event_t *ev);
static void ngx_http_mg_redis_connected(ngx_http_mg_redis_t *rd);
#if (NGX_HTTP_SSL)
static void ngx_http_mg_redis_ssl_handshake(ngx_connection_t *c);
#endif
static void ngx_http_mg_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_mg_redis_fail(ngx_http_mg_redis_t *rd, ngx_err_t err,
    const char *why);
static void ngx_http_mg_redis_close(ngx_http_mg_redis_t *rd);
static ngx_int_t ngx_http_mg_redis_append(ngx_http_mg_redis_t *rd,
    ngx_uint_t argc, const char **argv, const size_t *argvlen);
static ngx_int_t ngx_http_mg_redis_send_cmd(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, ngx_uint_t as_eval);
static ngx_http_mg_redis_cmd_t *ngx_http_mg_redis_alloc(
    ngx_http_mg_redis_t *rd);
static void ngx_http_mg_redis_release(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd);
static void ngx_http_mg_redis_flush(ngx_http_mg_redis_t *rd);
static void ngx_http_mg_redis_arm_timer(ngx_http_mg_redis_t *rd);
static void ngx_http_mg_redis_handshake_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_mg_redis_time_reply(void *data, redisReply *reply,
    ngx_int_t rc);


ngx_int_t
ngx_http_mg_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_http_mg_redis_t       *rd;
    ngx_http_conf_ctx_t       *hctx;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_http_mg_redis = NULL;

    if (mcf->redis == NULL) {
        return NGX_OK;
    }

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_http_mg_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->mcf = mcf;
    rd->log = cycle->log;
    rd->state = NGX_HTTP_MG_REDIS_DOWN;
    rd->backoff = 100;

    ngx_queue_init(&rd->inflight);
    ngx_queue_init(&rd->free);

    rd->out = ngx_create_temp_buf(cycle->pool, 16384);
    if (rd->out == NULL) {
        return NGX_ERROR;
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


void
ngx_http_mg_redis_exit_process(void)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_t      *rd;
    ngx_http_mg_redis_cmd_t  *cmd;

    rd = ngx_http_mg_redis;

    if (rd == NULL) {
        return;
    }

    /*
     * the process ends: nothing is logged (Redis is not down) and no
     * waiter is resumed into a fallback that could not finish anyway; a
     * graceful exit has none left, a fast one abandons its requests
     */

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

    ngx_http_mg_redis = NULL;
}


ngx_uint_t
ngx_http_mg_redis_ready(void)
{
    return ngx_http_mg_redis
           && ngx_http_mg_redis->state == NGX_HTTP_MG_REDIS_READY;
}


static void
ngx_http_mg_redis_connect(ngx_http_mg_redis_t *rd)
{
    ngx_err_t                       err;
    ngx_int_t                       rc;
    ngx_connection_t               *c;
    ngx_http_mg_redis_conf_t       *rcf;

    rcf = rd->mcf->redis;

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

    if (ngx_exiting || ngx_terminate) {
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


static void
ngx_http_mg_redis_write_handler(ngx_event_t *wev)
{
    int                        err;
    socklen_t                  len;
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
        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

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

            if (rcf->host.len) {
                u_char  name[256];

                ngx_cpystrn(name, rcf->host.data,
                            ngx_min(rcf->host.len + 1, sizeof(name)));
                (void) SSL_set_tlsext_host_name(c->ssl->connection,
                                                (char *) name);
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

        ngx_http_mg_redis_connected(rd);
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
                          "(%l:%s)", rc, X509_verify_cert_error_string(rc));
            ngx_http_mg_redis_fail(rd, 0, "TLS certificate not trusted");
            return;
        }

        if (ngx_ssl_check_host(c, &rcf->host) != NGX_OK) {
            ngx_log_error((rd->logged_down ? NGX_LOG_INFO : NGX_LOG_ERR),
                          rd->log, 0,
                          "model gateway: redis certificate does not match "
                          "\"%V\"", &rcf->host);
            ngx_http_mg_redis_fail(rd, 0, "TLS certificate name mismatch");
            return;
        }
    }

    c->read->handler = ngx_http_mg_redis_read_handler;
    c->write->handler = ngx_http_mg_redis_write_handler;

    ngx_http_mg_redis_connected(rd);
}

#endif


/*
 * AUTH, SELECT and the scripts go first, pipelined; the connection is
 * ready when their replies came back without an error.
 */

static void
ngx_http_mg_redis_connected(ngx_http_mg_redis_t *rd)
{
    size_t                     lens[3];
    ngx_uint_t                 i, argc;
    const char                *argv[3];
    ngx_http_mg_redis_cmd_t   *cmd;
    ngx_http_mg_redis_conf_t  *rcf;
    u_char                     db[NGX_INT_T_LEN];

    rcf = rd->mcf->redis;
    rd->handshake = 0;

    if (rcf->password.len) {
        argc = 0;
        argv[argc] = "AUTH"; lens[argc++] = 4;

        if (rcf->user.len) {
            argv[argc] = (char *) rcf->user.data;
            lens[argc++] = rcf->user.len;
        }

        argv[argc] = (char *) rcf->password.data;
        lens[argc++] = rcf->password.len;

        if (ngx_http_mg_redis_append(rd, argc, argv, lens) != NGX_OK) {
            goto failed;
        }

        rd->handshake++;
    }

    if (rcf->database) {
        argv[0] = "SELECT"; lens[0] = 6;
        argv[1] = (char *) db;
        lens[1] = ngx_sprintf(db, "%ui", rcf->database) - db;

        if (ngx_http_mg_redis_append(rd, 2, argv, lens) != NGX_OK) {
            goto failed;
        }

        rd->handshake++;
    }

    for (i = 0; i < NGX_HTTP_MG_REDIS_NSCRIPTS; i++) {
        argv[0] = "SCRIPT"; lens[0] = 6;
        argv[1] = "LOAD"; lens[1] = 4;
        argv[2] = ngx_http_mg_redis_scripts[i].body;
        lens[2] = ngx_strlen(argv[2]);

        if (ngx_http_mg_redis_append(rd, 3, argv, lens) != NGX_OK) {
            goto failed;
        }

        rd->handshake++;
    }

    /* Redis' clock, so that every node measures pin ages alike */

    argv[0] = "TIME"; lens[0] = 4;

    if (ngx_http_mg_redis_append(rd, 1, argv, lens) != NGX_OK) {
        goto failed;
    }

    rd->handshake++;

    for (i = 0; i < rd->handshake; i++) {
        cmd = ngx_http_mg_redis_alloc(rd);
        if (cmd == NULL) {
            goto failed;
        }

        cmd->internal = 1;
        cmd->handler = (i == rd->handshake - 1)
                       ? ngx_http_mg_redis_time_reply
                       : ngx_http_mg_redis_handshake_reply;
        cmd->data = rd;
        cmd->deadline = ngx_current_msec + rcf->timeout;

        ngx_queue_insert_tail(&rd->inflight, &cmd->queue);
        rd->ninflight++;
    }

    if (rd->handshake == 0) {
        rd->state = NGX_HTTP_MG_REDIS_READY;
        rd->backoff = 100;
        rd->logged_down = 0;
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "model gateway: redis %V is up", &rd->name);
    }

    ngx_http_mg_redis_arm_timer(rd);
    ngx_http_mg_redis_flush(rd);

    return;

failed:

    ngx_http_mg_redis_fail(rd, 0, "cannot prepare the connection");
}


/*
 * The offset between Redis' clock and this worker's, measured when the
 * connection is made (to within a round trip), so that the age of a pin,
 * stamped with Redis' clock, is the same on every node.
 */

static void
ngx_http_mg_redis_time_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_mg_redis_t *rd = data;

    ngx_int_t    sec, usec;
    ngx_time_t  *tp;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        sec = ngx_atoi((u_char *) reply->element[0]->str,
                       reply->element[0]->len);
        usec = ngx_atoi((u_char *) reply->element[1]->str,
                        reply->element[1]->len);

        if (sec != NGX_ERROR && usec != NGX_ERROR) {
            ngx_time_update();
            tp = ngx_timeofday();

            rd->clock_offset = (sec * 1000 + usec / 1000)
                               - (ngx_int_t) (tp->sec * 1000 + tp->msec);
        }
    }

    ngx_http_mg_redis_handshake_reply(data, reply, rc);
}


ngx_int_t
ngx_http_mg_redis_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_int_t) (tp->sec * 1000 + tp->msec)
           + (ngx_http_mg_redis ? ngx_http_mg_redis->clock_offset : 0);
}


static void
ngx_http_mg_redis_handshake_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_mg_redis_t *rd = data;

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* never the password: only Redis' own error text */

        *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                      "connection setup refused: %*s",
                      (size_t) ngx_min(reply->len, 200), reply->str)
            = '\0';
        rd->handshake = (ngx_uint_t) -1;
        return;
    }

    if (--rd->handshake == 0) {
        rd->state = NGX_HTTP_MG_REDIS_READY;
        rd->backoff = 100;
        rd->logged_down = 0;
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "model gateway: redis %V is up", &rd->name);
    }
}


static void
ngx_http_mg_redis_read_handler(ngx_event_t *rev)
{
    void                      *r;
    size_t                     pending;
    ssize_t                    n;
    ngx_queue_t               *q;
    redisReply                *reply;
    ngx_connection_t          *c;
    ngx_http_mg_redis_t       *rd;
    ngx_http_mg_redis_cmd_t   *cmd;
    ngx_http_mg_redis_conf_t  *rcf;
    u_char                     buf[16384];

    c = rev->data;
    rd = c->data;
    rcf = rd->mcf->redis;

    if (rev->timedout) {
        rev->timedout = 0;
        return;
    }

    for ( ;; ) {

        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_http_mg_redis_fail(rd, 0, "connection closed");
            return;
        }

        if (n == NGX_ERROR) {

            /* recv()'s own error: nginx has only logged it at "info" */

            ngx_http_mg_redis_fail(rd, ngx_socket_errno, "read error");
            return;
        }

        if (redisReaderFeed(rd->reader, (char *) buf, n) != REDIS_OK) {
            ngx_http_mg_redis_fail(rd, 0, "protocol error");
            return;
        }

        for ( ;; ) {
            r = NULL;
            pending = rd->reader->len - rd->reader->pos;

            if (redisReaderGetReply(rd->reader, &r) != REDIS_OK) {
                ngx_http_mg_redis_fail(rd, 0, "protocol error");
                return;
            }

            /*
             * hiredis 0.14 buffers a reply of any size: the bytes of the
             * reply being read (parsed, or still buffered) are counted,
             * and one above the cap drops the connection, at most one
             * read past it
             */

            rd->reply_size += pending - (rd->reader->len - rd->reader->pos);

            if (rd->reply_size + (r ? 0 : rd->reader->len - rd->reader->pos)
                > rcf->max_reply_size)
            {
                if (r) {
                    freeReplyObject(r);
                }

                *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                              "reply larger than "
                              "model_gateway_redis_max_reply_size (%uz)",
                              rcf->max_reply_size)
                    = '\0';

                ngx_http_mg_redis_fail(rd, 0, (char *) rd->why);
                return;
            }

            if (r == NULL) {
                break;
            }

            rd->reply_size = 0;
            reply = r;

            if (ngx_queue_empty(&rd->inflight)) {
                freeReplyObject(reply);
                ngx_http_mg_redis_fail(rd, 0, "unexpected reply");
                return;
            }

            q = ngx_queue_head(&rd->inflight);
            ngx_queue_remove(q);
            rd->ninflight--;

            cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);

            if (reply->type == REDIS_REPLY_ERROR && reply->len >= 8
                && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
                && cmd->script >= 0 && !cmd->retried)
            {
                /* a flushed script cache: the same command, as EVAL */

                freeReplyObject(reply);
                cmd->retried = 1;

                if (ngx_http_mg_redis_send_cmd(rd, cmd, 1) != NGX_OK) {
                    if (cmd->data) {
                        cmd->handler(cmd->data, NULL, NGX_ERROR);
                    }

                    ngx_http_mg_redis_release(rd, cmd);
                }

                continue;
            }

            if (reply->type == REDIS_REPLY_ERROR
                && ((reply->len >= 8
                     && ngx_strncmp(reply->str, "READONLY", 8) == 0)
                    || (reply->len >= 7
                        && ngx_strncmp(reply->str, "LOADING", 7) == 0)))
            {
                /*
                 * a replica promoted or a server still loading: a managed
                 * Redis failover; the address may now lead elsewhere
                 */

                *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                              "redis answered \"%*s\", reconnecting",
                              (size_t) ngx_min(reply->len, 80), reply->str)
                    = '\0';

                if (cmd->data) {
                    cmd->handler(cmd->data, NULL, NGX_ERROR);
                }

                ngx_http_mg_redis_release(rd, cmd);
                freeReplyObject(reply);
                ngx_http_mg_redis_fail(rd, 0, (char *) rd->why);
                return;
            }

            if (cmd->data) {
                cmd->handler(cmd->data, reply, NGX_OK);
            }

            freeReplyObject(reply);
            ngx_http_mg_redis_release(rd, cmd);

            if (rd->handshake == (ngx_uint_t) -1) {
                ngx_http_mg_redis_fail(rd, 0, (char *) rd->why);
                return;
            }
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_mg_redis_fail(rd, 0, "event error");
        return;
    }

    ngx_http_mg_redis_arm_timer(rd);
}


static void
ngx_http_mg_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_mg_redis_t *rd = ev->data;

    *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                  "command timed out after %M ms", rd->mcf->redis->timeout)
        = '\0';

    ngx_http_mg_redis_fail(rd, 0, (char *) rd->why);
}


/* one timer for the oldest command in flight */

static void
ngx_http_mg_redis_arm_timer(ngx_http_mg_redis_t *rd)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_cmd_t  *cmd;

    if (ngx_queue_empty(&rd->inflight)) {
        if (rd->timer.timer_set) {
            ngx_del_timer(&rd->timer);
        }

        return;
    }

    q = ngx_queue_head(&rd->inflight);
    cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);

    ngx_add_timer(&rd->timer, (cmd->deadline > ngx_current_msec)
                              ? cmd->deadline - ngx_current_msec : 1);
}


/*
 * Drops the connection, fails every waiter at once and schedules a
 * reconnect with exponential backoff.  An outage is logged once, at
 * "error", when it starts (and "is up" when it ends); the failed
 * reconnect attempts in between are logged at "info".
 */

static void
ngx_http_mg_redis_fail(ngx_http_mg_redis_t *rd, ngx_err_t err,
    const char *why)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_cmd_t  *cmd;

    ngx_http_mg_redis_close(rd);

    if (!rd->logged_down) {
        ngx_log_error(NGX_LOG_ERR, rd->log, err,
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

        if (cmd->data) {
            cmd->handler(cmd->data, NULL, NGX_ERROR);
        }

        ngx_http_mg_redis_release(rd, cmd);
    }

    if (ngx_exiting || ngx_terminate || rd->reconnect.timer_set
        || rd->resolving)
    {
        return;
    }

    ngx_add_timer(&rd->reconnect, rd->backoff + ngx_random() % 50);

    rd->backoff = ngx_min(rd->backoff * 2, 5000);
}


/* closes the connection, if any; the waiters stay in the queue */

static void
ngx_http_mg_redis_close(ngx_http_mg_redis_t *rd)
{
    ngx_connection_t  *c;

    c = rd->peer.connection;

    if (c) {
#if (NGX_HTTP_SSL)
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            c->ssl->no_send_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }
#endif
        if (c->pool) {
            ngx_destroy_pool(c->pool);
        }

        ngx_close_connection(c);
        rd->peer.connection = NULL;
    }

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


static ngx_int_t
ngx_http_mg_redis_append(ngx_http_mg_redis_t *rd, ngx_uint_t argc,
    const char **argv, const size_t *argvlen)
{
    int         len;
    char       *cmd;
    size_t      size, used;
    ngx_buf_t  *b;

    len = redisFormatCommandArgv(&cmd, (int) argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    b = rd->out;

    if ((size_t) (b->end - b->last) < (size_t) len) {

        /* compact, then grow within the configured bound */

        used = b->last - b->pos;
        ngx_memmove(b->start, b->pos, used);
        b->pos = b->start;
        b->last = b->start + used;

        if ((size_t) (b->end - b->last) < (size_t) len) {
            size = ngx_max(2 * (size_t) (b->end - b->start), used + len);

            if (size > 4 * 1024 * 1024) {
                free(cmd);
                return NGX_ERROR;
            }

            b = ngx_create_temp_buf(ngx_cycle->pool, size);
            if (b == NULL) {
                free(cmd);
                return NGX_ERROR;
            }

            b->last = ngx_cpymem(b->pos, rd->out->pos, used);
            rd->out = b;
        }
    }

    b->last = ngx_cpymem(b->last, cmd, len);
    free(cmd);

    return NGX_OK;
}


static void
ngx_http_mg_redis_flush(ngx_http_mg_redis_t *rd)
{
    ssize_t            n;
    ngx_buf_t         *b;
    ngx_connection_t  *c;

    c = rd->peer.connection;
    b = rd->out;

    if (c == NULL) {
        return;
    }

    while (b->pos < b->last) {
        n = c->send(c, b->pos, b->last - b->pos);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            ngx_http_mg_redis_fail(rd, 0, "write error");
            return;
        }

        b->pos += n;
    }

    if (b->pos == b->last) {
        b->pos = b->start;
        b->last = b->start;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_http_mg_redis_fail(rd, 0, "event error");
    }
}


static ngx_int_t
ngx_http_mg_redis_send_cmd(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, ngx_uint_t as_eval)
{
    ngx_uint_t                 i, argc;
    const char                *argv[NGX_HTTP_MG_REDIS_MAX_ARGS + 3];
    size_t                     lens[NGX_HTTP_MG_REDIS_MAX_ARGS + 3];
    u_char                     nkeys[NGX_INT_T_LEN];
    ngx_http_mg_redis_script_t  *s;

    argc = 0;

    if (cmd->script < 0) {

        /* a plain command: its name is the first argument */

        for (i = 0; i < cmd->nargs; i++) {
            argv[argc] = (char *) cmd->args[i].data;
            lens[argc++] = cmd->args[i].len;
        }

        goto send;
    }

    s = &ngx_http_mg_redis_scripts[cmd->script];

    if (as_eval) {
        argv[argc] = "EVAL"; lens[argc++] = 4;
        argv[argc] = s->body; lens[argc++] = ngx_strlen(s->body);

    } else {
        argv[argc] = "EVALSHA"; lens[argc++] = 7;
        argv[argc] = s->sha1; lens[argc++] = 40;
    }

    argv[argc] = (char *) nkeys;
    lens[argc++] = ngx_sprintf(nkeys, "%ui", s->nkeys) - nkeys;

    for (i = 0; i < cmd->nargs; i++) {
        argv[argc] = (char *) cmd->args[i].data;
        lens[argc++] = cmd->args[i].len;
    }

send:

    if (ngx_http_mg_redis_append(rd, argc, argv, lens) != NGX_OK) {
        return NGX_ERROR;
    }

    cmd->deadline = ngx_current_msec + rd->mcf->redis->timeout;

    ngx_queue_insert_tail(&rd->inflight, &cmd->queue);
    rd->ninflight++;

    if (rd->ninflight == 1) {
        ngx_http_mg_redis_arm_timer(rd);
    }

    /*
     * written from a posted event: commands of one event loop iteration
     * go out together, and a write error never calls a handler back from
     * inside the call that queued its command
     */

    if (rd->peer.connection) {
        ngx_post_event(rd->peer.connection->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/*
 * Runs one of the module's scripts.  Arguments are copied.  NULL means
 * Redis cannot take the command now (down, or too many in flight) and the
 * handler will not be called; otherwise the handler is called exactly
 * once, from a later event (rc NGX_ERROR on a timeout or a lost
 * connection), unless the command is cancelled first.
 */

ngx_http_mg_redis_cmd_t *
ngx_http_mg_redis_command(ngx_uint_t nargs, ngx_str_t *args,
    ngx_http_mg_redis_handler_pt handler, void *data)
{
    return ngx_http_mg_redis_script((ngx_uint_t) -1, nargs, args, handler,
                                    data);
}


ngx_http_mg_redis_cmd_t *
ngx_http_mg_redis_script(ngx_uint_t script, ngx_uint_t nargs,
    ngx_str_t *args, ngx_http_mg_redis_handler_pt handler, void *data)
{
    u_char                   *p;
    size_t                    len;
    ngx_uint_t                i;
    ngx_http_mg_redis_t      *rd;
    ngx_http_mg_redis_cmd_t  *cmd;

    rd = ngx_http_mg_redis;

    if (rd == NULL || rd->state != NGX_HTTP_MG_REDIS_READY
        || nargs > NGX_HTTP_MG_REDIS_MAX_ARGS
        || rd->ninflight >= rd->mcf->redis->max_inflight)
    {
        return NULL;
    }

    cmd = ngx_http_mg_redis_alloc(rd);
    if (cmd == NULL) {
        return NULL;
    }

    len = 0;
    for (i = 0; i < nargs; i++) {
        len += args[i].len;
    }

    p = ngx_alloc(len ? len : 1, rd->log);
    if (p == NULL) {
        ngx_http_mg_redis_release(rd, cmd);
        return NULL;
    }

    for (i = 0; i < nargs; i++) {
        cmd->args[i].data = p;
        cmd->args[i].len = args[i].len;
        p = ngx_cpymem(p, args[i].data, args[i].len);
    }

    cmd->nargs = nargs;
    cmd->script = (ngx_int_t) script;
    cmd->handler = handler;
    cmd->data = data;

    if (ngx_http_mg_redis_send_cmd(rd, cmd, 0) != NGX_OK) {
        ngx_http_mg_redis_release(rd, cmd);
        return NULL;
    }

    return cmd;
}


void
ngx_http_mg_redis_cancel(ngx_http_mg_redis_cmd_t *cmd)
{
    cmd->data = NULL;
}


static ngx_http_mg_redis_cmd_t *
ngx_http_mg_redis_alloc(ngx_http_mg_redis_t *rd)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_cmd_t  *cmd;

    if (!ngx_queue_empty(&rd->free)) {
        q = ngx_queue_head(&rd->free);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);

    } else {
        cmd = ngx_alloc(sizeof(ngx_http_mg_redis_cmd_t), rd->log);
        if (cmd == NULL) {
            return NULL;
        }
    }

    ngx_memzero(cmd, sizeof(ngx_http_mg_redis_cmd_t));
    cmd->script = -1;

    return cmd;
}


static void
ngx_http_mg_redis_release(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd)
{
    if (cmd->nargs) {
        ngx_free(cmd->args[0].data);
    }

    cmd->nargs = 0;
    cmd->data = NULL;

    ngx_queue_insert_head(&rd->free, &cmd->queue);
}
