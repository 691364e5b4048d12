
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin API (model_gateway_admin KEYFILE): an operator's key from its
 * own key file, then JSON over HTTP.  This file checks the key, reads the
 * small JSON body, routes, and changes backends: weight, drain, forced
 * and cleared cool-downs, reset.  A change is written to the fleet's
 * admin hash in Redis by one script and put into this node's zone at
 * once; the other nodes read it within model_gateway_admin_sync
 * (_admin_sync.c).  Sessions, stored objects and gateway keys are
 * _admin_objects.c's.  Every change is logged at notice with the admin
 * key's id, never with a key.
 */


#include "ngx_http_model_gateway_admin.h"
#include "mg_admin.h"


#define NGX_HTTP_MG_ADMIN_BODY_MAX  8192


typedef struct {
    ngx_http_request_t                *request;
    ngx_http_mg_redis_cmd_t           *cmd;
    ngx_http_model_gateway_backend_t  *backend;   /* NULL: all of them */
    const char                        *op;
    ngx_str_t                          text;      /* for the log */
} ngx_http_model_gateway_admin_change_t;


/* an admin request: who asks (the key's id), the path, the body */

typedef struct {
    ngx_str_t                          admin;
    ngx_str_t                          rest;      /* the URI's tail */
    json_t                            *body;      /* NULL: none */
} ngx_http_model_gateway_admin_ctx_t;


static ngx_int_t ngx_http_model_gateway_admin_handler(ngx_http_request_t *r);
static void ngx_http_model_gateway_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_admin_route(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_admin_backends(ngx_http_request_t *r,
    ngx_str_t *rest);
static ngx_int_t ngx_http_model_gateway_admin_list(ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_admin_change(ngx_http_request_t *r,
    ngx_http_model_gateway_backend_t *b, const char *op, ngx_int_t value,
    ngx_str_t *text);
static void ngx_http_model_gateway_admin_changed(void *data,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_model_gateway_admin_cleanup(void *data);
static void ngx_http_model_gateway_admin_json_free(void *data);
static ngx_http_model_gateway_admin_ctx_t *ngx_http_model_gateway_admin_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_model_gateway_admin_number(ngx_http_request_t *r,
    const char *name, ngx_int_t min, ngx_int_t max, ngx_int_t def,
    ngx_int_t *out);


char *
ngx_http_model_gateway_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *lcf = conf;

    ngx_str_t                           *value;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (lcf->admin_keys) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->admin_keys = ngx_http_model_gateway_keys_load(cf, &value[1]);
    if (lcf->admin_keys == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_model_gateway_admin_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_model_gateway_module);
    mcf->admin = 1;

    return NGX_CONF_OK;
}


/* an OpenAI-shaped error */

ngx_int_t
ngx_http_model_gateway_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   json;

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\",\"param\":null,"
                 "\"code\":\"\"}}\n") + ngx_strlen(message)
          + ngx_strlen(code) + sizeof("invalid_request_error");

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json.data = p;
    p = ngx_sprintf(p, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\","
                    "\"param\":null,\"code\":\"%s\"}}\n", message,
                    status >= 500 ? "server_error"
                    : (status == NGX_HTTP_UNAUTHORIZED
                       ? "authentication_error" : "invalid_request_error"),
                    code);
    json.len = p - json.data;

    return ngx_http_model_gateway_admin_send(r, status, &json);
}


ngx_int_t
ngx_http_model_gateway_admin_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *json)
{
    ngx_table_elt_t  *h;

    /* the answer may name keys and tenants: never cached on the way */

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");
    h->lowcase_key = NULL;

    return ngx_http_model_gateway_send_json_status(r, status, json);
}


static ngx_int_t
ngx_http_model_gateway_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_str_t                            key;
    const mg_key_t                      *k;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_model_gateway_ctx_t        *ctx;
    ngx_http_model_gateway_loc_conf_t   *lcf;
    ngx_http_model_gateway_admin_ctx_t  *actx;
    u_char                               hash[MG_KEY_HASH_LEN];

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_model_gateway_module);

    /* the same key headers as the gateway's own: an SDK's style works */

    k = NULL;

    if (ngx_http_model_gateway_key_presented(r, &key) == NGX_OK
        && mg_key_presented_ok((char *) key.data, key.len)
        && mg_key_hash((char *) key.data, key.len, hash) == 0)
    {
        k = ngx_http_model_gateway_keys_find(lcf->admin_keys, hash);

        if (k && mg_key_expired(k, (int64_t) ngx_time())) {
            k = NULL;
        }
    }

    if (k == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "model gateway: admin request refused: no valid "
                      "admin key");

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                                  "invalid_api_key",
                                                  "Incorrect admin key "
                                                  "provided.");
    }

    actx = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_admin_ctx_t));
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actx->admin.len = ngx_strlen(k->id);
    actx->admin.data = ngx_pnalloc(r->pool, actx->admin.len);
    if (actx->admin.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(actx->admin.data, k->id, actx->admin.len);

    /* the path below the location: "backends/openai/weight" */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->uri.len < clcf->name.len
        || ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) != 0)
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_FOUND,
                                                  "not_found",
                                                  "Unknown admin path.");
    }

    actx->rest.data = r->uri.data + clcf->name.len;
    actx->rest.len = r->uri.len - clcf->name.len;

    while (actx->rest.len && actx->rest.data[0] == '/') {
        actx->rest.data++;
        actx->rest.len--;
    }

    /* the module's filters know its own ctx: the admin's hangs off it */

    ctx = ngx_http_model_gateway_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->admin = actx;

    if (r->headers_in.content_length_n > NGX_HTTP_MG_ADMIN_BODY_MAX) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "body_too_large",
                                         "An admin request body is at most "
                                         "8 KB.");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_model_gateway_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_model_gateway_admin_body(ngx_http_request_t *r)
{
    size_t                               len;
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_chain_t                         *cl;
    json_error_t                         jerr;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_model_gateway_admin_ctx_t  *actx;

    actx = ngx_http_model_gateway_admin_ctx(r);

    len = 0;
    b = NULL;

    if (r->request_body && r->request_body->temp_file == NULL) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            len += ngx_buf_size(cl->buf);
            b = cl->buf;
        }
    }

    if ((r->request_body && r->request_body->temp_file)
        || len > NGX_HTTP_MG_ADMIN_BODY_MAX
        || (r->request_body && r->request_body->bufs
            && r->request_body->bufs->next))
    {
        rc = ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "body_too_large",
                                         "An admin request body is at most "
                                         "8 KB.");
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (len) {
        actx->body = json_loadb((char *) b->pos, len, JSON_REJECT_DUPLICATES,
                                &jerr);

        if (actx->body && !json_is_object(actx->body)) {
            json_decref(actx->body);
            actx->body = NULL;
        }

        if (actx->body == NULL) {
            rc = ngx_http_model_gateway_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                                    "invalid_json",
                                                    "The body must be a "
                                                    "JSON object.");
            ngx_http_finalize_request(r, rc);
            return;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            json_decref(actx->body);
            actx->body = NULL;
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        cln->handler = ngx_http_model_gateway_admin_json_free;
        cln->data = actx->body;
    }

    rc = ngx_http_model_gateway_admin_route(r);

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_http_model_gateway_admin_ctx_t *
ngx_http_model_gateway_admin_ctx(ngx_http_request_t *r)
{
    ngx_http_model_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_model_gateway_module);

    return ctx->admin;
}


static void
ngx_http_model_gateway_admin_json_free(void *data)
{
    json_decref(data);
}


/* the id of the admin who asks, for log lines */

ngx_str_t *
ngx_http_model_gateway_admin_id(ngx_http_request_t *r)
{
    ngx_http_model_gateway_admin_ctx_t  *actx;

    actx = ngx_http_model_gateway_admin_ctx(r);

    return &actx->admin;
}


/* a member of the JSON body (name NULL: the body), or NULL */

json_t *
ngx_http_model_gateway_admin_field(ngx_http_request_t *r, const char *name)
{
    ngx_http_model_gateway_admin_ctx_t  *actx;

    actx = ngx_http_model_gateway_admin_ctx(r);

    if (name == NULL || actx->body == NULL) {
        return actx->body;
    }

    return json_object_get(actx->body, name);
}


/* the next "/"-separated part of s, taken off it */

ngx_str_t
ngx_http_model_gateway_admin_part(ngx_str_t *s)
{
    u_char     *p;
    ngx_str_t   part;

    p = ngx_strlchr(s->data, s->data + s->len, '/');

    part.data = s->data;
    part.len = p ? (size_t) (p - s->data) : s->len;

    s->data += part.len;
    s->len -= part.len;

    if (s->len) {
        s->data++;
        s->len--;
    }

    return part;
}


static ngx_int_t
ngx_http_model_gateway_admin_route(ngx_http_request_t *r)
{
    ngx_str_t                            rest, what;
    ngx_http_model_gateway_admin_ctx_t  *actx;

    actx = ngx_http_model_gateway_admin_ctx(r);

    rest = actx->rest;
    what = ngx_http_model_gateway_admin_part(&rest);

#define ngx_mg_admin_is(s, lit)                                             \
    ((s).len == sizeof(lit) - 1 && ngx_strncmp((s).data, lit, (s).len) == 0)

    if (ngx_mg_admin_is(what, "backends")) {
        return ngx_http_model_gateway_admin_backends(r, &rest);
    }

    if (ngx_mg_admin_is(what, "sessions")
        || ngx_mg_admin_is(what, "responses")
        || ngx_mg_admin_is(what, "conversations"))
    {
        return ngx_http_model_gateway_admin_objects(r, &what, &rest);
    }

    if (ngx_mg_admin_is(what, "keys")) {
        return ngx_http_model_gateway_admin_keys(r, &rest);
    }

    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_FOUND,
                                              "not_found",
                                              "Unknown admin path.");
}


/*
 * GET backends; POST backends/reset; POST backends/NAME/weight {"weight"},
 * drain, undrain, cooldown {"seconds"}, reset; DELETE backends/NAME/cooldown
 */

static ngx_int_t
ngx_http_model_gateway_admin_backends(ngx_http_request_t *r, ngx_str_t *rest)
{
    ngx_int_t                            v;
    ngx_str_t                            name, op, text;
    ngx_uint_t                           i;
    ngx_http_model_gateway_backend_t   **b;
    ngx_http_model_gateway_main_conf_t  *mcf;
    u_char                               buf[64];

    if (rest->len == 0) {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            goto not_allowed;
        }

        return ngx_http_model_gateway_admin_list(r);
    }

    name = ngx_http_model_gateway_admin_part(rest);

    if (rest->len == 0 && ngx_mg_admin_is(name, "reset")) {
        if (r->method != NGX_HTTP_POST) {
            goto not_allowed;
        }

        ngx_str_set(&text, "reset every backend to its configured values "
                    "and cleared their cool-downs");
        return ngx_http_model_gateway_admin_change(r, NULL, "resetall", 0,
                                                   &text);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    b = mcf->backends.elts;

    for (i = 0; i < mcf->backends.nelts; i++) {
        if (b[i]->name.len == name.len
            && ngx_strncmp(b[i]->name.data, name.data, name.len) == 0)
        {
            break;
        }
    }

    if (i == mcf->backends.nelts) {
        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_FOUND,
                                                  "backend_not_found",
                                                  "No backend of that name "
                                                  "is configured.");
    }

    op = ngx_http_model_gateway_admin_part(rest);

    if (rest->len) {
        goto unknown;
    }

    if (ngx_mg_admin_is(op, "cooldown") && r->method == NGX_HTTP_DELETE) {
        ngx_str_set(&text, "cleared the cool-downs of");
        return ngx_http_model_gateway_admin_change(r, b[i], "clear", 0,
                                                   &text);
    }

    if (r->method != NGX_HTTP_POST) {
        goto not_allowed;
    }

    if (ngx_mg_admin_is(op, "weight")) {
        if (ngx_http_model_gateway_admin_number(r, "weight", 1,
                                                MG_ADMIN_WEIGHT_MAX, -1, &v)
            != NGX_OK)
        {
            return ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_BAD_REQUEST,
                                         "invalid_weight",
                                         "\\\"weight\\\" must be an integer "
                                         "from 1 to 1000.");
        }

        text.data = buf;
        text.len = ngx_sprintf(buf, "set the weight to %i of", v) - buf;

        return ngx_http_model_gateway_admin_change(r, b[i], "weight", v,
                                                   &text);
    }

    if (ngx_mg_admin_is(op, "drain")) {
        ngx_str_set(&text, "drained");
        return ngx_http_model_gateway_admin_change(r, b[i], "drain", 0,
                                                   &text);
    }

    if (ngx_mg_admin_is(op, "undrain")) {
        ngx_str_set(&text, "undrained");
        return ngx_http_model_gateway_admin_change(r, b[i], "undrain", 0,
                                                   &text);
    }

    if (ngx_mg_admin_is(op, "cooldown")) {
        if (ngx_http_model_gateway_admin_number(r, "seconds", 1, 86400,
                                                (ngx_int_t) (mcf->cooldown
                                                             + 999) / 1000,
                                                &v)
            != NGX_OK)
        {
            return ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_BAD_REQUEST,
                                         "invalid_seconds",
                                         "\\\"seconds\\\" must be an integer "
                                         "from 1 to 86400.");
        }

        text.data = buf;
        text.len = ngx_sprintf(buf, "forced a cool-down of %is on", v) - buf;

        return ngx_http_model_gateway_admin_change(r, b[i], "cool",
                                                   v * 1000, &text);
    }

    if (ngx_mg_admin_is(op, "reset")) {
        ngx_str_set(&text, "reset to its configured values (and cleared "
                    "the cool-downs of)");
        return ngx_http_model_gateway_admin_change(r, b[i], "reset", 0,
                                                   &text);
    }

unknown:

    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_FOUND,
                                              "not_found",
                                              "Unknown admin path.");

not_allowed:

    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                              "method_not_allowed",
                                              "This method is not allowed "
                                              "on this admin path.");
}


/* an integer member of the body within [min, max]; absent: def (-1: none) */

static ngx_int_t
ngx_http_model_gateway_admin_number(ngx_http_request_t *r, const char *name,
    ngx_int_t min, ngx_int_t max, ngx_int_t def, ngx_int_t *out)
{
    json_t      *v;
    json_int_t   n;

    v = ngx_http_model_gateway_admin_field(r, name);

    if (v == NULL) {
        if (def < 0) {
            return NGX_ERROR;
        }

        *out = def;
        return NGX_OK;
    }

    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    n = json_integer_value(v);

    if (n < min || n > max) {
        return NGX_ERROR;
    }

    *out = (ngx_int_t) n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_admin_list(ngx_http_request_t *r)
{
    ngx_str_t  json;

    if (ngx_http_model_gateway_status_render(r, 0, &json) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_model_gateway_admin_send(r, NGX_HTTP_OK, &json);
}


/* one ADMIN script; the answer when Redis has it */

static ngx_int_t
ngx_http_model_gateway_admin_change(ngx_http_request_t *r,
    ngx_http_model_gateway_backend_t *b, const char *op, ngx_int_t value,
    ngx_str_t *text)
{
    ngx_str_t                               args[4];
    ngx_pool_cleanup_t                     *cln;
    ngx_http_model_gateway_admin_change_t  *ch;
    u_char                                  num[NGX_INT_T_LEN];

    ch = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_admin_change_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ch == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ch->request = r;
    ch->backend = b;
    ch->op = op;
    ch->text = *text;

    args[0] = *ngx_http_model_gateway_admin_hash();

    if (b) {
        args[1] = b->name;

    } else {
        ngx_str_set(&args[1], "-");
    }

    args[2].data = (u_char *) op;
    args[2].len = ngx_strlen(op);
    args[3].data = num;
    args[3].len = ngx_sprintf(num, "%i", value) - num;

    ch->cmd = ngx_http_mg_redis_script(NGX_HTTP_MG_SCRIPT_ADMIN, 4, args,
                                       ngx_http_model_gateway_admin_changed,
                                       ch);
    if (ch->cmd == NULL) {
        return ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "admin_store_unavailable",
                                         "Redis, which keeps the fleet's "
                                         "admin state, is unavailable; "
                                         "nothing was changed.");
    }

    cln->handler = ngx_http_model_gateway_admin_cleanup;
    cln->data = ch;

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_admin_cleanup(void *data)
{
    ngx_http_model_gateway_admin_change_t *ch = data;

    if (ch->cmd) {
        ngx_http_mg_redis_cancel(ch->cmd);
        ch->cmd = NULL;
    }
}


static void
ngx_http_model_gateway_admin_changed(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_admin_change_t *ch = data;

    ngx_int_t                            next;
    ngx_connection_t                    *c;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_main_conf_t  *mcf;

    r = ch->request;
    c = r->connection;
    ch->cmd = NULL;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != (ch->backend ? REDIS_REPLY_STRING
                                                   : REDIS_REPLY_ARRAY))
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "model gateway: admin \"%V\" could not change the "
                      "admin state: %s", ngx_http_model_gateway_admin_id(r),
                      rc != NGX_OK ? "redis unavailable"
                                   : "unexpected reply");

        next = ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "admin_store_unavailable",
                                         "Redis, which keeps the fleet's "
                                         "admin state, did not answer; the "
                                         "change may or may not be made.");
        goto done;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);

    /* this node at once; the others within model_gateway_admin_sync */

    if (ch->backend) {
        (void) ngx_http_model_gateway_admin_apply(mcf, ch->backend,
                                                  reply->element[0]->str,
                                                  reply->element[0]->len,
                                                  c->log);

        ngx_log_error(NGX_LOG_NOTICE, c->log, 0,
                      "model gateway: admin \"%V\" %V backend \"%V\"",
                      ngx_http_model_gateway_admin_id(r), &ch->text,
                      &ch->backend->name);

    } else {
        ngx_http_model_gateway_admin_apply_all(mcf, reply->element[0],
                                               c->log);

        ngx_log_error(NGX_LOG_NOTICE, c->log, 0,
                      "model gateway: admin \"%V\" %V",
                      ngx_http_model_gateway_admin_id(r), &ch->text);
    }

    next = ngx_http_model_gateway_admin_list(r);

done:

    ngx_http_finalize_request(r, next);
    ngx_http_run_posted_requests(c);
}
