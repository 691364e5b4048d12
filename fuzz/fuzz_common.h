/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the fuzz targets share: the checks of what a translation
 * promises (JSON objects, "data: ...\n\n" events, errors with valid UTF-8
 * messages, nothing appended on failure), the hash that chooses where to
 * cut an input and the one the tokenizer targets compare runs with, and
 * feeding an SSE stream in three pieces.  Header only.
 */

#ifndef _FUZZ_COMMON_H_INCLUDED_
#define _FUZZ_COMMON_H_INCLUDED_

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_translate.h"
#include "mg_sse.h"
#include "../t/unit/same_events.h"


#define MG_FZ_SSE_CAP  65536


static inline void
mg_fz_check_error(const mg_xerror_t *err)
{
    json_t  *s;

    if (err->status < 400 || err->status > 599 || err->type == NULL
        || memchr(err->message, '\0', sizeof(err->message)) == NULL)
    {
        abort();
    }

    /* json_string() refuses invalid UTF-8 */

    s = json_string(err->message);
    if (s == NULL) {
        abort();
    }

    json_decref(s);
}


/* a JSON object */

static inline void
mg_fz_check_json(const char *p, size_t len)
{
    json_t  *j;

    j = json_loadb(p, len, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(j)) {
        abort();
    }

    json_decref(j);
}


/* every OpenAI event: "data: <JSON object>\n\n" or "data: [DONE]\n\n" */

static inline void
mg_fz_check_sse(const char *p, size_t len)
{
    const char  *end, *e;

    if (len == 0) {
        return;
    }

    end = p + len;

    while (p < end) {
        if (end - p < 8 || memcmp(p, "data: ", 6) != 0) {
            abort();
        }

        p += 6;

        e = memchr(p, '\n', end - p);

        if (e == NULL || e + 1 >= end || e[1] != '\n') {
            abort();
        }

        if (!(e - p == 6 && memcmp(p, "[DONE]", 6) == 0)) {
            mg_fz_check_json(p, e - p);
        }

        p = e + 2;
    }
}


/* a request or response translated: a JSON object, or an error (with the
 * status, unless 0) and nothing written */

static inline void
mg_fz_check_result(int rc, const mg_buf_t *out, const mg_xerror_t *err,
    int status)
{
    if (rc == MG_X_OK) {
        mg_fz_check_json(out->data, out->len);

    } else if (rc == MG_X_ERROR) {
        if (out->len != 0 || (status && err->status != status)) {
            abort();
        }

        mg_fz_check_error(err);

    } else if (rc != MG_X_NOMEM) {
        abort();
    }
}


/*
 * A request translation is bounded by its input: at most k times the
 * bytes it was sent plus c, and never more than the bound it was given
 * (max, 0: MG_X_OUT_MAX).  Each target says why its k and c hold.
 */

static inline void
mg_fz_check_bound(int rc, const mg_buf_t *out, size_t in, size_t k,
    size_t c, size_t max)
{
    if (rc == MG_X_OK
        && (out->len > k * in + c || out->len > mg_x_out_max(max)))
    {
        abort();
    }
}


/* FNV-1a of the input: where to cut it */

static inline uint64_t
mg_fz_hash(const uint8_t *data, size_t size)
{
    size_t    i;
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    for (i = 0; i < size; i++) {
        h = (h ^ data[i]) * 0x100000001b3ULL;
    }

    return h;
}


/*
 * One more record into an FNV-1a hash: its length first, so that ("ab",
 * "c") and ("a", "bc") differ, then its bytes.  The tokenizer targets hash
 * what each run saw to compare runs.
 */

static inline uint64_t
mg_fz_mix(uint64_t h, const void *p, size_t len)
{
    size_t          i;
    const uint8_t  *s;

    s = p;

    for (i = 0; i < sizeof(size_t); i++) {
        h = (h ^ ((len >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
    }

    for (i = 0; i < len; i++) {
        h = (h ^ s[i]) * 0x100000001b3ULL;
    }

    return h;
}


/* two runs ended the same, with the same output */

static inline int
mg_fz_same_out(int rc1, const mg_buf_t *out1, int rc2, const mg_buf_t *out2)
{
    return rc1 == rc2 && out1->len == out2->len
           && (out1->len == 0
               || memcmp(out1->data, out2->data, out1->len) == 0);
}


/*
 * Two runs ended the same, with the same events as JSON values (texts may
 * be escaped differently): the fast paths against the tree.
 */

static inline int
mg_fz_same_events(int rc1, const mg_buf_t *out1, int rc2,
    const mg_buf_t *out2)
{
    if (rc1 != rc2 || (out1->len == 0) != (out2->len == 0)) {
        return 0;
    }

    return same_events(out1->data, out1->len, out2->data, out2->len, NULL,
                       NULL);
}


/* feeds s to handler as an SSE stream cut at c1 and c2 (in either order),
 * each piece a private copy; returns what the last mg_sse_feed() did */

static inline int
mg_fz_feed_sse(const char *s, size_t len, size_t c1, size_t c2,
    mg_sse_handler_pt handler, void *ctx)
{
    int               rc;
    char             *piece;
    size_t            i, from, to, cuts[2];
    mg_sse_parser_t   p;
    static char       buf[MG_FZ_SSE_CAP], dbuf[MG_FZ_SSE_CAP];

    mg_sse_init(&p, buf, sizeof(buf), dbuf, sizeof(dbuf));

    cuts[0] = c1 < c2 ? c1 : c2;
    cuts[1] = c1 < c2 ? c2 : c1;
    from = 0;
    rc = MG_SSE_OK;

    for (i = 0; i <= 2; i++) {
        to = (i < 2) ? cuts[i] : len;

        piece = malloc(to - from + 1);
        if (piece == NULL) {
            abort();
        }

        memcpy(piece, s + from, to - from);

        rc = mg_sse_feed(&p, piece, to - from, handler, ctx);

        free(piece);
        from = to;

        if (rc != MG_SSE_OK) {
            break;
        }
    }

    return rc;
}


#endif /* _FUZZ_COMMON_H_INCLUDED_ */
