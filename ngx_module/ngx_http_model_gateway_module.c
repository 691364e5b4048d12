
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Configuration (its creation, defaults, checks and merges) and the module
 * tables; the directive table is _directives.c's.  The request path lives
 * in _handler.c (validation and routing) and _peer.c (talking to
 * backends); error responses are rendered by _filter.c.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"


#define NGX_HTTP_MG_DEFAULT_CA  "/etc/ssl/certs/ca-certificates.crt"


static void *ngx_http_model_gateway_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_model_gateway_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_model_gateway_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_model_gateway_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_model_gateway_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_model_gateway_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_model_gateway_init_process(ngx_cycle_t *cycle);
static void ngx_http_model_gateway_exit_process(ngx_cycle_t *cycle);

static ngx_http_module_t  ngx_http_model_gateway_module_ctx = {
    ngx_http_model_gateway_preconfiguration, /* preconfiguration */
    ngx_http_model_gateway_postconfiguration, /* postconfiguration */

    ngx_http_model_gateway_create_main_conf, /* create main configuration */
    ngx_http_model_gateway_init_main_conf, /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_model_gateway_create_loc_conf, /* create location configuration */
    ngx_http_model_gateway_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_model_gateway_module = {
    NGX_MODULE_V1,
    &ngx_http_model_gateway_module_ctx,    /* module context */
    ngx_http_model_gateway_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_model_gateway_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_model_gateway_exit_process,   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_model_gateway_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_model_gateway_add_variables(cf);
}


static ngx_int_t
ngx_http_model_gateway_postconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_model_gateway_filter_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * route handlers run in their declared order (an object id routes
     * before, and instead of, a session key); commit and done handlers in
     * the order registered here; event links run from the last registered
     * down: translation sees a provider's events first
     */

    if (ngx_http_model_gateway_identity_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_limits_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_session_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_state_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* its event link sits below translation: it reads chat chunks */

    if (ngx_http_model_gateway_memory_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_translate_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_metrics_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* usage reads a translated event's counts once it is translated */

    return ngx_http_model_gateway_usage_init(cf);
}


static void *
ngx_http_model_gateway_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_srv_conf_t        *us;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_model_gateway_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mcf->backends, cf->pool, 4,
                       sizeof(ngx_http_model_gateway_backend_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mcf->models, cf->pool, 8,
                       sizeof(ngx_http_model_gateway_model_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mcf->route_handlers, cf->pool, 2,
                       sizeof(ngx_http_model_gateway_route_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mcf->commit_handlers, cf->pool, 2,
                       sizeof(ngx_http_model_gateway_commit_pt))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mcf->done_handlers, cf->pool, 2,
                       sizeof(ngx_http_model_gateway_done_pt))
        != NGX_OK)
    {
        return NULL;
    }

    /* the event chain's last link: the bytes to the client */

    mcf->event_filter = ngx_http_model_gateway_write_event;

    mcf->redis_conf.tls = NGX_CONF_UNSET;
    mcf->redis_conf.ssl_verify = NGX_CONF_UNSET;
    mcf->redis_conf.sentinel_tls = NGX_CONF_UNSET;
    mcf->redis_conf.sentinel_ssl_verify = NGX_CONF_UNSET;
    mcf->redis_conf.database = NGX_CONF_UNSET_UINT;
    mcf->redis_conf.connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_conf.timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_conf.max_inflight = NGX_CONF_UNSET_UINT;
    mcf->redis_conf.max_reply_size = NGX_CONF_UNSET_SIZE;
    mcf->response_ttl = NGX_CONF_UNSET_MSEC;
    mcf->conversation_ttl = NGX_CONF_UNSET_MSEC;
    mcf->zone_size = NGX_CONF_UNSET_SIZE;
    mcf->metrics_tenants = NGX_CONF_UNSET_UINT;
    mcf->max_fails = NGX_CONF_UNSET_UINT;
    mcf->fail_window = NGX_CONF_UNSET_MSEC;
    mcf->cooldown = NGX_CONF_UNSET_MSEC;
    mcf->retry_after_max = NGX_CONF_UNSET_MSEC;
    mcf->rate_limit_cooldown = NGX_CONF_UNSET_MSEC;
    mcf->ewma_decay = NGX_CONF_UNSET_MSEC;
    mcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->first_byte_timeout = NGX_CONF_UNSET_MSEC;
    mcf->idle_timeout = NGX_CONF_UNSET_MSEC;
    mcf->key_cache_time = NGX_CONF_UNSET_MSEC;
    mcf->key_cache_size = NGX_CONF_UNSET_UINT;
    mcf->limit_fallback = NGX_CONF_UNSET_UINT;
    mcf->limit_nodes = NGX_CONF_UNSET_UINT;
    mcf->limit_bytes_per_token = NGX_CONF_UNSET_UINT;
    mcf->limit_default_max_tokens = NGX_CONF_UNSET_UINT;
    mcf->limit_zone_size = NGX_CONF_UNSET_SIZE;
    mcf->limit_settle_interval = NGX_CONF_UNSET_MSEC;
    mcf->limit_batch = NGX_CONF_UNSET_UINT;
    mcf->limit_lease = NGX_CONF_UNSET_MSEC;
    mcf->admin_sync = NGX_CONF_UNSET_MSEC;
    mcf->cache_size = NGX_CONF_UNSET_SIZE;
    mcf->state_cache = NGX_CONF_UNSET_MSEC;

    /*
     * every gateway request selects its backend with our own peer
     * functions, so they share one upstream "block" that nginx never
     * sees in its list of upstreams
     */

    us = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_srv_conf_t));
    if (us == NULL) {
        return NULL;
    }

    us->peer.init = ngx_http_model_gateway_init_peer;
    us->srv_conf = NULL;
    ngx_str_set(&us->host, "model_gateway");
    us->file_name = cf->conf_file->file.name.data;
    us->line = cf->conf_file->line;

    mcf->upstream = us;

    return mcf;
}


static char *
ngx_http_model_gateway_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    ngx_uint_t                          i;
    ngx_http_model_gateway_model_t     *m;
    ngx_http_model_gateway_target_t    *t;
    ngx_http_model_gateway_backend_t  **b;

    ngx_conf_init_msec_value(mcf->connect_timeout, 10000);
    ngx_conf_init_msec_value(mcf->first_byte_timeout, 300000);
    ngx_conf_init_msec_value(mcf->idle_timeout, 120000);
    ngx_conf_init_msec_value(mcf->key_cache_time, 10000);
    ngx_conf_init_uint_value(mcf->key_cache_size, 10000);
    ngx_conf_init_uint_value(mcf->limit_fallback, NGX_HTTP_MG_LIMIT_OPEN);
    ngx_conf_init_uint_value(mcf->limit_nodes, 1);
    ngx_conf_init_uint_value(mcf->limit_bytes_per_token, 4);
    ngx_conf_init_uint_value(mcf->limit_default_max_tokens, 1024);
    ngx_conf_init_size_value(mcf->limit_zone_size, 1024 * 1024);

    if (mcf->limit_zone_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_limit_zone_size\" must be at "
                           "least %uz", 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_msec_value(mcf->limit_settle_interval, 100);
    ngx_conf_init_uint_value(mcf->limit_batch, 1);
    ngx_conf_init_msec_value(mcf->limit_lease, 1000);

    if (mcf->limit_batch < 1 || mcf->limit_batch > 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_limit_batch\" must be 1 to "
                           "1000");
        return NGX_CONF_ERROR;
    }

    if (mcf->limit_lease < 10 || mcf->limit_lease > 60000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_limit_lease\" must be 10ms to "
                           "60s");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_size_value(mcf->zone_size, 1024 * 1024);
    ngx_conf_init_uint_value(mcf->metrics_tenants, 256);

    if (mcf->metrics_tenants > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_metrics_tenants\" is at most "
                           "100000");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_uint_value(mcf->max_fails, 3);
    ngx_conf_init_msec_value(mcf->fail_window, 10000);
    ngx_conf_init_msec_value(mcf->cooldown, 10000);
    ngx_conf_init_msec_value(mcf->retry_after_max, 60000);
    ngx_conf_init_msec_value(mcf->rate_limit_cooldown, 5000);
    ngx_conf_init_msec_value(mcf->ewma_decay, 10000);

    if (mcf->ssl_trusted_certificate.data == NULL) {
        ngx_str_set(&mcf->ssl_trusted_certificate, NGX_HTTP_MG_DEFAULT_CA);
    }

    if (ngx_http_model_gateway_redis_finish(cf, mcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(mcf->admin_sync, 1000);
    ngx_conf_init_size_value(mcf->cache_size, 1024 * 1024);

    if (mcf->cache_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_cache_size\" must be at "
                           "least %uz", 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    if (mcf->cache_wanted && mcf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_session_cache\" caches pins "
                           "read from \"model_gateway_redis\", which is "
                           "not set");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(mcf->state_cache, 60000);

    if (mcf->state_cache > 3600000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_state_cache\" is at most 1h");
        return NGX_CONF_ERROR;
    }

    if (mcf->state_cache && mcf->redis) {
        mcf->cache_wanted = 1;
    }

    if (ngx_http_model_gateway_cache_zone(cf, mcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (mcf->admin_sync < 100 || mcf->admin_sync > 60000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_admin_sync\" must be "
                           "100ms to 60s");
        return NGX_CONF_ERROR;
    }

    if (mcf->admin && mcf->redis == NULL) {

        /* the fleet's weights and drains must be one for every node */

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_admin\" needs "
                           "\"model_gateway_redis\": admin changes are "
                           "kept there, for every node");
        return NGX_CONF_ERROR;
    }

    b = mcf->backends.elts;
    for (i = 0; i < mcf->backends.nelts; i++) {
        if (ngx_http_model_gateway_backend_finish(cf, mcf, b[i]) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    m = mcf->models.elts;
    for (i = 0; i < mcf->models.nelts; i++) {
        if (m[i].targets.nelts > NGX_HTTP_MG_MAX_TARGETS) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "model \"%V\" is served by more than %d backends",
                          &m[i].name, NGX_HTTP_MG_MAX_TARGETS);
            return NGX_CONF_ERROR;
        }

    }

    /*
     * the candidates of requests that name no model (an object by its id,
     * a new conversation): every backend that keeps them natively
     */

    ngx_str_set(&mcf->state_model.name, "");

    if (ngx_array_init(&mcf->state_model.targets, cf->pool, 4,
                       sizeof(ngx_http_model_gateway_target_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < mcf->backends.nelts
                && mcf->state_model.targets.nelts < NGX_HTTP_MG_MAX_TARGETS;
         i++)
    {
        if (!b[i]->responses) {
            continue;
        }

        t = ngx_array_push(&mcf->state_model.targets);
        if (t == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(t, sizeof(ngx_http_model_gateway_target_t));
        t->backend = b[i];
    }

    ngx_conf_init_msec_value(mcf->response_ttl, 30 * 24 * 3600 * 1000ULL);
    ngx_conf_init_msec_value(mcf->conversation_ttl, 0);

    if (mcf->state_default.len) {
        for (i = 0; i < mcf->backends.nelts; i++) {
            if (b[i]->name.len == mcf->state_default.len
                && ngx_strncmp(b[i]->name.data, mcf->state_default.data,
                               b[i]->name.len) == 0)
            {
                break;
            }
        }

        if (i == mcf->backends.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"model_gateway_state_default_backend\" names "
                          "an unknown backend \"%V\"", &mcf->state_default);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->backends.nelts
        && ngx_http_model_gateway_zone_add(cf, mcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_model_gateway_prices_finish(cf, mcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_model_gateway_build_models_json(cf, mcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_model_gateway_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_model_gateway_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_model_gateway_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->balance = NGX_CONF_UNSET_UINT;
    conf->balance_models = NGX_CONF_UNSET_PTR;
    conf->responses = NGX_CONF_UNSET_UINT;
    conf->responses_models = NGX_CONF_UNSET_PTR;
    conf->history_max_items = NGX_CONF_UNSET_UINT;
    conf->history_max_bytes = NGX_CONF_UNSET_SIZE;
    conf->backend_header = NGX_CONF_UNSET;
    conf->session = NGX_CONF_UNSET_PTR;
    conf->session_idle = NGX_CONF_UNSET_MSEC;
    conf->session_max = NGX_CONF_UNSET_MSEC;
    conf->session_cache = NGX_CONF_UNSET_MSEC;
    conf->session_mode = NGX_CONF_UNSET_UINT;
    conf->session_fallback = NGX_CONF_UNSET_UINT;
    conf->tries = NGX_CONF_UNSET_UINT;
    conf->forward_headers = NGX_CONF_UNSET_PTR;
    conf->identity_tenant = NGX_CONF_UNSET_PTR;
    conf->identity_key_id = NGX_CONF_UNSET_PTR;
    conf->key_file = NGX_CONF_UNSET_PTR;
    conf->key_redis = NGX_CONF_UNSET;
    conf->total_timeout = NGX_CONF_UNSET_MSEC;
    conf->retry_idle_timeout = NGX_CONF_UNSET;
    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->buffer_size = NGX_CONF_UNSET_SIZE;
    conf->event_max_size = NGX_CONF_UNSET_SIZE;
    conf->response_max_size = NGX_CONF_UNSET_SIZE;

    return conf;
}


static char *
ngx_http_model_gateway_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_model_gateway_loc_conf_t *prev = parent;
    ngx_http_model_gateway_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_model_gateway_main_conf_t  *mcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_uint_value(conf->balance, prev->balance,
                              NGX_HTTP_MG_BALANCE_ROUND_ROBIN);
    ngx_conf_merge_ptr_value(conf->balance_models, prev->balance_models,
                             NULL);
    ngx_conf_merge_uint_value(conf->responses, prev->responses,
                              NGX_HTTP_MG_RESPONSES_NATIVE);
    ngx_conf_merge_ptr_value(conf->responses_models, prev->responses_models,
                             NULL);
    ngx_conf_merge_uint_value(conf->history_max_items,
                              prev->history_max_items, 1000);
    ngx_conf_merge_size_value(conf->history_max_bytes,
                              prev->history_max_bytes, 512 * 1024);
    ngx_conf_merge_value(conf->backend_header, prev->backend_header, 1);
    ngx_conf_merge_ptr_value(conf->session, prev->session, NULL);
    ngx_conf_merge_msec_value(conf->session_idle, prev->session_idle,
                              30 * 60 * 1000);
    ngx_conf_merge_msec_value(conf->session_max, prev->session_max,
                              24 * 60 * 60 * 1000);
    ngx_conf_merge_msec_value(conf->session_cache, prev->session_cache, 0);
    ngx_conf_merge_uint_value(conf->session_mode, prev->session_mode,
                              NGX_HTTP_MG_SESSION_REBIND);
    ngx_conf_merge_uint_value(conf->session_fallback, prev->session_fallback,
                              NGX_HTTP_MG_FALLBACK_HASH);
    ngx_conf_merge_uint_value(conf->tries, prev->tries, 3);
    ngx_conf_merge_msec_value(conf->total_timeout, prev->total_timeout,
                              600000);
    ngx_conf_merge_value(conf->retry_idle_timeout, prev->retry_idle_timeout,
                         0);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              4 * 1024 * 1024);
    ngx_conf_merge_size_value(conf->buffer_size, prev->buffer_size,
                              16 * 1024);
    ngx_conf_merge_size_value(conf->event_max_size, prev->event_max_size,
                              256 * 1024);
    ngx_conf_merge_size_value(conf->response_max_size,
                              prev->response_max_size, 8 * 1024 * 1024);

    if (conf->identity_tenant == NGX_CONF_UNSET_PTR) {
        conf->identity_tenant = (prev->identity_tenant == NGX_CONF_UNSET_PTR)
                                ? NULL : prev->identity_tenant;
        conf->identity_key_id = (prev->identity_key_id == NGX_CONF_UNSET_PTR)
                                ? NULL : prev->identity_key_id;
    }

    ngx_conf_merge_ptr_value(conf->key_file, prev->key_file, NULL);
    ngx_conf_merge_value(conf->key_redis, prev->key_redis, 0);

    /*
     * authentication is on where a key source or an identity is
     * configured, and off elsewhere, so configurations written before
     * gateway keys existed keep working
     */

    conf->auth = (conf->identity_tenant || conf->key_file || conf->key_redis);

    if (conf->enable && conf->key_redis) {
        mcf = ngx_http_conf_get_module_main_conf(cf,
                                                ngx_http_model_gateway_module);

        if (mcf->redis == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"model_gateway_key_redis\" needs "
                               "\"model_gateway_redis\"");
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_model_gateway_headers_merge(cf, prev, conf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (conf->buffer_size < 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_buffer_size\" must be at least 1k");
        return NGX_CONF_ERROR;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    if (ngx_http_model_gateway_memory_merge(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * the body limit is nginx's own, so an oversized body gets its 413
     * (turned into a JSON error by the filter) before it is read.
     * client_body_buffer_size is left alone: while a body arrives, what
     * does not fit in that buffer goes to client_body_temp_path as with
     * plain nginx, and the body is read into memory once it is complete.
     * The core module's location configuration is already merged here.
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    clcf->client_max_body_size = conf->max_body_size;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_model_gateway_init_process(ngx_cycle_t *cycle)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_model_gateway_module);
    if (mcf == NULL) {
        return NGX_OK;
    }

    if (ngx_http_model_gateway_keepalive_init(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_mg_redis_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_admin_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_model_gateway_health_init(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_model_gateway_resolve_init(cycle, mcf);
}


static void
ngx_http_model_gateway_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_mg_redis_exit_process();
}
