/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Tree-free translation of the common chat request (see mg_xfast.h).  The
 * body is validated first, so the walk below trusts its syntax; it checks
 * only the shape, and declines at the first thing it does not know.  The
 * token helpers here serve the answers too (mg_xfast_answer.c).
 */


#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"
#include "mg_json.h"
#include "mg_xfast.h"
#include "mg_xfast_int.h"


static const char *mg_xf_skip(const char *p, const char *end);
static int mg_xf_top(mg_xf_req_t *rq, const char *p, const char *end);
static int mg_xf_messages(void *data, mg_xf_iter_t *it);
static int mg_xf_message(mg_xf_req_t *rq, mg_xf_iter_t *it);
static int mg_xf_key(mg_xf_iter_t *it, mg_xf_tok_t *key);
static void mg_xf_past(mg_xf_iter_t *it, const char *q);
static int mg_xf_count(const mg_xf_tok_t *t);


int
mg_xf_request(const mg_xf_opts_t *o, const char *body, size_t len,
    mg_buf_t *out, int *stream, int *include_usage)
{
    int           rc;
    double        temp;
    size_t        start, vlen, keep;
    mg_xf_tok_t  *max, *so;
    mg_xf_req_t   rq;

    if (body == NULL
        || (!o->valid
            && mg_json_scan(body, len, NULL, 0, 64, NULL) != MG_JSON_OK))
    {
        return MG_XF_DECLINED;
    }

    memset(&rq, 0, sizeof(mg_xf_req_t));

    rc = mg_xf_top(&rq, body, body + len);
    if (rc != MG_X_OK) {
        goto done;
    }

    rc = MG_XF_DECLINED;

    if (rq.m[MG_XF_MESSAGES].p == NULL) {
        goto done;
    }

    /* max_completion_tokens replaces max_tokens, as in the translators */

    max = &rq.m[MG_XF_MAX_COMPLETION];
    if (max->p == NULL) {
        max = &rq.m[MG_XF_MAX_TOKENS];
    }

    if (max->p && !mg_xf_count(max)) {
        goto done;
    }

    temp = 0;

    if (rq.m[MG_XF_TEMPERATURE].p
        && mg_xf_number(&rq.m[MG_XF_TEMPERATURE], &temp) != MG_X_OK)
    {
        goto done;
    }

    if (rq.m[MG_XF_TOP_P].p
        && mg_xf_number(&rq.m[MG_XF_TOP_P], NULL) != MG_X_OK)
    {
        goto done;
    }

    if (rq.m[MG_XF_STREAM].p && !mg_xf_is(&rq.m[MG_XF_STREAM], "true")
        && !mg_xf_is(&rq.m[MG_XF_STREAM], "false"))
    {
        goto done;
    }

    so = &rq.m[MG_XF_STREAM_OPTIONS];

    if (so->p && so->p[0] != '{') {
        goto done;
    }

    /* the members of any shape must be what jansson can read */

    if ((so->p && !mg_xf_parsable(so->p, so->len))
        || (rq.m[MG_XF_MODEL].p
            && !mg_xf_parsable(rq.m[MG_XF_MODEL].p, rq.m[MG_XF_MODEL].len)))
    {
        goto done;
    }

    keep = out->len;

    /* one allocation: the texts plus a little per message */

    if (mg_buf_reserve(out, len + 64 * rq.ntexts + 512) != MG_X_OK) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = (o->provider == MG_XF_ANTHROPIC)
         ? mg_xf_anthropic(o, &rq, max, temp, out)
         : mg_xf_bedrock(o, &rq, max, temp, out);

    if (rc != MG_X_OK) {
        out->len = keep;
        goto done;
    }

    /* over the bound: the full translator says so */

    if (out->len - keep > mg_x_out_max(o->max_out)) {
        out->len = keep;
        rc = MG_XF_DECLINED;
        goto done;
    }

    *stream = mg_xf_is(&rq.m[MG_XF_STREAM], "true");
    *include_usage = 0;

    if (so->p
        && mg_json_member(so->p, so->len, "include_usage", 13, &start, &vlen)
           == MG_JSON_TRUE)
    {
        *include_usage = 1;
    }

done:

    free(rq.texts);

    return rc;
}


int
mg_xf_try(int provider, const char *model, size_t model_len,
    long default_max_tokens, size_t max_out, const char *body, size_t len,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err)
{
    int           rc;
    mg_xf_opts_t  o;

    o.provider = provider;
    o.model = model;
    o.model_len = model_len;
    o.default_max_tokens = default_max_tokens;
    o.valid = 0;
    o.max_out = max_out;

    rc = mg_xf_request(&o, body, len, out, stream, include_usage);

    return (rc == MG_X_NOMEM) ? mg_x_nomem(err) : rc;
}


const char *
mg_xf_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/* past the (valid) value at p */

static const char *
mg_xf_skip(const char *p, const char *end)
{
    int          depth;
    const char  *q, *r;

    depth = 0;

    do {
        switch (*p) {

        case '"':
            for (q = p + 1; ; q = r + 1) {
                r = memchr(q, '"', end - q);
                if (r == NULL) {
                    return end;
                }

                /* a quote after an odd run of backslashes is escaped */

                for (q = r; q > p + 1 && q[-1] == '\\'; q--) { /* void */ }

                if ((r - q) % 2 == 0) {
                    break;
                }
            }

            p = r + 1;
            break;

        case '{':
        case '[':
            depth++;
            p++;
            break;

        case '}':
        case ']':
            depth--;
            p++;
            break;

        case ',':
        case ':':
        case ' ':
        case '\t':
        case '\n':
        case '\r':
            p++;
            break;

        default:

            /* a number or a literal */

            while (p < end && *p != ',' && *p != '}' && *p != ']'
                   && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            {
                p++;
            }
        }

    } while (depth > 0 && p < end);

    return p;
}


/*
 * The members of an object named in names[0..n) into m[] (m[k].p NULL if
 * absent), each at most once and named without escapes; others are
 * skipped, or (strict) make it declined.
 */

int
mg_xf_pick(const mg_xf_tok_t *obj, const char **names, size_t n, int strict,
    mg_xf_tok_t *m, const mg_xf_walk_t *walk)
{
    int           rc;
    size_t        k;
    unsigned      seen;
    mg_xf_tok_t   key, v;
    mg_xf_iter_t  it;

    memset(m, 0, n * sizeof(mg_xf_tok_t));
    seen = 0;

    mg_xf_open(&it, obj);

    while (mg_xf_key(&it, &key)) {
        if (memchr(key.p, '\\', key.len)) {
            return MG_XF_DECLINED;
        }

        if (walk && key.len == strlen(names[walk->k])
            && memcmp(names[walk->k], key.p, key.len) == 0
            && it.p < it.end && *it.p == '[' && !(seen & (1u << walk->k)))
        {
            v.p = it.p;

            rc = walk->handler(walk->data, &it);
            if (rc != MG_X_OK) {
                return rc;
            }

            v.len = it.p - v.p;
            mg_xf_past(&it, it.p);

            seen |= 1u << walk->k;
            m[walk->k] = v;
            continue;
        }

        if (!mg_xf_elem(&it, &v)) {
            break;
        }

        for (k = 0; k < n; k++) {
            if (strlen(names[k]) == key.len
                && memcmp(names[k], key.p, key.len) == 0)
            {
                break;
            }
        }

        if (k == n) {
            if (strict) {
                return MG_XF_DECLINED;
            }

            continue;
        }

        if (seen & (1u << k)) {
            return MG_XF_DECLINED;
        }

        seen |= 1u << k;
        m[k] = v;
    }

    return MG_X_OK;
}


/* the top-level members: known ones, each once */

static int
mg_xf_top(mg_xf_req_t *rq, const char *p, const char *end)
{
    int           k, rc;
    mg_xf_tok_t   v;
    mg_xf_walk_t  walk;

    static const char  *names[MG_XF_NMEMBERS] = {
        "model", "messages", "max_completion_tokens", "max_tokens",
        "temperature", "top_p", "stream", "stream_options"
    };

    v.p = mg_xf_ws(p, end);
    v.len = end - v.p;

    if (v.len == 0 || *v.p != '{') {
        return MG_XF_DECLINED;
    }

    walk.k = MG_XF_MESSAGES;
    walk.handler = mg_xf_messages;
    walk.data = rq;

    rc = mg_xf_pick(&v, names, MG_XF_NMEMBERS, 1, rq->m, &walk);
    if (rc != MG_X_OK) {
        return rc;
    }

    /* messages that are not an array: declined below, as absent ones */

    if (rq->m[MG_XF_MESSAGES].p && rq->m[MG_XF_MESSAGES].p[0] != '['
        && !mg_xf_is(&rq->m[MG_XF_MESSAGES], "null"))
    {
        return MG_XF_DECLINED;
    }

    /* null is absent, as the translators take it */

    for (k = 0; k < MG_XF_NMEMBERS; k++) {
        if (mg_xf_is(&rq->m[k], "null")) {
            rq->m[k].p = NULL;
        }
    }

    return MG_X_OK;
}


/*
 * The messages (the array at it->p): objects of a known role and a string
 * content, each read in place; it->p is left past the array.
 */

static int
mg_xf_messages(void *data, mg_xf_iter_t *it)
{
    mg_xf_req_t *rq = data;

    int  rc;

    it->p = mg_xf_ws(it->p + 1, it->end);

    while (it->p < it->end && *it->p != ']') {
        if (*it->p != '{') {
            return MG_XF_DECLINED;
        }

        rc = mg_xf_message(rq, it);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (it->p == it->end) {
        return MG_XF_DECLINED;
    }

    it->p++;

    return MG_X_OK;
}


/* one message, the object at it->p; it->p is left past it and a comma */

static int
mg_xf_message(mg_xf_req_t *rq, mg_xf_iter_t *it)
{
    int            r;
    mg_xf_tok_t    key, v, role, content;
    mg_xf_iter_t   m;
    mg_xf_text_t  *texts;

    role.p = NULL;
    content.p = NULL;
    content.len = 0;

    m.end = it->end;
    m.p = mg_xf_ws(it->p + 1, it->end);

    while (mg_xf_next(&m, &key, &v)) {
        if (key.len == 4 && memcmp(key.p, "role", 4) == 0
            && role.p == NULL)
        {
            role = v;

        } else if (key.len == 7 && memcmp(key.p, "content", 7) == 0
                   && content.p == NULL)
        {
            content = v;

        } else {
            return MG_XF_DECLINED;
        }
    }

    if (m.p == m.end || *m.p != '}') {
        return MG_XF_DECLINED;
    }

    mg_xf_past(it, m.p + 1);

    if (role.p == NULL || content.p == NULL) {
        return MG_XF_DECLINED;
    }

    if (mg_xf_is(&role, "\"system\"") || mg_xf_is(&role, "\"developer\"")) {
        r = MG_XF_SYSTEM;

    } else if (mg_xf_is(&role, "\"user\"")) {
        r = MG_XF_USER;

    } else if (mg_xf_is(&role, "\"assistant\"")) {
        r = MG_XF_ASSISTANT;

    } else {
        return MG_XF_DECLINED;
    }

    if (mg_xf_is(&content, "null") || mg_xf_is(&content, "\"\"")) {

        /* no text: the translators skip such a message */
        return MG_X_OK;
    }

    if (content.p[0] != '"') {
        return MG_XF_DECLINED;
    }

    if (rq->ntexts == rq->cap) {
        rq->cap = rq->cap ? 2 * rq->cap : 32;

        texts = realloc(rq->texts, rq->cap * sizeof(mg_xf_text_t));
        if (texts == NULL) {
            return MG_X_NOMEM;
        }

        rq->texts = texts;
    }

    rq->texts[rq->ntexts].role = r;
    rq->texts[rq->ntexts++].text = content;

    return MG_X_OK;
}


/* iteration over a (valid) object or array */

void
mg_xf_open(mg_xf_iter_t *it, const mg_xf_tok_t *v)
{
    it->end = v->p + v->len;
    it->p = mg_xf_ws(v->p + 1, it->end);
}


/* the next element; 0 at the end */

int
mg_xf_elem(mg_xf_iter_t *it, mg_xf_tok_t *v)
{
    if (it->p >= it->end || *it->p == ']' || *it->p == '}') {
        return 0;
    }

    v->p = it->p;
    it->p = mg_xf_skip(it->p, it->end);
    v->len = it->p - v->p;

    mg_xf_past(it, it->p);

    return 1;
}


/* the next member's name as written (no quotes); it->p is left at its value */

static int
mg_xf_key(mg_xf_iter_t *it, mg_xf_tok_t *key)
{
    if (it->p >= it->end || *it->p != '"') {
        return 0;
    }

    key->p = it->p + 1;
    it->p = mg_xf_skip(it->p, it->end);
    key->len = it->p - 1 - key->p;

    it->p = mg_xf_ws(it->p, it->end);
    it->p = mg_xf_ws(it->p + 1, it->end);       /* the colon */

    return 1;
}


/* the next member: its name and its value */

int
mg_xf_next(mg_xf_iter_t *it, mg_xf_tok_t *key, mg_xf_tok_t *v)
{
    return mg_xf_key(it, key) && mg_xf_elem(it, v);
}


/* on past a value that ends at q, and the comma after it */

static void
mg_xf_past(mg_xf_iter_t *it, const char *q)
{
    it->p = mg_xf_ws(q, it->end);

    if (it->p < it->end && *it->p == ',') {
        it->p = mg_xf_ws(it->p + 1, it->end);
    }
}


/*
 * Whether jansson reads the (valid) JSON [p, p + len) as the scanner
 * does: it refuses integers beyond 64 bits, reals that overflow and
 * member names holding NUL, which the scanner accepts.  Integers of more
 * than 18 digits are taken as refused, to stay on the safe side.
 */

int
mg_xf_parsable(const char *p, size_t len)
{
    int          real;
    char         buf[64];
    double       v;
    const char  *end, *q, *s;

    end = p + len;

    while (p < end) {

        if (*p == '"') {
            s = p;
            p = mg_xf_skip(p, end);

            q = mg_xf_ws(p, end);

            if (q < end && *q == ':' && p - s > 6) {
                for (q = s; q < p - 6; q++) {
                    q = memchr(q, '\\', p - 6 - q);

                    if (q == NULL) {
                        break;
                    }

                    if (memcmp(q, "\\u0000", 6) == 0) {
                        return 0;
                    }
                }
            }

            continue;
        }

        if (*p != '-' && (*p < '0' || *p > '9')) {
            p++;
            continue;
        }

        real = 0;

        for (q = p; q < end; q++) {
            if (*q == '.' || *q == 'e' || *q == 'E') {
                real = 1;

            } else if (*q != '-' && *q != '+' && (*q < '0' || *q > '9')) {
                break;
            }
        }

        if (!real && q - p - (*p == '-') > 18) {
            return 0;
        }

        if (real) {
            if ((size_t) (q - p) >= sizeof(buf)) {
                return 0;
            }

            memcpy(buf, p, q - p);
            buf[q - p] = '\0';

            v = strtod(buf, NULL);

            if (isinf(v)) {
                return 0;
            }
        }

        p = q;
    }

    return 1;
}


int
mg_xf_is(const mg_xf_tok_t *t, const char *s)
{
    size_t  n;

    n = strlen(s);

    return t->p && t->len == n && memcmp(t->p, s, n) == 0;
}


/*
 * A number jansson reads the same way: no integer beyond 18 digits (it
 * refuses those over 64 bits) and no real that overflows.
 */

int
mg_xf_number(const mg_xf_tok_t *t, double *d)
{
    char    buf[48];
    char   *e;
    double  v;

    if (t->len >= sizeof(buf)
        || !(t->p[0] == '-' || (t->p[0] >= '0' && t->p[0] <= '9')))
    {
        return MG_XF_DECLINED;
    }

    memcpy(buf, t->p, t->len);
    buf[t->len] = '\0';

    if (strpbrk(buf, ".eE") == NULL && t->len > 18) {
        return MG_XF_DECLINED;
    }

    errno = 0;
    v = strtod(buf, &e);

    if (*e != '\0' || isinf(v)) {
        return MG_XF_DECLINED;
    }

    if (d) {
        *d = v;
    }

    return MG_X_OK;
}


/* a positive integer, as max_tokens must be */

static int
mg_xf_count(const mg_xf_tok_t *t)
{
    size_t  i;

    if (t->len == 0 || t->len > 18 || t->p[0] < '1' || t->p[0] > '9') {
        return 0;
    }

    for (i = 1; i < t->len; i++) {
        if (t->p[i] < '0' || t->p[i] > '9') {
            return 0;
        }
    }

    return 1;
}
