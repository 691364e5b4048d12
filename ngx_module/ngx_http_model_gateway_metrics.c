
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Metrics: what every request did, counted in the shared zone by the log
 * phase (a request the gateway refused counts too); the Prometheus text
 * of it all (model_gateway_metrics) is _metrics_render.c's, rendered from
 * the zone by whichever worker is asked, so it covers every worker and
 * never waits on Redis.  Counters are atomics in the nodes the zone has
 * per backend and model: nothing is allocated, and the zone's lock is
 * never taken, on a request's path.  The names follow the OpenTelemetry
 * semantic conventions for generative AI, v1.36.0, in Prometheus' form
 * (gen_ai.client.operation.duration ->
 * gen_ai_client_operation_duration_seconds); the gateway's own are
 * model_gateway_*.  Costs come from model_gateway_price.
 */


#include "ngx_http_model_gateway_metrics.h"


/* OpenTelemetry's recommended bucket boundaries (ms, ms, tokens) */

const uint64_t  ngx_http_model_gateway_duration_bounds[] = {
    10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 20480, 40960,
    81920
};

const uint64_t  ngx_http_model_gateway_ttft_bounds[] = {
    1, 5, 10, 20, 40, 60, 80, 100, 250, 500, 750, 1000, 2500, 5000, 7500,
    10000
};

const uint64_t  ngx_http_model_gateway_token_bounds[] = {
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
    16777216, 67108864
};

const uint64_t  ngx_http_model_gateway_latency_bounds[] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000
};

static ngx_int_t ngx_http_model_gateway_metrics_log(ngx_http_request_t *r);
static ngx_http_model_gateway_who_t *ngx_http_model_gateway_who(
    ngx_http_model_gateway_shm_t *sh, ngx_http_model_gateway_ctx_t *ctx);
static ngx_int_t ngx_http_model_gateway_price_value(ngx_str_t *v,
    uint64_t *out);


/*
 * model_gateway_price MODEL input=USD output=USD [cached=USD];
 * USD per million tokens, with up to six decimals; cached (the input the
 * provider read from its cache) defaults to input's price.
 */

char *
ngx_http_model_gateway_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_model_gateway_main_conf_t *mcf = conf;

    ngx_str_t                       *value, v;
    ngx_uint_t                       i, k, seen;
    ngx_http_model_gateway_price_t  *p;

    static ngx_str_t  names[] = {
        ngx_string("input="), ngx_string("output="), ngx_string("cached=")
    };

    value = cf->args->elts;

    if (mcf->prices == NULL) {
        mcf->prices = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_model_gateway_price_t));
        if (mcf->prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    p = mcf->prices->elts;

    for (i = 0; i < mcf->prices->nelts; i++) {
        if (p[i].model.len == value[1].len
            && ngx_strncmp(p[i].model.data, value[1].data, value[1].len)
               == 0)
        {
            return "names a model priced already";
        }
    }

    p = ngx_array_push(mcf->prices);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(p, sizeof(ngx_http_model_gateway_price_t));
    p->model = value[1];
    p->file = cf->conf_file->file.name;
    p->line = cf->conf_file->line;

    seen = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        for (k = 0; k < 3; k++) {
            if (value[i].len > names[k].len
                && ngx_strncmp(value[i].data, names[k].data, names[k].len)
                   == 0)
            {
                break;
            }
        }

        if (k == 3 || (seen & (1 << k))) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid or repeated price \"%V\" (input=, "
                               "output=, cached=)", &value[i]);
            return NGX_CONF_ERROR;
        }

        v.data = value[i].data + names[k].len;
        v.len = value[i].len - names[k].len;

        if (ngx_http_model_gateway_price_value(&v, &p->price[k]) != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid price \"%V\": USD per million "
                               "tokens, up to 1000000 with at most six "
                               "decimals", &value[i]);
            return NGX_CONF_ERROR;
        }

        seen |= 1 << k;
    }

    if ((seen & 3) != 3) {
        return "needs input= and output=";
    }

    if (!(seen & 4)) {
        p->price[2] = p->price[0];
    }

    return NGX_CONF_OK;
}


/* "3", "0.15", "1.234567" -> micro-USD */

static ngx_int_t
ngx_http_model_gateway_price_value(ngx_str_t *v, uint64_t *out)
{
    u_char      *p, *end;
    uint64_t     n;
    ngx_uint_t   dec, digits;

    p = v->data;
    end = p + v->len;
    n = 0;
    dec = 0;
    digits = 0;

    for ( /* void */ ; p < end; p++) {
        if (*p == '.' && dec == 0 && digits) {
            dec = 1;
            continue;
        }

        if (*p < '0' || *p > '9' || dec > 6 || n > 1000000000000ULL) {
            return NGX_ERROR;
        }

        n = n * 10 + (*p - '0');
        digits++;

        if (dec) {
            dec++;
        }
    }

    if (digits == 0 || dec == 1 || dec > 7) {
        return NGX_ERROR;
    }

    for (dec = dec ? dec - 1 : 0; dec < 6; dec++) {
        n *= 10;
    }

    if (n > 1000000ULL * 1000000ULL) {
        return NGX_ERROR;
    }

    *out = n;

    return NGX_OK;
}


/* each price to its model; a price of a model nobody serves is an error */

ngx_int_t
ngx_http_model_gateway_prices_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                       i, k;
    ngx_http_model_gateway_model_t  *m;
    ngx_http_model_gateway_price_t  *p;

    if (mcf->prices == NULL) {
        return NGX_OK;
    }

    p = mcf->prices->elts;
    m = mcf->models.elts;

    for (i = 0; i < mcf->prices->nelts; i++) {
        for (k = 0; k < mcf->models.nelts; k++) {
            if (m[k].name.len == p[i].model.len
                && ngx_strncmp(m[k].name.data, p[i].model.data,
                               p[i].model.len) == 0)
            {
                break;
            }
        }

        if (k == mcf->models.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"model_gateway_price\" names a model no backend "
                          "serves, \"%V\", in %V:%ui", &p[i].model,
                          &p[i].file, p[i].line);
            return NGX_ERROR;
        }

        ngx_memcpy(m[k].price, p[i].price, sizeof(m[k].price));
        m[k].priced = 1;
    }

    return NGX_OK;
}


char *
ngx_http_model_gateway_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_model_gateway_metrics_handler;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_model_gateway_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_model_gateway_metrics_log;

    return NGX_OK;
}


void
ngx_http_model_gateway_hist_add(ngx_http_model_gateway_hist_t *h,
    const uint64_t *bounds, ngx_uint_t n, uint64_t v)
{
    ngx_uint_t  i;

    for (i = 0; i < n && v > bounds[i]; i++) {
        /* void */
    }

    /* the count is the buckets' total: two atomics an observation */

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum, (ngx_atomic_int_t) v);
}


/* a read, a miss or a write of stored state (ids, chains) */

void
ngx_http_model_gateway_metrics_state(ngx_http_request_t *r, ngx_uint_t op)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->sh) {
        (void) ngx_atomic_fetch_add(&mcf->sh->state[op], 1);
    }
}


/* the log phase: once per request the gateway handled, whatever became of
 * it */

static ngx_int_t
ngx_http_model_gateway_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                           op, cls, status;
    uint64_t                             in, cached, cost;
    ngx_msec_int_t                       ms;
    ngx_http_model_gateway_who_t        *who;
    ngx_http_model_gateway_ctx_t        *ctx;
    ngx_http_model_gateway_metrics_t    *m;
    ngx_http_model_gateway_main_conf_t  *mcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    if (ctx == NULL || r != r->main || ctx->admin) {
        return NGX_OK;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->sh == NULL) {
        return NGX_OK;
    }

    status = r->headers_out.status ? r->headers_out.status
                                   : (ngx_uint_t) r->err_status;

    cls = (status >= 500 || status < 200) ? 2 : (status >= 400) ? 1 : 0;

    who = ctx->identity.tenant.len ? ngx_http_model_gateway_who(mcf->sh, ctx)
                                   : NULL;

    if (who) {
        (void) ngx_atomic_fetch_add(&who->requests[cls], 1);
    }

    if (ctx->session.status != NGX_HTTP_MG_PIN_NONE
        && ctx->session.status < NGX_HTTP_MG_SESSION_OUTCOMES)
    {
        (void) ngx_atomic_fetch_add(&mcf->sh->sessions[ctx->session.status],
                                    1);
    }

    if (ctx->target == NULL) {

        /* refused before a backend was tried */

        (void) ngx_atomic_fetch_add(&mcf->sh->refused[cls], 1);
        return NGX_OK;
    }

    m = &ctx->target->node->metrics;
    op = (ctx->endpoint == MG_EP_EMBEDDINGS) ? 1 : 0;

    (void) ngx_atomic_fetch_add(&m->requests[op][cls], 1);

    if (ctx->attempts > 1) {
        (void) ngx_atomic_fetch_add(&m->failovers, 1);
    }

    ms = (ngx_msec_int_t) (ngx_current_msec - ctx->start);
    if (ms < 0) {
        ms = 0;
    }

    ngx_http_model_gateway_hist_add(&m->duration[op],
                                    ngx_http_model_gateway_duration_bounds,
                                    NGX_HTTP_MG_DURATION_BUCKETS,
                                    (uint64_t) ms);

    if (ctx->first_byte_at && cls == 0) {
        ms = (ngx_msec_int_t) (ctx->first_byte_at - ctx->start);

        ngx_http_model_gateway_hist_add(&m->ttft[op],
                                        ngx_http_model_gateway_ttft_bounds,
                                        NGX_HTTP_MG_TTFT_BUCKETS,
                                        (uint64_t) (ms > 0 ? ms : 0));
    }

    if (!ctx->usage.known) {
        return NGX_OK;
    }

    cached = ngx_min(ctx->usage.cached, ctx->usage.prompt);
    in = ctx->usage.prompt - cached;

    /* input and output totals are the usage histograms' sums */

    if (cached) {
        (void) ngx_atomic_fetch_add(&m->tokens[2], (ngx_atomic_int_t) cached);
    }

    if (who) {
        (void) ngx_atomic_fetch_add(&who->tokens[0],
                                    (ngx_atomic_int_t) ctx->usage.prompt);
        (void) ngx_atomic_fetch_add(&who->tokens[1],
                                    (ngx_atomic_int_t) ctx->usage.completion);
    }

    ngx_http_model_gateway_hist_add(&m->usage[op][0],
                                    ngx_http_model_gateway_token_bounds,
                                    NGX_HTTP_MG_TOKEN_BUCKETS,
                                    ctx->usage.prompt);

    if (op == 0) {
        ngx_http_model_gateway_hist_add(&m->usage[op][1],
                                        ngx_http_model_gateway_token_bounds,
                                        NGX_HTTP_MG_TOKEN_BUCKETS,
                                        ctx->usage.completion);
    }

    if (ctx->model_conf && ctx->model_conf->priced) {

        /* micro-USD: tokens (at most 10^15) times micro-USD per million */

        cost = (in * ctx->model_conf->price[0]
                + ctx->usage.completion * ctx->model_conf->price[1]
                + cached * ctx->model_conf->price[2])
               / 1000000;

        (void) ngx_atomic_fetch_add(&m->cost, (ngx_atomic_int_t) cost);

        if (who) {
            (void) ngx_atomic_fetch_add(&who->cost, (ngx_atomic_int_t) cost);
        }
    }

    return NGX_OK;
}


/*
 * The slot of the request's tenant and key: found by its hash and name
 * among 16 slots from where the hash points, or claimed there with a
 * compare-and-set; none: the "_other" slot.  No lock: a slot once
 * claimed is never given back (until nginx restarts, or the table's size
 * changes).
 */

static ngx_http_model_gateway_who_t *
ngx_http_model_gateway_who(ngx_http_model_gateway_shm_t *sh,
    ngx_http_model_gateway_ctx_t *ctx)
{
    u_char                         *p;
    size_t                          len;
    uint32_t                        hash;
    ngx_uint_t                      i, k, n;
    ngx_http_model_gateway_who_t   *e;
    u_char                          name[NGX_HTTP_MG_WHO_LEN];

    if (sh->who == NULL || sh->nwho == 0) {
        return NULL;
    }

    len = ctx->identity.tenant.len + 1 + ctx->identity.key_id.len;

    if (len > sizeof(name)) {
        return &sh->who[sh->nwho];
    }

    p = ngx_cpymem(name, ctx->identity.tenant.data, ctx->identity.tenant.len);
    *p++ = '\0';

    if (ctx->identity.key_id.len) {
        ngx_memcpy(p, ctx->identity.key_id.data, ctx->identity.key_id.len);
    }

    hash = ngx_murmur_hash2(name, len) | 1;

    for (k = 0; k < 16; k++) {
        i = (hash + k) % sh->nwho;
        e = &sh->who[i];

        if (e->hash == 0
            && ngx_atomic_cmp_set(&e->hash, 0, (ngx_atomic_uint_t) hash))
        {
            ngx_memcpy(e->name, name, len);
            e->len = (u_char) len;
            ngx_memory_barrier();
            e->ready = 1;
            return e;
        }

        if (e->hash != hash) {
            continue;
        }

        /* claimed by another worker this very moment: its name follows */

        for (n = 0; !e->ready && n < 4096; n++) {
            ngx_cpu_pause();
        }

        if (e->ready && e->len == len && ngx_memcmp(e->name, name, len) == 0)
        {
            return e;
        }
    }

    return &sh->who[sh->nwho];
}


/* the slot of this worker's Redis connection */

ngx_http_model_gateway_redis_stats_t *
ngx_http_model_gateway_redis_stats(void)
{
    ngx_http_model_gateway_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_model_gateway_module);

    if (mcf == NULL || mcf->sh == NULL) {
        return NULL;
    }

    return &mcf->sh->redis[ngx_worker % NGX_HTTP_MG_WORKERS_MAX];
}
