
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster's answers that send a command elsewhere, or later
 * (_redis.c hands every error reply of a cluster node here first):
 * MOVED updates the slot and the command goes to the node named (the map
 * is read again, reads merged to one per 100 ms under a MOVED storm); ASK
 * sends ASKING and the command to the node named, once; TRYAGAIN sends
 * it again after 25 ms.  A command redirected to a node whose connection
 * is being made (a replica just promoted) waits for it, within the
 * command timeout.  A command follows at most three redirects, each
 * within the command timeout.  CLUSTERDOWN, a redirect not understood or
 * one too many fail the command as a lost connection does: its request
 * falls back, as with one Redis down.
 */


#include "ngx_http_model_gateway_redis_conn.h"
#include "mg_cluster.h"


static void ngx_http_mg_cluster_ignore(void *data, redisReply *reply,
    ngx_int_t rc);


/* the commands redirected to a connection being made: it is, or it failed */

void
ngx_http_mg_cluster_waiting(ngx_http_mg_redis_t *rd, ngx_int_t rc)
{
    ngx_queue_t              *q;
    ngx_http_mg_redis_cmd_t  *cmd;

    while (!ngx_queue_empty(&rd->waiting)) {
        q = ngx_queue_head(&rd->waiting);
        ngx_queue_remove(q);
        rd->nwaiting--;

        cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);

        if (cmd->data == NULL) {
            ngx_http_mg_redis_release(rd, cmd);
            continue;
        }

        if (rc != NGX_OK || ngx_http_mg_cluster_forward(rd, cmd) != NGX_OK) {
            ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        }
    }
}


/*
 * An error reply of a cluster node: NGX_OK when the command goes on
 * (redirected, waiting to be tried again, or failed here), NGX_DECLINED
 * when the reply is its answer.
 *
 *   MOVED <slot> <ip>:<port>   the slot lives there now
 *   ASK <slot> <ip>:<port>     this key is being imported there
 *   TRYAGAIN ...               a multi-key command amid a migration
 *   CLUSTERDOWN ...            the cluster does not serve the slot
 */

ngx_int_t
ngx_http_mg_cluster_redirect(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, redisReply *reply)
{
    int                     kind;
    socklen_t               socklen;
    ngx_sockaddr_t          sa;
    ngx_http_mg_redis_t    *to;
    ngx_http_mg_cluster_t  *cl;
    mg_cluster_redirect_t   r;

    cl = rd->cluster;

    kind = mg_cluster_reply((u_char *) reply->str, reply->len, &r);

    switch (kind) {

    case MG_CLUSTER_DOWN:

        /*
         * the cluster cannot answer for now: to the waiter, as Redis away
         * (it falls back), not as a refusal of its command
         */

        if (cl->stats) {
            (void) ngx_atomic_fetch_add(&cl->stats->errors, 1);
        }

        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        ngx_http_mg_cluster_read(cl);
        return NGX_OK;

    case MG_CLUSTER_TRYAGAIN:

        if (cmd->data == NULL
            || cmd->redirects++ >= NGX_HTTP_MG_CLUSTER_REDIRECTS)
        {
            ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
            return NGX_OK;
        }

        ngx_queue_insert_tail(&cl->retry, &cmd->queue);

        if (!cl->tick.timer_set) {
            ngx_add_timer(&cl->tick, NGX_HTTP_MG_CLUSTER_TICK);
        }

        return NGX_OK;

    case MG_CLUSTER_MOVED:
    case MG_CLUSTER_ASK:
        break;

    case MG_CLUSTER_INVALID:
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "model gateway: redis cluster node %V: a redirect "
                      "not understood: \"%*s\"", &rd->name,
                      (size_t) ngx_min(reply->len, 100), reply->str);

        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        return NGX_OK;

    default: /* MG_CLUSTER_OTHER */
        return NGX_DECLINED;
    }

    if (cl->stats) {
        (void) ngx_atomic_fetch_add((kind == MG_CLUSTER_ASK)
                                    ? &cl->stats->asked
                                    : &cl->stats->moved, 1);
    }

    if (ngx_http_mg_cluster_addr(rd, (u_char *) r.host, r.host_len,
                                 (ngx_int_t) r.port, &sa, &socklen)
        != NGX_OK)
    {
        ngx_log_error((cl->logged_names ? NGX_LOG_INFO : NGX_LOG_ERR),
                      cl->log, 0,
                      "model gateway: redis cluster node %V redirects to "
                      "\"%*s\", not an IP address", &rd->name,
                      (size_t) ngx_min(r.host_len, 100), r.host);
        cl->logged_names = 1;

        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        return NGX_OK;
    }

    to = ngx_http_mg_cluster_node(cl, &sa.sockaddr, socklen);

    if (to == NULL) {
        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        return NGX_OK;
    }

    if (kind == MG_CLUSTER_MOVED) {

        /* the slot moved for good: the map says so before it is read */

        cl->slots[r.slot] = (u_char) (to->index + 1);
        ngx_http_mg_cluster_read(cl);
    }

    if (to->state == NGX_HTTP_MG_REDIS_DOWN && !to->reconnect.timer_set
        && !ngx_exiting && !ngx_terminate)
    {
        to->retired = 0;
        ngx_http_mg_redis_connect(to);
    }

    if (cmd->data == NULL) {

        /* nobody waits: it is not sent again */

        ngx_http_mg_redis_release(rd, cmd);
        return NGX_OK;
    }

    if (cmd->redirects++ >= NGX_HTTP_MG_CLUSTER_REDIRECTS) {
        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        return NGX_OK;
    }

    cmd->asking = (kind == MG_CLUSTER_ASK);

    if (to->state == NGX_HTTP_MG_REDIS_CONNECTING
        && to->nwaiting < to->mcf->redis->max_inflight)
    {
        /*
         * a replica just promoted, say: it is being connected to; the
         * command waits for it within the command timeout
         */

        cmd->deadline = ngx_current_msec + to->mcf->redis->timeout;

        ngx_queue_insert_tail(&to->waiting, &cmd->queue);
        to->nwaiting++;

        if (!cl->tick.timer_set) {
            ngx_add_timer(&cl->tick, NGX_HTTP_MG_CLUSTER_TICK);
        }

        return NGX_OK;
    }

    if (ngx_http_mg_cluster_forward(to, cmd) != NGX_OK) {
        ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
    }

    return NGX_OK;
}


/* a redirected command on its way: after ASKING, for an ASK */

ngx_int_t
ngx_http_mg_cluster_forward(ngx_http_mg_redis_t *to,
    ngx_http_mg_redis_cmd_t *cmd)
{
    ngx_str_t                 asking;
    ngx_http_mg_redis_cmd_t  *pre;

    if (to->state != NGX_HTTP_MG_REDIS_READY
        || to->ninflight + 2 > to->mcf->redis->max_inflight)
    {
        return NGX_ERROR;
    }

    if (cmd->asking) {
        ngx_str_set(&asking, "ASKING");

        pre = ngx_http_mg_redis_queue(to, -1, 0, 1, &asking,
                                      ngx_http_mg_cluster_ignore, to);
        if (pre == NULL) {
            return NGX_ERROR;
        }

        pre->internal = 1;
    }

    return ngx_http_mg_redis_send(to, cmd, cmd->retried);
}


static void
ngx_http_mg_cluster_ignore(void *data, redisReply *reply, ngx_int_t rc)
{
    /* ASKING's "OK"; an error shows in the command that follows it */
}


/*
 * Every 25 ms while commands wait here: TRYAGAIN's are sent again to their
 * slot's primary, and those waiting for a connection longer than the
 * command timeout fail.
 */

void
ngx_http_mg_cluster_tick_handler(ngx_event_t *ev)
{
    ngx_http_mg_cluster_t *cl = ev->data;

    ngx_str_t                *key;
    ngx_uint_t                i, left;
    ngx_queue_t              *q;
    ngx_http_mg_redis_t      *to, *rd;
    ngx_http_mg_redis_cmd_t  *cmd;

    while (!ngx_queue_empty(&cl->retry)) {
        q = ngx_queue_head(&cl->retry);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);

        if (cmd->data == NULL) {
            ngx_http_mg_redis_release(cl->nodes[0], cmd);
            continue;
        }

        key = ngx_http_mg_redis_key(cmd->script, cmd->nkeys, cmd->nargs,
                                   cmd->args);
        to = key ? ngx_http_mg_cluster_route(key) : NULL;

        cmd->asking = 0;

        if (to == NULL || ngx_http_mg_cluster_forward(to, cmd) != NGX_OK) {
            ngx_http_mg_redis_answer(cl->nodes[0], cmd, NGX_ERROR);
        }
    }

    left = 0;

    for (i = 0; i < cl->nnodes; i++) {
        rd = cl->nodes[i];

        /* in the order they came, so of their deadlines */

        while (!ngx_queue_empty(&rd->waiting)) {
            q = ngx_queue_head(&rd->waiting);
            cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);

            if ((ngx_msec_int_t) (cmd->deadline - ngx_current_msec) > 0) {
                left++;
                break;
            }

            ngx_queue_remove(q);
            rd->nwaiting--;

            ngx_http_mg_redis_answer(rd, cmd, NGX_ERROR);
        }
    }

    if (left && !cl->tick.timer_set) {
        ngx_add_timer(&cl->tick, NGX_HTTP_MG_CLUSTER_TICK);
    }
}
