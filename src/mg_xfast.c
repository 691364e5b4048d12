/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Tree-free translation of the common chat request (see mg_xfast.h).  The
 * body is validated first, so the walk below trusts its syntax; it checks
 * only the shape, and declines at the first thing it does not know.
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


#define MG_XF_SYSTEM     0
#define MG_XF_USER       1
#define MG_XF_ASSISTANT  2


/* the top-level members the path knows, as bits */
enum {
    MG_XF_MODEL = 0,
    MG_XF_MESSAGES,
    MG_XF_MAX_COMPLETION,
    MG_XF_MAX_TOKENS,
    MG_XF_TEMPERATURE,
    MG_XF_TOP_P,
    MG_XF_STREAM,
    MG_XF_STREAM_OPTIONS,
    MG_XF_NMEMBERS
};


typedef struct {
    const char  *p;             /* a value's raw bytes; NULL: absent */
    size_t       len;
} mg_xf_tok_t;


/* one text of the conversation, by role, as the client escaped it */
typedef struct {
    int          role;
    mg_xf_tok_t  text;          /* the string token, quotes included */
} mg_xf_text_t;


typedef struct {
    const char  *p;
    const char  *end;
} mg_xf_iter_t;


typedef struct {
    mg_xf_tok_t     m[MG_XF_NMEMBERS];
    mg_xf_text_t   *texts;
    size_t          ntexts;
    size_t          cap;
} mg_xf_req_t;


/*
 * A member's value read in place while its object is picked, so that the
 * bulk of a body (the messages) is walked once instead of being skipped
 * first and read after; it leaves it->p at the value's end.
 */

typedef struct {
    size_t          k;              /* the member, an index in names[] */
    int           (*handler)(void *data, mg_xf_iter_t *it);
    void           *data;
} mg_xf_walk_t;


static const char *mg_xf_ws(const char *p, const char *end);
static const char *mg_xf_skip(const char *p, const char *end);
static int mg_xf_pick(const mg_xf_tok_t *obj, const char **names, size_t n,
    int strict, mg_xf_tok_t *m, const mg_xf_walk_t *walk);
static int mg_xf_top(mg_xf_req_t *rq, const char *p, const char *end);
static int mg_xf_messages(void *data, mg_xf_iter_t *it);
static int mg_xf_message(mg_xf_req_t *rq, mg_xf_iter_t *it);
static void mg_xf_open(mg_xf_iter_t *it, const mg_xf_tok_t *v);
static int mg_xf_elem(mg_xf_iter_t *it, mg_xf_tok_t *v);
static int mg_xf_key(mg_xf_iter_t *it, mg_xf_tok_t *key);
static int mg_xf_next(mg_xf_iter_t *it, mg_xf_tok_t *key, mg_xf_tok_t *v);
static void mg_xf_past(mg_xf_iter_t *it, const char *q);
static int mg_xf_is(const mg_xf_tok_t *t, const char *s);
static int mg_xf_number(const mg_xf_tok_t *t, double *d);
static int mg_xf_count(const mg_xf_tok_t *t);
static int mg_xf_anthropic(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out);
static int mg_xf_bedrock(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out);
static int mg_xf_params(mg_xf_req_t *rq, int provider, double temp,
    int *first, mg_buf_t *out);
static int mg_xf_blocks(mg_xf_req_t *rq, size_t from, size_t to,
    const char *open, size_t open_len, mg_buf_t *out);


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


static const char *
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

static int
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

static void
mg_xf_open(mg_xf_iter_t *it, const mg_xf_tok_t *v)
{
    it->end = v->p + v->len;
    it->p = mg_xf_ws(v->p + 1, it->end);
}


/* the next element; 0 at the end */

static int
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

static int
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


static int
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

static int
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


#define mg_xf_lit(out, s)  mg_buf_append(out, s, sizeof(s) - 1)


/*
 * Anthropic: system texts to "system" (one as a string, more as text
 * blocks), consecutive turns of one role merged, a lone text as a string.
 */

static int
mg_xf_anthropic(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out)
{
    int     first;
    size_t  i, j, nsys, n;
    char    model[512];

    static const char  block[] = "{\"type\":\"text\",\"text\":";

    if (o->model == NULL || o->model_len == 0) {
        return MG_XF_DECLINED;
    }

    for (i = 0, n = 0; i < rq->ntexts; i++) {
        n += (rq->texts[i].role != MG_XF_SYSTEM);
    }

    if (n == 0) {
        return MG_XF_DECLINED;
    }

    n = mg_json_escape(model, sizeof(model), o->model, o->model_len);

    if (n >= sizeof(model)) {
        return MG_XF_DECLINED;
    }

    if (mg_xf_lit(out, "{\"model\":\"") != MG_X_OK
        || mg_buf_append(out, model, n) != MG_X_OK
        || mg_xf_lit(out, "\",\"max_tokens\":") != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    if (max->p) {
        if (mg_buf_append(out, max->p, max->len) != MG_X_OK) {
            return MG_X_NOMEM;
        }

    } else if (mg_buf_int(out, o->default_max_tokens) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    for (i = 0, nsys = 0; i < rq->ntexts; i++) {
        nsys += (rq->texts[i].role == MG_XF_SYSTEM);
    }

    if (nsys) {
        if (mg_xf_lit(out, ",\"system\":") != MG_X_OK) {
            return MG_X_NOMEM;
        }

        if (nsys > 1 && mg_xf_lit(out, "[") != MG_X_OK) {
            return MG_X_NOMEM;
        }

        for (i = 0, j = 0; i < rq->ntexts; i++) {
            if (rq->texts[i].role != MG_XF_SYSTEM) {
                continue;
            }

            if ((j++ && mg_xf_lit(out, ",") != MG_X_OK)
                || (nsys > 1 && mg_xf_lit(out, block) != MG_X_OK)
                || mg_buf_append(out, rq->texts[i].text.p,
                                 rq->texts[i].text.len)
                   != MG_X_OK
                || (nsys > 1 && mg_xf_lit(out, "}") != MG_X_OK))
            {
                return MG_X_NOMEM;
            }
        }

        if (nsys > 1 && mg_xf_lit(out, "]") != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    if (mg_xf_lit(out, ",\"messages\":[") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    first = 1;

    for (i = 0; i < rq->ntexts; i = j) {
        if (rq->texts[i].role == MG_XF_SYSTEM) {
            j = i + 1;
            continue;
        }

        /* the turn runs until the other role speaks */

        for (j = i + 1, n = 1; j < rq->ntexts; j++) {
            if (rq->texts[j].role == MG_XF_SYSTEM) {
                continue;
            }

            if (rq->texts[j].role != rq->texts[i].role) {
                break;
            }

            n++;
        }

        if ((!first && mg_xf_lit(out, ",") != MG_X_OK)
            || (rq->texts[i].role == MG_XF_USER
                ? mg_xf_lit(out, "{\"role\":\"user\",\"content\":")
                : mg_xf_lit(out, "{\"role\":\"assistant\",\"content\":"))
               != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 0;

        if (n == 1) {
            if (mg_buf_append(out, rq->texts[i].text.p,
                              rq->texts[i].text.len)
                != MG_X_OK)
            {
                return MG_X_NOMEM;
            }

        } else if (mg_xf_blocks(rq, i, j, block, sizeof(block) - 1, out)
                   != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        if (mg_xf_lit(out, "}") != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    if (mg_xf_lit(out, "]") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    first = 0;

    if (mg_xf_params(rq, MG_XF_ANTHROPIC, temp, &first, out) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    if (rq->m[MG_XF_STREAM].p
        && (mg_xf_lit(out, ",\"stream\":") != MG_X_OK
            || mg_buf_append(out, rq->m[MG_XF_STREAM].p,
                             rq->m[MG_XF_STREAM].len)
               != MG_X_OK))
    {
        return MG_X_NOMEM;
    }

    return mg_xf_lit(out, "}");
}


/*
 * Converse: every text a block of its own, consecutive turns of one role
 * merged; the parameters in inferenceConfig.  Gemini's body has the same
 * shape under other names: contents of parts, the model's turns "model",
 * systemInstruction, generationConfig.
 */

static int
mg_xf_bedrock(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out)
{
    int          first, g;
    size_t       i, j, nsys, at;
    const char  *user, *model;

    static const char  block[] = "{\"text\":";

    for (i = 0, nsys = 0; i < rq->ntexts; i++) {
        nsys += (rq->texts[i].role == MG_XF_SYSTEM);
    }

    if (nsys == rq->ntexts) {
        return MG_XF_DECLINED;
    }

    g = (o->provider == MG_XF_GEMINI);

    user = g ? "{\"role\":\"user\",\"parts\":"
             : "{\"role\":\"user\",\"content\":";
    model = g ? "{\"role\":\"model\",\"parts\":"
              : "{\"role\":\"assistant\",\"content\":";

    if ((g ? mg_xf_lit(out, "{\"contents\":[")
           : mg_xf_lit(out, "{\"messages\":["))
        != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    first = 1;

    for (i = 0; i < rq->ntexts; i = j) {
        if (rq->texts[i].role == MG_XF_SYSTEM) {
            j = i + 1;
            continue;
        }

        for (j = i + 1; j < rq->ntexts; j++) {
            if (rq->texts[j].role != MG_XF_SYSTEM
                && rq->texts[j].role != rq->texts[i].role)
            {
                break;
            }
        }

        if ((!first && mg_xf_lit(out, ",") != MG_X_OK)
            || mg_buf_append(out, rq->texts[i].role == MG_XF_USER
                                  ? user : model,
                             strlen(rq->texts[i].role == MG_XF_USER
                                    ? user : model))
               != MG_X_OK
            || mg_xf_blocks(rq, i, j, block, sizeof(block) - 1, out)
               != MG_X_OK
            || mg_xf_lit(out, "}") != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 0;
    }

    if (mg_xf_lit(out, "]") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    if (nsys) {
        if ((g ? mg_xf_lit(out, ",\"systemInstruction\":{\"parts\":[")
               : mg_xf_lit(out, ",\"system\":["))
            != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        for (i = 0, j = 0; i < rq->ntexts; i++) {
            if (rq->texts[i].role != MG_XF_SYSTEM) {
                continue;
            }

            if ((j++ && mg_xf_lit(out, ",") != MG_X_OK)
                || mg_xf_lit(out, block) != MG_X_OK
                || mg_buf_append(out, rq->texts[i].text.p,
                                 rq->texts[i].text.len)
                   != MG_X_OK
                || mg_xf_lit(out, "}") != MG_X_OK)
            {
                return MG_X_NOMEM;
            }
        }

        if ((g ? mg_xf_lit(out, "]}") : mg_xf_lit(out, "]")) != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    if (max->p || o->default_max_tokens > 0
        || rq->m[MG_XF_TEMPERATURE].p || rq->m[MG_XF_TOP_P].p)
    {
        at = out->len;

        if ((g ? mg_xf_lit(out, ",\"generationConfig\":{")
               : mg_xf_lit(out, ",\"inferenceConfig\":{"))
            != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 1;

        if (max->p || o->default_max_tokens > 0) {
            if ((g ? mg_xf_lit(out, "\"maxOutputTokens\":")
                   : mg_xf_lit(out, "\"maxTokens\":"))
                != MG_X_OK)
            {
                return MG_X_NOMEM;
            }

            if (max->p) {
                if (mg_buf_append(out, max->p, max->len) != MG_X_OK) {
                    return MG_X_NOMEM;
                }

            } else if (mg_buf_int(out, o->default_max_tokens) != MG_X_OK) {
                return MG_X_NOMEM;
            }

            first = 0;
        }

        if (mg_xf_params(rq, o->provider, temp, &first, out) != MG_X_OK) {
            return MG_X_NOMEM;
        }

        if (first) {

            /* only a top_p of 1, left out: no empty inferenceConfig */

            out->len = at;

        } else if (mg_xf_lit(out, "}") != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    return mg_xf_lit(out, "}");
}


/*
 * temperature (OpenAI's 0..2 clamped to Anthropic's and Converse's 0..1,
 * Gemini's range is OpenAI's) and top_p (left out when 1, OpenAI's
 * default, but for Gemini: recent Claude models refuse both).
 */

static int
mg_xf_params(mg_xf_req_t *rq, int provider, double temp, int *first,
    mg_buf_t *out)
{
    double        top_p;
    mg_xf_tok_t  *t;

    t = &rq->m[MG_XF_TEMPERATURE];

    if (t->p) {
        if ((!*first && mg_xf_lit(out, ",") != MG_X_OK)
            || mg_xf_lit(out, "\"temperature\":") != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        *first = 0;

        if (provider != MG_XF_GEMINI && (temp < 0 || temp > 1)) {
            if (mg_buf_append(out, temp < 0 ? "0.0" : "1.0", 3) != MG_X_OK) {
                return MG_X_NOMEM;
            }

        } else if (mg_buf_append(out, t->p, t->len) != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    t = &rq->m[MG_XF_TOP_P];

    if (t->p && mg_xf_number(t, &top_p) == MG_X_OK
        && (top_p != 1 || provider == MG_XF_GEMINI))
    {
        if ((!*first && mg_xf_lit(out, ",") != MG_X_OK)
            || (provider == MG_XF_ANTHROPIC
                ? mg_xf_lit(out, "\"top_p\":") : mg_xf_lit(out, "\"topP\":"))
               != MG_X_OK
            || mg_buf_append(out, t->p, t->len) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        *first = 0;
    }

    return MG_X_OK;
}


/* the texts of one turn, [from, to) but for system ones, as blocks */

static int
mg_xf_blocks(mg_xf_req_t *rq, size_t from, size_t to, const char *open,
    size_t open_len, mg_buf_t *out)
{
    int     first;
    size_t  i;

    if (mg_xf_lit(out, "[") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    first = 1;

    for (i = from; i < to; i++) {
        if (rq->texts[i].role == MG_XF_SYSTEM) {
            continue;
        }

        if ((!first && mg_xf_lit(out, ",") != MG_X_OK)
            || mg_buf_append(out, open, open_len) != MG_X_OK
            || mg_buf_append(out, rq->texts[i].text.p, rq->texts[i].text.len)
               != MG_X_OK
            || mg_xf_lit(out, "}") != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 0;
    }

    return mg_xf_lit(out, "]");
}


/* answers */

typedef struct {
    mg_xf_tok_t    texts[16];       /* string tokens, joined */
    size_t         ntexts;
    const char    *finish;
    mg_xf_tok_t    id;              /* Anthropic's, Gemini's; prefixed */
    long long      n[6];            /* the provider's usage counts */
    unsigned       usage:1;
} mg_xf_answer_t;


static int mg_xf_answer_anthropic(mg_xf_answer_t *a, const mg_xf_tok_t *in);
static int mg_xf_answer_bedrock(mg_xf_answer_t *a, const mg_xf_tok_t *in);
static int mg_xf_answer_gemini(mg_xf_answer_t *a, const mg_xf_tok_t *in);
static int mg_xf_object(const char *p, size_t len, mg_xf_tok_t *in);
static int mg_xf_gemini_candidate(mg_xf_answer_t *a,
    const mg_xf_tok_t *cands, mg_xf_tok_t *c);
static int mg_xf_gemini_usage(const mg_xf_answer_t *a, mg_buf_t *out);
static int mg_xf_texts(mg_xf_answer_t *a, const mg_xf_tok_t *content,
    const char *type);
static int mg_xf_counts(mg_xf_answer_t *a, const mg_xf_tok_t *usage,
    const char **names, size_t n);
static const char *mg_xf_finish(const mg_xf_tok_t *reason, int provider);


int
mg_xf_answer(int provider, const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out)
{
    int             rc;
    size_t          i, keep, n;
    mg_xf_tok_t     in;
    mg_x_usage_t    u;
    mg_xf_answer_t  a;
    char            id[48], name[512];

    if (mg_xf_object(body, len, &in) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    memset(&a, 0, sizeof(mg_xf_answer_t));

    switch (provider) {

    case MG_XF_ANTHROPIC:
        rc = mg_xf_answer_anthropic(&a, &in);
        break;

    case MG_XF_BEDROCK:
        rc = mg_xf_answer_bedrock(&a, &in);
        break;

    default: /* MG_XF_GEMINI */
        rc = mg_xf_answer_gemini(&a, &in);
    }

    if (rc != MG_X_OK) {
        return rc;
    }

    n = mg_json_escape(name, sizeof(name), model ? model : "",
                       model ? model_len : 0);
    if (n >= sizeof(name)) {
        return MG_XF_DECLINED;
    }

    keep = out->len;

    if (provider != MG_XF_BEDROCK) {
        rc = mg_buf_append(out, "{\"id\":\"chatcmpl-", 16);

        if (rc == MG_X_OK && a.id.p) {
            rc = mg_buf_append(out, a.id.p + 1, a.id.len - 2);
        }

    } else {
        mg_bedrock_make_id(id, sizeof(id), created);
        rc = mg_buf_printf(out, "{\"id\":\"%s", id);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\",\"object\":\"chat.completion\",\"created\":");
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_int(out, created);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, ",\"model\":\"");
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(out, name, n);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\",\"choices\":[{\"index\":0,\"message\":{"
                       "\"role\":\"assistant\",\"content\":\"");
    }

    for (i = 0; rc == MG_X_OK && i < a.ntexts; i++) {
        rc = mg_buf_append(out, a.texts[i].p + 1, a.texts[i].len - 2);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\",\"refusal\":null},\"logprobs\":null,"
                       "\"finish_reason\":\"");
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(out, a.finish, strlen(a.finish));
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\"}]");
    }

    if (rc == MG_X_OK && a.usage && provider == MG_XF_GEMINI) {
        rc = mg_xf_gemini_usage(&a, out);

    } else if (rc == MG_X_OK && a.usage) {
        if (provider == MG_XF_ANTHROPIC) {
            mg_anthropic_usage(a.n[0], a.n[1], a.n[2], a.n[3], &u);

        } else {
            mg_bedrock_usage(a.n[0], a.n[1], a.n[2], a.n[3], a.n[4], &u);
        }

        rc = mg_xf_lit(out, ",\"usage\":");

        if (rc == MG_X_OK) {
            rc = mg_x_usage_print(out, &u);
        }
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "}");
    }

    if (rc != MG_X_OK) {
        out->len = keep;
    }

    return rc;
}


/*
 * The valid JSON object [p, p + len) into in, whitespace skipped; declined
 * when it is not one, or when jansson would refuse a member not looked at.
 */

static int
mg_xf_object(const char *p, size_t len, mg_xf_tok_t *in)
{
    if (p == NULL || mg_json_scan(p, len, NULL, 0, 64, NULL) != MG_JSON_OK) {
        return MG_XF_DECLINED;
    }

    in->p = mg_xf_ws(p, p + len);
    in->len = p + len - in->p;

    return (*in->p == '{' && mg_xf_parsable(in->p, in->len))
           ? MG_X_OK : MG_XF_DECLINED;
}


/*
 * {"id":..,"type":"message","content":[{"type":"text","text":..}..],
 * "stop_reason":..,"usage":{..}}; other members are not looked at.
 */

static int
mg_xf_answer_anthropic(mg_xf_answer_t *a, const mg_xf_tok_t *in)
{
    mg_xf_tok_t  m[5];

    static const char  *names[] = {
        "type", "content", "id", "stop_reason", "usage"
    };

    static const char  *counts[] = {
        "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens"
    };

    if (mg_xf_pick(in, names, 5, 0, m, NULL) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    /* an error, or a type written with escapes */

    if (m[0].p && m[0].p[0] == '"'
        && (mg_xf_is(&m[0], "\"error\"") || memchr(m[0].p, '\\', m[0].len)))
    {
        return MG_XF_DECLINED;
    }

    if (m[1].p == NULL || m[1].p[0] != '['
        || m[2].p == NULL || m[2].p[0] != '"')
    {
        return MG_XF_DECLINED;
    }

    a->id = m[2];

    if (mg_xf_texts(a, &m[1], "\"text\"") != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    a->finish = mg_xf_finish(&m[3], MG_XF_ANTHROPIC);

    if (a->finish == NULL) {
        return MG_XF_DECLINED;
    }

    a->n[2] = 0;

    return mg_xf_counts(a, &m[4], counts, 4);
}


/*
 * {"output":{"message":{"role":..,"content":[{"text":..}..]}},
 * "stopReason":..,"usage":{..}}.
 */

static int
mg_xf_answer_bedrock(mg_xf_answer_t *a, const mg_xf_tok_t *in)
{
    mg_xf_tok_t   key, v, m[3], msg, content;
    mg_xf_iter_t  it;

    static const char  *names[] = {
        "output", "stopReason", "usage"
    };

    static const char  *counts[] = {
        "inputTokens", "outputTokens", "totalTokens",
        "cacheReadInputTokens", "cacheWriteInputTokens"
    };

    if (mg_xf_pick(in, names, 3, 0, m, NULL) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    if (m[0].p == NULL || m[0].p[0] != '{') {
        return MG_XF_DECLINED;
    }

    /* output holds only the message, the message a role and content */

    msg.p = NULL;
    mg_xf_open(&it, &m[0]);

    while (mg_xf_next(&it, &key, &v)) {
        if (key.len != 7 || memcmp(key.p, "message", 7) != 0 || msg.p) {
            return MG_XF_DECLINED;
        }

        msg = v;
    }

    if (msg.p == NULL || msg.p[0] != '{') {
        return MG_XF_DECLINED;
    }

    content.p = NULL;
    mg_xf_open(&it, &msg);

    while (mg_xf_next(&it, &key, &v)) {
        if (key.len == 7 && memcmp(key.p, "content", 7) == 0
            && content.p == NULL)
        {
            content = v;

        } else if (!(key.len == 4 && memcmp(key.p, "role", 4) == 0)) {
            return MG_XF_DECLINED;
        }
    }

    if (content.p == NULL || content.p[0] != '['
        || mg_xf_texts(a, &content, NULL) != MG_X_OK)
    {
        return MG_XF_DECLINED;
    }

    a->finish = mg_xf_finish(&m[1], MG_XF_BEDROCK);

    if (a->finish == NULL) {
        return MG_XF_DECLINED;
    }

    a->n[2] = -1;

    return mg_xf_counts(a, &m[2], counts, 5);
}


/*
 * {"candidates":[{"content":{"parts":[{"text":..}..],..},"finishReason":..,
 * ..}],"usageMetadata":{..},"responseId":..}: one candidate whose parts are
 * texts only (no thoughts, no calls), not all empty; an "error" member, a
 * blocked prompt (no candidate) or anything else is declined.
 */

static int
mg_xf_answer_gemini(mg_xf_answer_t *a, const mg_xf_tok_t *in)
{
    size_t        i, n;
    char          reason[64];
    mg_xf_tok_t   m[4], c[2];

    static const char  *names[] = {
        "candidates", "usageMetadata", "responseId", "error"
    };

    static const char  *counts[] = {
        "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
        "toolUsePromptTokenCount", "cachedContentTokenCount",
        "totalTokenCount"
    };

    if (mg_xf_pick(in, names, 4, 0, m, NULL) != MG_X_OK
        || m[3].p != NULL
        || (m[2].p && m[2].p[0] != '"')
        || mg_xf_gemini_candidate(a, &m[0], c) != MG_X_OK)
    {
        return MG_XF_DECLINED;
    }

    /* no text at all: the tree tells an empty answer from a failed one */

    for (i = 0, n = 0; i < a->ntexts; i++) {
        n += a->texts[i].len - 2;
    }

    if (n == 0) {
        return MG_XF_DECLINED;
    }

    if (c[0].p && c[0].p[0] == '"') {
        if (c[0].len - 2 >= sizeof(reason)
            || memchr(c[0].p, '\\', c[0].len))
        {
            return MG_XF_DECLINED;
        }

        memcpy(reason, c[0].p + 1, c[0].len - 2);
        reason[c[0].len - 2] = '\0';

        a->finish = mg_gemini_finish(reason, 0);

    } else {
        a->finish = mg_gemini_finish(NULL, 0);
    }

    a->id = m[2];
    a->n[5] = -1;

    return mg_xf_counts(a, &m[1], counts, 6);
}


/*
 * Gemini's candidates array holding one candidate whose content's parts are
 * texts only (at most 16): the texts into a, its finishReason and index
 * tokens into c[0] and c[1] (p NULL: absent).
 */

static int
mg_xf_gemini_candidate(mg_xf_answer_t *a, const mg_xf_tok_t *cands,
    mg_xf_tok_t *c)
{
    mg_xf_tok_t   m[3], parts, cand, more;
    mg_xf_iter_t  it;

    static const char  *cnames[] = { "content", "finishReason", "index" };
    static const char  *pnames[] = { "parts" };

    if (cands->p == NULL || cands->p[0] != '[') {
        return MG_XF_DECLINED;
    }

    mg_xf_open(&it, cands);

    if (!mg_xf_elem(&it, &cand) || cand.p[0] != '{'
        || mg_xf_elem(&it, &more)
        || mg_xf_pick(&cand, cnames, 3, 0, m, NULL) != MG_X_OK
        || m[0].p == NULL || m[0].p[0] != '{'
        || mg_xf_pick(&m[0], pnames, 1, 0, &parts, NULL) != MG_X_OK
        || parts.p == NULL || parts.p[0] != '['
        || mg_xf_texts(a, &parts, NULL) != MG_X_OK)
    {
        return MG_XF_DECLINED;
    }

    c[0] = m[1];
    c[1] = m[2];

    return MG_X_OK;
}


/*
 * Gemini's usage as the tree writes it: thoughts are output billed apart
 * from candidatesTokenCount, a tool-use prompt is input; the total is the
 * one given, or the sum.
 */

static int
mg_xf_gemini_usage(const mg_xf_answer_t *a, mg_buf_t *out)
{
    long long  in, o;

    in = a->n[0] + a->n[3];
    o = a->n[1] + a->n[2];

    if (mg_xf_lit(out, ",\"usage\":{\"prompt_tokens\":") != MG_X_OK
        || mg_buf_int(out, in) != MG_X_OK
        || mg_xf_lit(out, ",\"completion_tokens\":") != MG_X_OK
        || mg_buf_int(out, o) != MG_X_OK
        || mg_xf_lit(out, ",\"total_tokens\":") != MG_X_OK
        || mg_buf_int(out, a->n[5] < 0 ? in + o : a->n[5]) != MG_X_OK
        || mg_xf_lit(out, ",\"prompt_tokens_details\":{\"cached_tokens\":")
           != MG_X_OK
        || mg_buf_int(out, a->n[4]) != MG_X_OK
        || mg_xf_lit(out, "},\"completion_tokens_details\":"
                     "{\"reasoning_tokens\":") != MG_X_OK
        || mg_buf_int(out, a->n[2]) != MG_X_OK
        || mg_xf_lit(out, "}}") != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/*
 * A Gemini stream chunk in the middle of a text answer: one candidate (index
 * 0 or none) of text parts, no finishReason, no error, no prompt feedback.
 * Its text goes out as one content delta, as mg_gemini_stream_event() would
 * send it; usageMetadata counts update n[6] as mg_x_tokens() reads them.
 */

int
mg_xf_gemini_chunk(const char *data, size_t len, const char *prefix,
    size_t prefix_len, long long *n, int *sent, mg_buf_t *out)
{
    int             rc;
    size_t          i, k, total;
    mg_buf_t        joined;
    mg_xf_tok_t     in, m[4], c[2];
    mg_xf_answer_t  a;

    static const char  *names[] = {
        "candidates", "usageMetadata", "promptFeedback", "error"
    };

    static const char  *counts[] = {
        "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
        "toolUsePromptTokenCount", "cachedContentTokenCount",
        "totalTokenCount"
    };

    *sent = 0;

    if (mg_xf_object(data, len, &in) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    memset(&a, 0, sizeof(mg_xf_answer_t));

    if (mg_xf_pick(&in, names, 4, 0, m, NULL) != MG_X_OK
        || m[2].p != NULL || m[3].p != NULL
        || mg_xf_gemini_candidate(&a, &m[0], c) != MG_X_OK
        || c[0].p != NULL
        || (c[1].p != NULL && !mg_xf_is(&c[1], "0")))
    {
        return MG_XF_DECLINED;
    }

    for (k = 0; k < 6; k++) {
        a.n[k] = n[k];
    }

    if (mg_xf_counts(&a, &m[1], counts, 6) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    for (i = 0, total = 0; i < a.ntexts; i++) {
        total += a.texts[i].len - 2;
    }

    rc = MG_X_OK;

    if (total) {

        /* the parts' texts as one string token, as the client gets it */

        memset(&joined, 0, sizeof(mg_buf_t));
        rc = mg_buf_reserve(&joined, total + 2);

        if (rc == MG_X_OK) {
            joined.data[joined.len++] = '"';

            for (i = 0; i < a.ntexts; i++) {
                memcpy(joined.data + joined.len, a.texts[i].p + 1,
                       a.texts[i].len - 2);
                joined.len += a.texts[i].len - 2;
            }

            joined.data[joined.len++] = '"';

            rc = mg_x_chunk_content(out, prefix, prefix_len, joined.data,
                                    joined.len);
        }

        mg_buf_free(&joined);

        if (rc != MG_X_OK) {
            return MG_X_NOMEM;
        }

        *sent = 1;
    }

    for (k = 0; k < 6; k++) {
        n[k] = a.n[k];
    }

    return MG_X_OK;
}


/*
 * Content blocks that are text only: {"type":"text","text":..} (type
 * given) or {"text":..}, at most 16.
 */

static int
mg_xf_texts(mg_xf_answer_t *a, const mg_xf_tok_t *content, const char *type)
{
    int           typed;
    mg_xf_tok_t   b, key, v, text;
    mg_xf_iter_t  it, bit;

    mg_xf_open(&it, content);

    while (mg_xf_elem(&it, &b)) {
        if (b.p[0] != '{' || a->ntexts == 16) {
            return MG_XF_DECLINED;
        }

        typed = 0;
        text.p = NULL;
        mg_xf_open(&bit, &b);

        while (mg_xf_next(&bit, &key, &v)) {
            if (key.len == 4 && memcmp(key.p, "text", 4) == 0
                && text.p == NULL && v.p[0] == '"')
            {
                text = v;

            } else if (type && key.len == 4 && memcmp(key.p, "type", 4) == 0
                       && !typed && mg_xf_is(&v, type))
            {
                typed = 1;

            } else {
                return MG_XF_DECLINED;
            }
        }

        if (text.p == NULL || (type && !typed)) {
            return MG_XF_DECLINED;
        }

        a->texts[a->ntexts++] = text;
    }

    return MG_X_OK;
}


/*
 * The usage counts, as mg_x_tokens() reads them: an integer, clamped to
 * 0..MG_X_TOKENS_MAX; anything else is the default already in a->n.
 */

static int
mg_xf_counts(mg_xf_answer_t *a, const mg_xf_tok_t *usage, const char **names,
    size_t n)
{
    size_t        k, i;
    long long     v;
    mg_xf_tok_t   m[6], *t;

    if (usage->p == NULL || usage->p[0] != '{') {

        /* not an object: the translators leave usage out */
        return MG_X_OK;
    }

    if (mg_xf_pick(usage, names, n, 0, m, NULL) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    a->usage = 1;

    for (k = 0; k < n; k++) {
        t = &m[k];

        if (t->p == NULL
            || (t->p[0] != '-' && (t->p[0] < '0' || t->p[0] > '9'))
            || memchr(t->p, '.', t->len) || memchr(t->p, 'e', t->len)
            || memchr(t->p, 'E', t->len))
        {
            continue;
        }

        if (t->len > 18) {
            return MG_XF_DECLINED;
        }

        v = 0;

        for (i = (t->p[0] == '-'); i < t->len; i++) {
            v = v * 10 + (t->p[i] - '0');
        }

        a->n[k] = (t->p[0] == '-') ? 0
                  : (v > MG_X_TOKENS_MAX ? MG_X_TOKENS_MAX : v);
    }

    return MG_X_OK;
}


/* stop_reason or stopReason; NULL: declined (malformed output, escapes) */

static const char *
mg_xf_finish(const mg_xf_tok_t *reason, int provider)
{
    if (reason->p == NULL || reason->p[0] != '"') {
        return "stop";
    }

    if (memchr(reason->p, '\\', reason->len)) {
        return NULL;
    }

    if (mg_xf_is(reason, "\"tool_use\"")) {
        return "tool_calls";
    }

    if (mg_xf_is(reason, "\"max_tokens\"")
        || mg_xf_is(reason, "\"model_context_window_exceeded\""))
    {
        return "length";
    }

    if (provider == MG_XF_ANTHROPIC) {
        return mg_xf_is(reason, "\"refusal\"") ? "content_filter" : "stop";
    }

    if (mg_xf_is(reason, "\"guardrail_intervened\"")
        || mg_xf_is(reason, "\"content_filtered\""))
    {
        return "content_filter";
    }

    if (mg_xf_is(reason, "\"malformed_model_output\"")
        || mg_xf_is(reason, "\"malformed_tool_use\""))
    {
        return NULL;
    }

    return "stop";
}
