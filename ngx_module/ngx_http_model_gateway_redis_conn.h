
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The worker's Redis connections and their commands, shared by _redis.c
 * (the command pipeline), _redis_conn.c (a connection's life) and the
 * ways of finding Redis (_redis_sentinel.c, _redis_cluster.c) only; the
 * rest of the module uses ngx_http_model_gateway_redis.h.
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_REDIS_CONN_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_REDIS_CONN_H_INCLUDED_


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"
#include "mg_cluster.h"

#include <hiredis/hiredis.h>


#define NGX_HTTP_MG_REDIS_DOWN        0
#define NGX_HTTP_MG_REDIS_CONNECTING  1
#define NGX_HTTP_MG_REDIS_READY       2

/* the limits script with a session pin: 9 keys and 28 arguments */
#define NGX_HTTP_MG_REDIS_MAX_ARGS    40

/* Redis Cluster: nodes known to a worker, redirects one command follows */
#define NGX_HTTP_MG_CLUSTER_NODES     64
#define NGX_HTTP_MG_CLUSTER_REDIRECTS 3


struct ngx_http_mg_redis_cmd_s {
    ngx_queue_t                    queue;
    ngx_http_mg_redis_handler_pt   handler;
    void                          *data;        /* NULL: cancelled */
    ngx_msec_t                     deadline;
    ngx_int_t                      script;      /* -1: not a script */
    ngx_uint_t                     nkeys;       /* of the script's args */
    ngx_uint_t                     nargs;
    ngx_str_t                      args[NGX_HTTP_MG_REDIS_MAX_ARGS];
    ngx_uint_t                     redirects;   /* MOVED, ASK, TRYAGAIN */
    unsigned                       internal:1;
    unsigned                       retried:1;
    unsigned                       asking:1;    /* ASKING goes first */
};


typedef struct ngx_http_mg_sentinel_s  ngx_http_mg_sentinel_t;
typedef struct ngx_http_mg_cluster_s   ngx_http_mg_cluster_t;


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
    ngx_http_model_gateway_redis_stats_t *stats;    /* in the zone */
    ngx_http_mg_sentinel_t              *sentinel;  /* NULL: none */
    ngx_http_mg_cluster_t               *cluster;   /* NULL: none */
    ngx_uint_t                           index;     /* in the cluster */
    ngx_queue_t                          waiting;   /* redirected here */
    ngx_uint_t                           nwaiting;  /* ... while connecting */
    unsigned                             retired:1; /* not in its map */
    unsigned                             logged_down:1;
    unsigned                             resolving:1;
    unsigned                             discovering:1;
} ngx_http_mg_redis_t;


/*
 * A worker's Redis Cluster: its nodes (one connection each), the slot map
 * (_redis_cluster.c) and the commands that wait on redirects
 * (_redis_cluster_redirect.c).
 */

#define NGX_HTTP_MG_CLUSTER_MERGE      100  /* ms between two map reads */
#define NGX_HTTP_MG_CLUSTER_DOWN_READ  500  /* ... while a primary is down */
#define NGX_HTTP_MG_CLUSTER_TICK       25   /* TRYAGAIN, waiting commands */


struct ngx_http_mg_cluster_s {
    ngx_http_model_gateway_main_conf_t    *mcf;
    ngx_cycle_t                           *cycle;
    ngx_log_t                             *log;
    ngx_http_mg_redis_t                   *nodes[NGX_HTTP_MG_CLUSTER_NODES];
    ngx_uint_t                             nnodes;
    ngx_uint_t                             next;     /* round robin */
    u_char                                 slots[MG_KEYSLOTS]; /* node + 1 */
    u_char                                 read[MG_KEYSLOTS];
    ngx_uint_t                             mapped;   /* slots served */
    ngx_uint_t                             primaries;
    ngx_uint_t                             ready;    /* ... connected */
    ngx_http_mg_redis_t                   *reader;   /* asked for the map */
    ngx_msec_t                             read_at;
    ngx_event_t                            refresh;
    ngx_queue_t                            retry;    /* TRYAGAIN */
    ngx_event_t                            tick;     /* while any waits */
    ngx_http_model_gateway_redis_stats_t  *stats;
    unsigned                               reading:1;
    unsigned                               want:1;
    unsigned                               logged_names:1;
    unsigned                               logged_seeds:1;
    unsigned                               logged_map:1;
    unsigned                               starting:1;
};


extern ngx_http_mg_redis_t    *ngx_http_mg_redis;
extern ngx_http_mg_cluster_t  *ngx_http_mg_cluster;


/* _redis.c: the command pipeline */
void ngx_http_mg_redis_read_handler(ngx_event_t *ev);
void ngx_http_mg_redis_timer_handler(ngx_event_t *ev);
void ngx_http_mg_redis_arm_timer(ngx_http_mg_redis_t *rd);
ngx_int_t ngx_http_mg_redis_append(ngx_http_mg_redis_t *rd,
    ngx_uint_t argc, const char **argv, const size_t *argvlen);
void ngx_http_mg_redis_flush(ngx_http_mg_redis_t *rd);
ngx_http_mg_redis_cmd_t *ngx_http_mg_redis_alloc(ngx_http_mg_redis_t *rd);
void ngx_http_mg_redis_release(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd);
ngx_http_mg_redis_cmd_t *ngx_http_mg_redis_queue(ngx_http_mg_redis_t *rd,
    ngx_int_t script, ngx_uint_t nkeys, ngx_uint_t nargs, ngx_str_t *args,
    ngx_http_mg_redis_handler_pt handler, void *data);
ngx_int_t ngx_http_mg_redis_send(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, ngx_uint_t as_eval);
void ngx_http_mg_redis_answer(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, ngx_int_t rc);
ngx_str_t *ngx_http_mg_redis_key(ngx_int_t script, ngx_uint_t nkeys,
    ngx_uint_t nargs, ngx_str_t *args);
void ngx_http_mg_redis_count_inflight(ngx_http_mg_redis_t *rd);

/* _redis_conn.c: the connection's life */
ngx_http_mg_redis_t *ngx_http_mg_redis_create(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);
void ngx_http_mg_redis_connect(ngx_http_mg_redis_t *rd);
void ngx_http_mg_redis_close(ngx_http_mg_redis_t *rd);
void ngx_http_mg_redis_drop(ngx_http_mg_redis_t *rd);
ngx_int_t ngx_http_mg_redis_addr(u_char *ip, size_t len, ngx_int_t port,
    ngx_sockaddr_t *sa, socklen_t *socklen);
void ngx_http_mg_redis_fail(ngx_http_mg_redis_t *rd, ngx_err_t err,
    const char *why);
void ngx_http_mg_redis_discovered(ngx_http_mg_redis_t *rd,
    ngx_sockaddr_t *sa, socklen_t socklen);
void ngx_http_mg_redis_switch(ngx_http_mg_redis_t *rd, ngx_sockaddr_t *sa,
    socklen_t socklen);

/* _redis_handshake.c: the connection's first commands */
void ngx_http_mg_redis_handshake(ngx_http_mg_redis_t *rd);

/* _redis_sentinel.c: the primary's address asked of the sentinels */
ngx_int_t ngx_http_mg_sentinel_init(ngx_http_mg_redis_t *rd,
    ngx_cycle_t *cycle);
void ngx_http_mg_sentinel_discover(ngx_http_mg_redis_t *rd);
void ngx_http_mg_sentinel_cancel(ngx_http_mg_redis_t *rd);
ngx_str_t *ngx_http_mg_sentinel_via(ngx_http_mg_redis_t *rd);
void ngx_http_mg_sentinel_exit(ngx_http_mg_redis_t *rd);

/* _redis_cluster.c: the slot map, a connection per primary */
ngx_int_t ngx_http_mg_cluster_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);
ngx_http_mg_redis_t *ngx_http_mg_cluster_route(ngx_str_t *key);
ngx_http_mg_redis_t *ngx_http_mg_cluster_node(ngx_http_mg_cluster_t *cl,
    struct sockaddr *sa, socklen_t socklen);
void ngx_http_mg_cluster_read(ngx_http_mg_cluster_t *cl);
ngx_int_t ngx_http_mg_cluster_addr(ngx_http_mg_redis_t *rd, u_char *host,
    size_t len, ngx_int_t port, ngx_sockaddr_t *sa, socklen_t *socklen);
void ngx_http_mg_cluster_node_up(ngx_http_mg_redis_t *rd);
void ngx_http_mg_cluster_node_down(ngx_http_mg_redis_t *rd);
ngx_uint_t ngx_http_mg_cluster_ready(void);
ngx_uint_t ngx_http_mg_cluster_member(ngx_http_mg_redis_t *rd);
ngx_int_t ngx_http_mg_cluster_clock(void);
ngx_int_t ngx_http_mg_cluster_clock_for(ngx_str_t *key);
ngx_uint_t ngx_http_mg_cluster_inflight(ngx_http_mg_cluster_t *cl);
void ngx_http_mg_cluster_exit(void);

/* _redis_cluster_redirect.c: MOVED, ASK, TRYAGAIN, CLUSTERDOWN */
ngx_int_t ngx_http_mg_cluster_redirect(ngx_http_mg_redis_t *rd,
    ngx_http_mg_redis_cmd_t *cmd, redisReply *reply);
ngx_int_t ngx_http_mg_cluster_forward(ngx_http_mg_redis_t *to,
    ngx_http_mg_redis_cmd_t *cmd);
void ngx_http_mg_cluster_waiting(ngx_http_mg_redis_t *rd, ngx_int_t rc);
void ngx_http_mg_cluster_tick_handler(ngx_event_t *ev);


#endif /* _NGX_HTTP_MODEL_GATEWAY_REDIS_CONN_H_INCLUDED_ */
