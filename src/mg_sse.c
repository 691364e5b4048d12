/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>
#include <sys/types.h>

#include "mg_json.h"
#include "mg_sse.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif


/*
 * Tokenizing is done in two steps.  A state machine over the bytes, whose
 * whole state survives between calls, only finds where each event ends (a
 * blank line).  The complete event, contiguous either in the caller's data
 * or in buf, is then split into fields in one go.  Since both steps see the
 * same bytes however the stream was cut, the events cannot depend on the
 * cuts.
 */

#define MG_SSE_SOL   0      /* at the start of a line */
#define MG_SSE_MID   1      /* inside a non-empty line */
#define MG_SSE_CR    2      /* a CR ended a non-empty line; LF may follow */
#define MG_SSE_END   3      /* a CR ended the blank line; LF may follow */
#define MG_SSE_ERR   4      /* an event did not fit; the stream is lost */

/* deep enough for any error object an API returns */
#define MG_SSE_JSON_DEPTH  64


static const u_char  mg_sse_bom[3] = { 0xef, 0xbb, 0xbf };


static const u_char *mg_sse_eol(const u_char *p, const u_char *end);
static int mg_sse_dispatch(mg_sse_parser_t *p, const u_char *s,
    const u_char *e, mg_sse_handler_pt handler, void *ctx);
static int mg_sse_parse(mg_sse_parser_t *p, const u_char *raw, size_t len,
    mg_sse_event_t *ev);


void
mg_sse_init(mg_sse_parser_t *p, char *buf, size_t cap, char *dbuf,
    size_t dcap)
{
    p->buf = buf;
    p->cap = cap;
    p->len = 0;
    p->dbuf = dbuf;
    p->dcap = dcap;
    p->state = MG_SSE_SOL;
    p->scan = 0;
    p->line = 0;
    p->bom_checked = 0;
}


int
mg_sse_feed(mg_sse_parser_t *p, const char *data, size_t len,
    mg_sse_handler_pt handler, void *ctx)
{
    int            rc;
    size_t         k0, n;
    unsigned       state;
    const u_char  *d, *s, *end;

    if (p->state == MG_SSE_ERR) {
        return MG_SSE_ETOOBIG;
    }

    if (len == 0) {
        return MG_SSE_OK;
    }

    d = (const u_char *) data;
    end = d + len;

    if (!p->bom_checked) {

        /* until the BOM is decided, len counts the BOM bytes matched */

        k0 = p->len;

        while (d < end && p->len < 3 && *d == mg_sse_bom[p->len]) {
            d++;
            p->len++;
        }

        if (p->len == 3) {
            p->len = 0;
            p->bom_checked = 1;

        } else if (d == end) {
            return MG_SSE_OK;

        } else {
            /* not a BOM: the bytes belong to the first event */

            p->bom_checked = 1;
            d -= p->len - k0;
            p->len = k0;

            if (k0) {
                if (k0 > p->cap) {
                    p->state = MG_SSE_ERR;
                    return MG_SSE_ETOOBIG;
                }

                memcpy(p->buf, mg_sse_bom, k0);
                p->state = MG_SSE_MID;
            }
        }
    }

    state = p->state;
    s = d;

    while (d < end) {

        switch (state) {

        case MG_SSE_MID:
            d = mg_sse_eol(d, end);

            if (d < end) {
                state = (*d++ == '\n') ? MG_SSE_SOL : MG_SSE_CR;
            }

            continue;

        case MG_SSE_END:
            if (*d == '\n') {
                d++;
            }

            break;

        case MG_SSE_CR:
            if (*d == '\n') {
                d++;
                state = MG_SSE_SOL;
                continue;
            }

            /* fall through */

        default: /* MG_SSE_SOL */

            if (*d == '\r') {
                d++;
                state = MG_SSE_END;
                continue;
            }

            if (*d++ != '\n') {
                state = MG_SSE_MID;
                continue;
            }

            break;
        }

        /* [s, d) ends the event with its blank line */

        state = MG_SSE_SOL;

        rc = mg_sse_dispatch(p, s, d, handler, ctx);

        if (rc != MG_SSE_OK) {
            p->state = (rc == MG_SSE_ETOOBIG) ? MG_SSE_ERR : MG_SSE_SOL;
            return rc;
        }

        s = d;
    }

    /* keep the unterminated rest for the next call */

    n = end - s;

    if (n > p->cap - p->len) {
        p->state = MG_SSE_ERR;
        return MG_SSE_ETOOBIG;
    }

    if (n) {
        memcpy(p->buf + p->len, s, n);
        p->len += n;
    }

    p->state = state;

    return MG_SSE_OK;
}


/*
 * The first CR or LF in [p, end), or end.  Event lines are long (a JSON
 * object each), so they are searched 16 bytes at a time where SSE2 is
 * there (every x86-64).
 */

static const u_char *
mg_sse_eol(const u_char *p, const u_char *end)
{
#if defined(__SSE2__)
    int      m;
    __m128i  x;

    while (end - p >= 16) {
        x = _mm_loadu_si128((const __m128i *) p);
        m = _mm_movemask_epi8(
                _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\n')),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8('\r'))));

        if (m) {
            return p + __builtin_ctz((unsigned) m);
        }

        p += 16;
    }
#endif

    while (p < end && *p != '\n' && *p != '\r') {
        p++;
    }

    return p;
}


size_t
mg_sse_pending(const mg_sse_parser_t *p)
{
    return p->len;
}


static int
mg_sse_dispatch(mg_sse_parser_t *p, const u_char *s, const u_char *e,
    mg_sse_handler_pt handler, void *ctx)
{
    int              rc;
    size_t           n;
    const u_char    *raw;
    mg_sse_event_t   ev;

    n = e - s;

    if (p->len) {
        /* the event began in an earlier call: complete it in buf */

        if (n > p->cap - p->len) {
            return MG_SSE_ETOOBIG;
        }

        if (n) {
            memcpy(p->buf + p->len, s, n);
        }

        raw = (const u_char *) p->buf;
        n += p->len;
        p->len = 0;

    } else {
        /* the cap applies here too, or the result would depend on cuts */

        if (n > p->cap) {
            return MG_SSE_ETOOBIG;
        }

        raw = s;
    }

    rc = mg_sse_parse(p, raw, n, &ev);
    if (rc != MG_SSE_OK) {
        return rc;
    }

    return handler(ctx, &ev);
}


static int
mg_sse_parse(mg_sse_parser_t *p, const u_char *raw, size_t len,
    mg_sse_event_t *ev)
{
    size_t          nlen, vlen, dlen, ndata;
    const u_char   *pos, *end, *line, *le, *colon, *v;

    ev->event = NULL;
    ev->event_len = 0;
    ev->data = NULL;
    ev->data_len = 0;
    ev->raw = (const char *) raw;
    ev->raw_len = len;
    ev->kind = NULL;
    ev->kind_len = 0;

    pos = raw;
    end = raw + len;
    ndata = 0;
    dlen = 0;

    while (pos < end) {
        line = pos;
        pos = mg_sse_eol(pos, end);
        le = pos;

        if (pos < end) {
            if (*pos++ == '\r' && pos < end && *pos == '\n') {
                pos++;
            }
        }

        if (le == line || *line == ':') {
            continue;
        }

        colon = memchr(line, ':', le - line);

        if (colon) {
            nlen = colon - line;
            v = colon + 1;

            if (v < le && *v == ' ') {
                v++;
            }

        } else {
            /* a field name alone has the empty value */
            nlen = le - line;
            v = le;
        }

        vlen = le - v;

        if (nlen == 5 && memcmp(line, "event", 5) == 0) {
            ev->event = (const char *) v;
            ev->event_len = vlen;
            continue;
        }

        if (nlen != 4 || memcmp(line, "data", 4) != 0) {
            continue;
        }

        if (ndata++ == 0) {
            /* the usual single line is left where it is */
            ev->data = (const char *) v;
            ev->data_len = vlen;
            continue;
        }

        if (ndata == 2) {
            dlen = ev->data_len;

            if (dlen > p->dcap) {
                return MG_SSE_ETOOBIG;
            }

            if (dlen) {
                memcpy(p->dbuf, ev->data, dlen);
            }
        }

        if (vlen + 1 > p->dcap - dlen) {
            return MG_SSE_ETOOBIG;
        }

        p->dbuf[dlen++] = '\n';

        if (vlen) {
            memcpy(p->dbuf + dlen, v, vlen);
            dlen += vlen;
        }

        ev->data = p->dbuf;
        ev->data_len = dlen;
    }

    return MG_SSE_OK;
}


int
mg_sse_is_error(const mg_sse_event_t *ev)
{
    size_t            i;
    mg_json_field_t   f;

    if (ev->kind) {
        return !(ev->kind_len == 5 && memcmp(ev->kind, "event", 5) == 0);
    }

    if (ev->event && ev->event_len == 5
        && memcmp(ev->event, "error", 5) == 0)
    {
        return 1;
    }

    if (ev->data == NULL) {
        return 0;
    }

    /* only an object has members: "[DONE]" and text need no scan */

    for (i = 0; i < ev->data_len; i++) {
        if (ev->data[i] != ' ' && ev->data[i] != '\t'
            && ev->data[i] != '\r' && ev->data[i] != '\n')
        {
            break;
        }
    }

    if (i == ev->data_len || ev->data[i] != '{') {
        return 0;
    }

    f.name = "error";
    f.name_len = 5;

    if (mg_json_scan(ev->data, ev->data_len, &f, 1, MG_SSE_JSON_DEPTH, NULL)
        != MG_JSON_OK)
    {
        return 0;
    }

    return f.type != MG_JSON_NONE && f.type != MG_JSON_NULL;
}


int
mg_sse_is_done(const mg_sse_event_t *ev)
{
    const char  *s, *e;

    if (ev->data == NULL) {
        return 0;
    }

    s = ev->data;
    e = s + ev->data_len;

    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
        s++;
    }

    while (e > s
           && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'
               || e[-1] == '\n'))
    {
        e--;
    }

    return e - s == 6 && memcmp(s, "[DONE]", 6) == 0;
}
