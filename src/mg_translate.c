/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mg_translate.h"


static int
mg_buf_reserve(mg_buf_t *b, size_t n)
{
    char    *p;
    size_t   cap;

    if (b->cap - b->len >= n) {
        return MG_X_OK;
    }

    cap = b->cap ? b->cap : 256;

    while (cap - b->len < n) {
        if (cap > ((size_t) -1) / 2) {
            return MG_X_NOMEM;
        }

        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        return MG_X_NOMEM;
    }

    b->data = p;
    b->cap = cap;

    return MG_X_OK;
}


int
mg_buf_append(mg_buf_t *b, const char *p, size_t n)
{
    if (n == 0) {
        return MG_X_OK;
    }

    if (mg_buf_reserve(b, n) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;

    return MG_X_OK;
}


int
mg_buf_printf(mg_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);

    if (n < 0) {
        return MG_X_ERROR;
    }

    if (mg_buf_reserve(b, (size_t) n + 1) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    va_start(ap, fmt);
    (void) vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);

    b->len += (size_t) n;

    return MG_X_OK;
}


void
mg_buf_reset(mg_buf_t *b)
{
    b->len = 0;
}


void
mg_buf_free(mg_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}


void
mg_xerror_set(mg_xerror_t *err, int status, int retryable, const char *type,
    const char *code, const char *param, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL) {
        return;
    }

    err->status = status;
    err->retryable = retryable;
    err->type = type;
    err->code = code;
    err->param = param;

    va_start(ap, fmt);
    (void) vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}
