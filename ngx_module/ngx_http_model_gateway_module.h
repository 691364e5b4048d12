
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#ifndef _NGX_HTTP_MODEL_GATEWAY_MODULE_H_INCLUDED_
#define _NGX_HTTP_MODEL_GATEWAY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "mg_json.h"
#include "mg_sse.h"
#include "mg_eventstream.h"
#include "mg_sigv4.h"
#include "mg_util.h"
#include "mg_wrr.h"
#include "mg_breaker.h"
#include "mg_translate.h"
#include "mg_keys.h"
#include "mg_usage.h"


#define NGX_HTTP_MG_SENTINELS_MAX      16
#define NGX_HTTP_MG_CLUSTER_SEEDS_MAX  16

#define NGX_HTTP_MG_OPENAI             1
#define NGX_HTTP_MG_OPENAI_COMPATIBLE  2
#define NGX_HTTP_MG_ANTHROPIC          3
#define NGX_HTTP_MG_AZURE              4
#define NGX_HTTP_MG_GEMINI             5
#define NGX_HTTP_MG_BEDROCK            6

#define NGX_HTTP_MG_MAX_TARGETS        64

#define NGX_HTTP_MG_SESSION_REBIND     0
#define NGX_HTTP_MG_SESSION_STRICT     1

#define NGX_HTTP_MG_FALLBACK_HASH      0
#define NGX_HTTP_MG_FALLBACK_FAIL      1

#define NGX_HTTP_MG_RESPONSES_NATIVE   0
#define NGX_HTTP_MG_RESPONSES_GATEWAY  1

#define NGX_HTTP_MG_LIMIT_OPEN         0
#define NGX_HTTP_MG_LIMIT_CLOSED       1

/* max_tokens, max_completion_tokens, max_output_tokens */
#define NGX_HTTP_MG_TOKEN_FIELDS       3
#define NGX_HTTP_MG_TOKENS_HUGE        1000000000000000000ULL

/* rpm, tpm, tpd and budget of a key and of its tenant */
#define NGX_HTTP_MG_LIMITS_MAX         8

#define NGX_HTTP_MG_STATE_NONE             0
#define NGX_HTTP_MG_STATE_NEW_RESPONSE     1   /* POST responses */
#define NGX_HTTP_MG_STATE_NEW_CONVERSATION 2   /* POST conversations */
#define NGX_HTTP_MG_STATE_RESPONSE         3   /* responses/{id}... */
#define NGX_HTTP_MG_STATE_CONVERSATION     4   /* conversations/{id}... */

#define NGX_HTTP_MG_PIN_NONE           0
#define NGX_HTTP_MG_PIN_NEW            1
#define NGX_HTTP_MG_PIN_HIT            2
#define NGX_HTTP_MG_PIN_REBOUND        3
#define NGX_HTTP_MG_PIN_FALLBACK       4


typedef enum {
    NGX_HTTP_MG_BALANCE_ROUND_ROBIN = 1,
    NGX_HTTP_MG_BALANCE_LEAST_OUTSTANDING,
    NGX_HTTP_MG_BALANCE_PEAK_EWMA
} ngx_http_model_gateway_balance_e;


/*
 * Metrics (_metrics.c): counters and histograms in shared memory, added
 * to with atomics, never under the zone's lock.  A histogram keeps a
 * count per bucket (made cumulative when rendered: the last is the total)
 * and the sum.
 */
#define NGX_HTTP_MG_HIST_MAX           16

typedef struct {
    ngx_atomic_t                       bucket[NGX_HTTP_MG_HIST_MAX + 1];
    ngx_atomic_t                       sum;         /* ms, or tokens */
} ngx_http_model_gateway_hist_t;

/* what the metrics tell apart: chat (and Responses), embeddings */
#define NGX_HTTP_MG_OPS                2

typedef struct {
    ngx_atomic_t                       requests[NGX_HTTP_MG_OPS][3];
                                                    /* 2xx, 4xx, 5xx */
    ngx_atomic_t                       attempts[2]; /* answered, failed */
    ngx_atomic_t                       failovers;
    ngx_atomic_t                       tokens[3];   /* cached input in
                                                       [2]; input and output
                                                       are usage's sums */
    ngx_atomic_t                       cost;        /* micro-USD */
    ngx_http_model_gateway_hist_t      duration[NGX_HTTP_MG_OPS];
    ngx_http_model_gateway_hist_t      ttft[NGX_HTTP_MG_OPS];
    ngx_http_model_gateway_hist_t      usage[NGX_HTTP_MG_OPS][2];
                                                    /* input, output */
} ngx_http_model_gateway_metrics_t;

/* a worker's Redis connection, as it publishes it */
typedef struct {
    ngx_atomic_t                       pid;
    ngx_atomic_t                       up;
    ngx_atomic_t                       inflight;
    ngx_atomic_t                       commands;
    ngx_atomic_t                       errors;
    ngx_atomic_t                       timeouts;
    ngx_atomic_t                       moved;       /* Redis Cluster */
    ngx_atomic_t                       asked;
    ngx_atomic_t                       refreshes;   /* slot maps read */
    ngx_atomic_t                       primaries;   /* ... connected */
    ngx_http_model_gateway_hist_t      latency;     /* ms */
} ngx_http_model_gateway_redis_stats_t;

#define NGX_HTTP_MG_WORKERS_MAX        64

/*
 * A tenant and key's counters: a slot of a fixed table, claimed once with
 * a compare-and-set of its hash; what finds no slot counts in the last
 * one, "_other".
 */
#define NGX_HTTP_MG_WHO_LEN            130          /* tenant NUL key */

typedef struct {
    ngx_atomic_t                       hash;        /* 0: free */
    ngx_atomic_t                       ready;       /* name written */
    ngx_atomic_t                       requests[3]; /* 2xx, 4xx, 5xx */
    ngx_atomic_t                       tokens[2];   /* input, output */
    ngx_atomic_t                       cost;        /* micro-USD */
    u_char                             len;
    u_char                             name[NGX_HTTP_MG_WHO_LEN];
} ngx_http_model_gateway_who_t;

/* session outcomes: NGX_HTTP_MG_PIN_NEW .. _FALLBACK */
#define NGX_HTTP_MG_SESSION_OUTCOMES   5

/* stored state: id lookups, records, gateway-held chains */
#define NGX_HTTP_MG_STATE_READ         0
#define NGX_HTTP_MG_STATE_MISS         1
#define NGX_HTTP_MG_STATE_WRITE        2
#define NGX_HTTP_MG_STATE_WRITE_FAILED 3
#define NGX_HTTP_MG_STATE_OPS          4


#define NGX_HTTP_MG_HEALTH_UNKNOWN     0
#define NGX_HTTP_MG_HEALTH_UP          1
#define NGX_HTTP_MG_HEALTH_DOWN        2
#define NGX_HTTP_MG_HEALTH_ERR         48           /* NUL-terminated */


/*
 * Shared state of a backend, or of a backend serving one model (the pair
 * fields); found by name, so it survives reloads.
 */
typedef struct {
    ngx_rbtree_node_t                  node;

    ngx_atomic_t                       outstanding;
    mg_breaker_t                       breaker;  /* pairs: limited_until */
    uint64_t                           ewma_us;
    ngx_msec_t                         ewma_stamp;

    long                               wrr_current;

    /*
     * a backend's operator overrides (_admin_sync.c), the fleet's as Redis
     * last said: 0, or the weight that replaces the configured one; 1 when
     * drained; the last cool-down clear applied
     */
    ngx_atomic_t                       admin_weight;
    ngx_atomic_t                       drain;
    ngx_atomic_t                       admin_clear;
    ngx_atomic_t                       forced_until; /* ms, Redis' clock */

    /* active health checks (_health.c), in backend nodes only */
    ngx_atomic_t                       health_next; /* next probe due */
    ngx_atomic_t                       probes[2];   /* passed, failed */
    ngx_msec_t                         health_at;   /* last verdict */
    mg_msec_t                          health_until; /* its cool-down */
    ngx_uint_t                         health;      /* NGX_HTTP_MG_HEALTH_* */
    ngx_uint_t                         health_failed; /* in a row */
    ngx_uint_t                         health_passed;
    u_char                             health_error[NGX_HTTP_MG_HEALTH_ERR];

    ngx_http_model_gateway_metrics_t   metrics;     /* pairs' */

    size_t                             len;
    u_char                             name[1];
} ngx_http_model_gateway_node_t;


typedef struct {
    ngx_rbtree_t                       rbtree;
    ngx_rbtree_node_t                  sentinel;
    ngx_uint_t                         rotate;
    size_t                             layout;      /* of the nodes */

    /* metrics of no backend */
    ngx_atomic_t                       refused[3];  /* 2xx, 4xx, 5xx */
    ngx_atomic_t                       sessions[NGX_HTTP_MG_SESSION_OUTCOMES];
    ngx_atomic_t                       state[NGX_HTTP_MG_STATE_OPS];
    ngx_http_model_gateway_redis_stats_t
                                       redis[NGX_HTTP_MG_WORKERS_MAX];

    /* per tenant and key: nwho slots and "_other" after them */
    ngx_http_model_gateway_who_t      *who;
    ngx_uint_t                         nwho;

    /* the fleet's admin state: who reads it next, and when it last did */
    ngx_atomic_t                       admin_poll_at;
    ngx_atomic_t                       admin_synced_at; /* ms, Redis' */
} ngx_http_model_gateway_shm_t;


/*
 * Named entries in a shared zone, least recently used first out (_lru.c):
 * a payload of the user's, then the name.
 */
typedef struct {
    ngx_rbtree_t                       rbtree;
    ngx_rbtree_node_t                  sentinel;
    ngx_queue_t                        lru;
} ngx_http_model_gateway_lru_t;

typedef struct {
    ngx_str_node_t                     sn;
    ngx_queue_t                        queue;
    ngx_uint_t                         busy;    /* not to be evicted */
    u_char                             data[1];
} ngx_http_model_gateway_lru_node_t;


/* why an attempt failed; decides retry and the final status */
typedef enum {
    NGX_HTTP_MG_FAIL_NONE = 0,
    NGX_HTTP_MG_FAIL_CONNECT,          /* connect, TLS or send error */
    NGX_HTTP_MG_FAIL_CONNECT_TIMEOUT,
    NGX_HTTP_MG_FAIL_FIRST_BYTE,       /* no response byte in time */
    NGX_HTTP_MG_FAIL_IDLE,             /* response stalled midway */
    NGX_HTTP_MG_FAIL_CLOSED,           /* response cut short */
    NGX_HTTP_MG_FAIL_INVALID,          /* unparsable response */
    NGX_HTTP_MG_FAIL_STATUS,           /* retryable status */
    NGX_HTTP_MG_FAIL_RATE_LIMITED,     /* 429 */
    NGX_HTTP_MG_FAIL_AUTH,             /* 401/403: our credential */
    NGX_HTTP_MG_FAIL_STREAM_ERROR,     /* 200 whose first event is an error */
    NGX_HTTP_MG_FAIL_TOO_BIG,          /* response over the buffer limit */
    NGX_HTTP_MG_FAIL_TOTAL_TIMEOUT
} ngx_http_model_gateway_fail_e;


typedef struct ngx_http_model_gateway_backend_s
    ngx_http_model_gateway_backend_t;
typedef struct ngx_http_model_gateway_ctx_s  ngx_http_model_gateway_ctx_t;
typedef struct ngx_http_model_gateway_provider_s
    ngx_http_model_gateway_provider_t;
typedef struct ngx_http_model_gateway_memory_s
    ngx_http_model_gateway_memory_t;


/* an idle upstream connection kept by a worker for one backend */
typedef struct {
    ngx_queue_t                        queue;
    ngx_http_model_gateway_backend_t  *backend;
    ngx_connection_t                  *connection;

    /* nginx does not record the peer address of outgoing connections */
    socklen_t                          socklen;
    ngx_sockaddr_t                     sockaddr;
} ngx_http_model_gateway_cached_t;


struct ngx_http_model_gateway_backend_s {
    ngx_str_t                          name;
    ngx_uint_t                         type;
    const ngx_http_model_gateway_provider_t  *provider;  /* its row */
    ngx_uint_t                         index;

    ngx_str_t                          url;
    ngx_str_t                          host;        /* SNI, cert check */
    ngx_str_t                          host_header; /* host[:port] */
    ngx_str_t                          path;        /* prefix, no "/" end */
    in_port_t                          port;
    ngx_addr_t                        *addrs;
    ngx_uint_t                         naddrs;
    ngx_uint_t                         next_addr;   /* per worker */
    unsigned                           ssl:1;
    unsigned                           connect_set:1;
    unsigned                           resolve:1;   /* at run time only */
    unsigned                           responses:1; /* stored objects */

    /* re-resolution, per worker */
    ngx_resolver_t                    *resolver;
    ngx_msec_t                         resolver_timeout;
    ngx_event_t                        resolve_ev;
    void                              *raddrs;

    ngx_str_t                          key;         /* never logged */
    ngx_str_t                          anthropic_version;
    ngx_str_t                          api_version; /* Azure */
    unsigned                           azure_v1:1;
    ngx_int_t                          max_tokens;  /* Anthropic default */
    ngx_str_t                          auth_header; /* "Authorization: .." */
    ngx_array_t                       *fixed_headers; /* ngx_table_elt_t */
    ngx_str_t                          fixed_lines; /* rendered */

    /* Bedrock with SigV4 (no key): the credentials are never logged */
    ngx_str_t                          region;
    ngx_str_t                          aws_access_key;
    ngx_str_t                          aws_secret;
    ngx_str_t                          aws_token;   /* may be empty */
    ngx_str_t                          aws_source;  /* where they came from */
    u_char                             aws_day[8];  /* of aws_key, per worker */
    u_char                             aws_key[MG_SIGV4_KEY_LEN];

    ngx_int_t                          weight;
    ngx_int_t                          priority;
    ngx_http_model_gateway_node_t     *node;        /* shared state */

    ngx_msec_t                         connect_timeout;
    ngx_msec_t                         first_byte_timeout;
    ngx_msec_t                         idle_timeout;

    ngx_flag_t                         ssl_verify;
    ngx_str_t                          ssl_trusted_certificate;

    /* OpenAI-type chat streams ask for their usage chunk */
    ngx_flag_t                         stream_usage;

    ngx_uint_t                         keepalive;
    ngx_msec_t                         keepalive_timeout;
    ngx_uint_t                         keepalive_requests;
    ngx_msec_t                         keepalive_time;
    ngx_queue_t                        cache;       /* per worker */
    ngx_queue_t                        free;

    /* health_check (_health.c); health_interval 0: none */
    ngx_msec_t                         health_interval;
    ngx_msec_t                         health_timeout;
    ngx_uint_t                         health_fails;
    ngx_uint_t                         health_passes;
    ngx_str_t                          health_path; /* empty: connect only */
    ngx_str_t                          health_request; /* has the key */

    /* u->conf before and after the response header */
    ngx_http_upstream_conf_t           header_conf;
    ngx_http_upstream_conf_t           body_conf;

    ngx_str_t                          conf_file;
    ngx_uint_t                         conf_line;
};


/* one backend serving one client-visible model */
typedef struct {
    ngx_http_model_gateway_backend_t  *backend;
    ngx_str_t                          provider_model;
    ngx_str_t                          provider_model_json; /* quoted */
    ngx_str_t                          provider_path; /* URI-encoded */
    unsigned                           no_chat:1;   /* api=embeddings */
    unsigned                           no_embeddings:1; /* api=chat */
    ngx_http_model_gateway_node_t     *node;        /* shared pair state */
} ngx_http_model_gateway_target_t;


typedef struct {
    ngx_str_t                          name;        /* client-visible */
    ngx_array_t                        targets;     /* _target_t */
    uint64_t                           price[3];    /* micro-USD per 1M
                                                       tokens: input,
                                                       output, cached */
    unsigned                           priced:1;
} ngx_http_model_gateway_model_t;


/*
 * A link of the event chain: every complete stream event (an SSE event, or
 * an AWS eventstream message in the same shape) passes down the chain on
 * its way to the client.  A link may pass it to the next one (the one it
 * replaced at the chain's top), replace it (pass another event, with data
 * NULL when only raw bytes are left), drop it (return NGX_OK) or add
 * events.  Provider translation and response-id capture are links; the
 * last link writes raw bytes with ngx_http_model_gateway_emit().
 */
typedef ngx_int_t (*ngx_http_model_gateway_event_pt)(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);

/*
 * The route step.  A handler runs after the body was read and validated and
 * before the upstream starts.  It returns NGX_OK when done, NGX_DECLINED to
 * leave the choice to the next handler, an HTTP status to fail the request
 * (with ctx->err set), or NGX_AGAIN when it suspended the request on
 * something asynchronous (a Redis lookup); it then calls
 * ngx_http_model_gateway_route_done() from its callback.
 */
typedef ngx_int_t (*ngx_http_model_gateway_route_pt)(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

typedef struct {
    ngx_http_model_gateway_route_pt    handler;
    ngx_uint_t                         order;  /* NGX_HTTP_MG_ROUTE_* */
} ngx_http_model_gateway_route_t;

/* who routes first: an identity before the object ids and sessions */
#define NGX_HTTP_MG_ROUTE_IDENTITY     100
#define NGX_HTTP_MG_ROUTE_LIMITS       150
#define NGX_HTTP_MG_ROUTE_MEMORY       180
#define NGX_HTTP_MG_ROUTE_STATE        200
#define NGX_HTTP_MG_ROUTE_SESSION      300

/*
 * The commit: the response of the chosen backend is about to become the
 * client's; status and headers may still change (r->headers_out), no body
 * byte has left.  NGX_OK, or NGX_ERROR to fail the request.
 */
typedef ngx_int_t (*ngx_http_model_gateway_commit_pt)(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

/*
 * Done: the upstream part of the request is over (rc as nginx's upstream
 * finalizes it); ctx holds the outcome, the attempts and their timings.
 */
typedef void (*ngx_http_model_gateway_done_pt)(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_int_t rc);


typedef struct {
    ngx_addr_t                         addr;
    ngx_str_t                          host;        /* as configured */
    in_port_t                          port;
    unsigned                           named:1;     /* host is a DNS name */
    ngx_flag_t                         tls;
    ngx_flag_t                         ssl_verify;
    ngx_str_t                          ssl_name;    /* certificate, NUL */
    ngx_uint_t                         ssl_sni;     /* a name, not an IP */
    ngx_str_t                          ssl_trusted_certificate;
    ngx_ssl_t                         *ssl;
    ngx_str_t                          user;
    ngx_str_t                          password;    /* never logged */
    ngx_uint_t                         database;
    ngx_str_t                          prefix;
    ngx_msec_t                         connect_timeout;
    ngx_msec_t                         timeout;
    ngx_uint_t                         max_inflight;
    size_t                             max_reply_size;

    /* Sentinel (_redis_sentinel.c): the primary is asked of these */
    ngx_array_t                       *sentinels;   /* ngx_addr_t */
    ngx_array_t                       *sentinel_hosts; /* ngx_str_t, TLS */
    ngx_flag_t                         sentinel_tls;
    ngx_flag_t                         sentinel_ssl_verify;
    ngx_ssl_t                         *sentinel_ssl;
    ngx_str_t                          sentinel_master;
    ngx_str_t                          sentinel_user;
    ngx_str_t                          sentinel_password; /* never logged */

    /* Redis Cluster (_redis_cluster.c): the slot map is asked of these */
    ngx_array_t                       *cluster_seeds; /* ngx_addr_t */
} ngx_http_mg_redis_conf_t;


/* model_gateway_price MODEL input= output= cached= (_metrics.c) */
typedef struct {
    ngx_str_t                          model;
    uint64_t                           price[3];
    ngx_str_t                          file;
    ngx_uint_t                         line;
} ngx_http_model_gateway_price_t;


/* model_gateway_tenant_limits: rpm, tpm, tpd, budget; 0: none */
typedef struct {
    ngx_str_t                          name;        /* "*": the default */
    uint64_t                           limit[4];
} ngx_http_model_gateway_tenant_t;


typedef struct {
    ngx_array_t                        backends;    /* _backend_t * */
    ngx_array_t                        models;      /* _model_t */
    ngx_http_model_gateway_model_t     state_model; /* OpenAI-type ones */
    ngx_str_t                          state_default; /* backend name */
    ngx_msec_t                         response_ttl;
    ngx_msec_t                         conversation_ttl;
    ngx_hash_t                         model_hash;
    ngx_str_t                          models_json; /* GET /models body */

    ngx_msec_t                         connect_timeout;
    ngx_msec_t                         first_byte_timeout;
    ngx_msec_t                         idle_timeout;
    ngx_str_t                          ssl_trusted_certificate;

    size_t                             zone_size;
    ngx_uint_t                         metrics_tenants;
    ngx_shm_zone_t                    *shm_zone;
    ngx_slab_pool_t                   *shpool;
    ngx_http_model_gateway_shm_t      *sh;
    ngx_uint_t                         max_fails;
    ngx_msec_t                         fail_window;
    ngx_msec_t                         cooldown;
    ngx_msec_t                         retry_after_max;
    ngx_msec_t                         rate_limit_cooldown;
    ngx_msec_t                         ewma_decay;

    ngx_http_mg_redis_conf_t           redis_conf;
    ngx_http_mg_redis_conf_t          *redis;       /* NULL: no Redis */

    /* the worker's cache of keys looked up in Redis (_keys.c) */
    ngx_msec_t                         key_cache_time;
    ngx_uint_t                         key_cache_size;

    /* limits (_limits.c) */
    ngx_array_t                       *tenant_limits; /* _tenant_t, sorted */
    ngx_http_model_gateway_tenant_t   *tenant_default; /* "*" */
    ngx_uint_t                         limit_fallback;
    ngx_uint_t                         limit_nodes;
    ngx_uint_t                         limit_bytes_per_token;
    ngx_uint_t                         limit_default_max_tokens;
    size_t                             limit_zone_size;
    ngx_msec_t                         limit_settle_interval;
    ngx_uint_t                         limit_batch; /* leases (_lease.c) */
    ngx_msec_t                         limit_lease;
    ngx_shm_zone_t                    *limit_zone;
    ngx_http_model_gateway_lru_t      *limit_sh;

    ngx_array_t                       *prices;      /* _price_t */

    ngx_msec_t                         admin_sync;  /* admin state poll */
    ngx_uint_t                         admin;       /* an admin location */

    /* the node's cache of session pins and id mappings (_lru.c) */
    ngx_msec_t                         state_cache;
    ngx_uint_t                         cache_wanted;
    size_t                             cache_size;
    ngx_shm_zone_t                    *cache_zone;
    ngx_http_model_gateway_lru_t      *cache;

    ngx_http_upstream_srv_conf_t      *upstream;    /* our peer selector */

    /*
     * the phases (see _phases.c): features register their handlers in
     * postconfiguration with ngx_http_model_gateway_route_add(),
     * _commit_add() and _done_add(), and put a link at the top of the
     * event chain
     */
    ngx_array_t                        route_handlers; /* _route_t, sorted */
    ngx_array_t                        commit_handlers; /* _commit_pt */
    ngx_array_t                        done_handlers;  /* _done_pt */
    ngx_http_model_gateway_event_pt    event_filter;   /* the chain's top */
} ngx_http_model_gateway_main_conf_t;


typedef struct {
    ngx_str_t                          model;
    ngx_uint_t                         policy;
} ngx_http_model_gateway_policy_t;


/* the keys of a key file, sorted by hash, in the conf pool (_keys.c) */
typedef struct {
    ngx_str_t                          name;
    mg_key_t                         **keys;
    ngx_uint_t                         nkeys;
} ngx_http_model_gateway_keys_t;


typedef struct {
    ngx_flag_t                         enable;
    ngx_flag_t                         metrics;     /* the endpoint */
    ngx_uint_t                         balance;     /* default policy */
    ngx_array_t                       *balance_models; /* _policy_t */
    ngx_uint_t                         responses;   /* default mode */
    ngx_array_t                       *responses_models; /* _policy_t */
    ngx_uint_t                         history_max_items;
    size_t                             history_max_bytes;
    ngx_flag_t                         backend_header;

    ngx_array_t                       *forward_headers; /* operator's */
    ngx_array_t                       *session_headers; /* never sent */

    /* identity from nginx's own variables (auth_request, mTLS, njs) */
    ngx_http_complex_value_t          *identity_tenant;
    ngx_http_complex_value_t          *identity_key_id;

    /* gateway keys: a key file, Redis, or both (_keys.c) */
    ngx_http_model_gateway_keys_t     *key_file;
    ngx_flag_t                         key_redis;
    ngx_flag_t                         auth;        /* identity required */

    /* the admin API's keys (_admin.c) */
    ngx_http_model_gateway_keys_t     *admin_keys;

    ngx_http_complex_value_t          *session;
    ngx_msec_t                         session_idle;
    ngx_msec_t                         session_max;
    ngx_msec_t                         session_cache;
    ngx_uint_t                         session_mode;
    ngx_uint_t                         session_fallback;
    ngx_uint_t                         tries;
    ngx_msec_t                         total_timeout;
    ngx_flag_t                         retry_idle_timeout;
    size_t                             max_body_size;
    size_t                             buffer_size;
    size_t                             event_max_size;
    size_t                             response_max_size;
} ngx_http_model_gateway_loc_conf_t;


typedef enum {
    NGX_HTTP_MG_RESP_STATUS = 0,
    NGX_HTTP_MG_RESP_HEADERS,
    NGX_HTTP_MG_RESP_BODY
} ngx_http_model_gateway_resp_state_e;


typedef enum {
    NGX_HTTP_MG_BODY_WHOLE = 0,        /* read whole, then send */
    NGX_HTTP_MG_BODY_STREAM            /* SSE, held until first content */
} ngx_http_model_gateway_body_mode_e;


typedef enum {
    NGX_HTTP_MG_FRAME_CLOSE = 0,
    NGX_HTTP_MG_FRAME_LENGTH,
    NGX_HTTP_MG_FRAME_CHUNKED
} ngx_http_model_gateway_framing_e;


/*
 * What one attempt learns of its response: a new attempt starts from zero
 * (length is then set to -1, unknown).
 */
typedef struct {
    ngx_http_model_gateway_resp_state_e  resp_state;
    ngx_http_model_gateway_body_mode_e   mode;
    ngx_http_model_gateway_framing_e     framing;
    ngx_http_status_t                  status;
    ngx_http_chunked_t                 chunked;
    off_t                              length;      /* bytes left */
    ngx_str_t                          content_type;
    ngx_str_t                          errortype;   /* x-amzn-errortype */
    size_t                             received;    /* bytes this attempt */
    u_char                            *body_start;  /* in u->buffer */
    u_char                            *scanned;     /* held bytes parsed */
    ngx_buf_t                         *whole;       /* body read whole */
    ngx_int_t                          fail_status;
    unsigned                           eventstream:1;
    unsigned                           upstream_close:1;
    unsigned                           framing_done:1;
    unsigned                           keepalive:1;
} ngx_http_model_gateway_attempt_t;


/*
 * Who is calling (_identity.c): the tenant every stored object belongs to,
 * and the key's id, for logs.  An empty tenant: authentication is off in
 * this location, and stored objects keep the layout they had before it.
 */
typedef struct {
    ngx_str_t                          tenant;
    ngx_str_t                          key_id;
    const mg_key_t                    *key;         /* its policy, or NULL */
    void                              *lookup;      /* Redis, waited for */
    ngx_queue_t                        wait;        /* in the lookup's list */
    ngx_int_t                          status;      /* a refusal decided */
    u_char                             hash[MG_KEY_HASH_LEN];
    unsigned                           done:1;      /* access phase ran */
} ngx_http_model_gateway_identity_t;


/* a session pinned to a backend (_session.c) */
typedef struct {
    ngx_str_t                          key;         /* empty: none */
    ngx_str_t                          pin_key;
    ngx_int_t                          pinned;      /* target, or -1 */
    ngx_int_t                          hashed;      /* rendezvous choice */
    ngx_str_t                          backend;     /* as Redis named it */
    ngx_uint_t                         status;      /* NGX_HTTP_MG_PIN_* */
    void                              *cmd;         /* Redis, in flight */
    ngx_int_t                          prepare_rc;
    unsigned                           prepared:1;
} ngx_http_model_gateway_session_t;


/* Responses and Conversations (_state.c) */
typedef struct {
    ngx_uint_t                         kind;        /* NGX_HTTP_MG_STATE_* */
    ngx_uint_t                         via;         /* the id's kind */
    ngx_str_t                          id;
    ngx_str_t                          key;
    void                              *cmd;         /* Redis, in flight */
    ngx_buf_t                         *held;        /* last byte, held */
    unsigned                           single:1;    /* no failover */
    unsigned                           store_pending:1;
    unsigned                           stored:1;
    unsigned                           finish_pending:1;
} ngx_http_model_gateway_state_t;


/* the stream after commit (_stream.c) */
typedef struct {
    ngx_chain_t                       *out;         /* this read's output */
    ngx_buf_t                         *out_buf;
    ngx_http_upstream_handler_pt       read_handler; /* upstream's own */
    ngx_str_t                          error;       /* why it was cut */
    unsigned                           done_seen:1;
    unsigned                           error_seen:1;
    unsigned                           closed:1;
    unsigned                           passthrough:1;
    unsigned                           last_sent:1; /* end went with data */
} ngx_http_model_gateway_stream_t;


/*
 * The tokens an answer used, as its usage said (_usage.c): read from what
 * reaches the client (an OpenAI-shaped body or stream, translated or not),
 * so every provider counts the same way.  known: a usage was seen.
 */
typedef struct {
    uint64_t                           prompt;
    uint64_t                           completion;
    uint64_t                           cached;      /* of the prompt's */
    unsigned                           known:1;

    /* how _usage.c finds them: what it watches, and its own state */
    unsigned                           watch:3;     /* NGX_HTTP_MG_USAGE_* */
    unsigned                           edit:1;      /* the client's chat
                                                       stream did not ask */
    unsigned                           strip:1;     /* so its usage chunk is
                                                       not the client's */
    mg_usage_edit_t                    request;     /* what asks for it */
    ngx_buf_t                         *tail;        /* of an answer that
                                                       ends with the
                                                       connection */
} ngx_http_model_gateway_usage_t;


/* what the x-ratelimit-*-requests or -tokens headers say */
typedef struct {
    uint64_t                           limit;
    uint64_t                           remaining;
    int64_t                            reset;       /* ms */
    unsigned                           set:1;
} ngx_http_model_gateway_limit_hdr_t;


/* the limits a request is charged against (_limits.c) */
typedef struct {
    ngx_uint_t                         n;
    ngx_str_t                          keys[NGX_HTTP_MG_LIMITS_MAX];
    uint64_t                           limit[NGX_HTTP_MG_LIMITS_MAX];
    u_char                             kind[NGX_HTTP_MG_LIMITS_MAX];
    u_char                             which[NGX_HTTP_MG_LIMITS_MAX];
    u_char                             of_key[NGX_HTTP_MG_LIMITS_MAX];
    uint64_t                           reserved;    /* tokens */
    int64_t                            day;         /* UTC, of the charge */
    int64_t                            retry_ms;    /* refused: the wait */
    void                              *cmd;         /* Redis, in flight */
    ngx_http_model_gateway_limit_hdr_t hdr[2];      /* requests, tokens */
    unsigned                           charged:2;   /* where, or 0 */
    unsigned                           pin:1;       /* with the session */
    unsigned                           headers_done:1;
} ngx_http_model_gateway_limits_t;


/* an error the gateway itself answers, rendered by _filter.c */
typedef struct {
    ngx_uint_t                         status;
    const char                        *message;
    ngx_str_t                          message_str;
    const char                        *type;
    const char                        *param;
    const char                        *code;
    ngx_int_t                          retry_after;  /* seconds */
    ngx_buf_t                         *body;
    unsigned                           rendering:1;
    unsigned                           sent:1;
} ngx_http_model_gateway_err_t;


struct ngx_http_model_gateway_ctx_s {
    ngx_http_request_t                *request;
    ngx_http_model_gateway_loc_conf_t *lcf;

    void                              *admin;       /* an admin request's */

    /* the request */
    mg_endpoint_t                      endpoint;
    ngx_str_t                          body;        /* whole client body */
    ngx_str_t                          model;       /* client-visible */
    size_t                             model_start; /* token in body */
    size_t                             model_len;
    ngx_http_model_gateway_model_t    *model_conf;
    ngx_array_t                       *fwd;         /* client headers kept */
    size_t                             fwd_len;
    ngx_str_t                          uri_suffix;  /* "/chat/completions" */
    ngx_str_t                          method;      /* to the backend */
    unsigned                           streaming:1; /* the client's ask */
    unsigned                           include_usage:1;
    unsigned                           tokens_asked_set:3;
    uint64_t                           tokens_asked[NGX_HTTP_MG_TOKEN_FIELDS];

    /* translated requests per target, and a stream translator */
    ngx_str_t                         *xbody;
    ngx_http_model_gateway_model_t    *xbody_model; /* xbody's targets */
    const ngx_http_model_gateway_provider_t  *xlate;
    void                              *xstream;
    mg_buf_t                           xout;

    /* routing */
    ngx_msec_t                         start;       /* the handler's */
    ngx_uint_t                         route_index;
    ngx_uint_t                         policy;
    ngx_msec_t                         attempt_start;
    ngx_msec_t                         first_byte_at;
    ngx_msec_t                         cool_wait;   /* all cooling down */
    unsigned                           cool_limited:1;
    unsigned                           all_cooling:1;
    unsigned                           trial:1;
    unsigned                           counted:1;
    ngx_int_t                          preferred;   /* target, or -1 */
    u_char                            *tried;       /* per target */
    ngx_http_model_gateway_target_t   *target;
    ngx_uint_t                         attempts;
    ngx_uint_t                         stale_retries;
    ngx_array_t                        attempt_log; /* ngx_str_t */

    /* what the route handlers keep of a request */
    ngx_http_model_gateway_identity_t  identity;
    ngx_http_model_gateway_session_t   session;
    ngx_http_model_gateway_state_t     state;
    ngx_http_model_gateway_memory_t   *memory;      /* gateway-held */
    void                              *conversation; /* _memory_conv.c */

    /* the current attempt's response, reset with one memzero */
    ngx_http_model_gateway_attempt_t   attempt;
    off_t                              content_length;
    ngx_array_t                        headers;     /* kept: _table_elt_t */
    mg_sse_parser_t                    sse;
    mg_es_decoder_t                    es;          /* Bedrock streams */
    mg_sse_handler_pt                  es_handler;  /* while feeding it */
    unsigned                           committed:1;

    /* per attempt too, but read by shm.c and filter.c */
    ngx_int_t                          retry_after_ms;
    ngx_http_model_gateway_fail_e      fail;

    /* the stream, once committed to the client */
    ngx_http_model_gateway_stream_t    stream;

    /* the overall outcome */
    ngx_http_model_gateway_fail_e      last_fail;
    ngx_uint_t                         last_fail_status;
    ngx_uint_t                         failures;
    ngx_uint_t                         rate_limited;
    ngx_int_t                          min_retry_after_ms;
    ngx_event_t                        total_timer;
    unsigned                           total_expired:1;

    /* the tokens the answer used, and the limits they count against */
    ngx_http_model_gateway_usage_t     usage;
    ngx_http_model_gateway_limits_t    limits;

    /* an error the gateway itself answers */
    ngx_http_model_gateway_err_t       err;
};


extern ngx_module_t  ngx_http_model_gateway_module;


/* phases.c */
ngx_int_t ngx_http_model_gateway_route_add(ngx_conf_t *cf,
    ngx_http_model_gateway_route_pt handler, ngx_uint_t order);
ngx_int_t ngx_http_model_gateway_commit_add(ngx_conf_t *cf,
    ngx_http_model_gateway_commit_pt handler);
ngx_int_t ngx_http_model_gateway_done_add(ngx_conf_t *cf,
    ngx_http_model_gateway_done_pt handler);
ngx_int_t ngx_http_model_gateway_run_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
void ngx_http_model_gateway_run_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_int_t rc);

/* handler.c */
ngx_int_t ngx_http_model_gateway_handler(ngx_http_request_t *r);
void ngx_http_model_gateway_route_done(ngx_http_request_t *r,
    ngx_int_t rc);
ngx_http_model_gateway_ctx_t *ngx_http_model_gateway_get_ctx(
    ngx_http_request_t *r);
ngx_int_t ngx_http_model_gateway_send_json(ngx_http_request_t *r,
    ngx_str_t *json);
ngx_int_t ngx_http_model_gateway_send_json_status(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *json);
ngx_int_t ngx_http_model_gateway_fail(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, const char *code,
    const char *param, const char *message);

/* body.c */
ngx_int_t ngx_http_model_gateway_parse_body(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_body_in_memory(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

/* peer.c */
ngx_int_t ngx_http_model_gateway_upstream_start(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);

/* stream.c */
ngx_int_t ngx_http_model_gateway_emit(ngx_http_model_gateway_ctx_t *ctx,
    const u_char *data, size_t len);
ngx_int_t ngx_http_model_gateway_write_event(
    ngx_http_model_gateway_ctx_t *ctx, const mg_sse_event_t *ev);

/* keepalive.c */
ngx_int_t ngx_http_model_gateway_keepalive_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);

/* resolve.c */
ngx_int_t ngx_http_model_gateway_resolve_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);

/* health.c */
char *ngx_http_model_gateway_health_directive(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value, ngx_uint_t n);
ngx_int_t ngx_http_model_gateway_health_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b);
ngx_int_t ngx_http_model_gateway_health_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);

/* shm.c */
ngx_int_t ngx_http_model_gateway_zone_add(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf);
ngx_int_t ngx_http_model_gateway_balance(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
void ngx_http_model_gateway_balance_done(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t failed);

/* translate.c */
ngx_int_t ngx_http_model_gateway_translate_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_translate_init(ngx_conf_t *cf);
ngx_int_t ngx_http_model_gateway_translate_commit(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_translate_finish(
    ngx_http_model_gateway_ctx_t *ctx);

/* identity.c */
char *ngx_http_model_gateway_identity(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_model_gateway_identity_init(ngx_conf_t *cf);
ngx_int_t ngx_http_model_gateway_name_ok(ngx_str_t *s, size_t max);
ngx_int_t ngx_http_model_gateway_models_allowed(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *json);

/* keys.c */
char *ngx_http_model_gateway_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_model_gateway_keys_t *ngx_http_model_gateway_keys_load(
    ngx_conf_t *cf, ngx_str_t *path);
const mg_key_t *ngx_http_model_gateway_keys_find(
    ngx_http_model_gateway_keys_t *keys, const u_char *hash);
ngx_int_t ngx_http_model_gateway_key_cache_get(
    ngx_http_model_gateway_main_conf_t *mcf, const u_char *hash,
    const mg_key_t **key);
void ngx_http_model_gateway_key_cache_put(
    ngx_http_model_gateway_main_conf_t *mcf, const u_char *hash,
    const mg_key_t *key);
mg_key_t *ngx_http_model_gateway_key_copy(ngx_pool_t *pool,
    const mg_key_t *key);

/* headers.c */
char *ngx_http_model_gateway_forward_headers(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_model_gateway_headers_merge(ngx_conf_t *cf,
    ngx_http_model_gateway_loc_conf_t *prev,
    ngx_http_model_gateway_loc_conf_t *conf);
char *ngx_http_model_gateway_backend_header(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *name, ngx_str_t *value);
ngx_int_t ngx_http_model_gateway_headers_collect(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
size_t ngx_http_model_gateway_headers_len(ngx_http_model_gateway_ctx_t *ctx,
    ngx_http_model_gateway_backend_t *b);
u_char *ngx_http_model_gateway_headers_write(
    ngx_http_model_gateway_ctx_t *ctx, ngx_http_model_gateway_backend_t *b,
    u_char *p);

/* aws.c */
char *ngx_http_model_gateway_aws_credentials(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value, ngx_uint_t n);
ngx_int_t ngx_http_model_gateway_aws_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
ngx_int_t ngx_http_model_gateway_aws_sign(ngx_http_request_t *r,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *path, ngx_str_t *body,
    ngx_str_t *out);

/* peer.c, handler.c: their directives and conf-time pieces */
char *ngx_http_model_gateway_balance_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_build_models_json(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf);

/* limits.c */
char *ngx_http_model_gateway_tenant_limits(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_limits_init(ngx_conf_t *cf);
ngx_int_t ngx_http_model_gateway_limits_headers(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

/* state.c */
ngx_int_t ngx_http_model_gateway_state_init(ngx_conf_t *cf);
ngx_uint_t ngx_http_model_gateway_state_by_id(
    ngx_http_model_gateway_ctx_t *ctx);
void ngx_http_model_gateway_state_release(ngx_http_model_gateway_ctx_t *ctx);

/* memory.c */
char *ngx_http_model_gateway_responses_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_memory_init(ngx_conf_t *cf);
char *ngx_http_model_gateway_memory_merge(ngx_conf_t *cf,
    ngx_http_model_gateway_loc_conf_t *conf);
ngx_int_t ngx_http_model_gateway_memory_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_memory_tail(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_memory_finish(
    ngx_http_model_gateway_ctx_t *ctx);
ngx_uint_t ngx_http_model_gateway_memory_id(u_char *id, size_t len);
ngx_uint_t ngx_http_model_gateway_memory_conv_id(u_char *id, size_t len);
ngx_str_t *ngx_http_model_gateway_memory_body(
    ngx_http_model_gateway_ctx_t *ctx, ngx_uint_t i);
ngx_int_t ngx_http_model_gateway_memory_serve(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *id, size_t len,
    u_char *rest, size_t rest_len);
ngx_int_t ngx_http_model_gateway_memory_conversations(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *id, size_t len,
    u_char *rest, size_t rest_len);

/* metrics.c */
char *ngx_http_model_gateway_price(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_model_gateway_metrics_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_metrics_init(ngx_conf_t *cf);
ngx_int_t ngx_http_model_gateway_prices_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf);
void ngx_http_model_gateway_hist_add(ngx_http_model_gateway_hist_t *h,
    const uint64_t *bounds, ngx_uint_t n, uint64_t v);
void ngx_http_model_gateway_metrics_state(ngx_http_request_t *r,
    ngx_uint_t op);
ngx_http_model_gateway_redis_stats_t *ngx_http_model_gateway_redis_stats(
    void);
extern const uint64_t  ngx_http_model_gateway_latency_bounds[];
#define NGX_HTTP_MG_LATENCY_BUCKETS    12

/* admin.c, admin_sync.c (the rest: ngx_http_model_gateway_admin.h) */
char *ngx_http_model_gateway_admin_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_admin_init_process(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);
ngx_int_t ngx_http_model_gateway_key_presented(ngx_http_request_t *r,
    ngx_str_t *key);

/* the weight that balancing and rendezvous hashing use now */
#define ngx_http_model_gateway_weight(b)                                    \
    ((b)->node->admin_weight ? (ngx_int_t) (b)->node->admin_weight          \
                             : (b)->weight)

/* pins.c */
char *ngx_http_model_gateway_session_cache(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_pins_get(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *backend);
void ngx_http_model_gateway_pins_put(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *backend, int64_t born);
void ngx_http_model_gateway_pins_drop(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);

/* client.c: the module's own connections (Redis, sentinels, probes) */
ngx_err_t ngx_http_model_gateway_client_error(ngx_connection_t *c);
void ngx_http_model_gateway_client_close(ngx_peer_connection_t *pc);

/* directives.c */
extern ngx_command_t  ngx_http_model_gateway_commands[];

/* lru.c */
ngx_http_model_gateway_lru_node_t *ngx_http_model_gateway_lru_get(
    ngx_slab_pool_t *shpool, ngx_http_model_gateway_lru_t *lru,
    ngx_str_t *name, size_t size, ngx_uint_t create);
void ngx_http_model_gateway_lru_delete(ngx_slab_pool_t *shpool,
    ngx_http_model_gateway_lru_t *lru, ngx_http_model_gateway_lru_node_t *ln);
ngx_int_t ngx_http_model_gateway_lru_init_zone(ngx_shm_zone_t *shm_zone,
    ngx_http_model_gateway_lru_t **out);
ngx_int_t ngx_http_model_gateway_cache_zone(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf);

/* ids.c */
ngx_int_t ngx_http_model_gateway_ids_get(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *backend);
void ngx_http_model_gateway_ids_put(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, u_char *backend, size_t len);
void ngx_http_model_gateway_ids_drop(ngx_http_request_t *r,
    ngx_str_t *key);

/* status.c */
char *ngx_http_model_gateway_status_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_status_render(ngx_http_request_t *r,
    ngx_uint_t full, ngx_str_t *json);

/* usage.c */
ngx_int_t ngx_http_model_gateway_usage_init(ngx_conf_t *cf);
void ngx_http_model_gateway_usage_request(ngx_http_model_gateway_ctx_t *ctx,
    mg_json_field_t *stream_options);
ngx_uint_t ngx_http_model_gateway_usage_edit(
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_usage_body(
    ngx_http_model_gateway_ctx_t *ctx, u_char *data, size_t len);

/* session.c */
ngx_int_t ngx_http_model_gateway_session_init(ngx_conf_t *cf);
ngx_int_t ngx_http_model_gateway_session_prepare(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx);
ngx_int_t ngx_http_model_gateway_session_resolved(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, const char *name, size_t len,
    ngx_uint_t fresh);
ngx_str_t *ngx_http_model_gateway_pin_status(
    ngx_http_model_gateway_ctx_t *ctx);

/* redis.c */
ngx_int_t ngx_http_mg_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf);

/* backend.c */
char *ngx_http_model_gateway_backend_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_model_gateway_backend_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b);

/* redis_conf.c */
char *ngx_http_model_gateway_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_model_gateway_redis_cluster(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_model_gateway_redis_sentinel(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_model_gateway_redis_password(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_model_gateway_redis_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf);

/* secret.c */
ssize_t ngx_http_model_gateway_conf_file(ngx_conf_t *cf, ngx_str_t *name,
    u_char *buf, size_t size, ngx_str_t *what);
char *ngx_http_model_gateway_read_secret(ngx_conf_t *cf, ngx_uint_t from_env,
    ngx_str_t *value, ngx_str_t *out, ngx_str_t *what);

/* filter.c */
ngx_int_t ngx_http_model_gateway_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_model_gateway_error_json(ngx_http_request_t *r,
    ngx_http_model_gateway_ctx_t *ctx, ngx_str_t *out);

/* variables */
ngx_int_t ngx_http_model_gateway_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_MODEL_GATEWAY_MODULE_H_INCLUDED_ */
