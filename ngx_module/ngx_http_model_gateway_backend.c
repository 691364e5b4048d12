
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The model_gateway_backend { } block: its directives (url, connect, key,
 * model, timeouts, keepalive, TLS), and each backend made ready for use
 * once the http block is parsed: addresses, authentication header and
 * nginx's upstream settings.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"


static char *ngx_http_model_gateway_backend_directive(ngx_conf_t *cf,
    ngx_command_t *dummy, void *conf);
static char *ngx_http_model_gateway_backend_url(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *url);
static char *ngx_http_model_gateway_backend_connect(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *addr);
static char *ngx_http_model_gateway_backend_key(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *how, ngx_str_t *value);
static char *ngx_http_model_gateway_backend_model(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value, ngx_uint_t n);
static char *ngx_http_model_gateway_backend_unknown(ngx_conf_t *cf,
    ngx_str_t *type);


char *
ngx_http_model_gateway_backend_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    char                               *rv;
    ngx_str_t                          *value;
    ngx_uint_t                          i, j;
    ngx_conf_t                          save;
    ngx_http_model_gateway_model_t     *m;
    ngx_http_model_gateway_target_t    *t;
    ngx_http_model_gateway_backend_t   *b, **bp;

    value = cf->args->elts;

    /* "|" ends a backend's name in the pin and object id records in Redis */

    if (value[1].len == 0
        || ngx_strlchr(value[1].data, value[1].data + value[1].len, '|'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid model_gateway_backend name \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    bp = mcf->backends.elts;
    for (i = 0; i < mcf->backends.nelts; i++) {
        if (bp[i]->name.len == value[1].len
            && ngx_strncmp(bp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate model_gateway_backend \"%V\", "
                               "first defined in %V:%ui",
                               &value[1], &bp[i]->conf_file,
                               bp[i]->conf_line);
            return NGX_CONF_ERROR;
        }
    }

    b = ngx_pcalloc(cf->pool, sizeof(ngx_http_model_gateway_backend_t));
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    b->name = value[1];
    b->index = mcf->backends.nelts;
    b->weight = NGX_CONF_UNSET;
    b->max_tokens = 0;
    b->connect_timeout = NGX_CONF_UNSET_MSEC;
    b->first_byte_timeout = NGX_CONF_UNSET_MSEC;
    b->idle_timeout = NGX_CONF_UNSET_MSEC;
    b->ssl_verify = NGX_CONF_UNSET;
    b->stream_usage = NGX_CONF_UNSET;
    b->keepalive = NGX_CONF_UNSET_UINT;
    b->keepalive_timeout = NGX_CONF_UNSET_MSEC;
    b->keepalive_requests = NGX_CONF_UNSET_UINT;
    b->keepalive_time = NGX_CONF_UNSET_MSEC;
    b->conf_file = cf->conf_file->file.name;
    b->conf_line = cf->conf_file->line;

    bp = ngx_array_push(&mcf->backends);
    if (bp == NULL) {
        return NGX_CONF_ERROR;
    }

    *bp = b;

    save = *cf;
    cf->handler = ngx_http_model_gateway_backend_directive;
    cf->handler_conf = (char *) b;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (b->url.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "model_gateway_backend \"%V\" has no \"url\"",
                           &b->name);
        return NGX_CONF_ERROR;
    }

    if (b->provider == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "model_gateway_backend \"%V\" has no \"type\"",
                           &b->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_model_gateway_aws_init(cf, b) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* a provider without embeddings serves chat only */

    m = mcf->models.elts;
    for (i = 0; i < mcf->models.nelts; i++) {
        t = m[i].targets.elts;

        for (j = 0; j < m[i].targets.nelts; j++) {
            if (t[j].backend != b || b->provider->embeddings) {
                continue;
            }

            if (t[j].no_chat) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "model \"%V\" of backend \"%V\": "
                                   "backends of this type do not serve "
                                   "embeddings (only openai, "
                                   "openai_compatible and azure do)",
                                   &m[i].name, &b->name);
                return NGX_CONF_ERROR;
            }

            t[j].no_embeddings = 1;
        }
    }

    if (b->provider->needs_key && b->key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "model_gateway_backend \"%V\" of type \"%V\" "
                           "needs \"key_env\" or \"key_file\"", &b->name,
                           &b->provider->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the directives inside a model_gateway_backend { } block */

static char *
ngx_http_model_gateway_backend_directive(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf)
{
    ngx_http_model_gateway_backend_t *b = (void *) cf->handler_conf;

    ngx_int_t                                 n;
    ngx_str_t                                *value, *name;
    ngx_uint_t                                nargs;
    ngx_flag_t                               *fp;
    ngx_msec_t                                ms, *msp;
    ngx_http_model_gateway_main_conf_t       *mcf;
    const ngx_http_model_gateway_provider_t  *p;

    value = cf->args->elts;
    name = &value[0];
    nargs = cf->args->nelts - 1;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);

#define ngx_mg_is(s)                                                        \
    (name->len == sizeof(s) - 1 && ngx_strncmp(name->data, s, name->len) == 0)

    if (ngx_mg_is("model")) {
        if (nargs < 1 || nargs > 3) {
            goto invalid_args;
        }

        return ngx_http_model_gateway_backend_model(cf, mcf, b, value, nargs);
    }

    if (ngx_mg_is("aws_credentials")) {
        if (nargs < 1 || nargs > 3) {
            goto invalid_args;
        }

        return ngx_http_model_gateway_aws_credentials(cf, b, value, nargs);
    }

    if (ngx_mg_is("header")) {
        if (nargs != 2) {
            goto invalid_args;
        }

        return ngx_http_model_gateway_backend_header(cf, b, &value[1],
                                                     &value[2]);
    }

    if (ngx_mg_is("health_check")) {
        if (nargs > 5) {
            goto invalid_args;
        }

        return ngx_http_model_gateway_health_directive(cf, b, value, nargs);
    }

    if (ngx_mg_is("resolve")) {
        if (nargs != 0) {
            goto invalid_args;
        }

        b->resolve = 1;
        return NGX_CONF_OK;
    }

    if (nargs != 1) {
        goto invalid_args;
    }

    if (ngx_mg_is("type")) {
        if (b->provider) {
            return "is duplicate";
        }

        for (p = ngx_http_model_gateway_providers; p->name.len; p++) {
            if (p->name.len == value[1].len
                && ngx_strncmp(p->name.data, value[1].data, value[1].len)
                   == 0)
            {
                b->provider = p;
                b->type = p->type;
                return NGX_CONF_OK;
            }
        }

        return ngx_http_model_gateway_backend_unknown(cf, &value[1]);
    }

    if (ngx_mg_is("url")) {
        return ngx_http_model_gateway_backend_url(cf, b, &value[1]);
    }

    if (ngx_mg_is("connect")) {
        return ngx_http_model_gateway_backend_connect(cf, b, &value[1]);
    }

    if (ngx_mg_is("key_env") || ngx_mg_is("key_file")) {
        return ngx_http_model_gateway_backend_key(cf, b, name, &value[1]);
    }

    if (ngx_mg_is("weight")) {
        if (b->weight != NGX_CONF_UNSET) {
            return "is duplicate";
        }

        n = ngx_atoi(value[1].data, value[1].len);
        if (n < 1 || n > 1000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid weight \"%V\" (1..1000)", &value[1]);
            return NGX_CONF_ERROR;
        }

        b->weight = n;
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("region")) {
        if (b->region.len) {
            return "is duplicate";
        }

        b->region = value[1];
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("api_version")) {
        b->api_version = value[1];
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("anthropic_version")) {
        b->anthropic_version = value[1];
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("max_tokens")) {
        n = ngx_atoi(value[1].data, value[1].len);
        if (n == NGX_ERROR || n < 1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid max_tokens \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        b->max_tokens = n;
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("priority")) {
        n = ngx_atoi(value[1].data, value[1].len);
        if (n == NGX_ERROR || n > 100) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid priority \"%V\" (0..100)", &value[1]);
            return NGX_CONF_ERROR;
        }

        b->priority = n;
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("keepalive")) {
        n = ngx_atoi(value[1].data, value[1].len);
        if (n == NGX_ERROR || n > 10000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid keepalive \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        b->keepalive = n;
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("keepalive_requests")) {
        n = ngx_atoi(value[1].data, value[1].len);
        if (n == NGX_ERROR || n == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid keepalive_requests \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }

        b->keepalive_requests = n;
        return NGX_CONF_OK;
    }

    if (ngx_mg_is("ssl_verify") || ngx_mg_is("stream_usage")) {
        fp = ngx_mg_is("ssl_verify") ? &b->ssl_verify : &b->stream_usage;

        if (value[1].len == 2 && ngx_strncmp(value[1].data, "on", 2) == 0) {
            *fp = 1;

        } else if (value[1].len == 3
                   && ngx_strncmp(value[1].data, "off", 3) == 0)
        {
            *fp = 0;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\", it must be "
                               "\"on\" or \"off\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_mg_is("ssl_trusted_certificate")) {
        b->ssl_trusted_certificate = value[1];
        return NGX_CONF_OK;
    }

    msp = NULL;

    if (ngx_mg_is("connect_timeout")) {
        msp = &b->connect_timeout;

    } else if (ngx_mg_is("first_byte_timeout")) {
        msp = &b->first_byte_timeout;

    } else if (ngx_mg_is("idle_timeout")) {
        msp = &b->idle_timeout;

    } else if (ngx_mg_is("keepalive_timeout")) {
        msp = &b->keepalive_timeout;

    } else if (ngx_mg_is("keepalive_time")) {
        msp = &b->keepalive_time;
    }

#undef ngx_mg_is

    if (msp) {
        ms = ngx_parse_time(&value[1], 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid %V \"%V\"", name, &value[1]);
            return NGX_CONF_ERROR;
        }

        *msp = ms;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown directive \"%V\" in model_gateway_backend",
                       name);
    return NGX_CONF_ERROR;

invalid_args:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid number of arguments in \"%V\" in "
                       "model_gateway_backend", name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_model_gateway_backend_url(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value)
{
    size_t      add;
    u_char     *p;
    ngx_url_t   u;

    if (b->url.len) {
        return "is duplicate";
    }

    if (value->len > 8 && ngx_strncasecmp(value->data, (u_char *) "https://",
                                          8) == 0)
    {
        add = 8;
        b->ssl = 1;

    } else if (value->len > 7
               && ngx_strncasecmp(value->data, (u_char *) "http://", 7) == 0)
    {
        add = 7;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid url \"%V\": it must start with "
                           "\"http://\" or \"https://\"", value);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.len = value->len - add;
    u.url.data = value->data + add;
    u.default_port = b->ssl ? 443 : 80;
    u.uri_part = 1;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid url \"%V\"%s%s",
                           value, u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    b->url = *value;
    b->host = u.host;

    if (u.no_port || u.port == u.default_port) {
        b->host_header = u.host;

    } else {
        b->host_header.len = u.host.len + 1 + NGX_INT_T_LEN;
        b->host_header.data = ngx_pnalloc(cf->pool, b->host_header.len);
        if (b->host_header.data == NULL) {
            return NGX_CONF_ERROR;
        }

        b->host_header.len = ngx_sprintf(b->host_header.data, "%V:%d",
                                         &u.host, (int) u.port)
                             - b->host_header.data;
    }

    /* the path prefix, without a trailing slash or a query */

    b->path = u.uri;

    p = ngx_strlchr(b->path.data, b->path.data + b->path.len, '?');
    if (p) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid url \"%V\": a query is not allowed",
                           value);
        return NGX_CONF_ERROR;
    }

    while (b->path.len && b->path.data[b->path.len - 1] == '/') {
        b->path.len--;
    }

    b->port = u.port;

    return NGX_CONF_OK;
}


static char *
ngx_http_model_gateway_backend_connect(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value)
{
    ngx_url_t  u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid connect address \"%V\"%s%s", value,
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    if (u.no_port) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "connect address \"%V\" needs a port", value);
        return NGX_CONF_ERROR;
    }

    b->addrs = u.addrs;
    b->naddrs = u.naddrs;
    b->connect_set = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_model_gateway_backend_key(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *how, ngx_str_t *value)
{
    ngx_str_t  what;

    what.len = sizeof("the key of backend \"\"") - 1 + b->name.len;
    what.data = ngx_pnalloc(cf->pool, what.len);
    if (what.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(what.data, "the key of backend \"%V\"", &b->name);

    return ngx_http_model_gateway_read_secret(cf, how->data[4] == 'e', value,
                                              &b->key, &what);
}


static char *
ngx_http_model_gateway_backend_model(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value, ngx_uint_t n)
{
    size_t                            len;
    u_char                           *p;
    ngx_str_t                        *name, *id, *api;
    ngx_uint_t                        i, j;
    ngx_http_model_gateway_model_t   *m;
    ngx_http_model_gateway_target_t  *t;

    /* model NAME [PROVIDER_ID] [api=chat|embeddings] */

    api = NULL;

    if (value[n].len > 4 && ngx_strncmp(value[n].data, "api=", 4) == 0) {
        api = &value[n];
        n--;
    }

    if (n < 1 || n > 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"model\" in backend \"%V\" (expected "
                           "NAME [PROVIDER_ID] [api=chat|embeddings])",
                           &b->name);
        return NGX_CONF_ERROR;
    }

    name = &value[1];
    id = (n == 2) ? &value[2] : &value[1];

    for (i = 0; i < name->len; i++) {
        if (name->data[i] < 0x21 || name->data[i] > 0x7e
            || name->data[i] == '"' || name->data[i] == '\\')
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid model name \"%V\"", name);
            return NGX_CONF_ERROR;
        }
    }

    m = mcf->models.elts;
    for (i = 0; i < mcf->models.nelts; i++) {
        if (m[i].name.len == name->len
            && ngx_strncmp(m[i].name.data, name->data, name->len) == 0)
        {
            break;
        }
    }

    if (i == mcf->models.nelts) {
        m = ngx_array_push(&mcf->models);
        if (m == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(m, sizeof(ngx_http_model_gateway_model_t));
        m->name = *name;

        if (ngx_array_init(&m->targets, cf->pool, 2,
                           sizeof(ngx_http_model_gateway_target_t))
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

    } else {
        m = &m[i];
    }

    t = m->targets.elts;
    for (j = 0; j < m->targets.nelts; j++) {
        if (t[j].backend == b) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "model \"%V\" is duplicate in backend \"%V\"",
                               name, &b->name);
            return NGX_CONF_ERROR;
        }
    }

    t = ngx_array_push(&m->targets);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(t, sizeof(ngx_http_model_gateway_target_t));

    t->backend = b;
    t->provider_model = *id;

    if (api) {
        if (api->len == 8 && ngx_strncmp(api->data, "api=chat", 8) == 0) {
            t->no_embeddings = 1;

        } else if (api->len == 14
                   && ngx_strncmp(api->data, "api=embeddings", 14) == 0)
        {
            t->no_chat = 1;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\" (api=chat or "
                               "api=embeddings)", api);
            return NGX_CONF_ERROR;
        }
    }

    /* the provider's id as a JSON string, spliced into request bodies */

    len = mg_json_escape(NULL, 0, (char *) id->data, id->len);

    p = ngx_pnalloc(cf->pool, len + 2);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    p[0] = '"';
    (void) mg_json_escape((char *) p + 1, len, (char *) id->data, id->len);
    p[len + 1] = '"';

    t->provider_model_json.data = p;
    t->provider_model_json.len = len + 2;

    /*
     * the id as one path segment (Bedrock's: ARNs have ':' and '/'), so
     * that no request needs to encode it
     */

    len = mg_sigv4_uri_encode((char *) id->data, id->len, NULL, 0, 1);

    t->provider_path.data = ngx_pnalloc(cf->pool, len);
    if (t->provider_path.data == NULL) {
        return NGX_CONF_ERROR;
    }

    t->provider_path.len = mg_sigv4_uri_encode((char *) id->data, id->len,
                                               (char *) t->provider_path.data,
                                               len, 1);

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_model_gateway_backend_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b)
{
    ngx_url_t                  u;
    ngx_pool_cleanup_t        *cln;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_upstream_conf_t  *ucf;

    /*
     * host names are resolved now, at configuration time, so that a worker
     * never waits on DNS; "connect" overrides the address
     */

    if (b->resolve && !b->connect_set) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->resolver == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "model_gateway_backend \"%V\" in %V:%ui uses "
                          "\"resolve\", which needs a \"resolver\" at "
                          "http level", &b->name, &b->conf_file,
                          b->conf_line);
            return NGX_ERROR;
        }

    } else if (b->addrs == NULL) {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = b->host;
        u.default_port = b->port;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "cannot resolve \"%V\" of model_gateway_backend "
                          "\"%V\" in %V:%ui%s%s", &b->host, &b->name,
                          &b->conf_file, b->conf_line, u.err ? ": " : "",
                          u.err ? u.err : "");
            return NGX_ERROR;
        }

        b->addrs = u.addrs;
        b->naddrs = u.naddrs;
    }

    ngx_conf_init_value(b->weight, 1);
    ngx_conf_init_msec_value(b->connect_timeout, mcf->connect_timeout);
    ngx_conf_init_msec_value(b->first_byte_timeout, mcf->first_byte_timeout);
    ngx_conf_init_msec_value(b->idle_timeout, mcf->idle_timeout);
    ngx_conf_init_value(b->ssl_verify, 1);
    ngx_conf_init_value(b->stream_usage, 1);
    ngx_conf_init_uint_value(b->keepalive, 32);
    ngx_conf_init_msec_value(b->keepalive_timeout, 60000);
    ngx_conf_init_uint_value(b->keepalive_requests, 1000);
    ngx_conf_init_msec_value(b->keepalive_time, 3600000);

    if (b->ssl_trusted_certificate.data == NULL) {
        b->ssl_trusted_certificate = mcf->ssl_trusted_certificate;
    }

    /* the provider's authentication header and defaults */

    b->responses = b->provider->responses;

    if (b->provider->init && b->provider->init(cf, b) != NGX_OK) {
        return NGX_ERROR;
    }

    ucf = &b->header_conf;

    ucf->upstream = mcf->upstream;
    ucf->connect_timeout = b->connect_timeout;
    ucf->send_timeout = b->connect_timeout;
    ucf->read_timeout = b->first_byte_timeout;
    ucf->buffering = 0;
    ucf->request_buffering = 1;
    ucf->ignore_client_abort = 0;
    ucf->intercept_errors = 0;
    ucf->limit_rate = 0;
    ucf->buffer_size = ngx_pagesize;

    /*
     * failures are classified by the module itself (process_header turns
     * every status worth another backend into an invalid header), so
     * nginx's next-upstream logic only needs to know these; a POST that
     * was sent is only retried when the module's peer.free says so
     */

    ucf->next_upstream = NGX_HTTP_UPSTREAM_FT_ERROR
                         |NGX_HTTP_UPSTREAM_FT_TIMEOUT
                         |NGX_HTTP_UPSTREAM_FT_INVALID_HEADER
                         |NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT;

    ucf->hide_headers_hash.buckets = NULL;
    ngx_str_set(&ucf->module, "model_gateway");

    if (b->ssl) {
        ucf->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
        if (ucf->ssl == NULL) {
            return NGX_ERROR;
        }

        ucf->ssl->log = cf->log;

        if (ngx_ssl_create(ucf->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            ngx_ssl_cleanup_ctx(ucf->ssl);
            return NGX_ERROR;
        }

        cln->handler = ngx_ssl_cleanup_ctx;
        cln->data = ucf->ssl;

        ucf->ssl_server_name = 1;
        ucf->ssl_verify = b->ssl_verify;
        ucf->ssl_session_reuse = 0;

        if (b->ssl_verify) {
            if (ngx_ssl_trusted_certificate(cf, ucf->ssl,
                                            &b->ssl_trusted_certificate, 4)
                != NGX_OK)
            {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "cannot load the trusted certificates \"%V\" "
                              "of model_gateway_backend \"%V\" in %V:%ui",
                              &b->ssl_trusted_certificate, &b->name,
                              &b->conf_file, b->conf_line);
                return NGX_ERROR;
            }
        }
    }

    b->body_conf = b->header_conf;
    b->body_conf.read_timeout = b->idle_timeout;

    return ngx_http_model_gateway_health_finish(cf, mcf, b);
}


/* the message names every type of the provider table */

static char *
ngx_http_model_gateway_backend_unknown(ngx_conf_t *cf, ngx_str_t *type)
{
    u_char                                   *p, *last;
    const ngx_http_model_gateway_provider_t  *pv;
    u_char                                    names[256];

    p = names;
    last = names + sizeof(names);

    for (pv = ngx_http_model_gateway_providers; pv->name.len; pv++) {
        p = ngx_slprintf(p, last, "%s%V",
                         pv == ngx_http_model_gateway_providers ? "" : ", ",
                         &pv->name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown backend type \"%V\" (supported: %*s)",
                       type, (size_t) (p - names), names);

    return NGX_CONF_ERROR;
}
