
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin API's view of what Redis holds for tenants: session pins and
 * stored responses and conversations (native id mappings and gateway-held
 * records); and the jobs, chains of Redis commands, that _admin_keys.c
 * uses too.  Each is a short chain of Redis commands,
 * one in flight at a time; the request waits on nginx's event loop.  The
 * admin names the tenant: an object of another tenant is not found, as
 * for any caller.
 */


#include "ngx_http_model_gateway_admin.h"


static void ngx_http_model_gateway_admin_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_model_gateway_admin_job_cleanup(void *data);
static ngx_int_t ngx_http_model_gateway_admin_pin(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_mapping(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_record(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);


ngx_http_model_gateway_admin_job_t *
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

ngx_int_t
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


ngx_int_t
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


ngx_int_t
ngx_http_model_gateway_admin_not_found(ngx_http_request_t *r)
{
    return ngx_http_model_gateway_admin_error(r, NGX_HTTP_NOT_FOUND,
                                              "not_found",
                                              "No such object for this "
                                              "tenant.");
}


ngx_int_t
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


ngx_int_t
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
