/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mg_keys.h"


/* bytes of a name or a list item repeated in an error message */
#define MG_KEY_ECHO_MAX  32

#define MG_KEY_HASH_PREFIX      "sha256:"
#define MG_KEY_HASH_PREFIX_LEN  (sizeof(MG_KEY_HASH_PREFIX) - 1)


typedef int (*mg_key_field_pt)(mg_key_t *k, const char *v, size_t len,
    char *err);


typedef struct {
    const char       *name;
    size_t            len;
    uint32_t          flag;
    mg_key_field_pt   set;
} mg_key_field_t;


static int mg_key_set_id(mg_key_t *k, const char *v, size_t len, char *err);
static int mg_key_set_tenant(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_hash(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_expires(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_models(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_endpoints(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_max_tokens(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_rpm(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_tpm(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_tpd(mg_key_t *k, const char *v, size_t len,
    char *err);
static int mg_key_set_budget(mg_key_t *k, const char *v, size_t len,
    char *err);

static int mg_key_number(const char *name, const char *v, size_t len,
    uint64_t max, uint64_t *out, char *err);
static int mg_key_name_ok(const char *p, size_t len);
static int mg_key_hex(u_char c);
static void mg_key_echo(char *out, const char *p, size_t len);
static int mg_key_error(char *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


#define mg_key_field(name, flag, set)                                         \
    { name, sizeof(name) - 1, flag, set }

static const mg_key_field_t  mg_key_fields[] = {
    mg_key_field("id", MG_KEY_F_ID, mg_key_set_id),
    mg_key_field("tenant", MG_KEY_F_TENANT, mg_key_set_tenant),
    mg_key_field("hash", MG_KEY_F_HASH, mg_key_set_hash),
    mg_key_field("expires", MG_KEY_F_EXPIRES, mg_key_set_expires),
    mg_key_field("models", MG_KEY_F_MODELS, mg_key_set_models),
    mg_key_field("endpoints", MG_KEY_F_ENDPOINTS, mg_key_set_endpoints),
    mg_key_field("max_tokens", MG_KEY_F_MAX_TOKENS, mg_key_set_max_tokens),
    mg_key_field("rpm", MG_KEY_F_RPM, mg_key_set_rpm),
    mg_key_field("tpm", MG_KEY_F_TPM, mg_key_set_tpm),
    mg_key_field("tpd", MG_KEY_F_TPD, mg_key_set_tpd),
    mg_key_field("budget", MG_KEY_F_BUDGET, mg_key_set_budget)
};


static const struct {
    const char  *name;
    size_t       len;
    uint32_t     bit;
} mg_key_endpoints[] = {
    { "chat", 4, MG_KEY_EP_CHAT },
    { "embeddings", 10, MG_KEY_EP_EMBEDDINGS },
    { "responses", 9, MG_KEY_EP_RESPONSES },
    { "conversations", 13, MG_KEY_EP_CONVERSATIONS },
    { "models", 6, MG_KEY_EP_MODELS }
};


_Static_assert(sizeof(mg_key_t) <= MG_KEY_SIZE_MAX,
               "mg_key_t outgrew MG_KEY_SIZE_MAX; update the documentation");

/* offsets and lengths of models are uint16_t */
_Static_assert(MG_KEY_MODELS_TEXT_MAX <= 65535, "models_text too large");


void
mg_key_init(mg_key_t *k)
{
    memset(k, 0, sizeof(mg_key_t));
}


int
mg_key_set(mg_key_t *k, const char *name, size_t name_len,
    const char *value, size_t value_len, char *err)
{
    char                   echo[MG_KEY_ECHO_MAX + 4];
    size_t                 i;
    const mg_key_field_t  *f;

    for (i = 0; i < sizeof(mg_key_fields) / sizeof(mg_key_fields[0]); i++) {
        f = &mg_key_fields[i];

        if (f->len != name_len || memcmp(f->name, name, name_len) != 0) {
            continue;
        }

        /* a repeated field is a mistake whichever value was meant */
        if (k->set & f->flag) {
            return mg_key_error(err, "field \"%s\" given twice", f->name);
        }

        if (value_len == 0) {
            return mg_key_error(err, "field \"%s\" is empty", f->name);
        }

        if (f->set(k, value, value_len, err) != MG_KEY_OK) {
            return MG_KEY_ERROR;
        }

        k->set |= f->flag;

        return MG_KEY_OK;
    }

    mg_key_echo(echo, name, name_len);

    return mg_key_error(err, "unknown field \"%s\"", echo);
}


int
mg_key_complete(const mg_key_t *k, char *err)
{
    if (!(k->set & MG_KEY_F_ID)) {
        return mg_key_error(err, "no id");
    }

    if (!(k->set & MG_KEY_F_TENANT)) {
        return mg_key_error(err, "no tenant");
    }

    if (!(k->set & MG_KEY_F_HASH)) {
        return mg_key_error(err, "no hash");
    }

    return MG_KEY_OK;
}


int
mg_key_parse_line(mg_key_t *k, const char *line, size_t len, char *err)
{
    char         echo[MG_KEY_ECHO_MAX + 4];
    size_t       n;
    const char  *p, *end, *tok, *eq;

    static const struct {
        const char  *name;
        size_t       len;
    } positional[] = { { "id", 2 }, { "tenant", 6 }, { "hash", 4 } };

    mg_key_init(k);

    if (len && line[len - 1] == '\n') {
        len--;

        if (len && line[len - 1] == '\r') {
            len--;
        }
    }

    if (len > MG_KEY_LINE_MAX) {
        return mg_key_error(err, "line longer than %d bytes",
                            MG_KEY_LINE_MAX);
    }

    p = line;
    end = line + len;

    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p == end || *p == '#') {
        return MG_KEY_SKIP;
    }

    for (n = 0; p < end; n++) {
        tok = p;

        while (p < end && *p != ' ' && *p != '\t') {
            p++;
        }

        if (n < 3) {
            if (mg_key_set(k, positional[n].name, positional[n].len, tok,
                           p - tok, err)
                != MG_KEY_OK)
            {
                return MG_KEY_ERROR;
            }

        } else {
            eq = memchr(tok, '=', p - tok);

            if (eq == NULL || eq == tok) {
                mg_key_echo(echo, tok, p - tok);
                return mg_key_error(err, "expected name=value, not \"%s\"",
                                    echo);
            }

            if (mg_key_set(k, tok, eq - tok, eq + 1, p - eq - 1, err)
                != MG_KEY_OK)
            {
                return MG_KEY_ERROR;
            }
        }

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }
    }

    if (n < 3) {
        return mg_key_error(err, "expected \"ID TENANT sha256:HEX "
                            "[name=value ...]\"");
    }

    return mg_key_complete(k, err);
}


/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant) */

static int64_t
mg_key_days(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = y / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


/* n digits at p as a number, or -1 */

static int64_t
mg_key_digits(const char *p, size_t n)
{
    size_t   i;
    int64_t  v;

    v = 0;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        v = v * 10 + (p[i] - '0');
    }

    return v;
}


int64_t
mg_key_parse_expires(const char *p, size_t len)
{
    int64_t  y, mo, d, h, mi, s, v, mdays;

    static const int  days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30,
                                 31 };

    if (len == 20 && p[4] == '-' && p[7] == '-' && p[10] == 'T'
        && p[13] == ':' && p[16] == ':' && p[19] == 'Z')
    {
        y = mg_key_digits(p, 4);
        mo = mg_key_digits(p + 5, 2);
        d = mg_key_digits(p + 8, 2);
        h = mg_key_digits(p + 11, 2);
        mi = mg_key_digits(p + 14, 2);
        s = mg_key_digits(p + 17, 2);

        if (y < 1970 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23
            || mi < 0 || mi > 59 || s < 0 || s > 59)
        {
            return -1;
        }

        mdays = days[mo - 1];

        if (mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) {
            mdays = 29;
        }

        if (d > mdays) {
            return -1;
        }

        v = mg_key_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;

        /* 0 means "never"; the epoch itself is no useful expiry */
        return v > 0 ? v : -1;
    }

    /* 12 digits hold MG_KEY_EXPIRES_MAX; more would be out of range */
    if (len == 0 || len > 12) {
        return -1;
    }

    v = mg_key_digits(p, len);

    if (v < 1 || v > MG_KEY_EXPIRES_MAX) {
        return -1;
    }

    return v;
}


int
mg_key_presented_ok(const char *key, size_t len)
{
    size_t  i;

    if (len < MG_KEY_PRESENTED_MIN || len > MG_KEY_PRESENTED_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((u_char) key[i] <= 0x20 || (u_char) key[i] >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


/* one context for the process, as in mg_sigv4.c: no allocation per key */

int
mg_key_hash(const char *key, size_t len, u_char *out)
{
    unsigned int        n;
    static EVP_MD_CTX  *ctx;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    static EVP_MD      *md;

    if (md == NULL) {
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (md == NULL) {
            return -1;
        }
    }
#else
    const EVP_MD       *md = EVP_sha256();
#endif

    if (ctx == NULL) {
        ctx = EVP_MD_CTX_new();
        if (ctx == NULL) {
            return -1;
        }
    }

    if (EVP_DigestInit_ex(ctx, md, NULL) != 1
        || (len && EVP_DigestUpdate(ctx, key, len) != 1)
        || EVP_DigestFinal_ex(ctx, out, &n) != 1
        || n != MG_KEY_HASH_LEN)
    {
        return -1;
    }

    return 0;
}


int
mg_key_hash_eq(const u_char *a, const u_char *b)
{
    return CRYPTO_memcmp(a, b, MG_KEY_HASH_LEN) == 0;
}


int
mg_key_model_allowed(const mg_key_t *k, const char *model, size_t len)
{
    size_t                 i;
    const mg_key_model_t  *m;

    if (k->nmodels == 0) {
        return 1;
    }

    for (i = 0; i < k->nmodels; i++) {
        m = &k->models[i];

        if (m->prefix ? len >= m->len : len == m->len) {
            if (memcmp(model, k->models_text + m->off, m->len) == 0) {
                return 1;
            }
        }
    }

    return 0;
}


uint32_t
mg_key_endpoint_bit(const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < sizeof(mg_key_endpoints) / sizeof(mg_key_endpoints[0]);
         i++)
    {
        if (mg_key_endpoints[i].len == len
            && memcmp(mg_key_endpoints[i].name, name, len) == 0)
        {
            return mg_key_endpoints[i].bit;
        }
    }

    return 0;
}


uint32_t
mg_key_endpoint_of(mg_endpoint_t ep)
{
    switch (ep) {

    case MG_EP_CHAT:
        return MG_KEY_EP_CHAT;

    case MG_EP_EMBEDDINGS:
        return MG_KEY_EP_EMBEDDINGS;

    case MG_EP_MODELS:
    case MG_EP_MODEL:
        return MG_KEY_EP_MODELS;

    case MG_EP_RESPONSES:
    case MG_EP_RESPONSE:
        return MG_KEY_EP_RESPONSES;

    case MG_EP_CONVERSATIONS:
    case MG_EP_CONVERSATION:
        return MG_KEY_EP_CONVERSATIONS;

    default:
        return 0;
    }
}


int
mg_key_endpoint_allowed(const mg_key_t *k, uint32_t bit)
{
    if (k->endpoints == 0) {
        return 1;
    }

    /* an endpoint without a bit is never among those a key lists */
    return bit != 0 && (k->endpoints & bit) == bit;
}


uint64_t
mg_key_tokens_over(const mg_key_t *k, uint64_t requested)
{
    if (k->max_tokens && requested > k->max_tokens) {
        return k->max_tokens;
    }

    return 0;
}


int
mg_key_expired(const mg_key_t *k, int64_t now)
{
    return k->expires != 0 && now >= k->expires;
}


/* the fields */

static int
mg_key_set_id(mg_key_t *k, const char *v, size_t len, char *err)
{
    if (!mg_key_name_ok(v, len)) {
        return mg_key_error(err, "id: expected 1-%d of A-Z a-z 0-9 . _ -",
                            MG_KEY_ID_MAX);
    }

    memcpy(k->id, v, len);
    k->id[len] = '\0';
    k->id_len = len;

    return MG_KEY_OK;
}


static int
mg_key_set_tenant(mg_key_t *k, const char *v, size_t len, char *err)
{
    if (!mg_key_name_ok(v, len)) {
        return mg_key_error(err, "tenant: expected 1-%d of A-Z a-z 0-9 "
                            ". _ -", MG_KEY_ID_MAX);
    }

    memcpy(k->tenant, v, len);
    k->tenant[len] = '\0';
    k->tenant_len = len;

    return MG_KEY_OK;
}


static int
mg_key_set_hash(mg_key_t *k, const char *v, size_t len, char *err)
{
    int     hi, lo;
    size_t  i;
    u_char  hash[MG_KEY_HASH_LEN];

    if (len != MG_KEY_HASH_PREFIX_LEN + 2 * MG_KEY_HASH_LEN
        || memcmp(v, MG_KEY_HASH_PREFIX, MG_KEY_HASH_PREFIX_LEN) != 0)
    {
        goto invalid;
    }

    v += MG_KEY_HASH_PREFIX_LEN;

    for (i = 0; i < MG_KEY_HASH_LEN; i++) {
        hi = mg_key_hex(v[2 * i]);
        lo = mg_key_hex(v[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            goto invalid;
        }

        hash[i] = (u_char) (hi << 4 | lo);
    }

    memcpy(k->hash, hash, MG_KEY_HASH_LEN);

    return MG_KEY_OK;

invalid:

    /* the value is not repeated: it may be a key pasted by mistake */
    return mg_key_error(err, "hash: expected sha256: and %d hex digits",
                        2 * MG_KEY_HASH_LEN);
}


static int
mg_key_set_expires(mg_key_t *k, const char *v, size_t len, char *err)
{
    int64_t  t;

    t = mg_key_parse_expires(v, len);

    if (t < 0) {
        return mg_key_error(err, "expires: expected YYYY-MM-DDTHH:MM:SSZ "
                            "(UTC) or unix seconds");
    }

    k->expires = t;

    return MG_KEY_OK;
}


static int
mg_key_set_models(mg_key_t *k, const char *v, size_t len, char *err)
{
    size_t          i, n, start, plen;
    mg_key_model_t  models[MG_KEY_MODELS_MAX];

    if (len > MG_KEY_MODELS_TEXT_MAX) {
        return mg_key_error(err, "models: longer than %d bytes",
                            MG_KEY_MODELS_TEXT_MAX);
    }

    n = 0;
    start = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && v[i] != ',') {
            if ((u_char) v[i] <= 0x20 || (u_char) v[i] >= 0x7f) {
                return mg_key_error(err, "models: not printable ASCII "
                                    "at byte %zu", i + 1);
            }

            if (v[i] == '*' && i + 1 < len && v[i + 1] != ',') {
                return mg_key_error(err, "models: '*' only ends a pattern");
            }

            continue;
        }

        plen = i - start;

        if (plen == 0) {
            return mg_key_error(err, "models: an empty pattern");
        }

        if (plen > MG_KEY_MODEL_MAX) {
            return mg_key_error(err, "models: a pattern longer than %d "
                                "bytes", MG_KEY_MODEL_MAX);
        }

        if (n == MG_KEY_MODELS_MAX) {
            return mg_key_error(err, "models: more than %d patterns",
                                MG_KEY_MODELS_MAX);
        }

        models[n].prefix = (v[i - 1] == '*');
        models[n].off = start;
        models[n].len = plen - models[n].prefix;
        n++;

        start = i + 1;
    }

    memcpy(k->models_text, v, len);
    memcpy(k->models, models, n * sizeof(mg_key_model_t));
    k->models_len = len;
    k->nmodels = n;

    return MG_KEY_OK;
}


static int
mg_key_set_endpoints(mg_key_t *k, const char *v, size_t len, char *err)
{
    char        echo[MG_KEY_ECHO_MAX + 4];
    size_t      i, start;
    uint32_t    bit, mask;

    mask = 0;
    start = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && v[i] != ',') {
            continue;
        }

        bit = mg_key_endpoint_bit(v + start, i - start);

        if (bit == 0) {
            mg_key_echo(echo, v + start, i - start);
            return mg_key_error(err, "endpoints: unknown endpoint \"%s\" "
                                "(chat, embeddings, responses, "
                                "conversations, models)", echo);
        }

        mask |= bit;
        start = i + 1;
    }

    k->endpoints = mask;

    return MG_KEY_OK;
}


static int
mg_key_set_max_tokens(mg_key_t *k, const char *v, size_t len, char *err)
{
    return mg_key_number("max_tokens", v, len, MG_KEY_MAX_TOKENS_MAX,
                         &k->max_tokens, err);
}


static int
mg_key_set_rpm(mg_key_t *k, const char *v, size_t len, char *err)
{
    return mg_key_number("rpm", v, len, MG_KEY_LIMIT_MAX, &k->rpm, err);
}


static int
mg_key_set_tpm(mg_key_t *k, const char *v, size_t len, char *err)
{
    return mg_key_number("tpm", v, len, MG_KEY_LIMIT_MAX, &k->tpm, err);
}


static int
mg_key_set_tpd(mg_key_t *k, const char *v, size_t len, char *err)
{
    return mg_key_number("tpd", v, len, MG_KEY_LIMIT_MAX, &k->tpd, err);
}


static int
mg_key_set_budget(mg_key_t *k, const char *v, size_t len, char *err)
{
    return mg_key_number("budget", v, len, MG_KEY_LIMIT_MAX, &k->budget,
                         err);
}


/* decimal 1 .. max; 0 is refused, since an absent field means no limit */

static int
mg_key_number(const char *name, const char *v, size_t len, uint64_t max,
    uint64_t *out, char *err)
{
    size_t    i;
    uint64_t  n;

    n = 0;

    for (i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            goto invalid;
        }

        n = n * 10 + (v[i] - '0');

        if (n > max) {
            goto invalid;
        }
    }

    if (n == 0) {
        goto invalid;
    }

    *out = n;

    return MG_KEY_OK;

invalid:

    return mg_key_error(err, "%s: expected an integer 1..%llu", name,
                        (unsigned long long) max);
}


static int
mg_key_name_ok(const char *p, size_t len)
{
    size_t  i;
    u_char  c;

    if (len == 0 || len > MG_KEY_ID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = p[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static int
mg_key_hex(u_char c)
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


/*
 * A bounded, printable copy of what the input said, for a message: a
 * control byte could otherwise reach a log line as it is.
 */

static void
mg_key_echo(char *out, const char *p, size_t len)
{
    size_t  i, n;

    n = len > MG_KEY_ECHO_MAX ? MG_KEY_ECHO_MAX : len;

    for (i = 0; i < n; i++) {
        out[i] = ((u_char) p[i] > 0x20 && (u_char) p[i] < 0x7f
                  && p[i] != '"') ? p[i] : '?';
    }

    if (n < len) {
        memcpy(out + n, "...", 3);
        n += 3;
    }

    out[n] = '\0';
}


static int
mg_key_error(char *err, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(err, MG_KEY_ERR_LEN, fmt, args);
    va_end(args);

    return MG_KEY_ERROR;
}
