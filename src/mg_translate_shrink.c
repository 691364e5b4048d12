/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The shrunk body of the full translators (see mg_x_shrink() in
 * mg_translate.h): long message texts swapped for placeholders before
 * jansson parses a body, and put back as the client escaped them after.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mg_json.h"
#include "mg_translate.h"


#define MG_X_PH_OPEN   "\xee\x80\x80"     /* U+E000 */
#define MG_X_PH_CLOSE  "\xee\x80\x81"     /* U+E001 */
#define MG_X_DEPTH     64


static int
mg_x_shrink_add(mg_x_shrink_t *s, size_t start, size_t len)
{
    size_t  *a, *b, cap;

    if (s->n == s->cap) {
        cap = s->cap ? 2 * s->cap : 32;

        a = realloc(s->start, cap * sizeof(size_t));
        if (a == NULL) {
            return MG_X_NOMEM;
        }

        s->start = a;

        b = realloc(s->len, cap * sizeof(size_t));
        if (b == NULL) {
            return MG_X_NOMEM;
        }

        s->len = b;
        s->cap = cap;
    }

    s->start[s->n] = start;
    s->len[s->n] = len;
    s->n++;

    return MG_X_OK;
}


/*
 * A text a translator might parse as JSON (a tool result) stays: anything
 * starting like an object, an array, a number or an escape, and the three
 * literals.  Prose only loses the fast path when it starts with a digit.
 */

static int
mg_x_maybe_json(const char *p, size_t len)
{
    const char  *end;

    while (len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
        len--;
    }

    if (len == 0) {
        return 1;
    }

    if (strchr("{[-0123456789\\", *p) != NULL) {
        return 1;
    }

    if ((len == 4 && (memcmp(p, "true", 4) == 0
                      || memcmp(p, "null", 4) == 0))
        || (len == 5 && memcmp(p, "false", 5) == 0))
    {
        return 1;
    }

    /*
     * An escaped NUL is the translators' to judge.  An escaped backslash
     * followed by "u0000" matches too: that only costs the fast path.
     */

    for (end = p + len; p < end; p++) {
        p = memchr(p, '\\', end - p);
        if (p == NULL || end - p < 6) {
            return 0;
        }

        if (memcmp(p, "\\u0000", 6) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * The closing quote of the string whose contents start at "i": memchr()
 * runs at memory speed over prose, and a quote is escaped when an odd
 * number of backslashes precedes it.  Returns "len" when there is none.
 */

static size_t
mg_x_string_end(const char *p, size_t i, size_t len)
{
    size_t       n;
    const char  *q, *b;

    for ( ;; ) {
        q = memchr(p + i, '"', len - i);
        if (q == NULL) {
            return len;
        }

        for (b = q, n = 0; b > p + i && b[-1] == '\\'; b--, n++) {
            /* void */
        }

        if (n % 2 == 0) {
            return q - p;
        }

        i = q - p + 1;
    }
}


/*
 * A walk over valid JSON (the gateway validated it): strings are copied
 * or swapped, everything else is copied.  Per nesting level it remembers
 * whether the next string of an object is a key, and the last key.
 */

int
mg_x_shrink(const char *p, size_t len, size_t min, mg_x_shrink_t *s)
{
    int          rc;
    size_t       i, j, depth, copied, key_start, key_len;
    const char  *q;
    unsigned     in_object[MG_X_DEPTH], expect_key[MG_X_DEPTH];

    memset(s, 0, sizeof(mg_x_shrink_t));

    /* a body that has the placeholder characters already is left alone */

    for (q = p; q + 2 < p + len; q++) {
        q = memchr(q, 0xee, p + len - q);
        if (q == NULL || q + 2 >= p + len) {
            break;
        }

        if ((unsigned char) q[1] == 0x80
            && ((unsigned char) q[2] == 0x80 || (unsigned char) q[2] == 0x81))
        {
            return MG_X_OK;
        }
    }

    /* or has them escaped: a translator writes them back unescaped */

    for (q = p; q + 5 < p + len; q++) {
        q = memchr(q, '\\', p + len - q);
        if (q == NULL || q + 5 >= p + len) {
            break;
        }

        if (q[1] == 'u' && (q[2] == 'e' || q[2] == 'E') && q[3] == '0'
            && q[4] == '0' && (q[5] == '0' || q[5] == '1'))
        {
            return MG_X_OK;
        }
    }

    depth = 0;
    copied = 0;
    key_start = 0;
    key_len = 0;

    for (i = 0; i < len; i++) {

        switch (p[i]) {

        case '{':
        case '[':
            if (depth == MG_X_DEPTH) {
                goto none;
            }

            in_object[depth] = (p[i] == '{');
            expect_key[depth] = (p[i] == '{');
            depth++;
            continue;

        case '}':
        case ']':
            if (depth) {
                depth--;
            }

            continue;

        case ',':
            if (depth && in_object[depth - 1]) {
                expect_key[depth - 1] = 1;
            }

            continue;

        case '"':
            break;

        default:
            continue;
        }

        j = mg_x_string_end(p, i + 1, len);
        if (j >= len) {
            goto none;
        }

        if (depth && in_object[depth - 1] && expect_key[depth - 1]) {
            key_start = i + 1;
            key_len = j - i - 1;
            expect_key[depth - 1] = 0;
            i = j;
            continue;
        }

        if (depth && in_object[depth - 1]
            && j - i - 1 >= min
            && ((key_len == 7
                 && memcmp(p + key_start, "content", 7) == 0)
                || (key_len == 4 && memcmp(p + key_start, "text", 4) == 0))
            && !mg_x_maybe_json(p + i + 1, j - i - 1))
        {
            rc = mg_buf_append(&s->body, p + copied, i + 1 - copied);
            if (rc != MG_X_OK) {
                return rc;
            }

            rc = mg_buf_printf(&s->body, MG_X_PH_OPEN "%zu" MG_X_PH_CLOSE,
                               s->n);
            if (rc != MG_X_OK) {
                return rc;
            }

            rc = mg_x_shrink_add(s, i + 1, j - i - 1);
            if (rc != MG_X_OK) {
                return rc;
            }

            copied = j;
        }

        i = j;
    }

    if (s->n == 0) {
        goto none;
    }

    return mg_buf_append(&s->body, p + copied, len - copied);

none:

    mg_x_shrink_free(s);
    memset(s, 0, sizeof(mg_x_shrink_t));

    return MG_X_OK;
}


int
mg_x_expand(const mg_x_shrink_t *s, const char *orig, const char *out,
    size_t out_len, mg_buf_t *res)
{
    int          rc;
    size_t       k, total, max;
    const char  *p, *end, *q;

    /* one allocation: the result is the output plus every text */

    for (k = 0, total = out_len; k < s->n; k++) {
        total += s->len[k];
    }

    /*
     * a text is put back as often as its placeholder was copied: a
     * translator that copied one many times must not multiply it here
     */

    max = s->max ? res->len + s->max : (size_t) -1;

    rc = mg_buf_reserve(res, (s->max && total > s->max) ? s->max : total);
    if (rc != MG_X_OK) {
        return rc;
    }

    p = out;
    end = out + out_len;

    while (p < end) {
        q = p;

        for ( ;; ) {
            q = memchr(q, 0xee, end - q);

            if (q == NULL || end - q < 3
                || ((unsigned char) q[1] == 0x80
                    && (unsigned char) q[2] == 0x80))
            {
                break;
            }

            q++;
        }

        if (q == NULL || end - q < 3) {
            q = end;
        }

        if ((size_t) (q - p) > max - res->len) {
            return MG_X_ERROR;
        }

        if (q == end) {
            return mg_buf_append(res, p, end - p);
        }

        rc = mg_buf_append(res, p, q - p);
        if (rc != MG_X_OK) {
            return rc;
        }

        q += 3;
        k = 0;

        if (q == end || *q < '0' || *q > '9') {
            return MG_X_ERROR;
        }

        while (q < end && *q >= '0' && *q <= '9') {
            k = k * 10 + (size_t) (*q++ - '0');
        }

        if (k >= s->n || end - q < 3 || memcmp(q, MG_X_PH_CLOSE, 3) != 0) {
            return MG_X_ERROR;
        }

        if (s->len[k] > max - res->len) {
            return MG_X_ERROR;
        }

        rc = mg_buf_append(res, orig + s->start[k], s->len[k]);
        if (rc != MG_X_OK) {
            return rc;
        }

        p = q + 3;
    }

    return MG_X_OK;
}


int
mg_x_translate_shrunk(const mg_x_shrink_t *s, const char *body, size_t len,
    mg_x_translate_pt translate, void *data, mg_buf_t *out)
{
    int       rc;
    mg_buf_t  small;

    if (s->n == 0) {
        return translate(data, body, len, out);
    }

    memset(&small, 0, sizeof(mg_buf_t));

    rc = translate(data, s->body.data, s->body.len, &small);

    if (rc == MG_X_OK) {
        rc = mg_x_expand(s, body, small.data, small.len, out);

        if (rc == MG_X_ERROR) {
            mg_buf_reset(out);
            rc = translate(data, body, len, out);
        }
    }

    mg_buf_free(&small);

    return rc;
}


void
mg_x_shrink_free(mg_x_shrink_t *s)
{
    mg_buf_free(&s->body);
    free(s->start);
    free(s->len);
    s->start = NULL;
    s->len = NULL;
    s->n = 0;
    s->cap = 0;
}
