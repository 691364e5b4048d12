
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Active health checks (health_check in a backend block): a cheap request
 * that costs no tokens (GET of the provider's model list, with the
 * backend's own credential), or for Bedrock a TCP and TLS connect.
 *
 * Every worker arms a timer per checked backend, and the workers share one
 * schedule per backend through its node in the shared zone: the worker
 * that moves node->health_next forward with a compare-and-set sends the
 * probe, so a node sends one probe per interval whatever its number of
 * workers.  The probe is a small HTTP/1.1 client on nginx's event loop:
 * one request with "Connection: close", of whose answer only the status
 * line is read, all within the probe's timeout.
 *
 * The verdict goes to the backend's node under the zone's lock: "fails"
 * failures in a row cool the backend down through its breaker, as failed
 * traffic does, and keep it cooling down while the probes fail; "passes"
 * passes in a row lift the cool-down the probes set (one that traffic
 * started ends by the breaker's trial, as without health checks).
 */


#include "ngx_http_model_gateway_module.h"


#define NGX_HTTP_MG_PROBE_BUF  1024


typedef struct {
    ngx_http_model_gateway_backend_t    *backend;
    ngx_http_model_gateway_main_conf_t  *mcf;

    ngx_event_t                          schedule;  /* cancelable */
    ngx_event_t                          deadline;  /* the probe's timeout */
    ngx_peer_connection_t                peer;
    ngx_log_t                            log;       /* of the connection */

    ngx_uint_t                           next_addr;
    socklen_t                            socklen;
    ngx_sockaddr_t                       sockaddr;
    ngx_str_t                            name;
    u_char                               text[NGX_SOCKADDR_STRLEN];

    size_t                               sent;
    size_t                               len;
    u_char                               buf[NGX_HTTP_MG_PROBE_BUF];

    unsigned                             busy:1;
} ngx_http_model_gateway_probe_t;


static char *ngx_http_model_gateway_health_time(ngx_conf_t *cf,
    ngx_str_t *v, size_t skip, ngx_msec_t *ms);
static ngx_int_t ngx_http_model_gateway_health_default_path(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
static void ngx_http_model_gateway_health_tick(ngx_event_t *ev);
static void ngx_http_model_gateway_health_arm(
    ngx_http_model_gateway_probe_t *pr);
static void ngx_http_model_gateway_health_connect(
    ngx_http_model_gateway_probe_t *pr);
static void ngx_http_model_gateway_health_write(ngx_event_t *wev);
#if (NGX_HTTP_SSL)
static void ngx_http_model_gateway_health_handshake(ngx_connection_t *c);
#endif
static void ngx_http_model_gateway_health_connected(
    ngx_http_model_gateway_probe_t *pr);
static void ngx_http_model_gateway_health_send(ngx_event_t *wev);
static void ngx_http_model_gateway_health_read(ngx_event_t *rev);
static void ngx_http_model_gateway_health_status(
    ngx_http_model_gateway_probe_t *pr, ngx_uint_t eof);
static void ngx_http_model_gateway_health_timeout(ngx_event_t *ev);
static void ngx_http_model_gateway_health_dummy(ngx_event_t *ev);
static void ngx_http_model_gateway_health_close(
    ngx_http_model_gateway_probe_t *pr);
static void ngx_http_model_gateway_health_verdict(
    ngx_http_model_gateway_probe_t *pr, ngx_uint_t pass, const char *err);


/*
 * health_check [interval=T] [timeout=T] [path=URI] [fails=N] [passes=N];
 */

char *
ngx_http_model_gateway_health_directive(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value, ngx_uint_t n)
{
    u_char      *p, *last;
    ngx_int_t    k;
    ngx_uint_t   i, timeout_set;
    ngx_msec_t   interval, timeout;

    if (b->health_interval) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"health_check\" directive is duplicate");
        return NGX_CONF_ERROR;
    }

    interval = 10000;
    timeout = 5000;
    timeout_set = 0;
    b->health_fails = 1;
    b->health_passes = 1;

    for (i = 1; i <= n; i++) {

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            if (ngx_http_model_gateway_health_time(cf, &value[i], 9,
                                                   &interval)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            if (interval < 100 || interval > 3600000) {
                goto range;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            if (ngx_http_model_gateway_health_time(cf, &value[i], 8,
                                                   &timeout)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            if (timeout < 10) {
                goto range;
            }

            timeout_set = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "fails=", 6) == 0
            || ngx_strncmp(value[i].data, "passes=", 7) == 0)
        {
            p = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            last = value[i].data + value[i].len;

            k = ngx_atoi(p, last - p);
            if (k < 1 || k > 100) {
                goto range;
            }

            if (value[i].data[0] == 'f') {
                b->health_fails = k;

            } else {
                b->health_passes = k;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "path=", 5) == 0) {
            p = value[i].data + 5;
            last = value[i].data + value[i].len;

            /* a path of the backend's host, sent as it is written */

            if (p == last || *p != '/') {
                goto invalid;
            }

            for ( /* void */ ; p < last; p++) {
                if (*p <= ' ' || *p == 0x7f) {
                    goto invalid;
                }
            }

            b->health_path.data = value[i].data + 5;
            b->health_path.len = value[i].len - 5;
            continue;
        }

        goto invalid;
    }

    /* the default timeout fits a short interval */

    if (!timeout_set && timeout >= interval) {
        timeout = interval / 2;
    }

    if (timeout >= interval) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "health_check timeout must be shorter than its "
                           "interval");
        return NGX_CONF_ERROR;
    }

    b->health_interval = interval;
    b->health_timeout = timeout;

    return NGX_CONF_OK;

range:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "health_check parameter \"%V\" is out of range "
                       "(interval 100ms..1h, timeout at least 10ms, fails "
                       "and passes 1..100)", &value[i]);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid health_check parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_model_gateway_health_time(ngx_conf_t *cf, ngx_str_t *v, size_t skip,
    ngx_msec_t *ms)
{
    ngx_str_t  s;

    s.data = v->data + skip;
    s.len = v->len - skip;

    *ms = ngx_parse_time(&s, 0);

    if (*ms == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid health_check parameter \"%V\"", v);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The probe's request, rendered once: the provider's model list (or the
 * path given), authenticated as the backend's traffic is, with its fixed
 * headers.  It holds the key, so it is only ever written to the socket.
 */

ngx_int_t
ngx_http_model_gateway_health_finish(ngx_conf_t *cf,
    ngx_http_model_gateway_main_conf_t *mcf,
    ngx_http_model_gateway_backend_t *b)
{
    u_char  *p;
    size_t   len;

    if (b->health_interval == 0) {
        return NGX_OK;
    }

    if (b->health_path.len == 0
        && ngx_http_model_gateway_health_default_path(cf, b) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (b->health_path.len == 0) {

        /* a connect check */
        return NGX_OK;
    }

    len = sizeof("GET  HTTP/1.1" CRLF) - 1 + b->health_path.len
          + sizeof("Host: " CRLF) - 1 + b->host_header.len
          + b->auth_header.len + b->fixed_lines.len
          + sizeof("Accept: application/json" CRLF) - 1
          + sizeof("Accept-Encoding: identity" CRLF) - 1
          + sizeof("Connection: close" CRLF CRLF) - 1;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    b->health_request.data = p;

    p = ngx_sprintf(p, "GET %V HTTP/1.1" CRLF "Host: %V" CRLF,
                    &b->health_path, &b->host_header);
    if (b->auth_header.len) {
        p = ngx_cpymem(p, b->auth_header.data, b->auth_header.len);
    }

    if (b->fixed_lines.len) {
        p = ngx_cpymem(p, b->fixed_lines.data, b->fixed_lines.len);
    }
    p = ngx_cpymem(p, "Accept: application/json" CRLF
                   "Accept-Encoding: identity" CRLF
                   "Connection: close" CRLF CRLF,
                   sizeof("Accept: application/json" CRLF
                          "Accept-Encoding: identity" CRLF
                          "Connection: close" CRLF CRLF) - 1);

    b->health_request.len = p - b->health_request.data;

    return NGX_OK;
}


/* the provider's cheapest authenticated GET: its model list */

static ngx_int_t
ngx_http_model_gateway_health_default_path(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    size_t   len;
    u_char  *p;

    switch (b->type) {

    case NGX_HTTP_MG_BEDROCK:

        /* no unsigned GET costs nothing there: a connect check */
        return NGX_OK;

    case NGX_HTTP_MG_AZURE:

        if (!b->azure_v1) {
            len = b->path.len + sizeof("/models?api-version=") - 1
                  + b->api_version.len;

            p = ngx_pnalloc(cf->pool, len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            b->health_path.data = p;
            b->health_path.len = ngx_sprintf(p, "%V/models?api-version=%V",
                                             &b->path, &b->api_version)
                                 - p;
            return NGX_OK;
        }

        /* fall through */

    default:

        /* OpenAI, OpenAI-compatible, Anthropic, Gemini: PREFIX/models */

        len = b->path.len + sizeof("/models") - 1;

        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        b->health_path.data = p;
        b->health_path.len = ngx_sprintf(p, "%V/models", &b->path) - p;

        return NGX_OK;
    }
}


/* each worker's probes, one per checked backend */

ngx_int_t
ngx_http_model_gateway_health_init(ngx_cycle_t *cycle,
    ngx_http_model_gateway_main_conf_t *mcf)
{
    ngx_uint_t                          i;
    ngx_http_model_gateway_probe_t     *pr;
    ngx_http_model_gateway_backend_t  **b;

    if (mcf->sh == NULL) {
        return NGX_OK;
    }

    b = mcf->backends.elts;

    for (i = 0; i < mcf->backends.nelts; i++) {
        if (b[i]->health_interval == 0) {
            continue;
        }

        pr = ngx_pcalloc(cycle->pool, sizeof(ngx_http_model_gateway_probe_t));
        if (pr == NULL) {
            return NGX_ERROR;
        }

        pr->backend = b[i];
        pr->mcf = mcf;
        pr->next_addr = ngx_pid;

        /*
         * the schedule is cancelable, so that an idle worker shutting
         * down does not wait for it; a probe in flight holds the worker
         * until its deadline at most, which is shorter than the interval
         */

        pr->schedule.handler = ngx_http_model_gateway_health_tick;
        pr->schedule.data = pr;
        pr->schedule.log = cycle->log;
        pr->schedule.cancelable = 1;

        pr->deadline.handler = ngx_http_model_gateway_health_timeout;
        pr->deadline.data = pr;
        pr->deadline.log = cycle->log;

        /*
         * nginx's own messages about the probe's connection (a refused
         * connect, a reset, a TLS alert) are logged at "info": the line
         * that counts is the cool-down's
         */

        pr->log = *cycle->log;

        if (pr->log.log_level > NGX_LOG_CRIT) {
            pr->log.log_level = NGX_LOG_CRIT;
        }

        /* soon after start, spread a little over the workers */

        ngx_add_timer(&pr->schedule, 1 + ngx_random() % 50);
    }

    return NGX_OK;
}


static void
ngx_http_model_gateway_health_tick(ngx_event_t *ev)
{
    ngx_http_model_gateway_probe_t *pr = ev->data;

    ngx_msec_t                          now;
    ngx_atomic_uint_t                   next;
    ngx_http_model_gateway_node_t      *node;
    ngx_http_model_gateway_backend_t   *b;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    b = pr->backend;
    node = b->node;
    now = ngx_current_msec;
    next = node->health_next;

    /*
     * the probe is due (or the schedule is one of a longer interval,
     * before a reload): the worker that moves the shared schedule on sends
     * it; a "resolve" backend not resolved yet is not probed
     */

    if (!pr->busy
        && b->naddrs
        && ((ngx_msec_int_t) (now - (ngx_msec_t) next) >= 0
            || (ngx_msec_t) next - now > b->health_interval)
        && ngx_atomic_cmp_set(&node->health_next, next,
                              (ngx_atomic_uint_t) (now + b->health_interval)))
    {
        ngx_http_model_gateway_health_connect(pr);
    }

    ngx_http_model_gateway_health_arm(pr);
}


/* wakes up when the shared schedule says the next probe is due */

static void
ngx_http_model_gateway_health_arm(ngx_http_model_gateway_probe_t *pr)
{
    ngx_msec_t                         now, next, delay;
    ngx_http_model_gateway_backend_t  *b;

    if (ngx_exiting || ngx_terminate || pr->schedule.timer_set) {
        return;
    }

    b = pr->backend;
    now = ngx_current_msec;
    next = (ngx_msec_t) b->node->health_next;

    delay = ((ngx_msec_int_t) (next - now) > 0) ? next - now : 0;

    if (delay > b->health_interval) {

        /* a schedule of another configuration, before a reload */
        delay = b->health_interval;
    }

    /* a few ms later than due, so that each worker's try finds it due */

    ngx_add_timer(&pr->schedule, delay + 1 + ngx_random() % 10);
}


static void
ngx_http_model_gateway_health_connect(ngx_http_model_gateway_probe_t *pr)
{
    ngx_int_t                          rc;
    ngx_addr_t                        *addr;
    ngx_connection_t                  *c;
    ngx_http_model_gateway_backend_t  *b;

    b = pr->backend;

    /* re-resolution may replace the addresses: the probe keeps a copy */

    addr = &b->addrs[pr->next_addr++ % b->naddrs];

    ngx_memcpy(&pr->sockaddr, addr->sockaddr, addr->socklen);
    pr->socklen = addr->socklen;
    pr->name.data = pr->text;
    pr->name.len = ngx_sock_ntop(&pr->sockaddr.sockaddr, pr->socklen,
                                 pr->text, NGX_SOCKADDR_STRLEN, 1);

    ngx_memzero(&pr->peer, sizeof(ngx_peer_connection_t));

    pr->peer.sockaddr = &pr->sockaddr.sockaddr;
    pr->peer.socklen = pr->socklen;
    pr->peer.name = &pr->name;
    pr->peer.get = ngx_event_get_peer;
    pr->peer.log = &pr->log;
    pr->peer.log_error = NGX_ERROR_INFO;

    pr->busy = 1;
    pr->sent = 0;
    pr->len = 0;

    ngx_add_timer(&pr->deadline, b->health_timeout);

    rc = ngx_event_connect_peer(&pr->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_model_gateway_health_verdict(pr, 0, "connect failed");
        return;
    }

    c = pr->peer.connection;
    c->data = pr;
    c->log = &pr->log;
    c->read->log = &pr->log;
    c->write->log = &pr->log;
    c->log_error = NGX_ERROR_INFO;
    c->read->handler = ngx_http_model_gateway_health_dummy;
    c->write->handler = ngx_http_model_gateway_health_write;

    /* closed at once when the worker starts shutting down */

    c->idle = 1;

    /* nginx's SSL allocates from the connection's pool */

    c->pool = ngx_create_pool(512, &pr->log);
    if (c->pool == NULL) {
        ngx_http_model_gateway_health_verdict(pr, 0, "out of memory");
        return;
    }

    if (rc == NGX_AGAIN) {
        return;
    }

    ngx_http_model_gateway_health_write(c->write);
}


static void
ngx_http_model_gateway_health_write(ngx_event_t *wev)
{
    ngx_connection_t                  *c;
    ngx_http_model_gateway_probe_t    *pr;
    ngx_http_model_gateway_backend_t  *b;

    c = wev->data;
    pr = c->data;
    b = pr->backend;

    if (c->close) {
        ngx_http_model_gateway_health_close(pr);
        return;
    }

    if (ngx_http_model_gateway_client_error(c)) {
        ngx_http_model_gateway_health_verdict(pr, 0, "connect failed");
        return;
    }

#if (NGX_HTTP_SSL)

    if (b->ssl) {
        u_char  name[256];

        if (ngx_ssl_create_connection(b->header_conf.ssl, c, NGX_SSL_CLIENT)
            != NGX_OK)
        {
            ngx_http_model_gateway_health_verdict(pr, 0, "TLS setup failed");
            return;
        }

        /* SNI as the traffic's: a host name, never an address */

        if (b->host.len && b->host.len < sizeof(name)
            && ngx_inet_addr(b->host.data, b->host.len) == INADDR_NONE
            && ngx_strlchr(b->host.data, b->host.data + b->host.len, ':')
               == NULL)
        {
            ngx_cpystrn(name, b->host.data, b->host.len + 1);

            if (SSL_set_tlsext_host_name(c->ssl->connection, (char *) name)
                == 0)
            {
                ngx_http_model_gateway_health_verdict(pr, 0,
                                                      "TLS setup failed");
                return;
            }
        }

        if (ngx_ssl_handshake(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_model_gateway_health_handshake;
            return;
        }

        ngx_http_model_gateway_health_handshake(c);
        return;
    }

#endif

    ngx_http_model_gateway_health_connected(pr);
}


#if (NGX_HTTP_SSL)

static void
ngx_http_model_gateway_health_handshake(ngx_connection_t *c)
{
    long                               rc;
    ngx_http_model_gateway_probe_t    *pr;
    ngx_http_model_gateway_backend_t  *b;

    pr = c->data;
    b = pr->backend;

    if (!c->ssl->handshaked) {
        ngx_http_model_gateway_health_verdict(pr, 0, "TLS handshake failed");
        return;
    }

    if (b->ssl_verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_http_model_gateway_health_verdict(pr, 0,
                                                "certificate not trusted");
            return;
        }

        if (ngx_ssl_check_host(c, &b->host) != NGX_OK) {
            ngx_http_model_gateway_health_verdict(pr, 0,
                                                "certificate name mismatch");
            return;
        }
    }

    ngx_http_model_gateway_health_connected(pr);
}

#endif


static void
ngx_http_model_gateway_health_connected(ngx_http_model_gateway_probe_t *pr)
{
    ngx_connection_t  *c;

    c = pr->peer.connection;

    if (pr->backend->health_request.len == 0) {

        /* a connect check: reached, and the handshake done */

        ngx_http_model_gateway_health_verdict(pr, 1, NULL);
        return;
    }

    c->read->handler = ngx_http_model_gateway_health_read;
    c->write->handler = ngx_http_model_gateway_health_send;

    ngx_http_model_gateway_health_send(c->write);
}


static void
ngx_http_model_gateway_health_send(ngx_event_t *wev)
{
    ssize_t                          n;
    ngx_str_t                       *req;
    ngx_connection_t                *c;
    ngx_http_model_gateway_probe_t  *pr;

    c = wev->data;
    pr = c->data;
    req = &pr->backend->health_request;

    if (c->close) {
        ngx_http_model_gateway_health_close(pr);
        return;
    }

    while (pr->sent < req->len) {
        n = c->send(c, req->data + pr->sent, req->len - pr->sent);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_model_gateway_health_verdict(pr, 0, "send failed");
            }

            return;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_model_gateway_health_verdict(pr, 0, "send failed");
            return;
        }

        pr->sent += n;
    }

    c->write->handler = ngx_http_model_gateway_health_dummy;

    if (c->read->ready) {
        ngx_http_model_gateway_health_read(c->read);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_model_gateway_health_verdict(pr, 0, "read failed");
    }
}


/* reads the status line only: never a body, at most a fixed buffer */

static void
ngx_http_model_gateway_health_read(ngx_event_t *rev)
{
    ssize_t                          n;
    ngx_connection_t                *c;
    ngx_http_model_gateway_probe_t  *pr;

    c = rev->data;
    pr = c->data;

    if (c->close) {
        ngx_http_model_gateway_health_close(pr);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, pr->buf + pr->len, sizeof(pr->buf) - pr->len);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_model_gateway_health_verdict(pr, 0, "read failed");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_model_gateway_health_verdict(pr, 0, "read failed");
            return;
        }

        if (n == 0) {
            ngx_http_model_gateway_health_status(pr, 1);
            return;
        }

        pr->len += n;

        if (ngx_strlchr(pr->buf, pr->buf + pr->len, LF)
            || pr->len == sizeof(pr->buf))
        {
            ngx_http_model_gateway_health_status(pr, 0);
            return;
        }
    }
}


static void
ngx_http_model_gateway_health_status(ngx_http_model_gateway_probe_t *pr,
    ngx_uint_t eof)
{
    u_char      *p, *lf;
    ngx_uint_t   status;
    u_char       err[NGX_HTTP_MG_HEALTH_ERR];

    lf = ngx_strlchr(pr->buf, pr->buf + pr->len, LF);

    if (lf == NULL) {
        ngx_http_model_gateway_health_verdict(pr, 0, eof
                                              ? "closed before the status"
                                              : "status line too long");
        return;
    }

    /* "HTTP/1.x NNN ..." */

    p = pr->buf;

    if (lf - p < 12
        || ngx_strncmp(p, "HTTP/1.", 7) != 0
        || p[8] != ' '
        || p[9] < '1' || p[9] > '5'
        || p[10] < '0' || p[10] > '9'
        || p[11] < '0' || p[11] > '9')
    {
        ngx_http_model_gateway_health_verdict(pr, 0, "bad status line");
        return;
    }

    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');

    if (status >= 200 && status < 300) {
        ngx_http_model_gateway_health_verdict(pr, 1, NULL);
        return;
    }

    /* the status alone: nothing the backend sent is repeated */

    ngx_sprintf(err, "HTTP %ui%s%Z", status,
                (status == 401 || status == 403) ? ": credential rejected"
                                                 : "");

    ngx_http_model_gateway_health_verdict(pr, 0, (char *) err);
}


static void
ngx_http_model_gateway_health_timeout(ngx_event_t *ev)
{
    ngx_http_model_gateway_probe_t *pr = ev->data;

    ngx_http_model_gateway_health_verdict(pr, 0, "timed out");
}


static void
ngx_http_model_gateway_health_dummy(ngx_event_t *ev)
{
    ngx_connection_t                *c;
    ngx_http_model_gateway_probe_t  *pr;

    c = ev->data;
    pr = c->data;

    if (c->close) {
        ngx_http_model_gateway_health_close(pr);
    }
}


/* ends a probe without a verdict, or after one */

static void
ngx_http_model_gateway_health_close(ngx_http_model_gateway_probe_t *pr)
{
    ngx_http_model_gateway_client_close(&pr->peer);

    if (pr->deadline.timer_set) {
        ngx_del_timer(&pr->deadline);
    }

    pr->busy = 0;
}


/*
 * The verdict, in the backend's node under the zone's lock: counted,
 * and after enough of the same in a row the backend cools down, or the
 * cool-down the probes set is lifted.
 */

static void
ngx_http_model_gateway_health_verdict(ngx_http_model_gateway_probe_t *pr,
    ngx_uint_t pass, const char *err)
{
    ngx_uint_t                           down, up;
    ngx_msec_t                           now, hold;
    mg_msec_t                            until;
    ngx_slab_pool_t                     *shpool;
    ngx_http_model_gateway_node_t       *node;
    ngx_http_model_gateway_backend_t    *b;
    ngx_http_model_gateway_main_conf_t  *mcf;

    ngx_http_model_gateway_health_close(pr);

    b = pr->backend;
    mcf = pr->mcf;
    node = b->node;
    shpool = mcf->shpool;
    now = ngx_current_msec;
    down = 0;
    up = 0;

    /*
     * a probe-made cool-down lasts while the probes fail: each failure
     * holds it until after the next probe's verdict at least
     */

    hold = ngx_max(mcf->cooldown, b->health_interval + b->health_timeout);

    (void) ngx_atomic_fetch_add(&node->probes[pass ? 0 : 1], 1);

    ngx_shmtx_lock(&shpool->mutex);

    node->health_at = now;

    if (pass) {
        node->health_failed = 0;
        node->health_passed++;
        node->health_error[0] = '\0';

        if (node->health == NGX_HTTP_MG_HEALTH_UNKNOWN) {
            node->health = NGX_HTTP_MG_HEALTH_UP;

        } else if (node->health == NGX_HTTP_MG_HEALTH_DOWN
                   && node->health_passed >= b->health_passes)
        {
            node->health = NGX_HTTP_MG_HEALTH_UP;
            up = 1;

            /*
             * only the cool-down the probes set is lifted: one that
             * traffic started or restarted since ends by its trial
             */

            if (node->breaker.cooldown_until == node->health_until) {
                node->breaker.cooldown_until = 0;
                node->breaker.trial_until = 0;
                node->breaker.fails = 0;
            }

            node->health_until = 0;
        }

    } else {
        node->health_passed = 0;
        node->health_failed++;

        ngx_cpystrn(node->health_error, (u_char *) err,
                    NGX_HTTP_MG_HEALTH_ERR);

        if (node->health == NGX_HTTP_MG_HEALTH_DOWN
            || node->health_failed >= b->health_fails)
        {
            down = (node->health != NGX_HTTP_MG_HEALTH_DOWN);
            node->health = NGX_HTTP_MG_HEALTH_DOWN;

            until = (mg_msec_t) (now + hold);

            if (node->breaker.cooldown_until < until) {
                node->breaker.cooldown_until = until;
            }

            node->breaker.trial_until = 0;
            node->health_until = node->breaker.cooldown_until;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (down) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "model gateway: backend \"%V\" cools down for %M ms: "
                      "health check failed (%s)", &b->name, hold, err);
    }

    if (up) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "model gateway: backend \"%V\" passed its health "
                      "check, in use again", &b->name);
    }
}
