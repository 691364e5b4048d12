
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Prometheus text of the metrics (model_gateway_metrics), rendered
 * from the shared zone by whichever worker is asked: every series of the
 * backends and models, the gateway's own, the workers' Redis connections
 * and the tenants' table, each family with its HELP and TYPE, label values
 * escaped.  Nothing waits on Redis, and the zone's lock is never taken.
 */


#include "ngx_http_model_gateway_metrics.h"


typedef struct {
    mg_buf_t                           out;
    ngx_int_t                          rc;
} ngx_http_model_gateway_render_t;


static void ngx_http_model_gateway_render_who(
    ngx_http_model_gateway_render_t *w, ngx_http_model_gateway_shm_t *sh);


static void
ngx_http_model_gateway_put(ngx_http_model_gateway_render_t *w,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    buf[1024];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    if (mg_buf_append(&w->out, (char *) buf, p - buf) != MG_X_OK) {
        w->rc = NGX_ERROR;
    }
}


/* a label value: \, " and a newline escaped */

static void
ngx_http_model_gateway_label(ngx_http_model_gateway_render_t *w,
    const char *name, ngx_str_t *v)
{
    u_char  *p, *end;

    ngx_http_model_gateway_put(w, "%s=\"", name);

    for (p = v->data, end = p + v->len; p < end; p++) {
        if (*p == '\\' || *p == '"') {
            ngx_http_model_gateway_put(w, "\\%c", *p);

        } else if (*p == '\n') {
            ngx_http_model_gateway_put(w, "\\n");

        } else if (mg_buf_append(&w->out, (char *) p, 1) != MG_X_OK) {
            w->rc = NGX_ERROR;
        }
    }

    ngx_http_model_gateway_put(w, "\"");
}


static void
ngx_http_model_gateway_family(ngx_http_model_gateway_render_t *w,
    const char *name, const char *type, const char *help)
{
    ngx_http_model_gateway_put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                               name, type);
}


/* OpenTelemetry's gen_ai.system of a backend type */

static ngx_str_t *
ngx_http_model_gateway_system(ngx_http_model_gateway_backend_t *b)
{
    static ngx_str_t  openai = ngx_string("openai");
    static ngx_str_t  azure = ngx_string("az.ai.openai");
    static ngx_str_t  anthropic = ngx_string("anthropic");
    static ngx_str_t  gemini = ngx_string("gcp.gemini");
    static ngx_str_t  bedrock = ngx_string("aws.bedrock");

    switch (b->type) {
    case NGX_HTTP_MG_AZURE:
        return &azure;
    case NGX_HTTP_MG_ANTHROPIC:
        return &anthropic;
    case NGX_HTTP_MG_GEMINI:
        return &gemini;
    case NGX_HTTP_MG_BEDROCK:
        return &bedrock;
    default:
        return &openai;
    }
}


/* the labels of a pair: backend and model (and the gen_ai ones) */

static void
ngx_http_model_gateway_pair(ngx_http_model_gateway_render_t *w,
    ngx_http_model_gateway_model_t *m, ngx_http_model_gateway_target_t *t,
    ngx_int_t op)
{
    static ngx_str_t  ops[] = { ngx_string("chat"), ngx_string("embeddings") };

    if (op >= 0) {
        ngx_http_model_gateway_label(w, "gen_ai_operation_name", &ops[op]);
        ngx_http_model_gateway_put(w, ",");
        ngx_http_model_gateway_label(w, "gen_ai_system",
                                     ngx_http_model_gateway_system(
                                         t->backend));
        ngx_http_model_gateway_put(w, ",");
        ngx_http_model_gateway_label(w, "gen_ai_request_model", &m->name);

    } else {
        ngx_http_model_gateway_label(w, "model", &m->name);
    }

    ngx_http_model_gateway_put(w, ",");
    ngx_http_model_gateway_label(w, "backend", &t->backend->name);
}


/* a histogram's series; bounds in ms (div 1000) or tokens (div 1) */

static void
ngx_http_model_gateway_hist(ngx_http_model_gateway_render_t *w,
    const char *name, ngx_http_model_gateway_hist_t *h,
    const uint64_t *bounds, ngx_uint_t n, ngx_uint_t ms,
    ngx_http_model_gateway_model_t *m, ngx_http_model_gateway_target_t *t,
    ngx_int_t op, const char *extra)
{
    uint64_t    cum, sum;
    ngx_uint_t  i;

    /* the sum first: a count read after it is never the smaller */

    sum = h->sum;
    cum = 0;

    for (i = 0; i <= n; i++) {
        cum += h->bucket[i];

        ngx_http_model_gateway_put(w, "%s_bucket{", name);
        ngx_http_model_gateway_pair(w, m, t, op);
        ngx_http_model_gateway_put(w, "%s", extra);

        if (i == n) {
            ngx_http_model_gateway_put(w, ",le=\"+Inf\"} %uL\n", cum);

        } else if (ms) {
            ngx_http_model_gateway_put(w, ",le=\"%uL.%03uL\"} %uL\n",
                                       bounds[i] / 1000, bounds[i] % 1000,
                                       cum);

        } else {
            ngx_http_model_gateway_put(w, ",le=\"%uL\"} %uL\n", bounds[i],
                                       cum);
        }
    }

    ngx_http_model_gateway_put(w, "%s_sum{", name);
    ngx_http_model_gateway_pair(w, m, t, op);

    if (ms) {
        ngx_http_model_gateway_put(w, "%s} %uL.%03uL\n", extra, sum / 1000,
                                   sum % 1000);

    } else {
        ngx_http_model_gateway_put(w, "%s} %uL\n", extra, sum);
    }

    ngx_http_model_gateway_put(w, "%s_count{", name);
    ngx_http_model_gateway_pair(w, m, t, op);
    ngx_http_model_gateway_put(w, "%s} %uL\n", extra, cum);
}


/* whether a target serves op at all: no empty series of what it cannot */

static ngx_uint_t
ngx_http_model_gateway_serves(ngx_http_model_gateway_target_t *t,
    ngx_uint_t op)
{
    return op == 0 ? (!t->no_chat && t->backend->provider->chat)
                   : (!t->no_embeddings && t->backend->provider->embeddings);
}


#define ngx_http_model_gateway_each_pair(mcf, m, t, i, j)                    \
    for (i = 0, m = (mcf)->models.elts; i < (mcf)->models.nelts; i++)        \
        for (j = 0, t = m[i].targets.elts; j < m[i].targets.nelts; j++)


static void
ngx_http_model_gateway_render_pairs(ngx_http_model_gateway_render_t *w,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    uint64_t                           cost, n;
    ngx_uint_t                         i, j, op, k;
    ngx_http_model_gateway_model_t    *m;
    ngx_http_model_gateway_target_t   *t;
    ngx_http_model_gateway_metrics_t  *mt;

    static const char  *classes[] = { "2xx", "4xx", "5xx" };
    static const char  *types[] = { "input", "output", "cached_input" };

    ngx_http_model_gateway_family(w,
        "gen_ai_client_operation_duration_seconds", "histogram",
        "GenAI operation duration (OpenTelemetry semantic conventions "
        "v1.36.0), from the request's start to its last byte.");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        for (op = 0; op < NGX_HTTP_MG_OPS; op++) {
            if (ngx_http_model_gateway_serves(&t[j], op)) {
                ngx_http_model_gateway_hist(w,
                    "gen_ai_client_operation_duration_seconds",
                    &t[j].node->metrics.duration[op],
                    ngx_http_model_gateway_duration_bounds,
                    NGX_HTTP_MG_DURATION_BUCKETS, 1, &m[i], &t[j], op, "");
            }
        }
    }

    ngx_http_model_gateway_family(w,
        "gen_ai_server_time_to_first_token_seconds", "histogram",
        "Time to the first byte of a successful answer (its first token, "
        "for a stream), from the request's start.");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        for (op = 0; op < NGX_HTTP_MG_OPS; op++) {
            if (ngx_http_model_gateway_serves(&t[j], op)) {
                ngx_http_model_gateway_hist(w,
                    "gen_ai_server_time_to_first_token_seconds",
                    &t[j].node->metrics.ttft[op],
                    ngx_http_model_gateway_ttft_bounds,
                    NGX_HTTP_MG_TTFT_BUCKETS, 1, &m[i], &t[j], op, "");
            }
        }
    }

    ngx_http_model_gateway_family(w, "gen_ai_client_token_usage",
        "histogram", "Input and output tokens of a request, as the "
        "provider's usage said.");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        for (op = 0; op < NGX_HTTP_MG_OPS; op++) {
            if (!ngx_http_model_gateway_serves(&t[j], op)) {
                continue;
            }

            for (k = 0; k < (op == 0 ? 2 : 1); k++) {
                ngx_http_model_gateway_hist(w, "gen_ai_client_token_usage",
                    &t[j].node->metrics.usage[op][k],
                    ngx_http_model_gateway_token_bounds,
                    NGX_HTTP_MG_TOKEN_BUCKETS, 0, &m[i], &t[j], op,
                    k ? ",gen_ai_token_type=\"output\""
                      : ",gen_ai_token_type=\"input\"");
            }
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_requests_total",
        "counter", "Requests answered, by the backend and model that "
        "answered last, the operation and the status class.");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        for (op = 0; op < NGX_HTTP_MG_OPS; op++) {
            if (!ngx_http_model_gateway_serves(&t[j], op)) {
                continue;
            }

            for (k = 0; k < 3; k++) {
                ngx_http_model_gateway_put(w,
                                           "model_gateway_requests_total{");
                ngx_http_model_gateway_pair(w, &m[i], &t[j], -1);
                ngx_http_model_gateway_put(w, ",operation=\"%s\","
                    "status_class=\"%s\"} %uL\n",
                    op ? "embeddings" : "chat", classes[k],
                    (uint64_t) t[j].node->metrics.requests[op][k]);
            }
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_attempts_total",
        "counter", "Attempts sent to a backend for a model: answered, or "
        "failed (and tried elsewhere, or given up).");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        for (k = 0; k < 2; k++) {
            ngx_http_model_gateway_put(w, "model_gateway_attempts_total{");
            ngx_http_model_gateway_pair(w, &m[i], &t[j], -1);
            ngx_http_model_gateway_put(w, ",result=\"%s\"} %uL\n",
                                       k ? "failed" : "answered",
                                       (uint64_t)
                                       t[j].node->metrics.attempts[k]);
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_failovers_total",
        "counter", "Requests this backend answered after another attempt "
        "had failed.");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        ngx_http_model_gateway_put(w, "model_gateway_failovers_total{");
        ngx_http_model_gateway_pair(w, &m[i], &t[j], -1);
        ngx_http_model_gateway_put(w, "} %uL\n",
                                   (uint64_t) t[j].node->metrics.failovers);
    }

    ngx_http_model_gateway_family(w, "model_gateway_tokens_total",
        "counter", "Tokens, as the providers' usage said: input (cached "
        "input included), output, and the input read from a cache.");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        for (k = 0; k < 3; k++) {
            mt = &t[j].node->metrics;
            n = (k == 2) ? mt->tokens[2]
                         : mt->usage[0][k].sum + (k ? 0 : mt->usage[1][0].sum);

            ngx_http_model_gateway_put(w, "model_gateway_tokens_total{");
            ngx_http_model_gateway_pair(w, &m[i], &t[j], -1);
            ngx_http_model_gateway_put(w, ",type=\"%s\"} %uL\n", types[k],
                                       n);
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_cost_usd_total",
        "counter", "What the tokens cost, in USD, at the prices of "
        "model_gateway_price (models without one: no series).");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        if (!m[i].priced) {
            continue;
        }

        cost = t[j].node->metrics.cost;

        ngx_http_model_gateway_put(w, "model_gateway_cost_usd_total{");
        ngx_http_model_gateway_pair(w, &m[i], &t[j], -1);
        ngx_http_model_gateway_put(w, "} %uL.%06uL\n", cost / 1000000,
                                   cost % 1000000);
    }
}


static void
ngx_http_model_gateway_render_backends(ngx_http_model_gateway_render_t *w,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                           i, j, k;
    ngx_msec_t                           now, until;
    ngx_http_model_gateway_model_t      *m;
    ngx_http_model_gateway_target_t     *t;
    ngx_http_model_gateway_backend_t   **b;

    now = ngx_current_msec;
    b = mcf->backends.elts;

    ngx_http_model_gateway_family(w, "model_gateway_backend_in_flight",
        "gauge", "Requests in flight to a backend, every worker's.");

    for (i = 0; i < mcf->backends.nelts; i++) {
        ngx_http_model_gateway_put(w, "model_gateway_backend_in_flight{");
        ngx_http_model_gateway_label(w, "backend", &b[i]->name);
        ngx_http_model_gateway_put(w, "} %uL\n",
                                   (uint64_t) b[i]->node->outstanding);
    }

    ngx_http_model_gateway_family(w, "model_gateway_backend_weight",
        "gauge", "The weight balancing and session hashing use now: an "
        "admin's, or the configured one.");

    for (i = 0; i < mcf->backends.nelts; i++) {
        ngx_http_model_gateway_put(w, "model_gateway_backend_weight{");
        ngx_http_model_gateway_label(w, "backend", &b[i]->name);
        ngx_http_model_gateway_put(w, "} %ui\n",
                        (ngx_uint_t) ngx_http_model_gateway_weight(b[i]));
    }

    ngx_http_model_gateway_family(w, "model_gateway_backend_drained",
        "gauge", "1 while an admin has drained a backend.");

    for (i = 0; i < mcf->backends.nelts; i++) {
        ngx_http_model_gateway_put(w, "model_gateway_backend_drained{");
        ngx_http_model_gateway_label(w, "backend", &b[i]->name);
        ngx_http_model_gateway_put(w, "} %ui\n",
                                   (ngx_uint_t) (b[i]->node->drain != 0));
    }

    ngx_http_model_gateway_family(w, "model_gateway_backend_cooldown_seconds",
        "gauge", "How long a backend still cools down after failures (0: "
        "in use).");

    for (i = 0; i < mcf->backends.nelts; i++) {
        until = (ngx_msec_t) b[i]->node->breaker.cooldown_until;

        ngx_http_model_gateway_put(w,
                                   "model_gateway_backend_cooldown_seconds{");
        ngx_http_model_gateway_label(w, "backend", &b[i]->name);
        k = (until > now) ? until - now : 0;
        ngx_http_model_gateway_put(w, "} %ui.%03ui\n", k / 1000, k % 1000);
    }

    /* active health checks: series of the checked backends only */

    ngx_http_model_gateway_family(w, "model_gateway_backend_health",
        "gauge", "What a backend's active health check says: 1 up, 0 down, "
        "-1 not known yet.");

    for (i = 0; i < mcf->backends.nelts; i++) {
        if (b[i]->health_interval == 0) {
            continue;
        }

        ngx_http_model_gateway_put(w, "model_gateway_backend_health{");
        ngx_http_model_gateway_label(w, "backend", &b[i]->name);
        ngx_http_model_gateway_put(w, "} %s\n",
                   b[i]->node->health == NGX_HTTP_MG_HEALTH_UP ? "1"
                   : (b[i]->node->health == NGX_HTTP_MG_HEALTH_DOWN ? "0"
                                                                    : "-1"));
    }

    ngx_http_model_gateway_family(w, "model_gateway_health_checks_total",
        "counter", "Active health check probes of a backend, by result.");

    for (i = 0; i < mcf->backends.nelts; i++) {
        if (b[i]->health_interval == 0) {
            continue;
        }

        for (k = 0; k < 2; k++) {
            ngx_http_model_gateway_put(w,
                                       "model_gateway_health_checks_total{");
            ngx_http_model_gateway_label(w, "backend", &b[i]->name);
            ngx_http_model_gateway_put(w, ",result=\"%s\"} %uL\n",
                                       k ? "fail" : "pass",
                                       (uint64_t) b[i]->node->probes[k]);
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_rate_limited_seconds",
        "gauge", "How long a backend is still rate limited for a model, "
        "after its 429 (0: not limited).");

    ngx_http_model_gateway_each_pair(mcf, m, t, i, j) {
        until = (ngx_msec_t) t[j].node->breaker.limited_until;

        ngx_http_model_gateway_put(w, "model_gateway_rate_limited_seconds{");
        ngx_http_model_gateway_pair(w, &m[i], &t[j], -1);
        k = (until > now) ? until - now : 0;
        ngx_http_model_gateway_put(w, "} %ui.%03ui\n", k / 1000, k % 1000);
    }
}


static void
ngx_http_model_gateway_render_rest(ngx_http_model_gateway_render_t *w,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                             i, k;
    ngx_http_model_gateway_shm_t          *sh;
    ngx_http_model_gateway_redis_stats_t  *rs;

    static const char  *classes[] = { "2xx", "4xx", "5xx" };
    static const char  *sessions[] = {
        NULL, "new", "hit", "rebound", "fallback"
    };
    static const char  *state[] = { "read", "miss", "write", "write_failed" };

    sh = mcf->sh;

    ngx_http_model_gateway_family(w, "model_gateway_refused_total",
        "counter", "Requests answered by the gateway itself before any "
        "backend (bad requests, keys, limits, stores), by status class.");

    for (k = 0; k < 3; k++) {
        ngx_http_model_gateway_put(w, "model_gateway_refused_total"
                                   "{status_class=\"%s\"} %uL\n",
                                   classes[k], (uint64_t) sh->refused[k]);
    }

    ngx_http_model_gateway_family(w, "model_gateway_sessions_total",
        "counter", "Requests with a session key, by what became of the "
        "session: a new pin, a hit, a rebound, a fallback without Redis.");

    for (k = 1; k < NGX_HTTP_MG_SESSION_OUTCOMES; k++) {
        ngx_http_model_gateway_put(w, "model_gateway_sessions_total"
                                   "{result=\"%s\"} %uL\n", sessions[k],
                                   (uint64_t) sh->sessions[k]);
    }

    ngx_http_model_gateway_family(w, "model_gateway_state_total", "counter",
        "Stored state (response and conversation ids, gateway-held "
        "chains): reads, reads that found nothing, writes, failed writes.");

    for (k = 0; k < NGX_HTTP_MG_STATE_OPS; k++) {
        ngx_http_model_gateway_put(w, "model_gateway_state_total"
                                   "{op=\"%s\"} %uL\n", state[k],
                                   (uint64_t) sh->state[k]);
    }

    if (mcf->redis == NULL) {
        return;
    }

#define ngx_http_model_gateway_each_worker(rs, i)                           \
    for (i = 0, rs = sh->redis; i < NGX_HTTP_MG_WORKERS_MAX; i++, rs++)     \
        if (rs->pid)

    ngx_http_model_gateway_family(w, "model_gateway_redis_up", "gauge",
        "1 while a worker's Redis connection is ready "
        "(a cluster's: every primary's).");

    ngx_http_model_gateway_each_worker(rs, i) {
        ngx_http_model_gateway_put(w, "model_gateway_redis_up{worker=\"%uL\"}"
                                   " %uL\n", (uint64_t) rs->pid,
                                   (uint64_t) rs->up);
    }

    ngx_http_model_gateway_family(w, "model_gateway_redis_in_flight",
        "gauge", "Commands a worker waits for.");

    ngx_http_model_gateway_each_worker(rs, i) {
        ngx_http_model_gateway_put(w, "model_gateway_redis_in_flight"
                                   "{worker=\"%uL\"} %uL\n",
                                   (uint64_t) rs->pid,
                                   (uint64_t) rs->inflight);
    }

    ngx_http_model_gateway_family(w, "model_gateway_redis_commands_total",
        "counter", "Commands (scripts included) a worker sent.");

    ngx_http_model_gateway_each_worker(rs, i) {
        ngx_http_model_gateway_put(w, "model_gateway_redis_commands_total"
                                   "{worker=\"%uL\"} %uL\n",
                                   (uint64_t) rs->pid,
                                   (uint64_t) rs->commands);
    }

    ngx_http_model_gateway_family(w, "model_gateway_redis_errors_total",
        "counter", "Error replies a worker got.");

    ngx_http_model_gateway_each_worker(rs, i) {
        ngx_http_model_gateway_put(w, "model_gateway_redis_errors_total"
                                   "{worker=\"%uL\"} %uL\n",
                                   (uint64_t) rs->pid,
                                   (uint64_t) rs->errors);
    }

    ngx_http_model_gateway_family(w, "model_gateway_redis_timeouts_total",
        "counter", "Commands that timed out (each drops the connection).");

    ngx_http_model_gateway_each_worker(rs, i) {
        ngx_http_model_gateway_put(w, "model_gateway_redis_timeouts_total"
                                   "{worker=\"%uL\"} %uL\n",
                                   (uint64_t) rs->pid,
                                   (uint64_t) rs->timeouts);
    }

    if (mcf->redis->cluster_seeds) {
        ngx_http_model_gateway_family(w, "model_gateway_redis_redirects_total",
            "counter", "Redis Cluster redirects a worker followed.");

        ngx_http_model_gateway_each_worker(rs, i) {
            ngx_http_model_gateway_put(w,
                "model_gateway_redis_redirects_total"
                "{worker=\"%uL\",kind=\"moved\"} %uL\n"
                "model_gateway_redis_redirects_total"
                "{worker=\"%uL\",kind=\"ask\"} %uL\n",
                (uint64_t) rs->pid, (uint64_t) rs->moved,
                (uint64_t) rs->pid, (uint64_t) rs->asked);
        }

        ngx_http_model_gateway_family(w,
            "model_gateway_redis_cluster_refreshes_total", "counter",
            "Redis Cluster slot maps a worker read.");

        ngx_http_model_gateway_each_worker(rs, i) {
            ngx_http_model_gateway_put(w,
                "model_gateway_redis_cluster_refreshes_total"
                "{worker=\"%uL\"} %uL\n", (uint64_t) rs->pid,
                (uint64_t) rs->refreshes);
        }

        ngx_http_model_gateway_family(w,
            "model_gateway_redis_cluster_primaries", "gauge",
            "Primaries of the slot map a worker is connected to.");

        ngx_http_model_gateway_each_worker(rs, i) {
            ngx_http_model_gateway_put(w,
                "model_gateway_redis_cluster_primaries"
                "{worker=\"%uL\"} %uL\n", (uint64_t) rs->pid,
                (uint64_t) rs->primaries);
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_redis_latency_seconds",
        "histogram", "From a command's sending to its reply.");

    ngx_http_model_gateway_each_worker(rs, i) {
        uint64_t  cum = 0;

        for (k = 0; k <= NGX_HTTP_MG_LATENCY_BUCKETS; k++) {
            cum += rs->latency.bucket[k];

            if (k == NGX_HTTP_MG_LATENCY_BUCKETS) {
                ngx_http_model_gateway_put(w,
                    "model_gateway_redis_latency_seconds_bucket"
                    "{worker=\"%uL\",le=\"+Inf\"} %uL\n",
                    (uint64_t) rs->pid, cum);

            } else {
                ngx_http_model_gateway_put(w,
                    "model_gateway_redis_latency_seconds_bucket"
                    "{worker=\"%uL\",le=\"%uL.%03uL\"} %uL\n",
                    (uint64_t) rs->pid,
                    ngx_http_model_gateway_latency_bounds[k] / 1000,
                    ngx_http_model_gateway_latency_bounds[k] % 1000, cum);
            }
        }

        ngx_http_model_gateway_put(w,
            "model_gateway_redis_latency_seconds_sum{worker=\"%uL\"} "
            "%uL.%03uL\nmodel_gateway_redis_latency_seconds_count"
            "{worker=\"%uL\"} %uL\n", (uint64_t) rs->pid,
            (uint64_t) rs->latency.sum / 1000,
            (uint64_t) rs->latency.sum % 1000, (uint64_t) rs->pid, cum);
    }
}


ngx_int_t
ngx_http_model_gateway_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_chain_t                          out;
    ngx_http_model_gateway_render_t      w;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    if (mcf->sh == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    ngx_memzero(&w, sizeof(ngx_http_model_gateway_render_t));

    ngx_http_model_gateway_render_pairs(&w, mcf);
    ngx_http_model_gateway_render_backends(&w, mcf);
    ngx_http_model_gateway_render_rest(&w, mcf);
    ngx_http_model_gateway_render_who(&w, mcf->sh);

    if (w.rc != NGX_OK) {
        mg_buf_free(&w.out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, w.out.len ? w.out.len : 1);
    if (b == NULL) {
        mg_buf_free(&w.out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->pos, w.out.data, w.out.len);
    b->last_buf = (r == r->main);
    b->last_in_chain = 1;

    mg_buf_free(&w.out);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* a tenant and key's labels: the name is "TENANT\0KEY" */

static void
ngx_http_model_gateway_who_labels(ngx_http_model_gateway_render_t *w,
    ngx_http_model_gateway_who_t *e, ngx_uint_t other)
{
    u_char     *nul;
    ngx_str_t   tenant, key;

    if (other) {
        ngx_str_set(&tenant, "_other");
        ngx_str_set(&key, "_other");

    } else {
        nul = ngx_strlchr(e->name, e->name + e->len, '\0');

        tenant.data = e->name;
        tenant.len = nul ? (size_t) (nul - e->name) : e->len;
        key.data = nul ? nul + 1 : e->name + e->len;
        key.len = e->name + e->len - key.data;
    }

    ngx_http_model_gateway_label(w, "tenant", &tenant);
    ngx_http_model_gateway_put(w, ",");
    ngx_http_model_gateway_label(w, "key", &key);
}


#define ngx_http_model_gateway_each_who(sh, e, i)                            \
    for (i = 0, e = (sh)->who; (sh)->who && i <= (sh)->nwho; i++, e++)      \
        if (i == (sh)->nwho ? e->requests[0] + e->requests[1]               \
                              + e->requests[2] != 0                         \
                            : e->ready != 0)


static void
ngx_http_model_gateway_render_who(ngx_http_model_gateway_render_t *w,
    ngx_http_model_gateway_shm_t *sh)
{
    uint64_t                       cost;
    ngx_uint_t                     i, k;
    ngx_http_model_gateway_who_t  *e;

    static const char  *classes[] = { "2xx", "4xx", "5xx" };

    ngx_http_model_gateway_family(w, "model_gateway_tenant_requests_total",
        "counter", "Requests of a tenant's key, by status class (at most "
        "model_gateway_metrics_tenants pairs; the rest as \"_other\").");

    ngx_http_model_gateway_each_who(sh, e, i) {
        for (k = 0; k < 3; k++) {
            ngx_http_model_gateway_put(w,
                                       "model_gateway_tenant_requests_total{");
            ngx_http_model_gateway_who_labels(w, e, i == sh->nwho);
            ngx_http_model_gateway_put(w, ",status_class=\"%s\"} %uL\n",
                                       classes[k], (uint64_t) e->requests[k]);
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_tenant_tokens_total",
        "counter", "Tokens of a tenant's key: input and output.");

    ngx_http_model_gateway_each_who(sh, e, i) {
        for (k = 0; k < 2; k++) {
            ngx_http_model_gateway_put(w,
                                       "model_gateway_tenant_tokens_total{");
            ngx_http_model_gateway_who_labels(w, e, i == sh->nwho);
            ngx_http_model_gateway_put(w, ",type=\"%s\"} %uL\n",
                                       k ? "output" : "input",
                                       (uint64_t) e->tokens[k]);
        }
    }

    ngx_http_model_gateway_family(w, "model_gateway_tenant_cost_usd_total",
        "counter", "What a tenant's key spent, in USD, at the configured "
        "prices.");

    ngx_http_model_gateway_each_who(sh, e, i) {
        cost = e->cost;

        ngx_http_model_gateway_put(w, "model_gateway_tenant_cost_usd_total{");
        ngx_http_model_gateway_who_labels(w, e, i == sh->nwho);
        ngx_http_model_gateway_put(w, "} %uL.%06uL\n", cost / 1000000,
                                   cost % 1000000);
    }
}
