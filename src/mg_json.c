/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "mg_json.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif


/*
 * The scanner keeps one bit per open container (object or array) on its own
 * stack instead of recursing, so hostile nesting costs no C stack; this is
 * the most that bit stack holds, whatever max_depth the caller asks for.
 */
#define MG_JSON_DEPTH_LIMIT  4096


/* classes of bytes inside a string */
#define MG_JSON_PLAIN        0
#define MG_JSON_QUOTE        1
#define MG_JSON_BSLASH       2
#define MG_JSON_CTRL         3
#define MG_JSON_LEAD         4      /* first byte of a multi-byte character */
#define MG_JSON_BAD          5      /* never valid in UTF-8 at this place */


static const unsigned char  mg_json_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,     /* 0x00 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,     /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x20 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,     /* 0x50 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x70 */
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,     /* 0x80 */
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,     /* 0x90 */
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,     /* 0xa0 */
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,     /* 0xb0 */
    5, 5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,     /* 0xc0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,     /* 0xd0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,     /* 0xe0 */
    4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5      /* 0xf0 */
};


#define MG_JSON_ONES   0x0101010101010101ULL
#define MG_JSON_HIGHS  0x8080808080808080ULL

#define mg_json_ws(c)                                                         \
    ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')

#define mg_json_digit(c)  ((unsigned) ((c) - '0') < 10)

#define mg_json_skip_ws(p, end)                                               \
    while ((p) < (end) && mg_json_ws(*(p))) { (p)++; }


static int
mg_json_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


static long
mg_json_hex4(const u_char *p)
{
    int   i, d;
    long  v;

    v = 0;

    for (i = 0; i < 4; i++) {
        d = mg_json_hex(p[i]);
        if (d < 0) {
            return -1;
        }

        v = (v << 4) | d;
    }

    return v;
}


/*
 * Decodes the escape "\uXXXX" (or a surrogate pair "\uXXXX\uXXXX") at p.
 * Returns the code point and sets *n to the bytes used, or -1: a lone
 * surrogate cannot be turned into UTF-8, so it is refused like bad UTF-8.
 */
static long
mg_json_uescape(const u_char *p, const u_char *end, size_t *n)
{
    long  cp, lo;

    if (end - p < 6) {
        return -1;
    }

    cp = mg_json_hex4(p + 2);

    if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
        return -1;
    }

    if (cp < 0xd800 || cp > 0xdbff) {
        *n = 6;
        return cp;
    }

    if (end - p < 12 || p[6] != '\\' || p[7] != 'u') {
        return -1;
    }

    lo = mg_json_hex4(p + 8);

    if (lo < 0xdc00 || lo > 0xdfff) {
        return -1;
    }

    *n = 12;

    return 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
}


/*
 * Returns the length of the valid UTF-8 sequence that starts with the lead
 * byte at p (class MG_JSON_LEAD), or 0 if it is truncated, overlong,
 * a surrogate or beyond U+10FFFF (RFC 3629, section 4).
 */
static size_t
mg_json_utf8(const u_char *p, const u_char *end)
{
    u_char  c, c1;

    c = p[0];

    if (c < 0xe0) {
        if (end - p < 2 || (p[1] & 0xc0) != 0x80) {
            return 0;
        }

        return 2;
    }

    if (c < 0xf0) {
        if (end - p < 3) {
            return 0;
        }

        c1 = p[1];

        if ((c1 & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (c == 0xe0 && c1 < 0xa0)
            || (c == 0xed && c1 > 0x9f))
        {
            return 0;
        }

        return 3;
    }

    if (end - p < 4) {
        return 0;
    }

    c1 = p[1];

    if ((c1 & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
        || (p[3] & 0xc0) != 0x80
        || (c == 0xf0 && c1 < 0x90)
        || (c == 0xf4 && c1 > 0x8f))
    {
        return 0;
    }

    return 4;
}


static size_t
mg_json_utf8_encode(u_char *out, long cp)
{
    if (cp < 0x80) {
        out[0] = (u_char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (u_char) (0xc0 | (cp >> 6));
        out[1] = (u_char) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        out[0] = (u_char) (0xe0 | (cp >> 12));
        out[1] = (u_char) (0x80 | ((cp >> 6) & 0x3f));
        out[2] = (u_char) (0x80 | (cp & 0x3f));
        return 3;
    }

    out[0] = (u_char) (0xf0 | (cp >> 18));
    out[1] = (u_char) (0x80 | ((cp >> 12) & 0x3f));
    out[2] = (u_char) (0x80 | ((cp >> 6) & 0x3f));
    out[3] = (u_char) (0x80 | (cp & 0x3f));
    return 4;
}


/*
 * Decodes one escape sequence at p (p[0] is the backslash) into out[4].
 * Returns the number of bytes written and sets *n to the bytes consumed,
 * or returns 0 if the escape is invalid.
 */
static size_t
mg_json_escape_decode(const u_char *p, const u_char *end, u_char *out,
    size_t *n)
{
    long  cp;

    if (end - p < 2) {
        return 0;
    }

    *n = 2;

    switch (p[1]) {

    case '"':
    case '\\':
    case '/':
        out[0] = p[1];
        return 1;

    case 'b':
        out[0] = '\b';
        return 1;

    case 'f':
        out[0] = '\f';
        return 1;

    case 'n':
        out[0] = '\n';
        return 1;

    case 'r':
        out[0] = '\r';
        return 1;

    case 't':
        out[0] = '\t';
        return 1;

    case 'u':
        cp = mg_json_uescape(p, end, n);
        if (cp < 0) {
            return 0;
        }

        return mg_json_utf8_encode(out, cp);

    default:
        return 0;
    }
}


/*
 * Scans the string that starts with the quote at p.  Returns the position
 * after the closing quote; on error sets *msg and returns the position of
 * the offending byte.  *esc tells whether the string has escapes.
 */
static const u_char *
mg_json_string(const u_char *p, const u_char *end, const char **msg,
    int *esc)
{
    size_t         n;
    uint64_t       w, q, b;
    const u_char  *start;

    start = p++;
    *esc = 0;

    for ( ;; ) {

#if defined(__SSE2__)

        /*
         * 16 bytes at a time where SSE2 is there (every x86-64): a signed
         * "less than 0x20" is true for control bytes and for every byte of
         * 0x80 and above, which are exactly the bytes needing a closer look
         * besides the quote and the backslash.
         */

        while (end - p >= 16) {
            __m128i  x;

            x = _mm_loadu_si128((const __m128i *) p);

            if (_mm_movemask_epi8(
                    _mm_or_si128(
                        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                     _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
                        _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)))))
            {
                break;
            }

            p += 16;
        }

#endif

        /*
         * Most of a chat body is plain ASCII text: test 8 bytes at a time
         * for a quote, a backslash, a control or a non-ASCII byte.  Each
         * term is the classic exact "some byte is zero/less than n" test;
         * which byte it was is found by the byte loop below.
         */

        while (end - p >= 8) {
            memcpy(&w, p, 8);

            q = w ^ (MG_JSON_ONES * '"');
            b = w ^ (MG_JSON_ONES * '\\');

            if ((((w - MG_JSON_ONES * 0x20) & ~w)
                 | ((q - MG_JSON_ONES) & ~q)
                 | ((b - MG_JSON_ONES) & ~b)
                 | w) & MG_JSON_HIGHS)
            {
                break;
            }

            p += 8;
        }

        while (p < end && mg_json_class[*p] == MG_JSON_PLAIN) {
            p++;
        }

        if (p == end) {
            *msg = "unterminated string";
            return start;
        }

        switch (mg_json_class[*p]) {

        case MG_JSON_QUOTE:
            return p + 1;

        case MG_JSON_BSLASH:
            *esc = 1;

            if (end - p < 2) {
                *msg = "unterminated string";
                return start;
            }

            switch (p[1]) {

            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                break;

            case 'u':
                if (mg_json_uescape(p, end, &n) < 0) {
                    *msg = "invalid \\u escape";
                    return p;
                }

                p += n;
                break;

            default:
                *msg = "invalid escape";
                return p;
            }

            break;

        case MG_JSON_CTRL:
            *msg = "control character in string";
            return p;

        case MG_JSON_LEAD:
            n = mg_json_utf8(p, end);
            if (n == 0) {
                *msg = "invalid UTF-8";
                return p;
            }

            p += n;
            break;

        default:
            *msg = "invalid UTF-8";
            return p;
        }
    }
}


/*
 * Compares the inside of a string token that has escapes with a plain
 * name, unescaping on the fly.
 */
static int
mg_json_name_eq(const u_char *p, const u_char *end, const u_char *name,
    size_t len)
{
    size_t  n, k;
    u_char  buf[4];

    while (p < end) {
        if (*p != '\\') {
            if (len == 0 || *p != *name) {
                return 0;
            }

            p++;
            name++;
            len--;
            continue;
        }

        k = mg_json_escape_decode(p, end, buf, &n);

        if (k == 0 || k > len || memcmp(buf, name, k) != 0) {
            return 0;
        }

        p += n;
        name += k;
        len -= k;
    }

    return len == 0;
}


static void
mg_json_set_fields(mg_json_field_t *fields, size_t nfields,
    const u_char *start, const u_char *key, const u_char *key_end, int esc,
    const u_char *val, const u_char *val_end)
{
    size_t            i, klen;
    mg_json_type_t    type;
    mg_json_field_t  *f;

    klen = key_end - key;
    type = MG_JSON_NONE;

    for (i = 0; i < nfields; i++) {
        f = &fields[i];

        if (esc) {
            if (!mg_json_name_eq(key, key_end, (const u_char *) f->name,
                                 f->name_len))
            {
                continue;
            }

        } else if (f->name_len != klen || memcmp(f->name, key, klen) != 0) {
            continue;
        }

        if (type == MG_JSON_NONE) {
            switch (*val) {
            case '"':
                type = MG_JSON_STRING;
                break;
            case '{':
                type = MG_JSON_OBJECT;
                break;
            case '[':
                type = MG_JSON_ARRAY;
                break;
            case 't':
                type = MG_JSON_TRUE;
                break;
            case 'f':
                type = MG_JSON_FALSE;
                break;
            case 'n':
                type = MG_JSON_NULL;
                break;
            default:
                type = MG_JSON_NUMBER;
                break;
            }
        }

        f->dup |= (f->type != MG_JSON_NONE);
        f->type = type;
        f->start = val - start;
        f->len = val_end - val;
    }
}


static void
mg_json_reset_fields(mg_json_field_t *fields, size_t nfields)
{
    size_t  i;

    for (i = 0; i < nfields; i++) {
        fields[i].type = MG_JSON_NONE;
        fields[i].start = 0;
        fields[i].len = 0;
        fields[i].dup = 0;
    }
}


int
mg_json_scan(const char *data, size_t len, mg_json_field_t *fields,
    size_t nfields, size_t max_depth, mg_json_error_t *err)
{
    int             esc, kesc, rc;
    size_t          depth;
    uint64_t        bit, stack[MG_JSON_DEPTH_LIMIT / 64];
    const char     *msg;
    const u_char   *start, *p, *end, *key, *key_end, *val;

    mg_json_reset_fields(fields, nfields);

    if (len == 0) {
        if (err) {
            err->message = "unexpected end of input";
            err->offset = 0;
        }

        return MG_JSON_EINVAL;
    }

    if (max_depth > MG_JSON_DEPTH_LIMIT) {
        max_depth = MG_JSON_DEPTH_LIMIT;
    }

    start = (const u_char *) data;
    p = start;
    end = start + len;

    depth = 0;
    msg = NULL;
    key = NULL;
    key_end = NULL;
    val = NULL;
    kesc = 0;

    mg_json_skip_ws(p, end);

value:

    if (p == end) {
        msg = "unexpected end of input";
        goto failed;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth >= max_depth) {
            msg = "nesting too deep";
            rc = MG_JSON_EDEPTH;
            goto error;
        }

        /* a bit set means an object; a new word needs no old bits */

        bit = (uint64_t) 1 << (depth & 63);

        if ((depth & 63) == 0) {
            stack[depth >> 6] = (*p == '{') ? bit : 0;

        } else if (*p == '{') {
            stack[depth >> 6] |= bit;

        } else {
            stack[depth >> 6] &= ~bit;
        }

        depth++;

        if (*p++ == '[') {
            mg_json_skip_ws(p, end);

            if (p < end && *p == ']') {
                p++;
                depth--;
                goto value_done;
            }

            goto value;
        }

        mg_json_skip_ws(p, end);

        if (p < end && *p == '}') {
            p++;
            depth--;
            goto value_done;
        }

        goto member;

    case '"':
        p = mg_json_string(p, end, &msg, &esc);
        if (msg) {
            goto failed;
        }

        goto value_done;

    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0) {
            msg = "invalid literal";
            goto failed;
        }

        p += 4;
        goto value_done;

    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0) {
            msg = "invalid literal";
            goto failed;
        }

        p += 5;
        goto value_done;

    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0) {
            msg = "invalid literal";
            goto failed;
        }

        p += 4;
        goto value_done;

    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':

        if (*p == '-') {
            p++;
        }

        if (p == end || !mg_json_digit(*p)) {
            msg = "invalid number";
            goto failed;
        }

        if (*p++ == '0') {
            if (p < end && mg_json_digit(*p)) {
                msg = "leading zero in number";
                goto failed;
            }

        } else {
            while (p < end && mg_json_digit(*p)) {
                p++;
            }
        }

        if (p < end && *p == '.') {
            p++;

            if (p == end || !mg_json_digit(*p)) {
                msg = "invalid number";
                goto failed;
            }

            while (p < end && mg_json_digit(*p)) {
                p++;
            }
        }

        if (p < end && (*p == 'e' || *p == 'E')) {
            p++;

            if (p < end && (*p == '+' || *p == '-')) {
                p++;
            }

            if (p == end || !mg_json_digit(*p)) {
                msg = "invalid number";
                goto failed;
            }

            while (p < end && mg_json_digit(*p)) {
                p++;
            }
        }

        goto value_done;

    default:
        msg = "unexpected character";
        goto failed;
    }

value_done:

    if (depth == 1 && nfields && (stack[0] & 1)) {
        mg_json_set_fields(fields, nfields, start, key, key_end, kesc, val,
                           p);
    }

    mg_json_skip_ws(p, end);

    if (depth == 0) {
        if (p != end) {
            msg = "trailing characters";
            goto failed;
        }

        return MG_JSON_OK;
    }

    if (p == end) {
        msg = "unexpected end of input";
        goto failed;
    }

    if (stack[(depth - 1) >> 6] & ((uint64_t) 1 << ((depth - 1) & 63))) {

        if (*p == ',') {
            p++;
            mg_json_skip_ws(p, end);
            goto member;
        }

        if (*p == '}') {
            p++;
            depth--;
            goto value_done;
        }

        msg = "expected ',' or '}'";
        goto failed;
    }

    if (*p == ',') {
        p++;
        mg_json_skip_ws(p, end);
        goto value;
    }

    if (*p == ']') {
        p++;
        depth--;
        goto value_done;
    }

    msg = "expected ',' or ']'";
    goto failed;

member:

    if (p == end || *p != '"') {
        msg = "expected member name";
        goto failed;
    }

    if (depth == 1) {
        key = p + 1;
    }

    p = mg_json_string(p, end, &msg, &esc);
    if (msg) {
        goto failed;
    }

    if (depth == 1) {
        key_end = p - 1;
        kesc = esc;
    }

    mg_json_skip_ws(p, end);

    if (p == end || *p != ':') {
        msg = "expected ':'";
        goto failed;
    }

    p++;
    mg_json_skip_ws(p, end);

    if (depth == 1) {
        val = p;
    }

    goto value;

failed:

    rc = MG_JSON_EINVAL;

error:

    mg_json_reset_fields(fields, nfields);

    if (err) {
        err->message = msg;
        err->offset = p - start;
    }

    return rc;
}


ssize_t
mg_json_unescape(const char *tok, size_t len, char *out, size_t cap)
{
    size_t         n, k, o;
    u_char         buf[4];
    const u_char  *p, *q, *end;

    if (len < 2 || tok[0] != '"' || tok[len - 1] != '"') {
        return -1;
    }

    p = (const u_char *) tok + 1;
    end = (const u_char *) tok + len - 1;
    o = 0;

    while (p < end) {

        q = p;

        while (q < end && mg_json_class[*q] == MG_JSON_PLAIN) {
            q++;
        }

        if (q > p) {
            n = q - p;

            if (n > cap - o) {
                return -1;
            }

            memcpy(out + o, p, n);
            o += n;
            p = q;
            continue;
        }

        switch (mg_json_class[*p]) {

        case MG_JSON_BSLASH:
            k = mg_json_escape_decode(p, end, buf, &n);
            if (k == 0) {
                return -1;
            }

            break;

        case MG_JSON_LEAD:
            k = mg_json_utf8(p, end);
            if (k == 0) {
                return -1;
            }

            memcpy(buf, p, k);
            n = k;
            break;

        default:
            return -1;
        }

        if (k > cap - o) {
            return -1;
        }

        memcpy(out + o, buf, k);
        o += k;
        p += n;
    }

    return o;
}


mg_json_type_t
mg_json_member(const char *p, size_t len, const char *name, size_t name_len,
    size_t *start, size_t *vlen)
{
    mg_json_field_t  f;

    f.name = name;
    f.name_len = name_len;

    if (mg_json_scan(p, len, &f, 1, MG_JSON_DEPTH_LIMIT, NULL) != MG_JSON_OK
        || f.type == MG_JSON_NONE)
    {
        return MG_JSON_NONE;
    }

    if (start) {
        *start = f.start;
    }

    if (vlen) {
        *vlen = f.len;
    }

    return f.type;
}
