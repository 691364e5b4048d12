
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Files and secrets the configuration names, read once when it loads.
 */


#include "ngx_http_model_gateway_module.h"


/*
 * Reads a small file named in the configuration (relative to the prefix)
 * into buf, when the configuration loads; *name becomes its full name and
 * "what" names the file in messages.  Returns the bytes read, or NGX_ERROR
 * once the reason is logged: it cannot be opened or read, or it fills buf.
 */

ssize_t
ngx_http_model_gateway_conf_file(ngx_conf_t *cf, ngx_str_t *name,
    u_char *buf, size_t size, ngx_str_t *what)
{
    ssize_t     n;
    ngx_file_t  file;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" for %V failed", name,
                           what);
        return NGX_ERROR;
    }

    n = ngx_read_file(&file, buf, size, 0);

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", name);
    }

    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    if ((size_t) n == size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "file \"%V\" for %V is too large", name, what);
        return NGX_ERROR;
    }

    return n;
}


/*
 * Reads a secret (a backend key, a Redis password) from the environment
 * or a file, once, when the configuration loads.  "what" names it in
 * messages; the secret itself never appears in one.
 */

char *
ngx_http_model_gateway_read_secret(ngx_conf_t *cf, ngx_uint_t from_env,
    ngx_str_t *value, ngx_str_t *out, ngx_str_t *what)
{
    u_char     *p, *last, *env;
    ssize_t     n;
    ngx_str_t   path;
    u_char      buf[4096];

    if (out->len) {
        return "is duplicate";
    }

    if (from_env) {

        /* read from the master's environment, at load time */

        p = ngx_pnalloc(cf->pool, value->len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) ngx_cpystrn(p, value->data, value->len + 1);

        env = (u_char *) getenv((char *) p);

        if (env == NULL || *env == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "environment variable \"%V\" for %V is not "
                               "set or empty", value, what);
            return NGX_CONF_ERROR;
        }

        p = env;
        last = env + ngx_strlen(env);

    } else {

        path = *value;

        n = ngx_http_model_gateway_conf_file(cf, &path, buf, sizeof(buf),
                                             what);
        if (n == NGX_ERROR) {
            ngx_explicit_memzero(buf, sizeof(buf));
            return NGX_CONF_ERROR;
        }

        p = buf;
        last = buf + n;
    }

    /* a trailing newline is the usual way such a file ends */

    while (p < last && (*p == ' ' || *p == '\t' || *p == CR || *p == LF)) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t'
                        || last[-1] == CR || last[-1] == LF))
    {
        last--;
    }

    if (p == last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V is empty", what);
        return NGX_CONF_ERROR;
    }

    for (env = p; env < last; env++) {
        if (*env < 0x21 || *env > 0x7e) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V contains an invalid character", what);
            ngx_explicit_memzero(buf, sizeof(buf));
            return NGX_CONF_ERROR;
        }
    }

    out->data = ngx_pnalloc(cf->pool, last - p);
    if (out->data == NULL) {
        return NGX_CONF_ERROR;
    }

    out->len = last - p;
    ngx_memcpy(out->data, p, out->len);
    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_CONF_OK;
}
