
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A worker's Redis connection, once connected: the handshake (AUTH,
 * SELECT, the scripts, Redis' clock, its eviction policy and, with
 * sentinels, its ROLE) pipelined, and the connection ready when every
 * reply came back right.  The connection's life is _redis_conn.c's.
 */


#include "ngx_http_model_gateway_redis_conn.h"


static void ngx_http_mg_redis_handshake_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_mg_redis_policy_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_mg_redis_time_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_mg_redis_role_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_mg_redis_up(ngx_http_mg_redis_t *rd);


/*
 * AUTH, SELECT and the scripts go first, pipelined; the connection is
 * ready when their replies came back without an error.
 */

void
ngx_http_mg_redis_handshake(ngx_http_mg_redis_t *rd)
{
    size_t                        lens[3];
    ngx_uint_t                    i, argc;
    const char                   *argv[3];
    ngx_http_mg_redis_cmd_t      *cmd;
    ngx_http_mg_redis_conf_t     *rcf;
    ngx_http_mg_redis_handler_pt  handlers[NGX_HTTP_MG_REDIS_NSCRIPTS + 5];
    u_char                        db[NGX_INT_T_LEN];

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

        handlers[rd->handshake++] = ngx_http_mg_redis_handshake_reply;
    }

    if (rcf->database) {
        argv[0] = "SELECT"; lens[0] = 6;
        argv[1] = (char *) db;
        lens[1] = ngx_sprintf(db, "%ui", rcf->database) - db;

        if (ngx_http_mg_redis_append(rd, 2, argv, lens) != NGX_OK) {
            goto failed;
        }

        handlers[rd->handshake++] = ngx_http_mg_redis_handshake_reply;
    }

    /*
     * the address a sentinel gave may be stale (a failover under way):
     * only a node that says it is the primary is used
     */

    if (rcf->sentinels) {
        argv[0] = "ROLE"; lens[0] = 4;

        if (ngx_http_mg_redis_append(rd, 1, argv, lens) != NGX_OK) {
            goto failed;
        }

        handlers[rd->handshake++] = ngx_http_mg_redis_role_reply;
    }

    for (i = 0; i < NGX_HTTP_MG_REDIS_NSCRIPTS; i++) {
        argv[0] = "SCRIPT"; lens[0] = 6;
        argv[1] = "LOAD"; lens[1] = 4;
        argv[2] = ngx_http_mg_redis_scripts[i].body;
        lens[2] = ngx_strlen(argv[2]);

        if (ngx_http_mg_redis_append(rd, 3, argv, lens) != NGX_OK) {
            goto failed;
        }

        handlers[rd->handshake++] = ngx_http_mg_redis_handshake_reply;
    }

    /* its eviction policy, which gateway-held memory depends on */

    argv[0] = "INFO"; lens[0] = 4;
    argv[1] = "memory"; lens[1] = 6;

    if (ngx_http_mg_redis_append(rd, 2, argv, lens) != NGX_OK) {
        goto failed;
    }

    handlers[rd->handshake++] = ngx_http_mg_redis_policy_reply;

    /* Redis' clock, so that every node measures pin ages alike */

    argv[0] = "TIME"; lens[0] = 4;

    if (ngx_http_mg_redis_append(rd, 1, argv, lens) != NGX_OK) {
        goto failed;
    }

    handlers[rd->handshake++] = ngx_http_mg_redis_time_reply;

    for (i = 0; i < rd->handshake; i++) {
        cmd = ngx_http_mg_redis_alloc(rd);
        if (cmd == NULL) {
            goto failed;
        }

        cmd->internal = 1;
        cmd->handler = handlers[i];
        cmd->data = rd;
        cmd->deadline = ngx_current_msec + rcf->timeout;

        ngx_queue_insert_tail(&rd->inflight, &cmd->queue);
        rd->ninflight++;
    }

    if (rd->handshake == 0) {
        ngx_http_mg_redis_up(rd);
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


/*
 * Redis that evicts keys drops what the gateway holds (pins, ids, the
 * items of Responses chains and conversations) without a word: a chain
 * read later misses items, which is an error then, never a shorter
 * history.  noeviction is what the gateway wants; volatile-* evicts keys
 * with a TTL, which theirs are when model_gateway_response_ttl is set.
 * Said once per connection; an INFO that is refused (renamed on managed
 * Redis) is no reason to refuse the connection.
 */

static void
ngx_http_mg_redis_policy_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_mg_redis_t *rd = data;

    u_char     *p, *end, *v;
    ngx_str_t   policy;

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        p = (u_char *) reply->str;
        end = p + reply->len;

        p = ngx_strlcasestrn(p, end, (u_char *) "maxmemory_policy:",
                             sizeof("maxmemory_policy:") - 2);

        if (p) {
            v = p + sizeof("maxmemory_policy:") - 1;

            for (p = v; p < end && *p != CR && *p != LF; p++) {
                /* void */
            }

            policy.data = v;
            policy.len = p - v;

            if (policy.len >= 8 && ngx_strncmp(v, "allkeys-", 8) == 0) {
                ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                              "model gateway: redis %V evicts any key "
                              "(maxmemory-policy %V): pins, ids and "
                              "gateway-held responses may be lost; use "
                              "noeviction", &rd->name, &policy);

            } else if (policy.len >= 9
                       && ngx_strncmp(v, "volatile-", 9) == 0)
            {
                ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                              "model gateway: redis %V evicts keys with a "
                              "TTL (maxmemory-policy %V): gateway-held "
                              "responses may be lost; use noeviction",
                              &rd->name, &policy);
            }
        }
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* not ours to insist on; TIME's reply ends the handshake */

        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "model gateway: redis %V did not say its "
                      "maxmemory-policy", &rd->name);

        rd->handshake--;
        return;
    }

    ngx_http_mg_redis_handshake_reply(data, reply, rc);
}


/*
 * Redis' clock as the node that holds the key measured it: a cluster's
 * primaries each have theirs, and a pin's age is taken with its own.
 */

ngx_int_t
ngx_http_mg_redis_now_for(ngx_str_t *key)
{
    ngx_time_t  *tp;

    if (ngx_http_mg_cluster == NULL) {
        return ngx_http_mg_redis_now();
    }

    tp = ngx_timeofday();

    return (ngx_int_t) (tp->sec * 1000 + tp->msec)
           + ngx_http_mg_cluster_clock_for(key);
}


ngx_int_t
ngx_http_mg_redis_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_int_t) (tp->sec * 1000 + tp->msec)
           + (ngx_http_mg_redis ? ngx_http_mg_redis->clock_offset
              : ngx_http_mg_cluster ? ngx_http_mg_cluster_clock() : 0);
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
        ngx_http_mg_redis_up(rd);
    }
}


/*
 * ROLE's first element is "master" on the primary; anything else is a
 * failed connect, and the next attempt asks the sentinels again.
 */

static void
ngx_http_mg_redis_role_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_mg_redis_t *rd = data;

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_mg_redis_handshake_reply(data, reply, rc);
        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[0]->len == 6
        && ngx_strncmp(reply->element[0]->str, "master", 6) == 0)
    {
        rd->handshake--;
        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_STRING)
    {
        *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                      "is not the primary (role %*s)",
                      (size_t) ngx_min(reply->element[0]->len, 20),
                      reply->element[0]->str)
            = '\0';

    } else {
        *ngx_snprintf(rd->why, sizeof(rd->why) - 1,
                      "is not the primary (no role)")
            = '\0';
    }

    rd->handshake = (ngx_uint_t) -1;
}


static void
ngx_http_mg_redis_up(ngx_http_mg_redis_t *rd)
{
    rd->state = NGX_HTTP_MG_REDIS_READY;

    if (rd->stats && rd->cluster == NULL) {
        rd->stats->up = 1;
    }

    rd->backoff = 100;
    rd->logged_down = 0;

    if (rd->cluster) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "model gateway: redis cluster node %V is up",
                      &rd->name);

        ngx_http_mg_cluster_node_up(rd);
        return;
    }

    if (rd->sentinel) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "model gateway: redis primary %V via sentinel %V "
                      "is up", &rd->name, ngx_http_mg_sentinel_via(rd));
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "model gateway: redis %V is up", &rd->name);
}
