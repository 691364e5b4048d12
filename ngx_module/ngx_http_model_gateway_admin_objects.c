
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin API's view of what Redis holds for tenants: session pins,
 * stored responses and conversations (native id mappings and gateway-held
 * records), and gateway keys.  Each is a short chain of Redis commands,
 * one in flight at a time; the request waits on nginx's event loop.  The
 * admin names the tenant: an object of another tenant is not found, as
 * for any caller.  A key's secret is shown once, when it is made, and is
 * never logged.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/rand.h>


#define NGX_HTTP_MG_ADMIN_PAGE  "200"


typedef struct ngx_http_model_gateway_admin_job_s
    ngx_http_model_gateway_admin_job_t;

typedef ngx_int_t (*ngx_http_model_gateway_admin_step_pt)(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);

struct ngx_http_model_gateway_admin_job_s {
    ngx_http_request_t                    *request;
    ngx_http_mg_redis_cmd_t               *cmd;
    ngx_http_model_gateway_admin_step_pt   step;
    ngx_uint_t                             remove;  /* DELETE */
    ngx_str_t                              kind;    /* "sessions", ... */
    ngx_str_t                              id;
    ngx_str_t                              tenant;  /* may be empty */
    ngx_str_t                              key;     /* the Redis key */
    ngx_str_t                              key2;
    ngx_str_t                              hex;     /* a key's hash */
    ngx_str_t                              secret;  /* a new key */
    ngx_array_t                           *fields;  /* ngx_str_t pairs */
};


static ngx_int_t ngx_http_model_gateway_admin_arg(ngx_http_request_t *r,
    const char *name, ngx_str_t *out);
static ngx_int_t ngx_http_model_gateway_admin_send_cmd(
    ngx_http_model_gateway_admin_job_t *job, ngx_uint_t nargs,
    ngx_str_t *args, ngx_http_model_gateway_admin_step_pt step);
static void ngx_http_model_gateway_admin_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_model_gateway_admin_job_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_admin_pin(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_deleted(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_mapping(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_record(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_page(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_reserved(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_written(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_found(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_dropped(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_new(ngx_http_request_t *r,
    ngx_http_model_gateway_admin_job_t *job);
static ngx_int_t ngx_http_model_gateway_admin_json(ngx_http_request_t *r,
    ngx_uint_t status, json_t *j);
static ngx_int_t ngx_http_model_gateway_admin_not_found(
    ngx_http_request_t *r);


static ngx_http_model_gateway_admin_job_t *
ngx_http_model_gateway_admin_job(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t                  *cln;
    ngx_http_model_gateway_admin_job_t  *job;

    job = ngx_pcalloc(r->pool, sizeof(ngx_http_model_gateway_admin_job_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (job == NULL || cln == NULL) {
        return NULL;
    }

    job->request = r;
    job->remove = (r->method == NGX_HTTP_DELETE);

    cln->handler = ngx_http_model_gateway_admin_job_cleanup;
    cln->data = job;

    return job;
}


/*
 * GET|DELETE sessions?model=M&session=S[&tenant=T]
 * GET|DELETE responses/ID[?tenant=T], conversations/ID[?tenant=T]
 */

ngx_int_t
ngx_http_model_gateway_admin_objects(ngx_http_request_t *r, ngx_str_t *kind,
    ngx_str_t *rest)
{
    u_char                              *p;
    ngx_str_t                            model, session, args[2], *prefix;
    ngx_str_t                            gw;
    ngx_uint_t                           i, held;
    ngx_http_model_gateway_admin_job_t  *job;
    ngx_http_model_gateway_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE))) {
        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                                  "method_not_allowed",
                                                  "This method is not "
                                                  "allowed on this admin "
                                                  "path.");
    }

    job = ngx_http_model_gateway_admin_job(r);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    job->kind = *kind;

    if (ngx_http_model_gateway_admin_arg(r, "tenant", &job->tenant)
        != NGX_OK
        || (job->tenant.len
            && ngx_http_model_gateway_name_ok(&job->tenant, MG_KEY_ID_MAX)
               != NGX_OK))
    {
        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                                  "invalid_tenant",
                                                  "\\\"tenant\\\" must be 1 "
                                                  "to 64 of A-Z a-z 0-9 . _ "
                                                  "-.");
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    prefix = &mcf->redis->prefix;

    if (kind->data[0] == 's') {
        if (rest->len
            || ngx_http_model_gateway_admin_arg(r, "model", &model) != NGX_OK
            || ngx_http_model_gateway_admin_arg(r, "session", &session)
               != NGX_OK
            || model.len == 0 || model.len > 256
            || session.len == 0 || session.len > 256)
        {
            goto invalid;
        }

        for (i = 0; i < session.len; i++) {
            if (session.data[i] < 0x21 || session.data[i] > 0x7e) {
                goto invalid;
            }
        }

        job->id = session;

        /* the layout of _session.c */

        job->key.len = prefix->len + sizeof(":{}:pin::") + job->tenant.len
                       + session.len + model.len;
        job->key.data = ngx_pnalloc(r->pool, job->key.len);
        if (job->key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (job->tenant.len) {
            p = ngx_sprintf(job->key.data, "%V:{%V}:pin:%V:%V", prefix,
                            &job->tenant, &session, &model);

        } else {
            p = ngx_sprintf(job->key.data, "%V:pin:%V:%V", prefix,
                            &session, &model);
        }

        job->key.len = p - job->key.data;

        if (job->remove) {
            ngx_str_set(&args[0], "DEL");
            args[1] = job->key;

            return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                        ngx_http_model_gateway_admin_deleted);
        }

        ngx_str_set(&args[0], "GET");
        args[1] = job->key;

        return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                           ngx_http_model_gateway_admin_pin);
    }

    /* responses/ID, conversations/ID */

    job->id = ngx_http_model_gateway_admin_part(rest);

    if (rest->len || job->id.len == 0 || job->id.len > 256
        || ngx_http_model_gateway_name_ok(&job->id, 256) != NGX_OK)
    {
        goto invalid;
    }

    held = (kind->data[0] == 'r')
           ? ngx_http_model_gateway_memory_id(job->id.data, job->id.len)
           : ngx_http_model_gateway_memory_conv_id(job->id.data,
                                                   job->id.len);

    if (held) {

        /* gateway-held: the layout of _memory.c */

        if (job->tenant.len) {
            gw = job->tenant;

        } else {
            ngx_str_set(&gw, ":");
        }

        job->key.len = prefix->len + sizeof(":{}:gw:c:") + gw.len
                       + job->id.len;
        job->key.data = ngx_pnalloc(r->pool, job->key.len);
        if (job->key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_sprintf(job->key.data, "%V:{%V}:gw:%c:%V", prefix, &gw,
                        kind->data[0] == 'r' ? 'r' : 'c', &job->id);
        job->key.len = p - job->key.data;

        /* the list key's base, for a conversation's own list */

        job->key2.len = prefix->len + sizeof(":{}:gw:l:") + gw.len;
        job->key2.data = ngx_pnalloc(r->pool, job->key2.len + 64);
        if (job->key2.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_sprintf(job->key2.data, "%V:{%V}:gw:l:", prefix, &gw);
        job->key2.len = p - job->key2.data;

        ngx_str_set(&args[0], "HGETALL");
        args[1] = job->key;

        return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                        ngx_http_model_gateway_admin_record);
    }

    /* native: the id mapping of _state.c */

    job->key.len = prefix->len + sizeof(":conv:") + job->id.len;
    job->key.data = ngx_pnalloc(r->pool, job->key.len);
    if (job->key.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(job->key.data, "%V:%s:%V", prefix,
                    kind->data[0] == 'r' ? "resp" : "conv", &job->id);
    job->key.len = p - job->key.data;

    ngx_str_set(&args[0], "GET");
    args[1] = job->key;

    return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                       ngx_http_model_gateway_admin_mapping);

invalid:

    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                              "invalid_request",
                                              "A session needs \\\"model\\\" "
                                              "and \\\"session\\\" (1 to 256 "
                                              "printable bytes); a response "
                                              "or conversation needs its id "
                                              "in the path.");
}


/* a query argument, URI-decoded (empty when absent) */

static ngx_int_t
ngx_http_model_gateway_admin_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *out)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        ngx_str_null(out);
        return NGX_OK;
    }

    out->data = ngx_pnalloc(r->pool, raw.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    dst = out->data;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    out->len = dst - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_admin_send_cmd(ngx_http_model_gateway_admin_job_t *job,
    ngx_uint_t nargs, ngx_str_t *args,
    ngx_http_model_gateway_admin_step_pt step)
{
    job->step = step;
    job->cmd = ngx_http_mg_redis_command(nargs, args,
                                         ngx_http_model_gateway_admin_reply,
                                         job);
    if (job->cmd == NULL) {
        return ngx_http_model_gateway_admin_error(job->request,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "admin_store_unavailable",
                                         "Redis is unavailable.");
    }

    return NGX_AGAIN;
}


static void
ngx_http_model_gateway_admin_job_cleanup(void *data)
{
    ngx_http_model_gateway_admin_job_t *job = data;

    if (job->cmd) {
        ngx_http_mg_redis_cancel(job->cmd);
        job->cmd = NULL;
    }
}


static void
ngx_http_model_gateway_admin_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_model_gateway_admin_job_t *job = data;

    ngx_int_t            next;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = job->request;
    c = r->connection;
    job->cmd = NULL;

    if (rc != NGX_OK || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "model gateway: admin \"%V\": a redis command on "
                      "%V failed", ngx_http_model_gateway_admin_id(r),
                      &job->kind);

        next = ngx_http_model_gateway_admin_error(r,
                                         NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "admin_store_unavailable",
                                         "Redis did not answer; a change "
                                         "may or may not be made.");

    } else {
        next = job->step(job, reply);
    }

    if (next == NGX_AGAIN) {
        return;
    }

    ngx_http_finalize_request(r, next);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_model_gateway_admin_not_found(ngx_http_request_t *r)
{
    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_FOUND,
                                              "not_found",
                                              "No such object for this "
                                              "tenant.");
}


static ngx_int_t
ngx_http_model_gateway_admin_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *j)
{
    char       *s;
    ngx_str_t   json;

    if (j == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = json_dumps(j, JSON_COMPACT);
    json_decref(j);

    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json.len = ngx_strlen(s);
    json.data = ngx_pnalloc(r->pool, json.len);

    if (json.data) {
        ngx_memcpy(json.data, s, json.len);
    }

    free(s);

    if (json.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_model_gateway_admin_send(r, status, &json);
}


static json_t *
ngx_http_model_gateway_admin_str(const char *s, size_t len)
{
    return json_stringn_nocheck(s, len);
}


/* a pin: "BACKEND|CREATED_MS" */

static ngx_int_t
ngx_http_model_gateway_admin_pin(ngx_http_model_gateway_admin_job_t *job,
    redisReply *reply)
{
    char    *sep;
    json_t  *j;

    if (reply->type != REDIS_REPLY_STRING) {
        return ngx_http_model_gateway_admin_not_found(job->request);
    }

    sep = memchr(reply->str, '|', reply->len);

    j = json_pack("{s:s,s:s%,s:o,s:o,s:I}", "object", "session",
                  "session", (char *) job->id.data, job->id.len,
                  "tenant", job->tenant.len
                            ? ngx_http_model_gateway_admin_str(
                                  (char *) job->tenant.data, job->tenant.len)
                            : json_null(),
                  "backend", ngx_http_model_gateway_admin_str(reply->str,
                                 sep ? (size_t) (sep - reply->str)
                                     : reply->len),
                  "created_at_ms",
                  (json_int_t) (sep ? ngx_atoi((u_char *) sep + 1,
                                           reply->str + reply->len - sep - 1)
                                    : -1));

    return ngx_http_model_gateway_admin_json(job->request, NGX_HTTP_OK, j);
}


static ngx_int_t
ngx_http_model_gateway_admin_deleted(ngx_http_model_gateway_admin_job_t *job,
    redisReply *reply)
{
    json_t  *j;

    if (reply->type != REDIS_REPLY_INTEGER || reply->integer == 0) {
        return ngx_http_model_gateway_admin_not_found(job->request);
    }

    ngx_log_error(NGX_LOG_NOTICE, job->request->connection->log, 0,
                  "model gateway: admin \"%V\" deleted %V \"%V\" of tenant "
                  "\"%V\"", ngx_http_model_gateway_admin_id(job->request),
                  &job->kind, &job->id, &job->tenant);

    j = json_pack("{s:s%,s:s%,s:b}", "object", (char *) job->kind.data,
                  job->kind.len, "id", (char *) job->id.data, job->id.len,
                  "deleted", 1);

    return ngx_http_model_gateway_admin_json(job->request, NGX_HTTP_OK, j);
}


/* a native id: "BACKEND", or "TENANT|BACKEND" with identity */

static ngx_int_t
ngx_http_model_gateway_admin_mapping(ngx_http_model_gateway_admin_job_t *job,
    redisReply *reply)
{
    char       *sep;
    json_t     *j;
    ngx_str_t   owner, args[2], name;

    if (reply->type != REDIS_REPLY_STRING) {
        return ngx_http_model_gateway_admin_not_found(job->request);
    }

    sep = memchr(reply->str, '|', reply->len);

    owner.data = (u_char *) reply->str;
    owner.len = sep ? (size_t) (sep - reply->str) : 0;

    /* another tenant's id is an unknown id, for the admin too */

    if (owner.len != job->tenant.len
        || (owner.len
            && ngx_strncmp(owner.data, job->tenant.data, owner.len) != 0))
    {
        return ngx_http_model_gateway_admin_not_found(job->request);
    }

    if (job->remove) {

        /* this node forgets it at once, the others within their cache */

        name.len = job->key.len + 1 + job->tenant.len;
        name.data = ngx_pnalloc(job->request->pool, name.len);
        if (name.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(name.data, "%V %V", &job->key, &job->tenant);
        ngx_http_model_gateway_ids_drop(job->request, &name);

        ngx_str_set(&args[0], "DEL");
        args[1] = job->key;

        return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                        ngx_http_model_gateway_admin_deleted);
    }

    j = json_pack("{s:s%,s:s,s:o,s:o}", "id", (char *) job->id.data,
                  job->id.len, "mode", "native",
                  "tenant", job->tenant.len
                            ? ngx_http_model_gateway_admin_str(
                                  (char *) job->tenant.data, job->tenant.len)
                            : json_null(),
                  "backend", ngx_http_model_gateway_admin_str(
                                 sep ? sep + 1 : reply->str,
                                 sep ? (size_t) (reply->str + reply->len
                                                 - sep - 1)
                                     : reply->len));

    return ngx_http_model_gateway_admin_json(job->request, NGX_HTTP_OK, j);
}


/* a gateway-held record: a hash of short fields and the object ("o") */

static ngx_int_t
ngx_http_model_gateway_admin_record(ngx_http_model_gateway_admin_job_t *job,
    redisReply *reply)
{
    size_t       i;
    json_t      *j, *o;
    ngx_str_t    list, args[3];
    redisReply  *name, *value;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0
        || reply->elements % 2)
    {
        return ngx_http_model_gateway_admin_not_found(job->request);
    }

    o = json_object();
    ngx_str_null(&list);

    for (i = 0; i < reply->elements; i += 2) {
        name = reply->element[i];
        value = reply->element[i + 1];

        if (name->type != REDIS_REPLY_STRING
            || value->type != REDIS_REPLY_STRING || name->len != 1)
        {
            continue;
        }

        switch (name->str[0]) {

        case 'b':
            json_object_set_new(o, "backend",
                 ngx_http_model_gateway_admin_str(value->str, value->len));
            break;

        case 'l':
            list.data = (u_char *) value->str;
            list.len = ngx_min(value->len, 64);
            json_object_set_new(o, "list",
                 ngx_http_model_gateway_admin_str(value->str, value->len));
            break;

        case 'o':
            json_object_set_new(o, "object_bytes",
                                json_integer((json_int_t) value->len));
            break;

        case 's':
        case 'e':
        case 'i':
            json_object_set_new(o, name->str[0] == 's' ? "list_start"
                                   : (name->str[0] == 'e' ? "list_end"
                                                          : "input_items"),
                                json_integer(ngx_atoi((u_char *) value->str,
                                                      value->len)));
            break;
        }
    }

    if (job->remove) {
        json_decref(o);

        /* a conversation's list is its own; a response's may be shared */

        ngx_str_set(&args[0], "DEL");
        args[1] = job->key;

        if (job->kind.data[0] == 'c' && list.len) {
            args[2].data = job->key2.data;
            args[2].len = ngx_cpymem(job->key2.data + job->key2.len,
                                     list.data, list.len)
                          - job->key2.data;

            return ngx_http_model_gateway_admin_send_cmd(job, 3, args,
                                        ngx_http_model_gateway_admin_deleted);
        }

        return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                        ngx_http_model_gateway_admin_deleted);
    }

    j = json_pack("{s:s%,s:s,s:o,s:o}", "id", (char *) job->id.data,
                  job->id.len, "mode", "gateway",
                  "tenant", job->tenant.len
                            ? ngx_http_model_gateway_admin_str(
                                  (char *) job->tenant.data, job->tenant.len)
                            : json_null(),
                  "record", o);

    return ngx_http_model_gateway_admin_json(job->request, NGX_HTTP_OK, j);
}


/*
 * GET keys[?tenant=T&cursor=C]; POST keys {"tenant", "id", fields};
 * DELETE keys/TENANT/ID.  The index <prefix>:keys maps "TENANT/ID" to
 * the hash's hex, so an id finds its record and ids stay unique.
 */

ngx_int_t
ngx_http_model_gateway_admin_keys(ngx_http_request_t *r, ngx_str_t *rest)
{
    u_char                              *p;
    ngx_str_t                            args[7], cursor, *prefix;
    ngx_http_model_gateway_admin_job_t  *job;
    ngx_http_model_gateway_main_conf_t  *mcf;

    job = ngx_http_model_gateway_admin_job(r);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&job->kind, "key");

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    prefix = &mcf->redis->prefix;

    job->key2.len = prefix->len + sizeof(":keys") - 1;
    job->key2.data = ngx_pnalloc(r->pool, job->key2.len);
    if (job->key2.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(job->key2.data, "%V:keys", prefix);

    if (rest->len == 0 && (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        if (ngx_http_model_gateway_admin_arg(r, "tenant", &job->tenant)
            != NGX_OK
            || ngx_http_model_gateway_admin_arg(r, "cursor", &cursor)
               != NGX_OK
            || (job->tenant.len
                && ngx_http_model_gateway_name_ok(&job->tenant, MG_KEY_ID_MAX)
                   != NGX_OK)
            || (cursor.len && ngx_atoi(cursor.data, cursor.len) == NGX_ERROR))
        {
            return ngx_http_model_gateway_admin_error(r,
                                                  NGX_HTTP_BAD_REQUEST,
                                                  "invalid_request",
                                                  "\\\"tenant\\\" or "
                                                  "\\\"cursor\\\" is "
                                                  "invalid.");
        }

        ngx_str_set(&args[0], "HSCAN");
        args[1] = job->key2;

        if (cursor.len) {
            args[2] = cursor;

        } else {
            ngx_str_set(&args[2], "0");
        }

        ngx_str_set(&args[3], "MATCH");

        if (job->tenant.len) {
            args[4].data = ngx_pnalloc(r->pool, job->tenant.len + 2);
            if (args[4].data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            p = ngx_sprintf(args[4].data, "%V/*", &job->tenant);
            args[4].len = p - args[4].data;

        } else {
            ngx_str_set(&args[4], "*");
        }

        ngx_str_set(&args[5], "COUNT");
        ngx_str_set(&args[6], NGX_HTTP_MG_ADMIN_PAGE);

        return ngx_http_model_gateway_admin_send_cmd(job, 7, args,
                                      ngx_http_model_gateway_admin_key_page);
    }

    if (rest->len == 0 && r->method == NGX_HTTP_POST) {
        return ngx_http_model_gateway_admin_key_new(r, job);
    }

    if (rest->len && r->method == NGX_HTTP_DELETE) {
        job->tenant = ngx_http_model_gateway_admin_part(rest);
        job->id = ngx_http_model_gateway_admin_part(rest);

        if (rest->len
            || ngx_http_model_gateway_name_ok(&job->tenant, MG_KEY_ID_MAX)
               != NGX_OK
            || ngx_http_model_gateway_name_ok(&job->id, MG_KEY_ID_MAX)
               != NGX_OK)
        {
            return ngx_http_model_gateway_admin_error(r,
                                                  NGX_HTTP_BAD_REQUEST,
                                                  "invalid_request",
                                                  "Revoke a key with DELETE "
                                                  "keys/TENANT/ID.");
        }

        job->key.data = ngx_pnalloc(r->pool, 2 * MG_KEY_ID_MAX + 1);
        if (job->key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        job->key.len = ngx_sprintf(job->key.data, "%V/%V", &job->tenant,
                                   &job->id)
                       - job->key.data;

        ngx_str_set(&args[0], "HGET");
        args[1] = job->key2;
        args[2] = job->key;

        return ngx_http_model_gateway_admin_send_cmd(job, 3, args,
                                     ngx_http_model_gateway_admin_key_found);
    }

    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                              "method_not_allowed",
                                              "This method is not allowed "
                                              "on this admin path.");
}


static ngx_int_t
ngx_http_model_gateway_admin_key_page(ngx_http_model_gateway_admin_job_t *job,
    redisReply *reply)
{
    size_t       i;
    char        *slash;
    json_t      *j, *data;
    redisReply  *next, *pairs, *name, *value;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    next = reply->element[0];
    pairs = reply->element[1];

    data = json_array();

    for (i = 0; i + 1 < pairs->elements; i += 2) {
        name = pairs->element[i];
        value = pairs->element[i + 1];

        if (name->type != REDIS_REPLY_STRING
            || value->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        slash = memchr(name->str, '/', name->len);
        if (slash == NULL) {
            continue;
        }

        json_array_append_new(data, json_pack("{s:s%,s:s%,s:s+%}",
                              "tenant", name->str,
                              (size_t) (slash - name->str),
                              "id", slash + 1,
                              (size_t) (name->str + name->len - slash - 1),
                              "hash", "sha256:", value->str, value->len));
    }

    j = json_pack("{s:s,s:o,s:o}", "object", "list", "data", data,
                  "next_cursor",
                  (next->len == 1 && next->str[0] == '0')
                  ? json_null()
                  : json_stringn_nocheck(next->str, next->len));

    return ngx_http_model_gateway_admin_json(job->request, NGX_HTTP_OK, j);
}


/*
 * A new key: its fields are checked by the same code that reads key files
 * and Redis records (src/mg_keys.c); its secret is 32 random bytes.
 */

static ngx_int_t
ngx_http_model_gateway_admin_key_new(ngx_http_request_t *r,
    ngx_http_model_gateway_admin_job_t *job)
{
    u_char       *p;
    char          err[MG_KEY_ERR_LEN], num[32];
    json_t       *body, *v;
    size_t        len;
    mg_key_t     *k;
    ngx_str_t    *f, args[4], raw, b64;
    const char   *name, *text;
    u_char        rnd[32], hash[MG_KEY_HASH_LEN];

    body = ngx_http_model_gateway_admin_field(r, NULL);

    k = ngx_palloc(r->pool, sizeof(mg_key_t));
    job->fields = ngx_array_create(r->pool, 16, sizeof(ngx_str_t));

    if (k == NULL || job->fields == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mg_key_init(k);

    if (body == NULL) {
        goto invalid_empty;
    }

    json_object_foreach(body, name, v) {

        if (ngx_strcmp(name, "hash") == 0) {
            return ngx_http_model_gateway_admin_error(r,
                                                  NGX_HTTP_BAD_REQUEST,
                                                  "invalid_request",
                                                  "The gateway makes the "
                                                  "key and its hash; do not "
                                                  "send \\\"hash\\\".");
        }

        if (json_is_string(v)) {
            text = json_string_value(v);
            len = json_string_length(v);

        } else if (json_is_integer(v)) {
            len = ngx_sprintf((u_char *) num, "%L",
                              (int64_t) json_integer_value(v))
                  - (u_char *) num;
            text = num;

        } else {
            ngx_snprintf((u_char *) err, sizeof(err),
                         "%s: must be a string or an integer%Z", name);
            goto invalid;
        }

        if (mg_key_set(k, name, ngx_strlen(name), text, len, err)
            != MG_KEY_OK)
        {
            goto invalid;
        }

        f = ngx_array_push_n(job->fields, 2);
        if (f == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        f[0].len = ngx_strlen(name);
        f[0].data = ngx_pnalloc(r->pool, f[0].len);
        f[1].len = len;
        f[1].data = ngx_pnalloc(r->pool, len);

        if (f[0].data == NULL || f[1].data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(f[0].data, name, f[0].len);
        ngx_memcpy(f[1].data, text, len);
    }

    if (!(k->set & MG_KEY_F_ID) || !(k->set & MG_KEY_F_TENANT)) {
        goto invalid_empty;
    }

    /* mgk_ and the base64url of 32 random bytes, as bin/mg-key makes */

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "model gateway: RAND_bytes() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    raw.data = rnd;
    raw.len = sizeof(rnd);

    job->secret.data = ngx_pnalloc(r->pool, 4 + ngx_base64_encoded_length(32));
    if (job->secret.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(job->secret.data, "mgk_", 4);
    b64.data = p;
    ngx_encode_base64url(&b64, &raw);
    job->secret.len = 4 + b64.len;

    if (mg_key_hash((char *) job->secret.data, job->secret.len, hash) != 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    job->hex.data = ngx_pnalloc(r->pool, 2 * MG_KEY_HASH_LEN + 7);
    if (job->hex.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(job->hex.data, "sha256:", 7);
    p = ngx_hex_dump(p, hash, MG_KEY_HASH_LEN);
    job->hex.len = p - job->hex.data;

    if (mg_key_set(k, "hash", 4, (char *) job->hex.data, job->hex.len, err)
        != MG_KEY_OK
        || mg_key_complete(k, err) != MG_KEY_OK)
    {
        goto invalid;
    }

    job->tenant.len = k->tenant_len;
    job->tenant.data = ngx_pnalloc(r->pool, k->tenant_len);
    job->id.len = k->id_len;
    job->id.data = ngx_pnalloc(r->pool, k->id_len);
    job->key.data = ngx_pnalloc(r->pool, 2 * MG_KEY_ID_MAX + 1);

    if (job->tenant.data == NULL || job->id.data == NULL
        || job->key.data == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(job->tenant.data, k->tenant, k->tenant_len);
    ngx_memcpy(job->id.data, k->id, k->id_len);
    job->key.len = ngx_sprintf(job->key.data, "%V/%V", &job->tenant,
                               &job->id)
                   - job->key.data;

    /* the id first, so that two admins cannot make one id twice */

    ngx_str_set(&args[0], "HSETNX");
    args[1] = job->key2;
    args[2] = job->key;
    args[3].data = job->hex.data + 7;
    args[3].len = job->hex.len - 7;

    return ngx_http_model_gateway_admin_send_cmd(job, 4, args,
                                  ngx_http_model_gateway_admin_key_reserved);

invalid_empty:

    ngx_snprintf((u_char *) err, sizeof(err),
                 "a key needs \"tenant\" and \"id\"%Z");

invalid:

    {
        u_char  *msg;

        /* err names a field, never a value */

        len = mg_json_escape(NULL, 0, err, ngx_strlen(err));

        msg = ngx_pnalloc(r->pool, len + 1);
        if (msg == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        (void) mg_json_escape((char *) msg, len + 1, err, ngx_strlen(err));
        msg[len] = '\0';

        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                                  "invalid_key",
                                                  (char *) msg);
    }
}


static ngx_int_t
ngx_http_model_gateway_admin_key_reserved(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply)
{
    u_char                              *p;
    ngx_str_t                           *args, *f, *prefix;
    ngx_uint_t                           i, n;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_main_conf_t  *mcf;

    r = job->request;

    if (reply->type != REDIS_REPLY_INTEGER) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (reply->integer == 0) {
        return ngx_http_model_gateway_admin_error(r, NGX_HTTP_CONFLICT,
                                                  "key_exists",
                                                  "The tenant has a key of "
                                                  "that id already.");
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    prefix = &mcf->redis->prefix;

    n = job->fields->nelts;

    args = ngx_palloc(r->pool, (n + 4) * sizeof(ngx_str_t));
    if (args == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* <prefix>:key:{HEX}, the layout of _identity.c */

    ngx_str_set(&args[0], "HSET");

    args[1].data = ngx_pnalloc(r->pool, prefix->len + sizeof(":key:{}")
                                        + job->hex.len);
    if (args[1].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(args[1].data, "%V:key:{%*s}", prefix,
                    job->hex.len - 7, job->hex.data + 7);
    args[1].len = p - args[1].data;

    f = job->fields->elts;

    for (i = 0; i < n; i++) {
        args[2 + i] = f[i];
    }

    ngx_str_set(&args[2 + n], "hash");
    args[3 + n] = job->hex;

    return ngx_http_model_gateway_admin_send_cmd(job, n + 4, args,
                                   ngx_http_model_gateway_admin_key_written);
}


static ngx_int_t
ngx_http_model_gateway_admin_key_written(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply)
{
    json_t  *j;

    if (reply->type != REDIS_REPLY_INTEGER) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_NOTICE, job->request->connection->log, 0,
                  "model gateway: admin \"%V\" created key \"%V\" of tenant "
                  "\"%V\"", ngx_http_model_gateway_admin_id(job->request),
                  &job->id, &job->tenant);

    j = json_pack("{s:s,s:s%,s:s%,s:s%,s:s%}", "object", "key",
                  "id", (char *) job->id.data, job->id.len,
                  "tenant", (char *) job->tenant.data, job->tenant.len,
                  "hash", (char *) job->hex.data, job->hex.len,
                  "key", (char *) job->secret.data, job->secret.len);

    return ngx_http_model_gateway_admin_json(job->request, NGX_HTTP_CREATED,
                                             j);
}


static ngx_int_t
ngx_http_model_gateway_admin_key_found(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply)
{
    u_char                              *p;
    ngx_str_t                            args[3], *prefix;
    ngx_http_request_t                  *r;
    ngx_http_model_gateway_main_conf_t  *mcf;

    r = job->request;

    if (reply->type != REDIS_REPLY_STRING || reply->len != 64) {
        return ngx_http_model_gateway_admin_not_found(r);
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_model_gateway_module);
    prefix = &mcf->redis->prefix;

    ngx_str_set(&args[0], "DEL");

    args[1].data = ngx_pnalloc(r->pool, prefix->len + sizeof(":key:{}")
                                        + reply->len);
    if (args[1].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(args[1].data, "%V:key:{%*s}", prefix, reply->len,
                    reply->str);
    args[1].len = p - args[1].data;

    return ngx_http_model_gateway_admin_send_cmd(job, 2, args,
                                   ngx_http_model_gateway_admin_key_dropped);
}


static ngx_int_t
ngx_http_model_gateway_admin_key_dropped(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply)
{
    ngx_str_t  args[3];

    /* the record is gone (or was): now its id */

    ngx_str_set(&args[0], "HDEL");
    args[1] = job->key2;
    args[2] = job->key;

    return ngx_http_model_gateway_admin_send_cmd(job, 3, args,
                                        ngx_http_model_gateway_admin_deleted);
}
