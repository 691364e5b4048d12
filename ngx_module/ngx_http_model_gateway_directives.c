
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The directive table: every model_gateway* directive, its contexts, its
 * handler and where it stores its value, with the bounds and enums the
 * plain ones check against.  The directives that need more than a slot
 * live with their feature; defaults and checks across directives are in
 * _module.c's init and merge.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"


static char *ngx_http_model_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_num_bounds_t  ngx_http_model_gateway_tries_bounds = {
    ngx_conf_check_num_bounds, 1, 16
};


static ngx_conf_enum_t  ngx_http_model_gateway_session_modes[] = {
    { ngx_string("rebind"), NGX_HTTP_MG_SESSION_REBIND },
    { ngx_string("strict"), NGX_HTTP_MG_SESSION_STRICT },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_model_gateway_limit_fallbacks[] = {
    { ngx_string("open"), NGX_HTTP_MG_LIMIT_OPEN },
    { ngx_string("closed"), NGX_HTTP_MG_LIMIT_CLOSED },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_model_gateway_limit_positive = {
    ngx_conf_check_num_bounds, 1, 1000000
};


static ngx_conf_num_bounds_t  ngx_http_model_gateway_limit_max_tokens = {
    ngx_conf_check_num_bounds, 0, 2147483647
};


static ngx_conf_enum_t  ngx_http_model_gateway_session_fallbacks[] = {
    { ngx_string("hash"), NGX_HTTP_MG_FALLBACK_HASH },
    { ngx_string("fail"), NGX_HTTP_MG_FALLBACK_FAIL },
    { ngx_null_string, 0 }
};


ngx_command_t  ngx_http_model_gateway_commands[] = {

    { ngx_string("model_gateway_backend"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_model_gateway_backend_block,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, connect_timeout),
      NULL },

    { ngx_string("model_gateway_first_byte_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, first_byte_timeout),
      NULL },

    { ngx_string("model_gateway_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, idle_timeout),
      NULL },

    { ngx_string("model_gateway_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, ssl_trusted_certificate),
      NULL },

    { ngx_string("model_gateway_zone_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, zone_size),
      NULL },

    { ngx_string("model_gateway_max_fails"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, max_fails),
      NULL },

    { ngx_string("model_gateway_fail_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, fail_window),
      NULL },

    { ngx_string("model_gateway_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, cooldown),
      NULL },

    { ngx_string("model_gateway_retry_after_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, retry_after_max),
      NULL },

    { ngx_string("model_gateway_rate_limit_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, rate_limit_cooldown),
      NULL },

    { ngx_string("model_gateway_ewma_decay"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, ewma_decay),
      NULL },

    { ngx_string("model_gateway_balance"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_model_gateway_balance_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_responses"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_model_gateway_responses_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_history_max_items"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, history_max_items),
      NULL },

    { ngx_string("model_gateway_history_max_bytes"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, history_max_bytes),
      NULL },

    { ngx_string("model_gateway_backend_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, backend_header),
      NULL },

    { ngx_string("model_gateway_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_redis_sentinel"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_model_gateway_redis_sentinel,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_redis_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_model_gateway_redis_cluster,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_redis_sentinel_master"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t,
               redis_conf.sentinel_master),
      NULL },

    { ngx_string("model_gateway_redis_sentinel_tls"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.sentinel_tls),
      NULL },

    { ngx_string("model_gateway_redis_sentinel_tls_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t,
               redis_conf.sentinel_ssl_verify),
      NULL },

    { ngx_string("model_gateway_redis_sentinel_user"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.sentinel_user),
      NULL },

    { ngx_string("model_gateway_redis_sentinel_password_env"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis_password,
      NGX_HTTP_MAIN_CONF_OFFSET,
      5,
      NULL },

    { ngx_string("model_gateway_redis_sentinel_password_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis_password,
      NGX_HTTP_MAIN_CONF_OFFSET,
      4,
      NULL },

    { ngx_string("model_gateway_redis_tls"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.tls),
      NULL },

    { ngx_string("model_gateway_redis_tls_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.ssl_verify),
      NULL },

    { ngx_string("model_gateway_redis_tls_name"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.ssl_name),
      NULL },

    { ngx_string("model_gateway_redis_tls_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t,
               redis_conf.ssl_trusted_certificate),
      NULL },

    { ngx_string("model_gateway_redis_user"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.user),
      NULL },

    { ngx_string("model_gateway_redis_user_env"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis_password,
      NGX_HTTP_MAIN_CONF_OFFSET,
      3,
      NULL },

    { ngx_string("model_gateway_redis_user_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis_password,
      NGX_HTTP_MAIN_CONF_OFFSET,
      2,
      NULL },

    { ngx_string("model_gateway_redis_password_env"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis_password,
      NGX_HTTP_MAIN_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("model_gateway_redis_password_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_redis_password,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_redis_database"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.database),
      NULL },

    { ngx_string("model_gateway_redis_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.prefix),
      NULL },

    { ngx_string("model_gateway_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t,
               redis_conf.connect_timeout),
      NULL },

    { ngx_string("model_gateway_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.timeout),
      NULL },

    { ngx_string("model_gateway_redis_max_inflight"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, redis_conf.max_inflight),
      NULL },

    { ngx_string("model_gateway_redis_max_reply_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t,
               redis_conf.max_reply_size),
      NULL },

    { ngx_string("model_gateway_state_default_backend"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, state_default),
      NULL },

    { ngx_string("model_gateway_response_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, response_ttl),
      NULL },

    { ngx_string("model_gateway_conversation_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, conversation_ttl),
      NULL },

    { ngx_string("model_gateway_session"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, session),
      NULL },

    { ngx_string("model_gateway_session_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, session_idle),
      NULL },

    { ngx_string("model_gateway_session_max_lifetime"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, session_max),
      NULL },

    { ngx_string("model_gateway_session_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_session_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_state_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, state_cache),
      NULL },

    { ngx_string("model_gateway_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, cache_size),
      NULL },

    { ngx_string("model_gateway_session_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, session_mode),
      &ngx_http_model_gateway_session_modes },

    { ngx_string("model_gateway_session_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, session_fallback),
      &ngx_http_model_gateway_session_fallbacks },

    { ngx_string("model_gateway"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_model_gateway,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_identity"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_model_gateway_identity,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_key_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_key_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, key_redis),
      NULL },

    { ngx_string("model_gateway_key_cache_time"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, key_cache_time),
      NULL },

    { ngx_string("model_gateway_price"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_model_gateway_price,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_model_gateway_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_metrics_tenants"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, metrics_tenants),
      NULL },

    { ngx_string("model_gateway_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_model_gateway_admin_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_admin_sync"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, admin_sync),
      NULL },

    { ngx_string("model_gateway_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_model_gateway_status_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_tenant_limits"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_model_gateway_tenant_limits,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_limit_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_fallback),
      &ngx_http_model_gateway_limit_fallbacks },

    { ngx_string("model_gateway_limit_nodes"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_nodes),
      &ngx_http_model_gateway_limit_positive },

    { ngx_string("model_gateway_limit_bytes_per_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_bytes_per_token),
      &ngx_http_model_gateway_limit_positive },

    { ngx_string("model_gateway_limit_default_max_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_default_max_tokens),
      &ngx_http_model_gateway_limit_max_tokens },

    { ngx_string("model_gateway_limit_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_batch),
      NULL },

    { ngx_string("model_gateway_limit_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_lease),
      NULL },

    { ngx_string("model_gateway_limit_settle_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_settle_interval),
      NULL },

    { ngx_string("model_gateway_limit_zone_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, limit_zone_size),
      NULL },

    { ngx_string("model_gateway_key_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_main_conf_t, key_cache_size),
      NULL },

    { ngx_string("model_gateway_forward_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_model_gateway_forward_headers,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("model_gateway_tries"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, tries),
      &ngx_http_model_gateway_tries_bounds },

    { ngx_string("model_gateway_total_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, total_timeout),
      NULL },

    { ngx_string("model_gateway_retry_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, retry_idle_timeout),
      NULL },

    { ngx_string("model_gateway_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("model_gateway_buffer_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, buffer_size),
      NULL },

    { ngx_string("model_gateway_event_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, event_max_size),
      NULL },

    { ngx_string("model_gateway_response_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_model_gateway_loc_conf_t, response_max_size),
      NULL },

      ngx_null_command
};


static char *
ngx_http_model_gateway(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_model_gateway_loc_conf_t *mlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (mlcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    mlcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_model_gateway_handler;

    return NGX_CONF_OK;
}
