/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the Bedrock Converse translator.  Every input is
 * used as a client's request body, as a Converse response body, as an
 * error (the status chosen by the input's length; the first line as the
 * x-amzn-ErrorType value and the rest as the body, then the whole as the
 * body alone) and as a ConverseStream: lines "<message-type> <event-type>
 * <payload>" as in t/fixtures/bedrock/stream ("-" for an absent field),
 * fed message by message, then the same messages framed as an AWS event
 * stream, decoded by mg_eventstream cut in two places where a hash of the
 * input says, and fed from the decoder as the glue does, every message
 * through the tree (no tree-free text path): the outputs must be the same
 * events but for the generated ids and the escapes in texts.  What comes
 * out must be what the API promises: JSON where JSON is due, complete
 * "data: ...\n\n" events, messages in valid UTF-8, nothing appended on
 * failure, MG_X_DONE only after "data: [DONE]\n\n" and nothing after it.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_bedrock.c src/*.c -ljansson -lcrypto -lm -o /tmp/fb
 *     mkdir -p /tmp/fb-corpus
 *     /tmp/fb -max_total_time=20 /tmp/fb-corpus t/fixtures/bedrock/
 *
 * (libFuzzer writes new inputs into the first directory: keep the fixtures
 * second.)
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_bedrock.h"
#include "fuzz_common.h"


/*
 * The request written is at most MG_FZ_K times the body plus MG_FZ_C:
 * every value is copied once; what a message, part, tool call or cache
 * marker adds around its values ({"toolResult":{"toolUseId":..}},
 * {"cachePoint":{"type":"default"}}) is less than three times the
 * shortest input that makes it, and the fixed members (inferenceConfig)
 * fit in the constant.
 */
#define MG_FZ_K  4
#define MG_FZ_C  (4 * 1024)
#include "mg_eventstream.h"


#define MG_FZ_MAX_MSGS  512
#define MG_FZ_HDR_MAX   65535       /* a string header's longest value */


typedef struct {
    const char             *type;           /* NULL: absent */
    size_t                  type_len;
    const char             *event;
    size_t                  event_len;
    const char             *payload;
    size_t                  payload_len;
} mg_fz_msg_t;


typedef struct {
    mg_bedrock_stream_t     st;
    mg_buf_t                out;
    mg_xerror_t             err;
    int                     rc;
    unsigned                done:1;
    unsigned                stopped:1;
} mg_fz_run_t;


/* one message, from private copies so that a read past one shows */

static void
mg_fz_feed(mg_fz_run_t *r, const char *type, size_t type_len,
    const char *event, size_t event_len, const char *payload,
    size_t payload_len)
{
    char    *t, *e, *p;
    size_t   before;

    if (r->stopped) {
        return;
    }

    t = type ? malloc(type_len + 1) : NULL;
    e = event ? malloc(event_len + 1) : NULL;
    p = payload ? malloc(payload_len + 1) : NULL;

    if ((type && t == NULL) || (event && e == NULL)
        || (payload && p == NULL))
    {
        abort();
    }

    if (t) {
        memcpy(t, type, type_len);
    }

    if (e) {
        memcpy(e, event, event_len);
    }

    if (p) {
        memcpy(p, payload, payload_len);
    }

    before = r->out.len;

    r->rc = mg_bedrock_stream_event(&r->st, t, type_len, e, event_len, p,
                                    payload_len, &r->out, &r->err);

    free(t);
    free(e);
    free(p);

    if (r->rc == MG_X_ERROR || r->rc == MG_X_NOMEM) {
        if (r->out.len != before || r->done) {
            abort();
        }

        mg_fz_check_error(&r->err);

        /* the glue stops at an error */

        r->stopped = 1;
        return;
    }

    if (r->rc == MG_X_DONE) {
        if ((r->done && r->out.len != before)
            || r->out.len < 14
            || memcmp(r->out.data + r->out.len - 14, "data: [DONE]\n\n", 14)
               != 0)
        {
            abort();
        }

        r->done = 1;

    } else if (r->rc != MG_X_OK || r->done) {
        abort();
    }

    if (mg_bedrock_stream_has_content(&r->st) && r->out.len == 0) {
        abort();
    }
}


/* the end of the HTTP stream, as the glue sees it */

static void
mg_fz_finish(mg_fz_run_t *r)
{
    int     rc;
    size_t  before;

    if (r->stopped) {
        return;
    }

    before = r->out.len;

    rc = mg_bedrock_stream_finish(&r->st, &r->out);

    if (rc == MG_X_DONE) {
        if (r->done || r->out.len < before + 14) {
            abort();
        }

        r->done = 1;
        r->rc = rc;

    } else if (rc != MG_X_OK || r->out.len != before) {
        abort();
    }

    /* once is enough */

    before = r->out.len;

    if (mg_bedrock_stream_finish(&r->st, &r->out) != MG_X_OK
        || r->out.len != before)
    {
        abort();
    }

    mg_fz_check_sse(r->out.data, r->out.len);
}


/* "<type> <event> <payload>" lines, pointing into s */

static size_t
mg_fz_parse(const char *s, size_t len, mg_fz_msg_t *m)
{
    size_t       n;
    const char  *line, *end, *last, *sp, *sp2;

    n = 0;
    last = s + len;

    for (line = s; line < last && n < MG_FZ_MAX_MSGS; line = end + 1) {
        end = memchr(line, '\n', last - line);
        if (end == NULL) {
            end = last;
        }

        if (end == line || line[0] == '#') {
            continue;
        }

        sp = memchr(line, ' ', end - line);
        if (sp == NULL) {
            sp = end;
        }

        sp2 = (sp < end) ? memchr(sp + 1, ' ', end - sp - 1) : NULL;
        if (sp2 == NULL) {
            sp2 = end;
        }

        m[n].type = line;
        m[n].type_len = sp - line;

        if (m[n].type_len == 1 && line[0] == '-') {
            m[n].type = NULL;
            m[n].type_len = 0;
        }

        m[n].event = (sp < end) ? sp + 1 : NULL;
        m[n].event_len = (sp < end) ? (size_t) (sp2 - sp - 1) : 0;

        if (m[n].event_len == 1 && m[n].event[0] == '-') {
            m[n].event = NULL;
            m[n].event_len = 0;
        }

        m[n].payload = (sp2 < end) ? sp2 + 1 : NULL;
        m[n].payload_len = (sp2 < end) ? (size_t) (end - sp2 - 1) : 0;
        n++;
    }

    return n;
}


/* the event-stream framing of the messages */

static void
mg_fz_put32(u_char *p, uint32_t v)
{
    p[0] = (u_char) (v >> 24);
    p[1] = (u_char) (v >> 16);
    p[2] = (u_char) (v >> 8);
    p[3] = (u_char) v;
}


static void
mg_fz_header(mg_buf_t *b, const char *name, const char *v, size_t len)
{
    u_char  h[4];

    h[0] = (u_char) strlen(name);

    if (mg_buf_append(b, (char *) h, 1) != MG_X_OK
        || mg_buf_append(b, name, h[0]) != MG_X_OK)
    {
        abort();
    }

    h[0] = MG_ES_STRING;
    h[1] = (u_char) (len >> 8);
    h[2] = (u_char) len;

    if (mg_buf_append(b, (char *) h, 3) != MG_X_OK
        || mg_buf_append(b, v, len) != MG_X_OK)
    {
        abort();
    }
}


#define mg_fz_is(p, n, lit)                                                   \
    ((p) && (n) == sizeof(lit) - 1 && memcmp(p, lit, sizeof(lit) - 1) == 0)


/* returns 0 when a field is too long for a header: no framing then */

static int
mg_fz_encode(const mg_fz_msg_t *m, size_t n, mg_buf_t *b)
{
    size_t        i, start, hstart;
    uint32_t      crc;
    u_char       *p;
    const char   *payload;
    size_t        payload_len;

    static const char  zero[12];

    for (i = 0; i < n; i++) {
        if (m[i].type_len > MG_FZ_HDR_MAX || m[i].event_len > MG_FZ_HDR_MAX
            || m[i].payload_len > MG_FZ_HDR_MAX)
        {
            return 0;
        }

        start = b->len;

        if (mg_buf_append(b, zero, 12) != MG_X_OK) {
            abort();
        }

        hstart = b->len;
        payload = m[i].payload;
        payload_len = m[i].payload_len;

        if (m[i].type) {
            mg_fz_header(b, ":message-type", m[i].type, m[i].type_len);
        }

        if (m[i].event) {
            if (mg_fz_is(m[i].type, m[i].type_len, "exception")) {
                mg_fz_header(b, ":exception-type", m[i].event,
                             m[i].event_len);

            } else if (mg_fz_is(m[i].type, m[i].type_len, "error")) {
                mg_fz_header(b, ":error-code", m[i].event, m[i].event_len);

            } else {
                mg_fz_header(b, ":event-type", m[i].event, m[i].event_len);
            }
        }

        if (mg_fz_is(m[i].type, m[i].type_len, "error") && payload) {
            mg_fz_header(b, ":error-message", payload, payload_len);
            payload = NULL;
            payload_len = 0;
        }

        mg_fz_header(b, ":content-type", "application/json", 16);

        if (mg_buf_append(b, payload ? payload : "", payload_len)
            != MG_X_OK
            || mg_buf_append(b, zero, 4) != MG_X_OK)
        {
            abort();
        }

        p = (u_char *) b->data + start;

        mg_fz_put32(p, (uint32_t) (b->len - start));
        mg_fz_put32(p + 4, (uint32_t) (b->len - 4 - payload_len - hstart));
        mg_fz_put32(p + 8, mg_es_crc32(0, p, 8));

        crc = mg_es_crc32(0, p, b->len - start - 4);
        mg_fz_put32((u_char *) b->data + b->len - 4, crc);
    }

    return 1;
}


/* what the glue does with a decoded message */

static int
mg_fz_handler(void *ctx, const mg_es_message_t *msg)
{
    mg_fz_run_t  *r = ctx;

    if (mg_fz_is(msg->message_type, msg->message_type_len, "exception")) {
        mg_fz_feed(r, msg->message_type, msg->message_type_len,
                   msg->exception_type, msg->exception_type_len,
                   (const char *) msg->payload, msg->payload_len);

    } else if (mg_fz_is(msg->message_type, msg->message_type_len, "error")) {
        mg_fz_feed(r, msg->message_type, msg->message_type_len,
                   msg->error_code, msg->error_code_len,
                   msg->error_message, msg->error_message_len);

    } else {
        mg_fz_feed(r, msg->message_type, msg->message_type_len,
                   msg->event_type, msg->event_type_len,
                   (const char *) msg->payload, msg->payload_len);
    }

    return r->stopped;
}


/* every occurrence of the stream's id becomes "chatcmpl-ID" */

static void
mg_fz_normalize(mg_fz_run_t *r)
{
    size_t     i, from, idlen;
    mg_buf_t   n;

    idlen = strlen(r->st.id);

    if (r->out.len == 0) {
        return;
    }

    memset(&n, 0, sizeof(mg_buf_t));
    from = 0;

    for (i = 0; idlen && i + idlen <= r->out.len; i++) {
        if (memcmp(r->out.data + i, r->st.id, idlen) == 0) {
            if (mg_buf_append(&n, r->out.data + from, i - from) != MG_X_OK
                || mg_buf_append(&n, "chatcmpl-ID", 11) != MG_X_OK)
            {
                abort();
            }

            i += idlen - 1;
            from = i + 1;
        }
    }

    if (mg_buf_append(&n, r->out.data + from, r->out.len - from)
        != MG_X_OK)
    {
        abort();
    }

    mg_buf_free(&r->out);
    r->out = n;
}


static void
mg_fz_stream(const char *s, size_t size, uint64_t h)
{
    int               rc, usage;
    u_char           *buf;
    size_t            i, n, from, to, cuts[2], c1, c2;
    mg_buf_t          es;
    mg_fz_msg_t      *m;
    mg_fz_run_t       a, b;
    mg_es_decoder_t   d;

    m = malloc(MG_FZ_MAX_MSGS * sizeof(mg_fz_msg_t));
    if (m == NULL) {
        abort();
    }

    n = mg_fz_parse(s, size, m);
    usage = (int) (size & 1);

    /* message by message */

    memset(&a, 0, sizeof(mg_fz_run_t));
    mg_bedrock_stream_init(&a.st, "gpt-4o", 6, 1700000000L, usage);

    for (i = 0; i < n; i++) {
        mg_fz_feed(&a, m[i].type, m[i].type_len, m[i].event, m[i].event_len,
                   m[i].payload, m[i].payload_len);
    }

    mg_fz_finish(&a);

    /* framed, decoded and fed by the decoder's callback */

    memset(&es, 0, sizeof(mg_buf_t));

    /* (nothing to frame without messages) */

    if (n && mg_fz_encode(m, n, &es)) {
        memset(&b, 0, sizeof(mg_fz_run_t));
        mg_bedrock_stream_init(&b.st, "gpt-4o", 6, 1700000000L, usage);

        /* and every message through the tree: the fast text path must
         * give the same events (texts may be escaped differently) */

        b.st.full = 1;

        buf = malloc(es.len + 16);
        if (buf == NULL) {
            abort();
        }

        mg_es_init(&d, buf, es.len + 16);

        c1 = (size_t) (h % (es.len + 1));
        c2 = (size_t) ((h >> 32) % (es.len + 1));
        cuts[0] = c1 < c2 ? c1 : c2;
        cuts[1] = c1 < c2 ? c2 : c1;
        from = 0;
        rc = MG_ES_OK;

        for (i = 0; i <= 2 && rc == MG_ES_OK; i++) {
            to = (i < 2) ? cuts[i] : es.len;

            rc = mg_es_feed(&d, (u_char *) es.data + from, to - from,
                            mg_fz_handler, &b);
            from = to;
        }

        /* the frames are well-formed: only the handler may stop them */

        if (rc < 0 || (rc == MG_ES_OK && mg_es_finish(&d) != MG_ES_OK)) {
            abort();
        }

        mg_fz_finish(&b);

        mg_fz_normalize(&a);
        mg_fz_normalize(&b);

        if (!mg_fz_same_events(a.rc, &a.out, b.rc, &b.out)
            || mg_bedrock_stream_has_content(&a.st)
               != mg_bedrock_stream_has_content(&b.st))
        {
            abort();
        }

        mg_bedrock_stream_free(&b.st);
        mg_buf_free(&b.out);
        free(buf);
    }

    mg_bedrock_stream_free(&a.st);
    mg_buf_free(&a.out);
    mg_buf_free(&es);
    free(m);
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                  rc, stream, usage, status;
    uint64_t             h;
    const char          *s, *nl;
    mg_buf_t             out;
    mg_xerror_t          err;
    mg_bedrock_opts_t    o;

    static const int  statuses[] = {
        400, 401, 403, 404, 408, 409, 413, 422, 424, 429, 500, 502, 503,
        504, 520, 0, 200, 302, 418, 600, -1
    };

    s = (const char *) data;

    /* the client's request */

    memset(&o, 0, sizeof(o));
    o.full = (size & 4) != 0;
    o.default_max_tokens = (long) (size % 3) * 1000 - 1000;
    /* now and then a bound the translation may pass: then a 400 */

    o.max_out = (size & 8) ? 2 * size + 64 : 0;

    memset(&out, 0, sizeof(mg_buf_t));
    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_bedrock_request(s, size, (size & 2) ? &o : NULL, &out, &stream,
                            &usage, &err);

    mg_fz_check_result(rc, &out, &err, 400);
    mg_fz_check_bound(rc, &out, size, MG_FZ_K, MG_FZ_C,
                      (size & 2) ? o.max_out : 0);

    mg_buf_free(&out);

    /* a response */

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_bedrock_response(s, size, "gpt-4o", 6, 1700000000L, &out, &err);

    mg_fz_check_result(rc, &out, &err, 0);

    mg_buf_free(&out);

    /* an error: the first line as the header, the rest as the body; then
     * the whole as the body */

    status = statuses[size % (sizeof(statuses) / sizeof(int))];
    nl = memchr(s, '\n', size);

    memset(&err, 0, sizeof(mg_xerror_t));

    mg_bedrock_error(status, s, nl ? (size_t) (nl - s) : size,
                     nl ? nl + 1 : NULL, nl ? size - (nl + 1 - s) : 0, &err);

    mg_fz_check_error(&err);

    memset(&err, 0, sizeof(mg_xerror_t));

    mg_bedrock_error(status, NULL, 0, s, size, &err);

    mg_fz_check_error(&err);

    /* a stream, fed message by message and through the framing */

    h = mg_fz_hash(data, size);

    mg_fz_stream(s, size, h);

    return 0;
}
