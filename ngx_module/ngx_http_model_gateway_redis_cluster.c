
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Redis Cluster: the worker reads the slot map (CLUSTER SLOTS) from a seed
 * or from any node it is connected to, keeps one connection per primary
 * (each an ngx_http_mg_redis_t of _redis_conn.c, with its own pipeline,
 * timeout, in-flight cap, script cache and clock offset), and sends each
 * command to the primary of its key's slot (redirects are followed in
 * _redis_cluster_redirect.c).  A primary that is down or not connected
 * yet, or a slot nobody serves, fails the command at once, as a lost
 * connection does, and the map is read again, every 500 ms while a
 * primary of the map is down.
 */


#include "ngx_http_model_gateway_redis_conn.h"
#include "mg_cluster.h"


ngx_http_mg_cluster_t  *ngx_http_mg_cluster;


static void ngx_http_mg_cluster_read_later(ngx_http_mg_cluster_t *cl,
    ngx_msec_t delay);
static void ngx_http_mg_cluster_refresh_handler(ngx_event_t *ev);
static void ngx_http_mg_cluster_slots(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_mg_cluster_range(ngx_http_mg_cluster_t *cl,
    ngx_http_mg_redis_t *reader, redisReply *range);
static void ngx_http_mg_cluster_install(ngx_http_mg_cluster_t *cl,
    ngx_http_mg_redis_t *reader);
static void ngx_http_mg_cluster_no_seed(ngx_http_mg_cluster_t *cl);
static void ngx_http_mg_cluster_publish(ngx_http_mg_cluster_t *cl);
static ngx_uint_t ngx_http_mg_cluster_used(ngx_http_mg_cluster_t *cl,
    u_char *used, ngx_uint_t *nused);


ngx_int_t
ngx_http_mg_cluster_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t              i;
    ngx_addr_t             *seed;
    ngx_http_mg_cluster_t  *cl;

    cl = ngx_pcalloc(cycle->pool, sizeof(ngx_http_mg_cluster_t));
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->mcf = mcf;
    cl->cycle = cycle;
    cl->log = cycle->log;
    cl->stats = ngx_http_model_gateway_redis_stats();

    ngx_queue_init(&cl->retry);

    cl->refresh.handler = ngx_http_mg_cluster_refresh_handler;
    cl->refresh.data = cl;
    cl->refresh.log = cycle->log;
    cl->refresh.cancelable = 1;

    /*
     * not cancelable, as the connections' command timers: commands wait
     * on it (TRYAGAIN, a redirect to a connection being made), each one
     * within the command timeout
     */

    cl->tick.handler = ngx_http_mg_cluster_tick_handler;
    cl->tick.data = cl;
    cl->tick.log = cycle->log;

    ngx_http_mg_cluster = cl;

    /* the seeds are the first nodes; the map says which ones stay */

    seed = mcf->redis->cluster_seeds->elts;

    for (i = 0; i < mcf->redis->cluster_seeds->nelts; i++) {
        if (ngx_http_mg_cluster_node(cl, seed[i].sockaddr, seed[i].socklen)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    cl->want = 1;
    cl->starting = 1;

    for (i = 0; i < cl->nnodes; i++) {
        ngx_http_mg_redis_connect(cl->nodes[i]);
    }

    cl->starting = 0;

    ngx_http_mg_cluster_no_seed(cl);

    return NGX_OK;
}


void
ngx_http_mg_cluster_exit(void)
{
    ngx_uint_t                i;
    ngx_queue_t              *q;
    ngx_http_mg_cluster_t    *cl;
    ngx_http_mg_redis_cmd_t  *cmd;

    cl = ngx_http_mg_cluster;

    if (cl->stats && cl->stats->pid == (ngx_atomic_uint_t) ngx_pid) {
        cl->stats->pid = 0;
    }

    for (i = 0; i < cl->nnodes; i++) {
        ngx_http_mg_redis_drop(cl->nodes[i]);

        while (!ngx_queue_empty(&cl->nodes[i]->waiting)) {
            q = ngx_queue_head(&cl->nodes[i]->waiting);
            ngx_queue_remove(q);

            cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);
            ngx_http_mg_redis_release(cl->nodes[i], cmd);
        }

        cl->nodes[i]->nwaiting = 0;
    }

    while (!ngx_queue_empty(&cl->retry)) {
        q = ngx_queue_head(&cl->retry);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_mg_redis_cmd_t, queue);
        ngx_http_mg_redis_release(cl->nodes[0], cmd);
    }

    if (cl->refresh.timer_set) {
        ngx_del_timer(&cl->refresh);
    }

    if (cl->tick.timer_set) {
        ngx_del_timer(&cl->tick);
    }

    ngx_http_mg_cluster = NULL;
}


/*
 * The node at an address: known, or made (not connected).  The table is
 * bounded: a node that left the map and is down gives its place.
 */

ngx_http_mg_redis_t *
ngx_http_mg_cluster_node(ngx_http_mg_cluster_t *cl, struct sockaddr *sa,
    socklen_t socklen)
{
    ngx_uint_t            i;
    ngx_http_mg_redis_t  *rd;

    for (i = 0; i < cl->nnodes; i++) {
        rd = cl->nodes[i];

        if (ngx_cmp_sockaddr(sa, socklen, &rd->sockaddr.sockaddr,
                             rd->socklen, 1)
            == NGX_OK)
        {
            return rd;
        }
    }

    rd = NULL;

    if (cl->nnodes < NGX_HTTP_MG_CLUSTER_NODES) {
        rd = ngx_http_mg_redis_create(cl->cycle, cl->mcf);
        if (rd == NULL) {
            return NULL;
        }

        rd->cluster = cl;
        rd->index = cl->nnodes;
        cl->nodes[cl->nnodes++] = rd;

    } else {
        for (i = 0; i < cl->nnodes; i++) {
            rd = cl->nodes[i];

            /* nor in the map, nor in the map being read */

            if (rd->retired && rd->state == NGX_HTTP_MG_REDIS_DOWN
                && rd->ninflight == 0 && rd->nwaiting == 0
                && ngx_strlchr(cl->read, cl->read + MG_KEYSLOTS,
                               (u_char) (rd->index + 1))
                   == NULL
                && ngx_strlchr(cl->slots, cl->slots + MG_KEYSLOTS,
                               (u_char) (rd->index + 1))
                   == NULL)
            {
                break;
            }

            rd = NULL;
        }

        if (rd == NULL) {
            ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                          "model gateway: redis cluster: more than %d "
                          "nodes, one is not used",
                          NGX_HTTP_MG_CLUSTER_NODES);
            return NULL;
        }

        if (rd->reconnect.timer_set) {
            ngx_del_timer(&rd->reconnect);
        }

        rd->backoff = 100;
        rd->logged_down = 0;
    }

    ngx_memcpy(&rd->sockaddr, sa, socklen);
    rd->socklen = socklen;
    rd->name.data = rd->text;
    rd->name.len = ngx_sock_ntop(&rd->sockaddr.sockaddr, rd->socklen,
                                 rd->text, NGX_SOCKADDR_STRLEN, 1);

    return rd;
}


ngx_http_mg_redis_t *
ngx_http_mg_cluster_route(ngx_str_t *key)
{
    ngx_uint_t              n;
    ngx_http_mg_cluster_t  *cl;

    cl = ngx_http_mg_cluster;

    n = cl->slots[mg_keyslot(key->data, key->len)];

    if (n == 0) {

        /* a slot nobody serves (yet): the map may have changed */

        ngx_http_mg_cluster_read(cl);
        return NULL;
    }

    return cl->nodes[n - 1];
}


/* ready as a whole: a map, and a primary of it connected */

ngx_uint_t
ngx_http_mg_cluster_ready(void)
{
    return ngx_http_mg_cluster->mapped && ngx_http_mg_cluster->ready;
}


/* a primary of the map (before any map: nothing is) */

ngx_uint_t
ngx_http_mg_cluster_member(ngx_http_mg_redis_t *rd)
{
    return rd->cluster->mapped && !rd->retired;
}


/*
 * Redis' clock, as the first connected primary of the map measured it;
 * a cluster's nodes are expected to agree (NTP).
 */

ngx_int_t
ngx_http_mg_cluster_clock(void)
{
    ngx_uint_t              i;
    ngx_http_mg_redis_t    *rd;
    ngx_http_mg_cluster_t  *cl;

    cl = ngx_http_mg_cluster;

    for (i = 0; i < cl->nnodes; i++) {
        rd = cl->nodes[i];

        if (!rd->retired && rd->state == NGX_HTTP_MG_REDIS_READY) {
            return rd->clock_offset;
        }
    }

    return 0;
}


/* the offset of the primary that serves the key, else the first one's */

ngx_int_t
ngx_http_mg_cluster_clock_for(ngx_str_t *key)
{
    ngx_uint_t              n;
    ngx_http_mg_cluster_t  *cl;

    cl = ngx_http_mg_cluster;

    n = cl->slots[mg_keyslot(key->data, key->len)];

    if (n && cl->nodes[n - 1]->state == NGX_HTTP_MG_REDIS_READY) {
        return cl->nodes[n - 1]->clock_offset;
    }

    return ngx_http_mg_cluster_clock();
}


ngx_uint_t
ngx_http_mg_cluster_inflight(ngx_http_mg_cluster_t *cl)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < cl->nnodes; i++) {
        n += cl->nodes[i]->ninflight;
    }

    return n;
}


void
ngx_http_mg_cluster_node_up(ngx_http_mg_redis_t *rd)
{
    ngx_http_mg_cluster_t  *cl;

    cl = rd->cluster;

    ngx_http_mg_cluster_publish(cl);

    ngx_http_mg_cluster_waiting(rd, NGX_OK);

    if (cl->want || cl->mapped == 0) {
        ngx_http_mg_cluster_read(cl);
    }
}


void
ngx_http_mg_cluster_node_down(ngx_http_mg_redis_t *rd)
{
    ngx_http_mg_cluster_t  *cl;

    cl = rd->cluster;

    ngx_http_mg_cluster_publish(cl);

    ngx_http_mg_cluster_waiting(rd, NGX_ERROR);

    if (!rd->retired) {
        ngx_http_mg_cluster_read(cl);
    }

    ngx_http_mg_cluster_no_seed(cl);
}


/* before any map, with every seed tried and down: said once */

static void
ngx_http_mg_cluster_no_seed(ngx_http_mg_cluster_t *cl)
{
    ngx_uint_t  i;

    if (cl->mapped || cl->logged_seeds || cl->starting) {
        return;
    }

    for (i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i]->state != NGX_HTTP_MG_REDIS_DOWN) {
            return;
        }
    }

    ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                  "model gateway: redis cluster: no seed answered, "
                  "no slot map");
    cl->logged_seeds = 1;
}


/*
 * Reads the slot map, from a connected node (round robin), at most once
 * per 100 ms: a MOVED storm reads it once.  With no node connected, every
 * node ever known is connected again; the first one up reads it.
 */

void
ngx_http_mg_cluster_read(ngx_http_mg_cluster_t *cl)
{
    ngx_str_t                 args[2];
    ngx_uint_t                i;
    ngx_msec_t                elapsed;
    ngx_http_mg_redis_t      *rd;
    ngx_http_mg_redis_cmd_t  *cmd;

    cl->want = 1;

    if (cl->reading || ngx_exiting || ngx_terminate) {
        return;
    }

    elapsed = ngx_current_msec - cl->read_at;

    if (cl->read_at && elapsed < NGX_HTTP_MG_CLUSTER_MERGE) {
        ngx_http_mg_cluster_read_later(cl,
                                       NGX_HTTP_MG_CLUSTER_MERGE - elapsed);
        return;
    }

    /* a primary of the map first: a former node may have left the cluster */

    rd = NULL;

    for (i = 0; i < 2 * cl->nnodes; i++) {
        rd = cl->nodes[(cl->next + i) % cl->nnodes];

        if (rd->state == NGX_HTTP_MG_REDIS_READY
            && (i >= cl->nnodes || !rd->retired))
        {
            break;
        }

        rd = NULL;
    }

    if (rd == NULL) {
        for (i = 0; i < cl->nnodes; i++) {
            rd = cl->nodes[i];

            if (rd->retired) {
                rd->retired = 0;

                if (rd->state == NGX_HTTP_MG_REDIS_DOWN
                    && !rd->reconnect.timer_set)
                {
                    ngx_http_mg_redis_connect(rd);
                }
            }
        }

        return;
    }

    cl->next = rd->index + 1;

    ngx_str_set(&args[0], "CLUSTER");
    ngx_str_set(&args[1], "SLOTS");

    cmd = ngx_http_mg_redis_queue(rd, -1, 0, 2, args,
                                  ngx_http_mg_cluster_slots, cl);
    if (cmd == NULL) {
        ngx_http_mg_cluster_read_later(cl, NGX_HTTP_MG_CLUSTER_MERGE);
        return;
    }

    cmd->internal = 1;

    cl->want = 0;
    cl->reading = 1;
    cl->reader = rd;
    cl->read_at = ngx_current_msec;

    if (cl->stats) {
        (void) ngx_atomic_fetch_add(&cl->stats->refreshes, 1);
    }
}


static void
ngx_http_mg_cluster_read_later(ngx_http_mg_cluster_t *cl, ngx_msec_t delay)
{
    cl->want = 1;

    if (!cl->refresh.timer_set && !ngx_exiting && !ngx_terminate) {
        ngx_add_timer(&cl->refresh, delay);
    }
}


static void
ngx_http_mg_cluster_refresh_handler(ngx_event_t *ev)
{
    ngx_http_mg_cluster_t *cl = ev->data;

    if (cl->want) {
        ngx_http_mg_cluster_read(cl);
    }
}


/*
 * CLUSTER SLOTS: an array of [start, end, [ip, port, id, ...], replicas
 * ...].  An empty ip is the address of the node asked.  The map is
 * installed whole, or not at all.
 */

static void
ngx_http_mg_cluster_slots(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_mg_cluster_t *cl = data;

    size_t                i;
    ngx_uint_t            bad, level;
    ngx_http_mg_redis_t  *reader;

    /*
     * the node that answered, whose read loop this runs in: it is not
     * closed here, whatever the map says (cl->reader may change below)
     */

    reader = cl->reader;
    cl->reading = 0;

    level = cl->logged_map ? NGX_LOG_INFO : NGX_LOG_ERR;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY) {
        if (rc == NGX_OK && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(level, cl->log, 0,
                          "model gateway: redis cluster node %V did not "
                          "give the slot map: %*s", &reader->name,
                          (size_t) ngx_min(reply->len, 200), reply->str);
            cl->logged_map = 1;
        }

        ngx_http_mg_cluster_read_later(cl, NGX_HTTP_MG_CLUSTER_DOWN_READ);
        return;
    }

    ngx_memzero(cl->read, MG_KEYSLOTS);

    bad = 0;

    for (i = 0; i < reply->elements; i++) {
        if (ngx_http_mg_cluster_range(cl, reader, reply->element[i])
            != NGX_OK)
        {
            bad++;
        }
    }

    if (bad) {
        ngx_log_error(level, cl->log, 0,
                      "model gateway: redis cluster node %V: %ui slot "
                      "ranges of its map not used", &reader->name, bad);
        cl->logged_map = 1;
    }

    /* a node out of the cluster knows no slot: its map is not taken */

    if (bad == reply->elements && cl->mapped) {
        ngx_log_error(level, cl->log, 0,
                      "model gateway: redis cluster node %V serves no "
                      "slot, its map is not used", &reader->name);
        cl->logged_map = 1;

        reader->retired = 1;
        ngx_http_mg_cluster_read_later(cl, NGX_HTTP_MG_CLUSTER_DOWN_READ);
        return;
    }

    ngx_http_mg_cluster_install(cl, reader);

    if (cl->want) {
        ngx_http_mg_cluster_read(cl);
    }
}


static ngx_int_t
ngx_http_mg_cluster_range(ngx_http_mg_cluster_t *cl,
    ngx_http_mg_redis_t *reader, redisReply *range)
{
    socklen_t             socklen;
    redisReply           *m;
    ngx_sockaddr_t        sa;
    ngx_http_mg_redis_t  *rd;

    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
        || range->element[0]->type != REDIS_REPLY_INTEGER
        || range->element[1]->type != REDIS_REPLY_INTEGER
        || range->element[2]->type != REDIS_REPLY_ARRAY
        || range->element[0]->integer < 0
        || range->element[1]->integer >= MG_KEYSLOTS
        || range->element[0]->integer > range->element[1]->integer)
    {
        return NGX_ERROR;
    }

    m = range->element[2];

    if (m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING
        || m->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return NGX_ERROR;
    }

    if (ngx_http_mg_cluster_addr(reader, (u_char *) m->element[0]->str,
                                 m->element[0]->len,
                                 (ngx_int_t) m->element[1]->integer, &sa,
                                 &socklen)
        != NGX_OK)
    {
        if (!cl->logged_names) {
            ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                          "model gateway: redis cluster node %V announces "
                          "\"%*s\", not an IP address (announced host "
                          "names are not supported)", &reader->name,
                          (size_t) ngx_min(m->element[0]->len, 100),
                          m->element[0]->str);
            cl->logged_names = 1;
        }

        return NGX_ERROR;
    }

    rd = ngx_http_mg_cluster_node(cl, &sa.sockaddr, socklen);
    if (rd == NULL) {
        return NGX_ERROR;
    }

    ngx_memset(cl->read + range->element[0]->integer, rd->index + 1,
               range->element[1]->integer - range->element[0]->integer + 1);

    return NGX_OK;
}


/*
 * The map read becomes the map: primaries in it are connected (now, if
 * down without a reconnect due), nodes out of it are retired (closed if
 * connected and idle, here or when their last reply is read; never
 * reconnected unless every node is down).
 */

static void
ngx_http_mg_cluster_install(ngx_http_mg_cluster_t *cl,
    ngx_http_mg_redis_t *reader)
{
    ngx_uint_t            i, mapped, primaries, changed, down;
    ngx_http_mg_redis_t  *rd;
    u_char                used[NGX_HTTP_MG_CLUSTER_NODES];

    changed = (ngx_memcmp(cl->slots, cl->read, MG_KEYSLOTS) != 0);

    ngx_memcpy(cl->slots, cl->read, MG_KEYSLOTS);

    mapped = ngx_http_mg_cluster_used(cl, used, &primaries);
    down = 0;

    for (i = 0; i < cl->nnodes; i++) {
        rd = cl->nodes[i];

        if (used[i]) {
            rd->retired = 0;

            if (rd->state == NGX_HTTP_MG_REDIS_DOWN) {
                down++;

                if (!rd->reconnect.timer_set && !ngx_exiting
                    && !ngx_terminate)
                {
                    ngx_http_mg_redis_connect(rd);
                }
            }

            continue;
        }

        rd->retired = 1;

        if (rd->reconnect.timer_set) {
            ngx_del_timer(&rd->reconnect);
        }

        /*
         * only a ready connection: one being made has commands waiting
         * for it (redirects), or its handshake in flight
         */

        if (rd->state == NGX_HTTP_MG_REDIS_READY && rd->ninflight == 0
            && rd->nwaiting == 0 && rd != reader)
        {
            ngx_http_mg_redis_close(rd);
            rd->state = NGX_HTTP_MG_REDIS_DOWN;
        }
    }

    if (changed || cl->mapped != mapped || cl->primaries != primaries) {
        ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                      "model gateway: redis cluster map: %ui primaries, "
                      "%ui of %d slots served (from %V)", primaries, mapped,
                      MG_KEYSLOTS, &reader->name);
    }

    cl->mapped = mapped;
    cl->primaries = primaries;
    cl->logged_seeds = 0;
    cl->logged_map = 0;

    ngx_http_mg_cluster_publish(cl);

    /* a primary down may be failing over: the map is read until it is not */

    if (down || mapped < MG_KEYSLOTS) {
        ngx_http_mg_cluster_read_later(cl, NGX_HTTP_MG_CLUSTER_DOWN_READ);
    }
}


/* "ip" and port of a map or a redirect; an empty ip: the node's own */

ngx_int_t
ngx_http_mg_cluster_addr(ngx_http_mg_redis_t *rd, u_char *host, size_t len,
    ngx_int_t port, ngx_sockaddr_t *sa, socklen_t *socklen)
{
    if (len || port < 1 || port > 65535) {
        return ngx_http_mg_redis_addr(host, len, port, sa, socklen);
    }

    ngx_memcpy(sa, &rd->sockaddr, rd->socklen);
    *socklen = rd->socklen;
    ngx_inet_set_port(&sa->sockaddr, (in_port_t) port);

    return NGX_OK;
}


/* the worker's metrics: up when every primary of the map is connected */

static void
ngx_http_mg_cluster_publish(ngx_http_mg_cluster_t *cl)
{
    ngx_uint_t  i, ready, nused;
    u_char      used[NGX_HTTP_MG_CLUSTER_NODES];

    /* the nodes the map routes to (MOVED's patches included) */

    (void) ngx_http_mg_cluster_used(cl, used, &nused);

    ready = 0;

    for (i = 0; i < cl->nnodes; i++) {
        if (used[i] && cl->nodes[i]->state == NGX_HTTP_MG_REDIS_READY) {
            ready++;
        }
    }

    cl->ready = ready;

    if (cl->stats == NULL) {
        return;
    }

    cl->stats->primaries = ready;
    cl->stats->up = (cl->mapped == MG_KEYSLOTS && ready == nused);
    cl->stats->inflight = ngx_http_mg_cluster_inflight(cl);
}


/* which nodes the map routes to, and how many; returns the slots served */

static ngx_uint_t
ngx_http_mg_cluster_used(ngx_http_mg_cluster_t *cl, u_char *used,
    ngx_uint_t *nused)
{
    ngx_uint_t  i, mapped;

    ngx_memzero(used, NGX_HTTP_MG_CLUSTER_NODES);

    mapped = 0;

    for (i = 0; i < MG_KEYSLOTS; i++) {
        if (cl->slots[i]) {
            used[cl->slots[i] - 1] = 1;
            mapped++;
        }
    }

    *nused = 0;

    for (i = 0; i < cl->nnodes; i++) {
        *nused += used[i];
    }

    return mapped;
}
