
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The model_gateway_redis directives and the Redis configuration's
 * defaults and TLS context; the connection itself lives in _redis.c.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"


static char *ngx_http_mg_redis_named(ngx_http_mg_redis_conf_t *rcf,
    ngx_uint_t how);
static char *ngx_http_mg_redis_addrs(ngx_conf_t *cf, ngx_array_t **addrs,
    ngx_array_t **hosts, in_port_t port, const char *what);
static ngx_int_t ngx_http_mg_redis_ssl(ngx_conf_t *cf, ngx_ssl_t **sslp,
    ngx_flag_t verify, ngx_str_t *trusted);


/* the three ways of naming Redis, which exclude each other */
#define NGX_HTTP_MG_REDIS_ONE       0
#define NGX_HTTP_MG_REDIS_SENTINEL  1
#define NGX_HTTP_MG_REDIS_CLUSTER   2

static const char  *ngx_http_mg_redis_conflicts[] = {
    "cannot be used with \"model_gateway_redis\"",
    "cannot be used with \"model_gateway_redis_sentinel\"",
    "cannot be used with \"model_gateway_redis_cluster\""
};


/* why Redis, already named, cannot be named again this way */

static char *
ngx_http_mg_redis_named(ngx_http_mg_redis_conf_t *rcf, ngx_uint_t how)
{
    ngx_uint_t  was;

    was = rcf->sentinels ? NGX_HTTP_MG_REDIS_SENTINEL
          : rcf->cluster_seeds ? NGX_HTTP_MG_REDIS_CLUSTER
          : NGX_HTTP_MG_REDIS_ONE;

    return (was == how) ? "is duplicate"
                        : (char *) ngx_http_mg_redis_conflicts[was];
}


/* model_gateway_redis HOST[:PORT] | unix:PATH; */

char *
ngx_http_model_gateway_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (mcf->redis) {
        return ngx_http_mg_redis_named(mcf->redis, NGX_HTTP_MG_REDIS_ONE);
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.default_port = 6379;

    /* resolved now: a worker never waits on DNS */

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\"%s%s", &value[1],
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    mcf->redis = &mcf->redis_conf;
    mcf->redis->addr = u.addrs[0];
    mcf->redis->host = u.host;
    mcf->redis->port = u.port;
    mcf->redis->named = (u.family != AF_UNIX
                         && ngx_inet_addr(u.host.data, u.host.len)
                            == INADDR_NONE
                         && !(u.host.len && u.host.data[0] == '['));

    return NGX_CONF_OK;
}


/*
 * model_gateway_redis_sentinel HOST[:PORT] ...;  the primary's address is
 * asked of these (_redis_sentinel.c) instead of being configured: the two
 * ways of naming Redis exclude each other.
 */

char *
ngx_http_model_gateway_redis_sentinel(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    char  *rv;

    if (mcf->redis) {
        return ngx_http_mg_redis_named(mcf->redis,
                                       NGX_HTTP_MG_REDIS_SENTINEL);
    }

    if (cf->args->nelts - 1 > NGX_HTTP_MG_SENTINELS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many sentinels (at most %d)",
                           NGX_HTTP_MG_SENTINELS_MAX);
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_mg_redis_addrs(cf, &mcf->redis_conf.sentinels,
                                 &mcf->redis_conf.sentinel_hosts, 26379,
                                 "sentinel");
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    mcf->redis = &mcf->redis_conf;

    return NGX_CONF_OK;
}


/*
 * model_gateway_redis_cluster HOST[:PORT] ...;  seed nodes of a Redis
 * Cluster: the slot map is asked of them (_redis_cluster.c), and every
 * primary it names is connected to.  Their certificates (with TLS) must
 * carry the first seed's host name.
 */

char *
ngx_http_model_gateway_redis_cluster(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    char         *rv;
    ngx_str_t    *hosts;
    ngx_array_t  *names;

    if (mcf->redis) {
        return ngx_http_mg_redis_named(mcf->redis,
                                       NGX_HTTP_MG_REDIS_CLUSTER);
    }

    if (cf->args->nelts - 1 > NGX_HTTP_MG_CLUSTER_SEEDS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many cluster seeds (at most %d)",
                           NGX_HTTP_MG_CLUSTER_SEEDS_MAX);
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_mg_redis_addrs(cf, &mcf->redis_conf.cluster_seeds, &names,
                                 6379, "cluster seed");
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    hosts = names->elts;
    mcf->redis_conf.host = hosts[0];

    mcf->redis = &mcf->redis_conf;

    return NGX_CONF_OK;
}


/* the directive's addresses, resolved now: a worker never waits on DNS */

static char *
ngx_http_mg_redis_addrs(ngx_conf_t *cf, ngx_array_t **addrs,
    ngx_array_t **hosts, in_port_t port, const char *what)
{
    ngx_str_t   *value, *host;
    ngx_url_t    u;
    ngx_uint_t   i;
    ngx_addr_t  *addr;

    value = cf->args->elts;

    *addrs = ngx_array_create(cf->pool, cf->args->nelts - 1,
                              sizeof(ngx_addr_t));
    if (*addrs == NULL) {
        return NGX_CONF_ERROR;
    }

    *hosts = ngx_array_create(cf->pool, cf->args->nelts - 1,
                              sizeof(ngx_str_t));
    if (*hosts == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = value[i];
        u.default_port = port;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
            || u.family == AF_UNIX)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid %s address \"%V\"%s%s", what,
                               &value[i], u.err ? ": " : "",
                               u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        addr = ngx_array_push(*addrs);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        *addr = u.addrs[0];

        /* the name a certificate must carry */

        host = ngx_array_push(*hosts);
        if (host == NULL) {
            return NGX_CONF_ERROR;
        }

        *host = u.host;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_model_gateway_redis_password(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    ngx_str_t  *value, what;

    /*
     * cmd->offset: bit 0 from the environment, bit 1 the ACL user, bit 2
     * the sentinels' password
     */

    value = cf->args->elts;

    if (cmd->offset & 4) {
        ngx_str_set(&what, "the sentinel password");

        return ngx_http_model_gateway_read_secret(cf, cmd->offset & 1,
                                                  &value[1],
                                                  &mcf->redis_conf
                                                      .sentinel_password,
                                                  &what);
    }

    if (cmd->offset & 2) {
        ngx_str_set(&what, "the redis user");

        return ngx_http_model_gateway_read_secret(cf, cmd->offset & 1,
                                                  &value[1],
                                                  &mcf->redis_conf.user,
                                                  &what);
    }

    ngx_str_set(&what, "the redis password");

    return ngx_http_model_gateway_read_secret(cf, cmd->offset & 1, &value[1],
                                              &mcf->redis_conf.password,
                                              &what);
}


ngx_int_t
ngx_http_model_gateway_redis_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    u_char                    *name;
    ngx_http_mg_redis_conf_t  *rcf;

    rcf = &mcf->redis_conf;

    ngx_conf_init_value(rcf->tls, 0);
    ngx_conf_init_value(rcf->ssl_verify, 1);
    ngx_conf_init_value(rcf->sentinel_tls, 0);
    ngx_conf_init_value(rcf->sentinel_ssl_verify, 1);

    if (rcf->cluster_seeds && rcf->database != NGX_CONF_UNSET_UINT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_redis_database\" cannot be used "
                           "with \"model_gateway_redis_cluster\": a cluster "
                           "has database 0 only");
        return NGX_ERROR;
    }

    ngx_conf_init_uint_value(rcf->database, 0);
    ngx_conf_init_msec_value(rcf->connect_timeout, 1000);
    ngx_conf_init_msec_value(rcf->timeout, 250);
    ngx_conf_init_uint_value(rcf->max_inflight, 4096);
    ngx_conf_init_size_value(rcf->max_reply_size, 1024 * 1024);

    if (rcf->prefix.data == NULL) {
        ngx_str_set(&rcf->prefix, "mg");
    }

    /* a brace in the prefix would be the hash tag of every key */

    if (ngx_strlchr(rcf->prefix.data, rcf->prefix.data + rcf->prefix.len, '{')
        || ngx_strlchr(rcf->prefix.data, rcf->prefix.data + rcf->prefix.len,
                       '}'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_redis_prefix\" must not contain "
                           "\"{\" or \"}\"");
        return NGX_ERROR;
    }

    if (rcf->ssl_trusted_certificate.data == NULL) {
        rcf->ssl_trusted_certificate = mcf->ssl_trusted_certificate;
    }

    if (rcf->sentinels && rcf->sentinel_master.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_redis_sentinel\" needs "
                           "\"model_gateway_redis_sentinel_master\"");
        return NGX_ERROR;
    }

    /*
     * the name of Redis' certificate (and the SNI): by default the host as
     * written; a primary found through sentinels has only an address, so
     * its name must be given
     */

    if (rcf->ssl_name.data == NULL) {
        rcf->ssl_name = rcf->host;

    } else if (rcf->tls != 1) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"model_gateway_redis_tls_name\" is ignored "
                           "without \"model_gateway_redis_tls on\"");
    }

    if (rcf->ssl_name.len > 255) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the redis TLS name \"%V\" is longer than 255 "
                           "bytes", &rcf->ssl_name);
        return NGX_ERROR;
    }

    /* NUL-terminated for SNI, which names hosts, never addresses */

    if (rcf->ssl_name.len) {
        name = ngx_pnalloc(cf->pool, rcf->ssl_name.len + 1);
        if (name == NULL) {
            return NGX_ERROR;
        }

        *ngx_cpymem(name, rcf->ssl_name.data, rcf->ssl_name.len) = '\0';
        rcf->ssl_name.data = name;

        rcf->ssl_sni = (ngx_inet_addr(name, rcf->ssl_name.len) == INADDR_NONE
                        && name[0] != '['
                        && ngx_strlchr(name, name + rcf->ssl_name.len, ':')
                           == NULL);
    }

    if (rcf->sentinels && rcf->tls == 1 && rcf->ssl_verify
        && rcf->ssl_name.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_redis_tls\" with "
                           "\"model_gateway_redis_sentinel\" needs "
                           "\"model_gateway_redis_tls_name\" (the name "
                           "the primary's certificate carries)");
        return NGX_ERROR;
    }

    if (rcf->sentinels == NULL
        && (rcf->sentinel_master.len || rcf->sentinel_password.len
            || rcf->sentinel_user.len || rcf->sentinel_tls == 1))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"model_gateway_redis_sentinel_*\" directives "
                           "need \"model_gateway_redis_sentinel\"");
        return NGX_ERROR;
    }

    if (ngx_http_mg_redis_scripts_init(cf->log) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->redis && rcf->sentinels && rcf->sentinel_tls
        && ngx_http_mg_redis_ssl(cf, &rcf->sentinel_ssl,
                                 rcf->sentinel_ssl_verify,
                                 &rcf->ssl_trusted_certificate)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (mcf->redis == NULL || !rcf->tls) {
        return NGX_OK;
    }

    return ngx_http_mg_redis_ssl(cf, &rcf->ssl, rcf->ssl_verify,
                                 &rcf->ssl_trusted_certificate);
}


/* a client TLS context, for the primary or for the sentinels */

static ngx_int_t
ngx_http_mg_redis_ssl(ngx_conf_t *cf, ngx_ssl_t **sslp, ngx_flag_t verify,
    ngx_str_t *trusted)
{
    ngx_ssl_t           *ssl;
    ngx_pool_cleanup_t  *cln;

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NGX_ERROR;
    }

    ssl->log = cf->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    if (verify
        && ngx_ssl_trusted_certificate(cf, ssl, trusted, 4) != NGX_OK)
    {
        return NGX_ERROR;
    }

    *sslp = ssl;

    return NGX_OK;
}
