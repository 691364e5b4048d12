/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What every provider translator shares: a growable output buffer and the
 * error a translation reports.  Translators turn OpenAI chat completions
 * requests into a provider's native request, and the provider's responses,
 * stream events and errors back into OpenAI's shapes.  They know nothing
 * of nginx; the glue owns I/O and lifetimes and frees what they return.
 */

#ifndef _MG_TRANSLATE_H_INCLUDED_
#define _MG_TRANSLATE_H_INCLUDED_

#include <stddef.h>


/* a malloc'd byte buffer; zero-initialised is empty and valid */
typedef struct {
    char        *data;
    size_t       len;
    size_t       cap;
} mg_buf_t;


/*
 * An error to answer with: the HTTP status the gateway should return and
 * the OpenAI error fields.  retryable: another backend may succeed (5xx,
 * throttling, overload), so the glue fails over when it still can.
 */
typedef struct {
    int          status;
    int          retryable;
    const char  *type;          /* static strings */
    const char  *code;          /* may be NULL */
    const char  *param;         /* may be NULL */
    char         message[256];  /* NUL-terminated, may be truncated */
} mg_xerror_t;


#define MG_X_OK        0
#define MG_X_ERROR    -1        /* see the mg_xerror_t */
#define MG_X_NOMEM    -2
#define MG_X_DONE      1        /* a stream translator saw the end */


int mg_buf_append(mg_buf_t *b, const char *p, size_t n);
int mg_buf_printf(mg_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mg_buf_reset(mg_buf_t *b);     /* len = 0, keeps the memory */
void mg_buf_free(mg_buf_t *b);

void mg_xerror_set(mg_xerror_t *err, int status, int retryable,
    const char *type, const char *code, const char *param,
    const char *fmt, ...) __attribute__((format(printf, 7, 8)));


#endif /* _MG_TRANSLATE_H_INCLUDED_ */
