/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>
#include <sys/types.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mg_sigv4.h"


#define MG_SIGV4_ALGORITHM   "AWS4-HMAC-SHA256"
#define MG_SIGV4_TERMINATOR  "aws4_request"

/* ALGORITHM \n amz_date \n date/region/service/aws4_request \n hex */
#define MG_SIGV4_STS_MAX                                                     \
    (sizeof(MG_SIGV4_ALGORITHM) + MG_SIGV4_AMZ_DATE_LEN + 1 + 8 + 1          \
     + MG_SIGV4_MAX_SCOPE + 1 + MG_SIGV4_MAX_SCOPE + 1                       \
     + sizeof(MG_SIGV4_TERMINATOR) + 64)


typedef struct {
    const char          *p;
    size_t               len;
} mg_sigv4_span_t;


typedef struct {
    mg_sigv4_span_t      name;
    mg_sigv4_span_t      value;
} mg_sigv4_param_t;


/*
 * Where canonical text goes: into a SHA-256 context, or into a caller's
 * buffer (at most cap bytes, n counting all of it).  Digest updates are
 * batched, since the text is produced a few bytes at a time.
 */

typedef struct {
    EVP_MD_CTX          *md;
    char                *out;
    size_t               cap;
    size_t               n;
    size_t               staged;
    int                  failed;
    u_char               stage[512];
} mg_sigv4_sink_t;


/* one request taken apart: the headers, query and path in canonical order */

typedef struct {
    size_t               hidx[MG_SIGV4_MAX_HEADERS];
    mg_sigv4_param_t     params[MG_SIGV4_MAX_PARAMS];
    size_t               nparams;
    mg_sigv4_span_t      segs[MG_SIGV4_MAX_SEGMENTS];
    size_t               nsegs;
    unsigned             trailing_slash:1;
} mg_sigv4_canon_t;


/* the encoded form of a query component, produced byte by byte */

typedef struct {
    const u_char        *p;
    const u_char        *end;
    u_char               pend[3];
    size_t               npend;
    size_t               ipend;
} mg_sigv4_enc_iter_t;


static EVP_MD_CTX *mg_sigv4_md(void);
static int mg_sigv4_digest(const void *a, size_t alen, const void *b,
    size_t blen, u_char *out);
static int mg_sigv4_hmac(const u_char *key, size_t key_len, const void *msg,
    size_t len, u_char *out);
static int mg_sigv4_prepare(const mg_sigv4_request_t *r,
    mg_sigv4_canon_t *c);
static void mg_sigv4_canonical(const mg_sigv4_request_t *r,
    const mg_sigv4_canon_t *c, mg_sigv4_sink_t *s);
static void mg_sigv4_put_signed_headers(const mg_sigv4_request_t *r,
    const mg_sigv4_canon_t *c, mg_sigv4_sink_t *s);
static void mg_sigv4_put_value(mg_sigv4_sink_t *s, const char *v,
    size_t len);
static void mg_sigv4_put_encoded(mg_sigv4_sink_t *s, const char *p,
    size_t len, int decode);
static void mg_sigv4_put(mg_sigv4_sink_t *s, const void *p, size_t len);
static void mg_sigv4_flush(mg_sigv4_sink_t *s);
static int mg_sigv4_name_cmp(const mg_sigv4_header_t *a,
    const mg_sigv4_header_t *b);
static int mg_sigv4_param_cmp(const mg_sigv4_param_t *a,
    const mg_sigv4_param_t *b);
static int mg_sigv4_enc_cmp(const mg_sigv4_span_t *a,
    const mg_sigv4_span_t *b);
static int mg_sigv4_enc_next(mg_sigv4_enc_iter_t *it);
static size_t mg_sigv4_encode_byte(u_char c, int encode_slash, u_char *dst);
static int mg_sigv4_hexval(u_char c);
static void mg_sigv4_hex(const u_char *in, size_t len, char *out);


static const char  mg_sigv4_hexdigits[] = "0123456789ABCDEF";
static const char  mg_sigv4_lowerhex[] = "0123456789abcdef";


int
mg_sigv4_derive_key(const char *secret, size_t secret_len, const char *date,
    const char *region, size_t region_len, const char *service,
    size_t service_len, u_char *out)
{
    int           rc;
    u_char        k[4 + MG_SIGV4_MAX_SECRET], a[MG_SIGV4_KEY_LEN];
    u_char        b[MG_SIGV4_KEY_LEN];

    if (secret_len > MG_SIGV4_MAX_SECRET || region_len > MG_SIGV4_MAX_SCOPE
        || service_len > MG_SIGV4_MAX_SCOPE)
    {
        return MG_SIGV4_ELIMIT;
    }

    memcpy(k, "AWS4", 4);
    memcpy(k + 4, secret, secret_len);

    rc = MG_SIGV4_ECRYPTO;

    if (mg_sigv4_hmac(k, 4 + secret_len, date, 8, a) != 0
        || mg_sigv4_hmac(a, sizeof(a), region, region_len, b) != 0
        || mg_sigv4_hmac(b, sizeof(b), service, service_len, a) != 0
        || mg_sigv4_hmac(a, sizeof(a), MG_SIGV4_TERMINATOR,
                         sizeof(MG_SIGV4_TERMINATOR) - 1, b) != 0)
    {
        goto done;
    }

    memcpy(out, b, MG_SIGV4_KEY_LEN);
    rc = MG_SIGV4_OK;

done:

    /* the intermediate keys are as good as the secret for a day */

    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));

    return rc;
}


ssize_t
mg_sigv4_sign(const mg_sigv4_request_t *r, char *out, size_t cap)
{
    int               rc;
    char              sig[2 * MG_SIGV4_KEY_LEN + 1], hash[65];
    u_char            md[EVP_MAX_MD_SIZE], sts[MG_SIGV4_STS_MAX];
    size_t            n;
    unsigned int      mdlen;
    mg_sigv4_sink_t   s;
    mg_sigv4_canon_t  c;

    if (r->key == NULL) {
        return MG_SIGV4_EINVAL;
    }

    rc = mg_sigv4_prepare(r, &c);

    if (rc != MG_SIGV4_OK) {
        return rc;
    }

    /* hash the canonical request as it is produced */

    memset(&s, 0, offsetof(mg_sigv4_sink_t, stage));

    s.md = mg_sigv4_md();

    if (s.md == NULL) {
        return MG_SIGV4_ECRYPTO;
    }

    mg_sigv4_canonical(r, &c, &s);
    mg_sigv4_flush(&s);

    if (s.failed || EVP_DigestFinal_ex(s.md, md, &mdlen) != 1
        || mdlen != 32)
    {
        return MG_SIGV4_ECRYPTO;
    }

    mg_sigv4_hex(md, mdlen, hash);

    /* the string to sign; its size was bounded by mg_sigv4_prepare() */

    n = 0;
    memcpy(sts + n, MG_SIGV4_ALGORITHM "\n", sizeof(MG_SIGV4_ALGORITHM));
    n += sizeof(MG_SIGV4_ALGORITHM);
    memcpy(sts + n, r->amz_date, MG_SIGV4_AMZ_DATE_LEN);
    n += MG_SIGV4_AMZ_DATE_LEN;
    sts[n++] = '\n';
    memcpy(sts + n, r->amz_date, 8);
    n += 8;
    sts[n++] = '/';
    memcpy(sts + n, r->region, r->region_len);
    n += r->region_len;
    sts[n++] = '/';
    memcpy(sts + n, r->service, r->service_len);
    n += r->service_len;
    memcpy(sts + n, "/" MG_SIGV4_TERMINATOR "\n",
           sizeof(MG_SIGV4_TERMINATOR) + 1);
    n += sizeof(MG_SIGV4_TERMINATOR) + 1;
    memcpy(sts + n, hash, 64);
    n += 64;

    if (mg_sigv4_hmac(r->key, MG_SIGV4_KEY_LEN, sts, n, md) != 0) {
        return MG_SIGV4_ECRYPTO;
    }

    mg_sigv4_hex(md, MG_SIGV4_KEY_LEN, sig);

    /* the header value */

    memset(&s, 0, offsetof(mg_sigv4_sink_t, stage));
    s.out = out;
    s.cap = cap;

    mg_sigv4_put(&s, MG_SIGV4_ALGORITHM " Credential=",
                 sizeof(MG_SIGV4_ALGORITHM " Credential=") - 1);
    mg_sigv4_put(&s, r->access_key_id, r->access_key_id_len);
    mg_sigv4_put(&s, "/", 1);
    mg_sigv4_put(&s, r->amz_date, 8);
    mg_sigv4_put(&s, "/", 1);
    mg_sigv4_put(&s, r->region, r->region_len);
    mg_sigv4_put(&s, "/", 1);
    mg_sigv4_put(&s, r->service, r->service_len);
    mg_sigv4_put(&s, "/" MG_SIGV4_TERMINATOR ", SignedHeaders=",
                 sizeof("/" MG_SIGV4_TERMINATOR ", SignedHeaders=") - 1);
    mg_sigv4_put_signed_headers(r, &c, &s);
    mg_sigv4_put(&s, ", Signature=", sizeof(", Signature=") - 1);
    mg_sigv4_put(&s, sig, 2 * MG_SIGV4_KEY_LEN);

    return (ssize_t) s.n;
}


ssize_t
mg_sigv4_canonical_request(const mg_sigv4_request_t *r, char *out,
    size_t cap)
{
    int               rc;
    mg_sigv4_sink_t   s;
    mg_sigv4_canon_t  c;

    rc = mg_sigv4_prepare(r, &c);

    if (rc != MG_SIGV4_OK) {
        return rc;
    }

    memset(&s, 0, offsetof(mg_sigv4_sink_t, stage));
    s.out = out;
    s.cap = cap;

    mg_sigv4_canonical(r, &c, &s);

    return (ssize_t) s.n;
}


size_t
mg_sigv4_uri_encode(const char *in, size_t len, char *out, size_t cap,
    int encode_slash)
{
    size_t  i, k, n;
    u_char  e[3];

    n = 0;

    for (i = 0; i < len; i++) {
        k = mg_sigv4_encode_byte((u_char) in[i], encode_slash, e);

        if (n + k <= cap) {
            memcpy(out + n, e, k);

        } else if (n < cap) {
            memcpy(out + n, e, cap - n);
        }

        n += k;
    }

    return n;
}


int
mg_sha256_hex(const void *data, size_t len, char *out)
{
    u_char  md[32];

    if (mg_sigv4_digest(data, len, NULL, 0, md) != 0) {
        return -1;
    }

    mg_sigv4_hex(md, sizeof(md), out);

    return 0;
}


/*
 * A SHA-256 context ready for use.  OpenSSL 3 looks the digest up again at
 * every init with EVP_sha256(), and its one-shot HMAC() builds a whole MAC
 * context: for the short texts of a signature that costs several times the
 * hashing itself.  So the digest is fetched once and one context reused: a
 * process (an nginx worker) signs one request at a time, and nothing here
 * calls back out while a digest is in progress.
 */

static EVP_MD_CTX *
mg_sigv4_md(void)
{
    static EVP_MD_CTX  *ctx;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    static EVP_MD      *md;

    if (md == NULL) {
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (md == NULL) {
            return NULL;
        }
    }
#else
    const EVP_MD       *md = EVP_sha256();
#endif

    if (ctx == NULL) {
        ctx = EVP_MD_CTX_new();
        if (ctx == NULL) {
            return NULL;
        }
    }

    if (EVP_DigestInit_ex(ctx, md, NULL) != 1) {
        return NULL;
    }

    return ctx;
}


/* SHA-256 of a followed by b */

static int
mg_sigv4_digest(const void *a, size_t alen, const void *b, size_t blen,
    u_char *out)
{
    unsigned int   n;
    EVP_MD_CTX    *ctx;

    ctx = mg_sigv4_md();

    if (ctx == NULL
        || (alen && EVP_DigestUpdate(ctx, a, alen) != 1)
        || (blen && EVP_DigestUpdate(ctx, b, blen) != 1)
        || EVP_DigestFinal_ex(ctx, out, &n) != 1
        || n != 32)
    {
        return -1;
    }

    return 0;
}


/* HMAC-SHA256 (RFC 2104) over the reused context; out gets 32 bytes */

static int
mg_sigv4_hmac(const u_char *key, size_t key_len, const void *msg, size_t len,
    u_char *out)
{
    int     rc;
    size_t  i;
    u_char  pad[64], kh[32], ih[32];

    if (key_len > sizeof(pad)) {
        if (mg_sigv4_digest(key, key_len, NULL, 0, kh) != 0) {
            return -1;
        }

        key = kh;
        key_len = sizeof(kh);
    }

    for (i = 0; i < sizeof(pad); i++) {
        pad[i] = (u_char) ((i < key_len ? key[i] : 0) ^ 0x36);
    }

    rc = mg_sigv4_digest(pad, sizeof(pad), msg, len, ih);

    if (rc == 0) {
        for (i = 0; i < sizeof(pad); i++) {
            pad[i] ^= 0x36 ^ 0x5c;
        }

        rc = mg_sigv4_digest(pad, sizeof(pad), ih, sizeof(ih), out);
    }

    /* the pads hold the key */

    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(kh, sizeof(kh));
    OPENSSL_cleanse(ih, sizeof(ih));

    return rc;
}


/*
 * Checks the request and sorts its parts.  Only indexes and spans into the
 * caller's strings are kept, so the whole work is bounded by the limits,
 * with no allocation.
 */

static int
mg_sigv4_prepare(const mg_sigv4_request_t *r, mg_sigv4_canon_t *c)
{
    size_t             i, j, k, len;
    const char        *p, *end, *s, *eq;
    mg_sigv4_param_t   prm;

    if (r->amz_date == NULL || r->region_len == 0 || r->service_len == 0) {
        return MG_SIGV4_EINVAL;
    }

    for (i = 0; i < MG_SIGV4_AMZ_DATE_LEN; i++) {
        if (i == 8 ? r->amz_date[i] != 'T'
            : i == 15 ? r->amz_date[i] != 'Z'
            : (r->amz_date[i] < '0' || r->amz_date[i] > '9'))
        {
            return MG_SIGV4_EINVAL;
        }
    }

    if (r->region_len > MG_SIGV4_MAX_SCOPE
        || r->service_len > MG_SIGV4_MAX_SCOPE
        || r->nheaders > MG_SIGV4_MAX_HEADERS)
    {
        return MG_SIGV4_ELIMIT;
    }

    /* headers: a stable sort, so repeated names keep their order */

    for (i = 0; i < r->nheaders; i++) {
        if (r->headers[i].name_len == 0) {
            return MG_SIGV4_EINVAL;
        }

        for (j = i; j > 0; j--) {
            if (mg_sigv4_name_cmp(&r->headers[c->hidx[j - 1]], &r->headers[i])
                <= 0)
            {
                break;
            }

            c->hidx[j] = c->hidx[j - 1];
        }

        c->hidx[j] = i;
    }

    /*
     * The query: "a=1&b" gives ("a", "1") and ("b", ""); empty pieces
     * ("&&") are no parameters.  Sorted by encoded name, then value.
     */

    c->nparams = 0;
    p = r->query;
    end = p ? p + r->query_len : p;

    while (p < end) {
        s = p;

        while (p < end && *p != '&') {
            p++;
        }

        if (p > s) {
            if (c->nparams == MG_SIGV4_MAX_PARAMS) {
                return MG_SIGV4_ELIMIT;
            }

            eq = memchr(s, '=', p - s);

            prm.name.p = s;
            prm.name.len = eq ? (size_t) (eq - s) : (size_t) (p - s);
            prm.value.p = eq ? eq + 1 : p;
            prm.value.len = eq ? (size_t) (p - eq - 1) : 0;

            for (k = c->nparams; k > 0; k--) {
                if (mg_sigv4_param_cmp(&c->params[k - 1], &prm) <= 0) {
                    break;
                }

                c->params[k] = c->params[k - 1];
            }

            c->params[k] = prm;
            c->nparams++;
        }

        if (p < end) {
            p++;
        }
    }

    /*
     * The path: RFC 3986 dot segments resolved and empty segments dropped
     * (which collapses "//"), as the AWS SDKs do for every service but S3.
     */

    c->nsegs = 0;
    c->trailing_slash = 0;

    if (r->raw_path) {
        return MG_SIGV4_OK;
    }

    p = r->path;
    end = p ? p + r->path_len : p;

    while (p < end) {

        while (p < end && *p == '/') {
            p++;
        }

        if (p == end) {
            break;
        }

        s = p;

        while (p < end && *p != '/') {
            p++;
        }

        len = p - s;

        if (len == 1 && s[0] == '.') {
            continue;
        }

        if (len == 2 && s[0] == '.' && s[1] == '.') {
            if (c->nsegs) {
                c->nsegs--;
            }

            continue;
        }

        if (c->nsegs == MG_SIGV4_MAX_SEGMENTS) {
            return MG_SIGV4_ELIMIT;
        }

        c->segs[c->nsegs].p = s;
        c->segs[c->nsegs].len = len;
        c->nsegs++;
    }

    c->trailing_slash = (c->nsegs && r->path[r->path_len - 1] == '/');

    return MG_SIGV4_OK;
}


static void
mg_sigv4_canonical(const mg_sigv4_request_t *r, const mg_sigv4_canon_t *c,
    mg_sigv4_sink_t *s)
{
    size_t                    i;
    const mg_sigv4_header_t  *h, *prev;

    mg_sigv4_put(s, r->method, r->method_len);
    mg_sigv4_put(s, "\n", 1);

    /* CanonicalURI */

    if (r->raw_path) {
        if (r->path_len) {
            mg_sigv4_put(s, r->path, r->path_len);

        } else {
            mg_sigv4_put(s, "/", 1);
        }

    } else {
        mg_sigv4_put(s, "/", 1);

        for (i = 0; i < c->nsegs; i++) {
            if (i) {
                mg_sigv4_put(s, "/", 1);
            }

            /* the wire path's '%' become "%25": the double encoding */
            mg_sigv4_put_encoded(s, c->segs[i].p, c->segs[i].len, 0);
        }

        if (c->trailing_slash) {
            mg_sigv4_put(s, "/", 1);
        }
    }

    mg_sigv4_put(s, "\n", 1);

    /*
     * CanonicalQueryString: the wire components are decoded, then encoded
     * strictly, so that "%7e" and "~" or "%3a" and "%3A" sign alike.
     */

    for (i = 0; i < c->nparams; i++) {
        if (i) {
            mg_sigv4_put(s, "&", 1);
        }

        mg_sigv4_put_encoded(s, c->params[i].name.p, c->params[i].name.len,
                             1);
        mg_sigv4_put(s, "=", 1);
        mg_sigv4_put_encoded(s, c->params[i].value.p,
                             c->params[i].value.len, 1);
    }

    mg_sigv4_put(s, "\n", 1);

    /* CanonicalHeaders: "name:v1,v2\n" per distinct name */

    prev = NULL;

    for (i = 0; i < r->nheaders; i++) {
        h = &r->headers[c->hidx[i]];

        if (prev && mg_sigv4_name_cmp(prev, h) == 0) {
            mg_sigv4_put(s, ",", 1);

        } else {
            if (prev) {
                mg_sigv4_put(s, "\n", 1);
            }

            mg_sigv4_put_encoded(s, h->name, h->name_len, -1);
            mg_sigv4_put(s, ":", 1);
        }

        mg_sigv4_put_value(s, h->value, h->value_len);
        prev = h;
    }

    if (prev) {
        mg_sigv4_put(s, "\n", 1);
    }

    mg_sigv4_put(s, "\n", 1);

    mg_sigv4_put_signed_headers(r, c, s);
    mg_sigv4_put(s, "\n", 1);

    mg_sigv4_put(s, r->payload_hash, r->payload_hash_len);
}


static void
mg_sigv4_put_signed_headers(const mg_sigv4_request_t *r,
    const mg_sigv4_canon_t *c, mg_sigv4_sink_t *s)
{
    size_t                    i;
    const mg_sigv4_header_t  *h, *prev;

    prev = NULL;

    for (i = 0; i < r->nheaders; i++) {
        h = &r->headers[c->hidx[i]];

        if (prev && mg_sigv4_name_cmp(prev, h) == 0) {
            continue;
        }

        if (prev) {
            mg_sigv4_put(s, ";", 1);
        }

        mg_sigv4_put_encoded(s, h->name, h->name_len, -1);
        prev = h;
    }
}


/*
 * A header value with leading and trailing whitespace dropped and inner
 * runs of it turned into one space, as the AWS SDKs do (a CR or LF counts
 * as whitespace, as in the JavaScript SDK).
 */

static void
mg_sigv4_put_value(mg_sigv4_sink_t *s, const char *v, size_t len)
{
    int     space, any;
    size_t  i, n;
    u_char  c, buf[128];

    n = 0;
    space = 0;
    any = 0;

    for (i = 0; i < len; i++) {
        c = (u_char) v[i];

        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            space = 1;
            continue;
        }

        if (n > sizeof(buf) - 2) {
            mg_sigv4_put(s, buf, n);
            n = 0;
        }

        if (space && any) {
            buf[n++] = ' ';
        }

        buf[n++] = c;
        space = 0;
        any = 1;
    }

    mg_sigv4_put(s, buf, n);
}


/*
 * Puts bytes URI-encoded (decode 0), percent-decoded first and then
 * encoded (decode 1, for query components), or merely lowercased
 * (decode -1, for header names).
 */

static void
mg_sigv4_put_encoded(mg_sigv4_sink_t *s, const char *p, size_t len,
    int decode)
{
    int     hi, lo;
    size_t  i, n;
    u_char  c, buf[128];

    n = 0;

    for (i = 0; i < len; i++) {
        c = (u_char) p[i];

        if (n > sizeof(buf) - 3) {
            mg_sigv4_put(s, buf, n);
            n = 0;
        }

        if (decode < 0) {
            buf[n++] = (c >= 'A' && c <= 'Z') ? (u_char) (c | 0x20) : c;
            continue;
        }

        if (decode && c == '%' && i + 2 < len) {
            hi = mg_sigv4_hexval((u_char) p[i + 1]);
            lo = mg_sigv4_hexval((u_char) p[i + 2]);

            if (hi >= 0 && lo >= 0) {
                c = (u_char) (hi << 4 | lo);
                i += 2;
            }
        }

        n += mg_sigv4_encode_byte(c, 1, buf + n);
    }

    mg_sigv4_put(s, buf, n);
}


static void
mg_sigv4_put(mg_sigv4_sink_t *s, const void *p, size_t len)
{
    if (len == 0) {
        return;
    }

    if (s->out && s->n < s->cap) {
        memcpy(s->out + s->n, p, (len < s->cap - s->n) ? len : s->cap - s->n);
    }

    s->n += len;

    if (s->md == NULL) {
        return;
    }

    if (s->staged + len > sizeof(s->stage)) {
        mg_sigv4_flush(s);

        if (len > sizeof(s->stage)) {
            if (EVP_DigestUpdate(s->md, p, len) != 1) {
                s->failed = 1;
            }

            return;
        }
    }

    memcpy(s->stage + s->staged, p, len);
    s->staged += len;
}


static void
mg_sigv4_flush(mg_sigv4_sink_t *s)
{
    if (s->md && s->staged) {
        if (EVP_DigestUpdate(s->md, s->stage, s->staged) != 1) {
            s->failed = 1;
        }

        s->staged = 0;
    }
}


/* header names compared as lowercase; a prefix sorts first */

static int
mg_sigv4_name_cmp(const mg_sigv4_header_t *a, const mg_sigv4_header_t *b)
{
    size_t  i, n;
    u_char  ca, cb;

    n = (a->name_len < b->name_len) ? a->name_len : b->name_len;

    for (i = 0; i < n; i++) {
        ca = (u_char) a->name[i];
        cb = (u_char) b->name[i];

        ca = (ca >= 'A' && ca <= 'Z') ? (u_char) (ca | 0x20) : ca;
        cb = (cb >= 'A' && cb <= 'Z') ? (u_char) (cb | 0x20) : cb;

        if (ca != cb) {
            return (int) ca - (int) cb;
        }
    }

    return (a->name_len > b->name_len) - (a->name_len < b->name_len);
}


static int
mg_sigv4_param_cmp(const mg_sigv4_param_t *a, const mg_sigv4_param_t *b)
{
    int  rc;

    rc = mg_sigv4_enc_cmp(&a->name, &b->name);

    if (rc) {
        return rc;
    }

    return mg_sigv4_enc_cmp(&a->value, &b->value);
}


/*
 * Compares the canonical encodings of two query components without
 * writing them anywhere: the order is that of the encoded bytes.
 */

static int
mg_sigv4_enc_cmp(const mg_sigv4_span_t *a, const mg_sigv4_span_t *b)
{
    int                  ca, cb;
    mg_sigv4_enc_iter_t  ia, ib;

    ia.p = (const u_char *) a->p;
    ia.end = ia.p + a->len;
    ia.npend = 0;
    ia.ipend = 0;

    ib.p = (const u_char *) b->p;
    ib.end = ib.p + b->len;
    ib.npend = 0;
    ib.ipend = 0;

    do {
        ca = mg_sigv4_enc_next(&ia);
        cb = mg_sigv4_enc_next(&ib);

    } while (ca == cb && ca >= 0);

    return ca - cb;
}


static int
mg_sigv4_enc_next(mg_sigv4_enc_iter_t *it)
{
    int     hi, lo;
    u_char  c;

    if (it->ipend < it->npend) {
        return it->pend[it->ipend++];
    }

    if (it->p == it->end) {
        return -1;
    }

    c = *it->p++;

    if (c == '%' && it->end - it->p >= 2) {
        hi = mg_sigv4_hexval(it->p[0]);
        lo = mg_sigv4_hexval(it->p[1]);

        if (hi >= 0 && lo >= 0) {
            c = (u_char) (hi << 4 | lo);
            it->p += 2;
        }
    }

    it->npend = mg_sigv4_encode_byte(c, 1, it->pend);
    it->ipend = 1;

    return it->pend[0];
}


static size_t
mg_sigv4_encode_byte(u_char c, int encode_slash, u_char *dst)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
        || c == '~' || (c == '/' && !encode_slash))
    {
        dst[0] = c;
        return 1;
    }

    dst[0] = '%';
    dst[1] = mg_sigv4_hexdigits[c >> 4];
    dst[2] = mg_sigv4_hexdigits[c & 0x0f];

    return 3;
}


static int
mg_sigv4_hexval(u_char c)
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


static void
mg_sigv4_hex(const u_char *in, size_t len, char *out)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        out[2 * i] = mg_sigv4_lowerhex[in[i] >> 4];
        out[2 * i + 1] = mg_sigv4_lowerhex[in[i] & 0x0f];
    }

    out[2 * len] = '\0';
}
