
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The status page (model_gateway_status): JSON of what the shared zone
 * says now about every backend (health, weight, requests in flight,
 * cool-downs and rate limits with their remaining time) and about every
 * worker's Redis connection.  Read from the zone by whichever worker is
 * asked, without its lock and without Redis.  Nothing secret is in it: a
 * backend's URL names the provider's host, never a key.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"
#include "ngx_http_model_gateway_redis.h"


static ngx_int_t ngx_http_model_gateway_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_status_backends(mg_buf_t *out,
    ngx_http_model_gateway_main_conf_t *mcf);
static ngx_int_t ngx_http_model_gateway_status_redis(mg_buf_t *out,
    ngx_http_model_gateway_main_conf_t *mcf);


char *
ngx_http_model_gateway_status_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_model_gateway_status_handler;

    return NGX_CONF_OK;
}


/* a JSON string of s */

static ngx_int_t
ngx_http_model_gateway_status_string(mg_buf_t *out, ngx_str_t *s)
{
    size_t  n;

    n = mg_json_escape(NULL, 0, (char *) s->data, s->len);

    if (mg_buf_reserve(out, n + 2) != MG_X_OK) {
        return NGX_ERROR;
    }

    out->data[out->len++] = '"';
    out->len += mg_json_escape(out->data + out->len, n + 1, (char *) s->data,
                               s->len);
    out->data[out->len++] = '"';

    return NGX_OK;
}


static ngx_msec_t
ngx_http_model_gateway_left(mg_msec_t until, ngx_msec_t now)
{
    return ((ngx_msec_t) until > now) ? (ngx_msec_t) until - now : 0;
}


/*
 * "health_check": what the active checks say (_health.c), read without
 * the lock: the error text is a fixed buffer whose last byte stays NUL
 */

static ngx_int_t
ngx_http_model_gateway_status_health(mg_buf_t *out,
    ngx_http_model_gateway_backend_t *b, ngx_msec_t now)
{
    ngx_str_t                       err;
    ngx_msec_t                      at;
    const char                     *state;
    ngx_http_model_gateway_node_t  *node;
    u_char                          text[NGX_HTTP_MG_HEALTH_ERR];

    static const char  unchecked[] = "\"health_check\":{\"checked\":false,"
                                     "\"state\":\"unknown\","
                                     "\"last_check_ms_ago\":null,"
                                     "\"last_error\":null}";

    node = b->node;

    if (b->health_interval == 0) {
        return mg_buf_append(out, unchecked, sizeof(unchecked) - 1)
               == MG_X_OK ? NGX_OK : NGX_ERROR;
    }

    switch (node->health) {
    case NGX_HTTP_MG_HEALTH_UP:
        state = "up";
        break;
    case NGX_HTTP_MG_HEALTH_DOWN:
        state = "down";
        break;
    default:
        state = "unknown";
    }

    at = node->health_at;

    if (mg_buf_printf(out, "\"health_check\":{\"checked\":true,"
                      "\"state\":\"%s\",\"interval_ms\":%lu,",
                      state, (unsigned long) b->health_interval)
        != MG_X_OK)
    {
        return NGX_ERROR;
    }

    if (at == 0) {
        if (mg_buf_append(out, "\"last_check_ms_ago\":null,", 25)
            != MG_X_OK)
        {
            return NGX_ERROR;
        }

    } else if (mg_buf_printf(out, "\"last_check_ms_ago\":%lu,",
                             (unsigned long) ((ngx_msec_int_t) (now - at) > 0
                                              ? now - at : 0))
               != MG_X_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(text, node->health_error, NGX_HTTP_MG_HEALTH_ERR);
    text[NGX_HTTP_MG_HEALTH_ERR - 1] = '\0';

    err.data = text;
    err.len = ngx_strlen(text);

    if (mg_buf_append(out, "\"last_error\":", 13) != MG_X_OK) {
        return NGX_ERROR;
    }

    if (err.len == 0) {
        if (mg_buf_append(out, "null", 4) != MG_X_OK) {
            return NGX_ERROR;
        }

    } else if (ngx_http_model_gateway_status_string(out, &err) != NGX_OK) {
        return NGX_ERROR;
    }

    return mg_buf_printf(out, ",\"passed\":%lu,\"failed\":%lu}",
                         (unsigned long) node->probes[0],
                         (unsigned long) node->probes[1])
           == MG_X_OK ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_model_gateway_status_backends(mg_buf_t *out,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                           i, j, k, n;
    ngx_msec_t                           now, cool, trial;
    ngx_int_t                            forced;
    const char                          *health, *drain;
    ngx_http_model_gateway_node_t       *node;
    ngx_http_model_gateway_model_t      *m;
    ngx_http_model_gateway_target_t     *t;
    ngx_http_model_gateway_backend_t   **b;

    now = ngx_current_msec;
    b = mcf->backends.elts;

    if (mg_buf_append(out, "\"backends\":[", 12) != MG_X_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < mcf->backends.nelts; i++) {
        node = b[i]->node;
        cool = ngx_http_model_gateway_left(node->breaker.cooldown_until, now);
        trial = ngx_http_model_gateway_left(node->breaker.trial_until, now);

        health = cool ? "cooling_down"
                      : (node->breaker.cooldown_until ? "trial" : "ok");

        if (!cool && trial) {
            health = "trial";
        }

        /* a drain is done when its last request in flight has ended */

        drain = node->drain ? (node->outstanding ? "draining" : "drained")
                            : "none";

        forced = (ngx_int_t) node->forced_until - ngx_http_mg_redis_now();

        if (node->forced_until == 0 || mcf->redis == NULL || forced < 0) {
            forced = 0;
        }

        if ((i && mg_buf_append(out, ",", 1) != MG_X_OK)
            || mg_buf_append(out, "{\"name\":", 8) != MG_X_OK
            || ngx_http_model_gateway_status_string(out, &b[i]->name)
               != NGX_OK
            || mg_buf_append(out, ",\"type\":", 8) != MG_X_OK
            || ngx_http_model_gateway_status_string(out,
                      (ngx_str_t *) &b[i]->provider->name) != NGX_OK
            || mg_buf_append(out, ",\"url\":", 7) != MG_X_OK
            || ngx_http_model_gateway_status_string(out, &b[i]->url)
               != NGX_OK
            || mg_buf_printf(out, ",\"health\":\"%s\",\"cooldown_ms\":%lu,"
                             "\"forced_cooldown_ms\":%ld,"
                             "\"weight\":%ld,\"effective_weight\":%ld,"
                             "\"drain\":\"%s\","
                             "\"priority\":%ld,\"in_flight\":%lu,"
                             "\"latency_ewma_ms\":%.1f,",
                             health, (unsigned long) cool, (long) forced,
                             (long) b[i]->weight,
                             (long) ngx_http_model_gateway_weight(b[i]),
                             drain, (long) b[i]->priority,
                             (unsigned long) node->outstanding,
                             (double) node->ewma_us / 1000)
               != MG_X_OK
            || ngx_http_model_gateway_status_health(out, b[i], now) != NGX_OK
            || mg_buf_append(out, ",\"models\":[", 11) != MG_X_OK)
        {
            return NGX_ERROR;
        }

        n = 0;

        for (k = 0, m = mcf->models.elts; k < mcf->models.nelts; k++) {
            for (j = 0, t = m[k].targets.elts; j < m[k].targets.nelts; j++) {
                if (t[j].backend != b[i]) {
                    continue;
                }

                if ((n++ && mg_buf_append(out, ",", 1) != MG_X_OK)
                    || mg_buf_append(out, "{\"model\":", 9) != MG_X_OK
                    || ngx_http_model_gateway_status_string(out, &m[k].name)
                       != NGX_OK
                    || mg_buf_append(out, ",\"provider_model\":", 18)
                       != MG_X_OK
                    || ngx_http_model_gateway_status_string(out,
                                                   &t[j].provider_model)
                       != NGX_OK
                    || mg_buf_printf(out, ",\"rate_limited_ms\":%lu}",
                                     (unsigned long)
                                     ngx_http_model_gateway_left(
                                         t[j].node->breaker.limited_until,
                                         now))
                       != MG_X_OK)
                {
                    return NGX_ERROR;
                }
            }
        }

        if (mg_buf_append(out, "]}", 2) != MG_X_OK) {
            return NGX_ERROR;
        }
    }

    return mg_buf_append(out, "]", 1) == MG_X_OK ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_model_gateway_status_redis(mg_buf_t *out,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                             i, n;
    ngx_http_model_gateway_redis_stats_t  *rs;

    if (mcf->redis == NULL) {
        return mg_buf_append(out, ",\"redis\":null", 13) == MG_X_OK
               ? NGX_OK : NGX_ERROR;
    }

    if (mg_buf_append(out, ",\"redis\":{\"workers\":[", 21) != MG_X_OK) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0, rs = mcf->sh->redis; i < NGX_HTTP_MG_WORKERS_MAX; i++, rs++) {
        if (rs->pid == 0) {
            continue;
        }

        if ((n++ && mg_buf_append(out, ",", 1) != MG_X_OK)
            || mg_buf_printf(out, "{\"pid\":%lu,\"up\":%s,\"in_flight\":%lu,"
                             "\"commands\":%lu,\"errors\":%lu,"
                             "\"timeouts\":%lu",
                             (unsigned long) rs->pid,
                             rs->up ? "true" : "false",
                             (unsigned long) rs->inflight,
                             (unsigned long) rs->commands,
                             (unsigned long) rs->errors,
                             (unsigned long) rs->timeouts)
               != MG_X_OK)
        {
            return NGX_ERROR;
        }

        /* a cluster's: its primaries, redirects and map reads */

        if (mcf->redis->cluster_seeds
            && mg_buf_printf(out, ",\"cluster\":{\"primaries\":%lu,"
                             "\"moved\":%lu,\"ask\":%lu,"
                             "\"refreshes\":%lu}",
                             (unsigned long) rs->primaries,
                             (unsigned long) rs->moved,
                             (unsigned long) rs->asked,
                             (unsigned long) rs->refreshes)
               != MG_X_OK)
        {
            return NGX_ERROR;
        }

        if (mg_buf_append(out, "}", 1) != MG_X_OK) {
            return NGX_ERROR;
        }
    }

    if (mg_buf_append(out, "]", 1) != MG_X_OK) {
        return NGX_ERROR;
    }

    /* how old the fleet's admin state is on this node */

    if (mcf->sh->admin_synced_at == 0) {
        return mg_buf_append(out, ",\"admin_synced_ms_ago\":null}", 28)
               == MG_X_OK ? NGX_OK : NGX_ERROR;
    }

    return mg_buf_printf(out, ",\"admin_synced_ms_ago\":%ld}",
                         (long) ngx_max(0, ngx_http_mg_redis_now()
                                        - (ngx_int_t)
                                          mcf->sh->admin_synced_at))
           == MG_X_OK ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_model_gateway_status_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;
    ngx_str_t  json;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_model_gateway_status_render(r, 1, &json);

    if (rc == NGX_DECLINED) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_model_gateway_send_json(r, &json);
}


/*
 * The status JSON in the request's pool: everything (full), or only the
 * backends (the admin API's list); NGX_DECLINED without the shared zone.
 */

ngx_int_t
ngx_http_model_gateway_status_render(ngx_http_request_t *r, ngx_uint_t full,
    ngx_str_t *json)
{
    mg_buf_t                             out;
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->sh == NULL) {
        return NGX_DECLINED;
    }

    ngx_memzero(&out, sizeof(mg_buf_t));

    if ((full
         ? mg_buf_printf(&out, "{\"time\":%lld,\"pid\":%d,",
                         (long long) ngx_time(), (int) ngx_pid)
         : mg_buf_append(&out, "{", 1))
        != MG_X_OK
        || ngx_http_model_gateway_status_backends(&out, mcf) != NGX_OK
        || (full && ngx_http_model_gateway_status_redis(&out, mcf) != NGX_OK)
        || mg_buf_append(&out, "}\n", 2) != MG_X_OK)
    {
        mg_buf_free(&out);
        return NGX_ERROR;
    }

    json->len = out.len;
    json->data = ngx_pnalloc(r->pool, out.len);

    if (json->data) {
        ngx_memcpy(json->data, out.data, out.len);
    }

    mg_buf_free(&out);

    return json->data ? NGX_OK : NGX_ERROR;
}
