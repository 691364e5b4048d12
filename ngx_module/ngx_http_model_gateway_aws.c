
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Amazon Bedrock's credentials and request signing.  Credentials come
 * from the standard AWS environment variables or a shared credentials
 * file, read once when the configuration is loaded (a reload picks up new
 * ones); a Bedrock API key (key_env, key_file) is the alternative and is
 * sent as a bearer token.  Each attempt is signed with SigV4 when it is
 * built; the signing key depends only on the day, so each worker derives
 * it once a day per backend.  No credential is ever logged.
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_providers.h"
#include "mg_aws_ini.h"


#define NGX_HTTP_MG_AWS_FILE_MAX  65536
#define NGX_HTTP_MG_AWS_SERVICE   "bedrock"


static char *ngx_http_model_gateway_aws_env(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b);
static char *ngx_http_model_gateway_aws_file(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *path,
    ngx_str_t *profile);
static char *ngx_http_model_gateway_aws_profile(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, u_char *p, u_char *last,
    ngx_str_t *path, ngx_str_t *profile);
static char *ngx_http_model_gateway_aws_value(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, const char *what, u_char *p,
    size_t len, ngx_str_t *out);
static ngx_int_t ngx_http_model_gateway_aws_region(
    ngx_http_model_gateway_backend_t *b);


/* aws_credentials env | file PATH [PROFILE] */

char *
ngx_http_model_gateway_aws_credentials(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *value, ngx_uint_t n)
{
    ngx_str_t  profile;

    if (b->aws_source.len) {
        return "is duplicate";
    }

    if (n == 1 && value[1].len == 3
        && ngx_strncmp(value[1].data, "env", 3) == 0)
    {
        return ngx_http_model_gateway_aws_env(cf, b);
    }

    if ((n == 2 || n == 3) && value[1].len == 4
        && ngx_strncmp(value[1].data, "file", 4) == 0)
    {
        if (n == 3) {
            profile = value[3];

        } else {
            ngx_str_set(&profile, "default");
        }

        return ngx_http_model_gateway_aws_file(cf, b, &value[2], &profile);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"aws_credentials\" (expected \"env\" or "
                       "\"file PATH [PROFILE]\")");
    return NGX_CONF_ERROR;
}


/* AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN */

static char *
ngx_http_model_gateway_aws_env(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    char  *id, *secret, *token, *rv;

    id = getenv("AWS_ACCESS_KEY_ID");
    secret = getenv("AWS_SECRET_ACCESS_KEY");
    token = getenv("AWS_SESSION_TOKEN");

    if (id == NULL || *id == '\0' || secret == NULL || *secret == '\0') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "backend \"%V\": AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY are not both set in the "
                           "environment (or use \"aws_credentials file\", "
                           "or a Bedrock API key with \"key_env\")",
                           &b->name);
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_model_gateway_aws_value(cf, b, "AWS_ACCESS_KEY_ID",
                                          (u_char *) id, ngx_strlen(id),
                                          &b->aws_access_key);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    rv = ngx_http_model_gateway_aws_value(cf, b, "AWS_SECRET_ACCESS_KEY",
                                          (u_char *) secret,
                                          ngx_strlen(secret),
                                          &b->aws_secret);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (token && *token) {
        rv = ngx_http_model_gateway_aws_value(cf, b, "AWS_SESSION_TOKEN",
                                              (u_char *) token,
                                              ngx_strlen(token),
                                              &b->aws_token);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    ngx_str_set(&b->aws_source, "the environment");

    return NGX_CONF_OK;
}


/* a shared credentials file, as the AWS CLI writes it */

static char *
ngx_http_model_gateway_aws_file(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *path,
    ngx_str_t *profile)
{
    char        *rv;
    u_char      *buf;
    ssize_t      n;
    ngx_str_t    name, what;

    what.len = sizeof("the AWS credentials of backend \"\"") - 1
               + b->name.len;
    what.data = ngx_pnalloc(cf->pool, what.len);
    if (what.data == NULL) {
        return NGX_CONF_ERROR;
    }

    (void) ngx_sprintf(what.data, "the AWS credentials of backend \"%V\"",
                       &b->name);

    buf = ngx_alloc(NGX_HTTP_MG_AWS_FILE_MAX, cf->log);
    if (buf == NULL) {
        return NGX_CONF_ERROR;
    }

    name = *path;

    n = ngx_http_model_gateway_conf_file(cf, &name, buf,
                                         NGX_HTTP_MG_AWS_FILE_MAX, &what);

    if (n == NGX_ERROR) {
        rv = NGX_CONF_ERROR;

    } else {
        rv = ngx_http_model_gateway_aws_profile(cf, b, buf, buf + n, &name,
                                                profile);

        if (rv == NGX_CONF_OK && b->aws_access_key.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "AWS credentials file \"%V\" has no "
                               "aws_access_key_id and aws_secret_access_key "
                               "in profile \"%V\"", &name, profile);
            rv = NGX_CONF_ERROR;
        }
    }

    /* the file's secrets do not stay in freed memory */

    ngx_explicit_memzero(buf, NGX_HTTP_MG_AWS_FILE_MAX);
    ngx_free(buf);

    if (rv == NGX_CONF_OK) {
        b->aws_source.len = sizeof("the file \"\"") - 1 + name.len;
        b->aws_source.data = ngx_pnalloc(cf->pool, b->aws_source.len);
        if (b->aws_source.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(b->aws_source.data, "the file \"%V\"", &name);
    }

    return rv;
}


/* the keys of one profile (src/mg_aws_ini.c), copied to the cycle's pool */

static char *
ngx_http_model_gateway_aws_profile(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, u_char *p, u_char *last,
    ngx_str_t *path, ngx_str_t *profile)
{
    char                 *rv;
    ngx_uint_t            i;
    mg_aws_ini_t          ini;
    mg_aws_ini_rc_e       rc;
    mg_aws_ini_value_t   *v[3];
    ngx_str_t            *out[3];

    rc = mg_aws_ini_parse((const char *) p, last - p,
                          (const char *) profile->data, profile->len, &ini);

    if (rc != MG_AWS_INI_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "backend \"%V\": %s in line %ui of \"%V\" %s",
                           &b->name, ini.err_key, (ngx_uint_t) ini.err_line,
                           path,
                           (rc == MG_AWS_INI_BAD_LENGTH)
                           ? "is empty or too long"
                           : "contains an invalid character");
        return NGX_CONF_ERROR;
    }

    v[0] = &ini.access_key;
    out[0] = &b->aws_access_key;
    v[1] = &ini.secret;
    out[1] = &b->aws_secret;
    v[2] = &ini.token;
    out[2] = &b->aws_token;

    for (i = 0; i < 3; i++) {
        if (v[i]->data == NULL) {
            continue;
        }

        rv = ngx_http_model_gateway_aws_value(cf, b, "an AWS credential",
                                              (u_char *) v[i]->data,
                                              v[i]->len, out[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    return NGX_CONF_OK;
}


/* a credential: printable ASCII, copied to the cycle's pool */

static char *
ngx_http_model_gateway_aws_value(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b, const char *what, u_char *p,
    size_t len, ngx_str_t *out)
{
    size_t  i;

    if (len == 0 || len > 4096
        || (out == &b->aws_secret && len > MG_SIGV4_MAX_SECRET))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "backend \"%V\": %s is empty or too long",
                           &b->name, what);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "backend \"%V\": %s contains an invalid "
                               "character", &b->name, what);
            return NGX_CONF_ERROR;
        }
    }

    out->data = ngx_pnalloc(cf->pool, len);
    if (out->data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(out->data, p, len);
    out->len = len;

    return NGX_CONF_OK;
}


/*
 * At the end of a backend block: a backend whose provider signs (Bedrock)
 * signs with SigV4 unless it has an API key, and needs a region (from the
 * directive, or from a bedrock-runtime[-fips].REGION.amazonaws.com URL).
 */

ngx_int_t
ngx_http_model_gateway_aws_init(ngx_conf_t *cf,
    ngx_http_model_gateway_backend_t *b)
{
    size_t  i;

    if (b->provider->sign == NULL) {
        if (b->aws_source.len || b->region.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"aws_credentials\" and \"region\" are for "
                               "backends of type bedrock (backend \"%V\")",
                               &b->name);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (b->key.len && b->aws_source.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "backend \"%V\" has both a Bedrock API key and "
                           "\"aws_credentials\"", &b->name);
        return NGX_ERROR;
    }

    if (b->key.len == 0 && b->aws_source.len == 0
        && ngx_http_model_gateway_aws_env(cf, b) != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    if (b->region.len == 0 && ngx_http_model_gateway_aws_region(b) != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "backend \"%V\" of type bedrock needs \"region\" "
                           "(its url is not bedrock-runtime.REGION."
                           "amazonaws.com)", &b->name);
        return NGX_ERROR;
    }

    for (i = 0; i < b->region.len; i++) {
        if (!((b->region.data[i] >= 'a' && b->region.data[i] <= 'z')
              || (b->region.data[i] >= '0' && b->region.data[i] <= '9')
              || b->region.data[i] == '-'))
        {
            break;
        }
    }

    if (i < b->region.len || b->region.len > MG_SIGV4_MAX_SCOPE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid region \"%V\" of backend \"%V\"",
                           &b->region, &b->name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_model_gateway_aws_region(ngx_http_model_gateway_backend_t *b)
{
    u_char     *p, *last, *dot;
    ngx_str_t   suffix;

    p = b->host.data;
    last = p + b->host.len;

    ngx_str_set(&suffix, ".amazonaws.com");

    if (b->host.len > suffix.len
        && ngx_strncasecmp(last - suffix.len, suffix.data, suffix.len) == 0)
    {
        last -= suffix.len;

    } else {
        return NGX_DECLINED;
    }

    if ((size_t) (last - p) > 16
        && ngx_strncasecmp(p, (u_char *) "bedrock-runtime.", 16) == 0)
    {
        p += 16;

    } else if ((size_t) (last - p) > 21
               && ngx_strncasecmp(p, (u_char *) "bedrock-runtime-fips.", 21)
                  == 0)
    {
        p += 21;

    } else {
        return NGX_DECLINED;
    }

    dot = ngx_strlchr(p, last, '.');
    if (dot) {
        return NGX_DECLINED;
    }

    b->region.data = p;
    b->region.len = last - p;

    return NGX_OK;
}


/*
 * The header lines that sign one attempt: X-Amz-Date, the session token
 * if any, and Authorization.  What is signed is what build_request()
 * sends: the method, the path, Content-Type, Host and the body.
 */

ngx_int_t
ngx_http_model_gateway_aws_sign(ngx_http_request_t *r,
    ngx_http_model_gateway_backend_t *b, ngx_str_t *path, ngx_str_t *body,
    ngx_str_t *out)
{
    u_char              *p;
    size_t               len, cap;
    ssize_t              n;
    ngx_tm_t             tm;
    ngx_uint_t           nh;
    mg_sigv4_header_t    h[4];
    mg_sigv4_request_t   sr;
    char                 hash[65];
    u_char               date[MG_SIGV4_AMZ_DATE_LEN];

    ngx_gmtime(ngx_time(), &tm);

    (void) ngx_sprintf(date, "%4d%02d%02dT%02d%02d%02dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    if (ngx_memcmp(b->aws_day, date, 8) != 0) {
        if (mg_sigv4_derive_key((char *) b->aws_secret.data,
                                b->aws_secret.len, (char *) date,
                                (char *) b->region.data, b->region.len,
                                NGX_HTTP_MG_AWS_SERVICE,
                                sizeof(NGX_HTTP_MG_AWS_SERVICE) - 1,
                                b->aws_key)
            != MG_SIGV4_OK)
        {
            goto failed;
        }

        ngx_memcpy(b->aws_day, date, 8);
    }

    if (mg_sha256_hex(body->data, body->len, hash) != 0) {
        goto failed;
    }

    nh = 0;

    h[nh].name = "content-type";
    h[nh].name_len = sizeof("content-type") - 1;
    h[nh].value = "application/json";
    h[nh++].value_len = sizeof("application/json") - 1;

    h[nh].name = "host";
    h[nh].name_len = sizeof("host") - 1;
    h[nh].value = (char *) b->host_header.data;
    h[nh++].value_len = b->host_header.len;

    h[nh].name = "x-amz-date";
    h[nh].name_len = sizeof("x-amz-date") - 1;
    h[nh].value = (char *) date;
    h[nh++].value_len = MG_SIGV4_AMZ_DATE_LEN;

    if (b->aws_token.len) {
        h[nh].name = "x-amz-security-token";
        h[nh].name_len = sizeof("x-amz-security-token") - 1;
        h[nh].value = (char *) b->aws_token.data;
        h[nh++].value_len = b->aws_token.len;
    }

    ngx_memzero(&sr, sizeof(mg_sigv4_request_t));

    sr.method = "POST";
    sr.method_len = 4;
    sr.path = (char *) path->data;
    sr.path_len = path->len;
    sr.headers = h;
    sr.nheaders = nh;
    sr.payload_hash = hash;
    sr.payload_hash_len = 64;
    sr.access_key_id = (char *) b->aws_access_key.data;
    sr.access_key_id_len = b->aws_access_key.len;
    sr.key = b->aws_key;
    sr.amz_date = (char *) date;
    sr.region = (char *) b->region.data;
    sr.region_len = b->region.len;
    sr.service = NGX_HTTP_MG_AWS_SERVICE;
    sr.service_len = sizeof(NGX_HTTP_MG_AWS_SERVICE) - 1;

    /* the Authorization value: names, scope and 64 hex digits */

    cap = 256 + b->aws_access_key.len + b->region.len;

    len = sizeof("X-Amz-Date: " CRLF) - 1 + MG_SIGV4_AMZ_DATE_LEN
          + (b->aws_token.len ? sizeof("X-Amz-Security-Token: " CRLF) - 1
                                + b->aws_token.len
                              : 0)
          + sizeof("Authorization: " CRLF) - 1 + cap;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    p = ngx_sprintf(p, "X-Amz-Date: %*s" CRLF,
                    (size_t) MG_SIGV4_AMZ_DATE_LEN, date);

    if (b->aws_token.len) {
        p = ngx_sprintf(p, "X-Amz-Security-Token: %V" CRLF, &b->aws_token);
    }

    p = ngx_cpymem(p, "Authorization: ", sizeof("Authorization: ") - 1);

    n = mg_sigv4_sign(&sr, (char *) p, cap);

    if (n < 0 || (size_t) n > cap) {
        goto failed;
    }

    p += n;
    *p++ = CR; *p++ = LF;

    out->len = p - out->data;

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "model gateway: signing the request to backend \"%V\" "
                  "failed", &b->name);

    return NGX_ERROR;
}
