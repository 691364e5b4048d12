
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
 *
 * This file is the command pipeline: commands appended, flushed and
 * answered, the command timer, and the API of ngx_http_model_gateway_redis.h;
 * the connection's life is in _redis_conn.c.
 */


#include "ngx_http_model_gateway_redis_conn.h"


void
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

            /* MOVED, ASK, TRYAGAIN: the command goes on, elsewhere */

            if (reply->type == REDIS_REPLY_ERROR && rd->cluster
                && !cmd->internal
                && ngx_http_mg_cluster_redirect(rd, cmd, reply) == NGX_OK)
            {
                freeReplyObject(reply);

                if (rd->stats) {
                    ngx_http_mg_redis_count_inflight(rd);
                }

                continue;
            }

            if (rd->stats && !cmd->internal) {
                ngx_http_mg_redis_count_inflight(rd);

                if (reply->type == REDIS_REPLY_ERROR) {
                    (void) ngx_atomic_fetch_add(&rd->stats->errors, 1);
                }

                ngx_http_model_gateway_hist_add(&rd->stats->latency,
                    ngx_http_model_gateway_latency_bounds,
                    NGX_HTTP_MG_LATENCY_BUCKETS,
                    ngx_current_msec + rcf->timeout - cmd->deadline);
            }

            if (reply->type == REDIS_REPLY_ERROR && reply->len >= 8
                && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
                && cmd->script >= 0 && !cmd->retried)
            {
                /* a flushed script cache: the same command, as EVAL */

                freeReplyObject(reply);
                cmd->retried = 1;

                /* in a cluster, after ASKING again if it was asked */

                if ((rd->cluster ? ngx_http_mg_cluster_forward(rd, cmd)
                                 : ngx_http_mg_redis_send(rd, cmd, 1))
                    != NGX_OK)
                {
                    ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
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

    /*
     * a cluster's node that its map no longer names, idle now: closed
     * here, once its read loop is over
     */

    if (rd->retired && rd->ninflight == 0 && rd->nwaiting == 0
        && rd->state == NGX_HTTP_MG_REDIS_READY)
    {
        ngx_http_mg_redis_close(rd);
        rd->state = NGX_HTTP_MG_REDIS_DOWN;
        return;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_mg_redis_fail(rd, 0, "event error");
        return;
    }

    ngx_http_mg_redis_arm_timer(rd);
}


void
ngx_http_mg_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_mg_redis_t *rd = ev->data;

    if (rd->stats) {
        (void) ngx_atomic_fetch_add(&rd->stats->timeouts, 1);
    }

    *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                  "command timed out after %M ms", rd->mcf->redis->timeout)
        = '\0';

    ngx_http_mg_redis_fail(rd, 0, (char *) rd->why);
}


/* one timer for the oldest command in flight */

void
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


ngx_int_t
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


void
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


/*
 * Sends a command on the connection (again, after NOSCRIPT or a cluster
 * redirect): as EVALSHA, as EVAL, or as the plain command it is.
 */

ngx_int_t
ngx_http_mg_redis_send(ngx_http_mg_redis_t *rd, ngx_http_mg_redis_cmd_t *cmd,
    ngx_uint_t as_eval)
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
    lens[argc++] = ngx_sprintf(nkeys, "%ui", cmd->nkeys) - nkeys;

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

    if (rd->stats) {
        (void) ngx_atomic_fetch_add(&rd->stats->commands, 1);
        ngx_http_mg_redis_count_inflight(rd);
    }

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
    return ngx_http_mg_redis_script_keys((ngx_uint_t) -1, 0, nargs, args,
                                         handler, data);
}


ngx_http_mg_redis_cmd_t *
ngx_http_mg_redis_script(ngx_uint_t script, ngx_uint_t nargs,
    ngx_str_t *args, ngx_http_mg_redis_handler_pt handler, void *data)
{
    ngx_uint_t  nkeys;

    nkeys = ngx_http_mg_redis_scripts[script].nkeys;

    return ngx_http_mg_redis_script_keys(script, nkeys, nargs, args, handler,
                                         data);
}


/* a script whose number of keys varies: the first nkeys of args */

ngx_http_mg_redis_cmd_t *
ngx_http_mg_redis_script_keys(ngx_uint_t script, ngx_uint_t nkeys,
    ngx_uint_t nargs, ngx_str_t *args, ngx_http_mg_redis_handler_pt handler,
    void *data)
{
    ngx_str_t            *key;
    ngx_http_mg_redis_t  *rd;

    rd = ngx_http_mg_redis;

    if (ngx_http_mg_cluster) {

        /* the node that serves the slot of the (first) key */

        key = ngx_http_mg_redis_key((ngx_int_t) script, nkeys, nargs, args);

        if (key == NULL || nargs > NGX_HTTP_MG_REDIS_MAX_ARGS) {
            return NULL;
        }

        rd = ngx_http_mg_cluster_route(key);
    }

    if (rd == NULL) {
        return NULL;
    }

    return ngx_http_mg_redis_queue(rd, (ngx_int_t) script, nkeys, nargs,
                                   args, handler, data);
}


/* the command on one connection, its arguments copied */

ngx_http_mg_redis_cmd_t *
ngx_http_mg_redis_queue(ngx_http_mg_redis_t *rd, ngx_int_t script,
    ngx_uint_t nkeys, ngx_uint_t nargs, ngx_str_t *args,
    ngx_http_mg_redis_handler_pt handler, void *data)
{
    u_char                   *p;
    size_t                    len;
    ngx_uint_t                i;
    ngx_http_mg_redis_cmd_t  *cmd;

    if (rd->state != NGX_HTTP_MG_REDIS_READY
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

    /* an empty argument (no tenant) may have no data at all */

    for (i = 0; i < nargs; i++) {
        cmd->args[i].data = p;
        cmd->args[i].len = args[i].len;

        if (args[i].len) {
            p = ngx_cpymem(p, args[i].data, args[i].len);
        }
    }

    cmd->nargs = nargs;
    cmd->script = script;
    cmd->nkeys = nkeys;
    cmd->handler = handler;
    cmd->data = data;

    if (ngx_http_mg_redis_send(rd, cmd, 0) != NGX_OK) {
        ngx_http_mg_redis_release(rd, cmd);
        return NULL;
    }

    return cmd;
}


/*
 * The key a command is routed by in a cluster, NULL: none.  A script's
 * first key; a plain command's first argument after its name.
 */

ngx_str_t *
ngx_http_mg_redis_key(ngx_int_t script, ngx_uint_t nkeys, ngx_uint_t nargs,
    ngx_str_t *args)
{
    if (script >= 0) {
        return nkeys ? &args[0] : NULL;
    }

    return (nargs > 1) ? &args[1] : NULL;
}


/* the command is over without a reply: its waiter learns it, if any */

void
ngx_http_mg_redis_answer(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, ngx_int_t rc)
{
    if (cmd->data) {
        cmd->handler(cmd->data, NULL, rc);
    }

    ngx_http_mg_redis_release(rd, cmd);
}


/* what the worker has in flight, over every connection of a cluster */

void
ngx_http_mg_redis_count_inflight(ngx_http_mg_redis_t *rd)
{
    rd->stats->inflight = rd->cluster
                          ? ngx_http_mg_cluster_inflight(rd->cluster)
                          : rd->ninflight;
}


void
ngx_http_mg_redis_cancel(ngx_http_mg_redis_cmd_t *cmd)
{
    cmd->data = NULL;
}


ngx_http_mg_redis_cmd_t *
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


void
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
