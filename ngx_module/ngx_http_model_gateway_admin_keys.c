
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin API's gateway keys in Redis: made (checked by the code that
 * reads key files and records, src/mg_keys.c), listed and revoked.  A
 * key's secret is shown once, when it is made, and is never logged.  The
 * index <prefix>:keys ("TENANT/ID" -> the hash's hex) finds a key by id
 * and keeps a tenant's ids unique; bin/mg-key keeps it too.
 */


#include "ngx_http_model_gateway_admin.h"

#include <openssl/rand.h>


#define NGX_HTTP_MG_ADMIN_PAGE  "200"


static ngx_int_t ngx_http_model_gateway_admin_key_page(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_new(ngx_http_request_t *r,
    ngx_http_model_gateway_admin_job_t *job);
static ngx_int_t ngx_http_model_gateway_admin_key_reserved(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_written(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_found(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);
static ngx_int_t ngx_http_model_gateway_admin_key_dropped(
    ngx_http_model_gateway_admin_job_t *job, redisReply *reply);


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
