/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The event-stream decoder: the vectors of protocols.md 5.6, messages
 * built here by an encoder with its own (bitwise) CRC, a ConverseStream
 * sequence fed whole, byte by byte, cut at every point and at random
 * pairs of points, every header type, and each way a stream can be broken
 * (prelude CRC, message CRC, lengths, headers, truncation, size).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "mg_eventstream.h"


#define S(s)  s, sizeof(s) - 1

#define STREAM_CAP  65536
#define REC_CAP     262144
#define BUF_CAP     65536
#define KEEP_MAX    64


/* the encoder: messages appended to a stream */

typedef struct {
    u_char          b[STREAM_CAP];
    size_t          len;
    size_t          start;          /* of the message being built */
    size_t          hstart;         /* of its header block */
} enc_t;


static uint32_t
crc32_bitwise(const u_char *p, size_t len)
{
    int       k;
    uint32_t  c;

    c = 0xffffffff;

    while (len--) {
        c ^= *p++;

        for (k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0xedb88320 : c >> 1;
        }
    }

    return ~c;
}


static void
put32(u_char *p, uint32_t v)
{
    p[0] = (u_char) (v >> 24);
    p[1] = (u_char) (v >> 16);
    p[2] = (u_char) (v >> 8);
    p[3] = (u_char) v;
}


static void
enc_bytes(enc_t *e, const void *p, size_t len)
{
    memcpy(e->b + e->len, p, len);
    e->len += len;
}


static void
enc_begin(enc_t *e)
{
    e->start = e->len;
    e->len += 12;
    e->hstart = e->len;
}


static void
enc_name(enc_t *e, const char *name, u_char type)
{
    u_char  n;

    n = (u_char) strlen(name);
    enc_bytes(e, &n, 1);
    enc_bytes(e, name, n);
    enc_bytes(e, &type, 1);
}


static void
enc_str(enc_t *e, const char *name, u_char type, const void *v, size_t len)
{
    u_char  l[2];

    enc_name(e, name, type);
    l[0] = (u_char) (len >> 8);
    l[1] = (u_char) len;
    enc_bytes(e, l, 2);
    enc_bytes(e, v, len);
}


static void
enc_string(enc_t *e, const char *name, const char *v)
{
    enc_str(e, name, MG_ES_STRING, v, strlen(v));
}


static void
enc_int(enc_t *e, const char *name, u_char type, int64_t v, size_t w)
{
    size_t  i;
    u_char  b[8];

    enc_name(e, name, type);

    for (i = 0; i < w; i++) {
        b[i] = (u_char) ((uint64_t) v >> (8 * (w - 1 - i)));
    }

    enc_bytes(e, b, w);
}


/* ends a message; the lengths and CRCs may be spoilt on purpose later */

static size_t
enc_end(enc_t *e, const void *payload, size_t plen)
{
    u_char  *m;
    size_t   total;

    put32(e->b + e->start + 4, (uint32_t) (e->len - e->hstart));
    enc_bytes(e, payload, plen);
    e->len += 4;

    m = e->b + e->start;
    total = e->len - e->start;

    put32(m, (uint32_t) total);
    put32(m + 8, crc32_bitwise(m, 8));
    put32(m + total - 4, crc32_bitwise(m, total - 4));

    return e->start;
}


static size_t
enc_event(enc_t *e, const char *type, const char *payload)
{
    enc_begin(e);
    enc_string(e, ":event-type", type);
    enc_string(e, ":content-type", "application/json");
    enc_string(e, ":message-type", "event");

    return enc_end(e, payload, strlen(payload));
}


/* the messages seen, serialized so that two runs compare with memcmp */

typedef struct {
    char            mt[32];
    char            et[64];
    char            xt[64];
    char            ct[64];
    char            payload[1024];
    size_t          payload_len;
    size_t          nheaders;
    size_t          nheaders_all;
} keep_t;


typedef struct {
    char            out[REC_CAP];
    size_t          len;
    int             n;
    int             stop_at;        /* return 7 from this message on */
    keep_t          keep[KEEP_MAX];

    /* for the zero-copy check */
    const u_char   *piece;
    size_t          piece_len;
    size_t          piece_off;
    size_t          off;
    const u_char   *dbuf;
    int             copy_errors;
    int             copies;
} rec_t;


static void
rec_printf(rec_t *r, const char *tag, const void *s, size_t len)
{
    size_t  i;

    static const char  hexd[] = "0123456789abcdef";

    if (s == NULL) {
        r->len += snprintf(r->out + r->len, REC_CAP - r->len, "%s:NULL;",
                           tag);
        return;
    }

    r->len += snprintf(r->out + r->len, REC_CAP - r->len, "%s:%zu:", tag,
                       len);

    for (i = 0; i < len && r->len + 4 < REC_CAP; i++) {
        r->out[r->len++] = hexd[((const u_char *) s)[i] >> 4];
        r->out[r->len++] = hexd[((const u_char *) s)[i] & 0x0f];
    }

    r->out[r->len++] = ';';
}


static void
keep_str(char *dst, size_t cap, const char *s, size_t len)
{
    if (s == NULL) {
        snprintf(dst, cap, "(null)");
        return;
    }

    snprintf(dst, cap, "%.*s", (int) len, s);
}


static int
rec_handler(void *ctx, const mg_es_message_t *m)
{
    int                    inside;
    size_t                 i;
    keep_t                *k;
    rec_t                 *r = ctx;
    const mg_es_header_t  *h;

    rec_printf(r, "mt", m->message_type, m->message_type_len);
    rec_printf(r, "et", m->event_type, m->event_type_len);
    rec_printf(r, "xt", m->exception_type, m->exception_type_len);
    rec_printf(r, "ct", m->content_type, m->content_type_len);
    rec_printf(r, "ec", m->error_code, m->error_code_len);
    rec_printf(r, "em", m->error_message, m->error_message_len);

    r->len += snprintf(r->out + r->len, REC_CAP - r->len, "nh:%zu/%zu;",
                       m->nheaders, m->nheaders_all);

    for (i = 0; i < m->nheaders; i++) {
        h = &m->headers[i];
        rec_printf(r, "h", h->name, h->name_len);
        r->len += snprintf(r->out + r->len, REC_CAP - r->len, "%u:%lld;",
                           h->type, (long long) h->num);
        rec_printf(r, "v", h->value, h->value_len);
    }

    rec_printf(r, "payload", m->payload, m->payload_len);
    rec_printf(r, "raw", m->raw, m->raw_len);
    r->out[r->len++] = '\n';

    if (r->n < KEEP_MAX) {
        k = &r->keep[r->n];
        keep_str(k->mt, sizeof(k->mt), m->message_type, m->message_type_len);
        keep_str(k->et, sizeof(k->et), m->event_type, m->event_type_len);
        keep_str(k->xt, sizeof(k->xt), m->exception_type,
                 m->exception_type_len);
        keep_str(k->ct, sizeof(k->ct), m->content_type, m->content_type_len);
        k->payload_len = m->payload_len;
        memcpy(k->payload, m->payload,
               m->payload_len < sizeof(k->payload) ? m->payload_len
                                                   : sizeof(k->payload));
        k->nheaders = m->nheaders;
        k->nheaders_all = m->nheaders_all;
    }

    /* a message wholly inside this call's bytes must not be copied */

    inside = (r->off >= r->piece_off
              && r->off + m->raw_len <= r->piece_off + r->piece_len);

    if (inside) {
        if (m->raw != r->piece + (r->off - r->piece_off)) {
            r->copy_errors++;
        }

    } else {
        r->copies++;

        if (m->raw != r->dbuf) {
            r->copy_errors++;
        }
    }

    /* the payload and headers lie inside raw */

    if (m->payload < m->raw
        || m->payload + m->payload_len + 4 != m->raw + m->raw_len)
    {
        r->copy_errors++;
    }

    r->off += m->raw_len;
    r->n++;

    if (r->stop_at > 0 && r->n >= r->stop_at) {
        return 7;
    }

    return 0;
}


/*
 * Feeds the stream cut at the given points (sorted, may repeat), each
 * piece a private copy so that a pointer into an old piece is caught, and
 * records the messages and the results.  Returns the first non-OK result
 * of mg_es_feed(), or that of mg_es_finish().
 */

static int
run(const u_char *s, size_t len, const size_t *cuts, size_t ncuts,
    size_t cap, rec_t *r)
{
    int              rc, fin;
    size_t           i, from, to;
    u_char          *piece;
    mg_es_decoder_t  d;
    static u_char    buf[BUF_CAP];

    r->len = 0;
    r->n = 0;
    r->off = 0;
    r->copy_errors = 0;
    r->copies = 0;
    r->dbuf = buf;

    mg_es_init(&d, buf, cap);

    rc = MG_ES_OK;
    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        piece = malloc(to - from + 1);
        memcpy(piece, s + from, to - from);
        r->piece = piece;
        r->piece_len = to - from;
        r->piece_off = from;

        rc = mg_es_feed(&d, piece, to - from, rec_handler, r);

        free(piece);
        from = to;

        if (rc != MG_ES_OK) {
            break;
        }
    }

    fin = mg_es_finish(&d);

    r->len += snprintf(r->out + r->len, REC_CAP - r->len,
                       "rc:%d;finish:%d;pending:%zu\n", rc, fin,
                       mg_es_pending(&d));

    return (rc != MG_ES_OK) ? rc : fin;
}


static uint32_t  rnd_state = 12345;

static uint32_t
rnd(void)
{
    rnd_state = rnd_state * 1103515245 + 12345;
    return rnd_state >> 8;
}


/*
 * The reference is the whole stream fed at once; byte by byte, every cut
 * in two and random cuts in three must record exactly the same.
 */

static void
check_splits(const char *name, const u_char *s, size_t len, size_t cap,
    int nrandom)
{
    int            rc, bad;
    size_t         i, cuts[2], t, first_bad;
    size_t        *all;
    static rec_t   ref, r;

    rc = run(s, len, NULL, 0, cap, &ref);
    (void) rc;

    all = malloc((len + 1) * sizeof(size_t));

    for (i = 0; i < len; i++) {
        all[i] = i;
    }

    run(s, len, all, len, cap, &r);
    ok(r.len == ref.len && memcmp(r.out, ref.out, r.len) == 0,
       "%s: byte by byte as whole", name);
    ok(r.copy_errors == 0, "%s: byte by byte, pointers right", name);
    free(all);

    bad = 0;
    first_bad = 0;

    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        run(s, len, cuts, 1, cap, &r);

        if (r.len != ref.len || memcmp(r.out, ref.out, r.len) != 0
            || r.copy_errors)
        {
            if (bad++ == 0) {
                first_bad = i;
            }
        }
    }

    if (!ok(bad == 0, "%s: every cut in two (%zu) as whole", name, len + 1))
    {
        tap_diag("%d bad, first at %zu", bad, first_bad);
    }

    bad = 0;

    for (i = 0; i < (size_t) nrandom; i++) {
        cuts[0] = rnd() % (len + 1);
        cuts[1] = rnd() % (len + 1);

        if (cuts[0] > cuts[1]) {
            t = cuts[0];
            cuts[0] = cuts[1];
            cuts[1] = t;
        }

        run(s, len, cuts, 2, cap, &r);

        if (r.len != ref.len || memcmp(r.out, ref.out, r.len) != 0
            || r.copy_errors)
        {
            bad++;
        }
    }

    ok(bad == 0, "%s: %d random cuts in three as whole", name, nrandom);
}


static void
test_crc(void)
{
    is_int(crc32_bitwise((const u_char *) "123456789", 9), 0xcbf43926,
           "test CRC: check value");
    is_int(mg_es_crc32(0, (const u_char *) "123456789", 9), 0xcbf43926,
           "mg_es_crc32: check value");
    is_int(mg_es_crc32(mg_es_crc32(0, (const u_char *) "1234", 4),
                       (const u_char *) "56789", 5), 0xcbf43926,
           "mg_es_crc32: running");
    is_int(mg_es_crc32(0, NULL, 0), 0, "mg_es_crc32: nothing");
}


/* protocols.md 5.6: the aws-c-event-stream vectors and a Bedrock one */

static const u_char  vec_empty[] = {
    0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
    0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff
};

static const u_char  vec_payload[] = {
    0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00,
    0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27, 0x66, 0x6f,
    0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27,
    0x7d, 0xc3, 0x65, 0x39, 0x36
};

static const u_char  vec_header[] = {
    0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x20,
    0x07, 0xfd, 0x83, 0x96, 0x0c, 'c', 'o', 'n',
    't', 'e', 'n', 't', '-', 't', 'y', 'p',
    'e', 0x07, 0x00, 0x10, 'a', 'p', 'p', 'l',
    'i', 'c', 'a', 't', 'i', 'o', 'n', '/',
    'j', 's', 'o', 'n', 0x7b, 0x27, 0x66, 0x6f,
    0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27,
    0x7d, 0x8d, 0x9c, 0x08, 0xb1
};

static const u_char  vec_bedrock[] = {
    0x00, 0x00, 0x00, 0x94, 0x00, 0x00, 0x00, 0x57,
    0xb4, 0xab, 0x9a, 0xee, 0x0b, 0x3a, 0x65, 0x76,
    0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65,
    0x07, 0x00, 0x11, 0x63, 0x6f, 0x6e, 0x74, 0x65,
    0x6e, 0x74, 0x42, 0x6c, 0x6f, 0x63, 0x6b, 0x44,
    0x65, 0x6c, 0x74, 0x61, 0x0d, 0x3a, 0x63, 0x6f,
    0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79,
    0x70, 0x65, 0x07, 0x00, 0x10, 0x61, 0x70, 0x70,
    0x6c, 0x69, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e,
    0x2f, 0x6a, 0x73, 0x6f, 0x6e, 0x0d, 0x3a, 0x6d,
    0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x2d, 0x74,
    0x79, 0x70, 0x65, 0x07, 0x00, 0x05, 0x65, 0x76,
    0x65, 0x6e, 0x74, 0x7b, 0x22, 0x63, 0x6f, 0x6e,
    0x74, 0x65, 0x6e, 0x74, 0x42, 0x6c, 0x6f, 0x63,
    0x6b, 0x49, 0x6e, 0x64, 0x65, 0x78, 0x22, 0x3a,
    0x30, 0x2c, 0x22, 0x64, 0x65, 0x6c, 0x74, 0x61,
    0x22, 0x3a, 0x7b, 0x22, 0x74, 0x65, 0x78, 0x74,
    0x22, 0x3a, 0x22, 0x48, 0x69, 0x22, 0x7d, 0x7d,
    0x1f, 0x94, 0x46, 0x57
};


static void
test_vectors(void)
{
    int           rc;
    static enc_t  e;
    static rec_t  r;

    /* the encoder here must give the very bytes of the vectors */

    e.len = 0;
    enc_begin(&e);
    enc_end(&e, "", 0);
    ok(e.len == sizeof(vec_empty) && memcmp(e.b, vec_empty, e.len) == 0,
       "encoder: empty message vector");

    e.len = 0;
    enc_begin(&e);
    enc_end(&e, S("{'foo':'bar'}"));
    ok(e.len == sizeof(vec_payload)
       && memcmp(e.b, vec_payload, e.len) == 0,
       "encoder: payload vector");

    e.len = 0;
    enc_begin(&e);
    enc_string(&e, "content-type", "application/json");
    enc_end(&e, S("{'foo':'bar'}"));
    ok(e.len == sizeof(vec_header) && memcmp(e.b, vec_header, e.len) == 0,
       "encoder: header vector");

    e.len = 0;
    enc_event(&e, "contentBlockDelta",
              "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"}}");
    ok(e.len == sizeof(vec_bedrock)
       && memcmp(e.b, vec_bedrock, e.len) == 0,
       "encoder: Bedrock vector");

    /* and the decoder reads them */

    rc = run(vec_empty, sizeof(vec_empty), NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "empty vector: ok");
    is_int(r.n, 1, "empty vector: one message");
    is_int(r.keep[0].nheaders, 0, "empty vector: no headers");
    is_int(r.keep[0].payload_len, 0, "empty vector: no payload");
    is_int(r.copies, 0, "empty vector: not copied");
    is_int(r.copy_errors, 0, "empty vector: pointers right");

    rc = run(vec_payload, sizeof(vec_payload), NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "payload vector: ok");
    is_int(r.n, 1, "payload vector: one message");
    is_str(r.keep[0].payload, r.keep[0].payload_len, "{'foo':'bar'}",
           "payload vector: payload");

    rc = run(vec_header, sizeof(vec_header), NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "header vector: ok");
    is_int(r.n, 1, "header vector: one message");
    is_int(r.keep[0].nheaders, 1, "header vector: one header");
    is_str(r.keep[0].ct, strlen(r.keep[0].ct), "(null)",
           "header vector: content-type is no :content-type");
    is_str(r.keep[0].payload, r.keep[0].payload_len, "{'foo':'bar'}",
           "header vector: payload");

    rc = run(vec_bedrock, sizeof(vec_bedrock), NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "Bedrock vector: ok");
    is_int(r.n, 1, "Bedrock vector: one message");
    is_str(r.keep[0].mt, strlen(r.keep[0].mt), "event",
           "Bedrock vector: :message-type");
    is_str(r.keep[0].et, strlen(r.keep[0].et), "contentBlockDelta",
           "Bedrock vector: :event-type");
    is_str(r.keep[0].ct, strlen(r.keep[0].ct), "application/json",
           "Bedrock vector: :content-type");
    is_str(r.keep[0].xt, strlen(r.keep[0].xt), "(null)",
           "Bedrock vector: no :exception-type");
    is_str(r.keep[0].payload, r.keep[0].payload_len,
           "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"}}",
           "Bedrock vector: payload");

    check_splits("Bedrock vector", vec_bedrock, sizeof(vec_bedrock), BUF_CAP,
                 200);

    /* the four in a row, at the smallest buffer that holds them */

    e.len = 0;
    enc_bytes(&e, vec_empty, sizeof(vec_empty));
    enc_bytes(&e, vec_bedrock, sizeof(vec_bedrock));
    enc_bytes(&e, vec_payload, sizeof(vec_payload));
    enc_bytes(&e, vec_header, sizeof(vec_header));

    rc = run(e.b, e.len, NULL, 0, sizeof(vec_bedrock), &r);
    is_int(rc, MG_ES_OK, "vectors in a row: ok");
    is_int(r.n, 4, "vectors in a row: four messages");
    check_splits("vectors in a row", e.b, e.len, sizeof(vec_bedrock), 500);
}


/* a ConverseStream answer: text, then a tool call, then the usage */

typedef struct {
    const char  *type;
    const char  *payload;
} want_t;


static const want_t  converse[] = {
    { "messageStart", "{\"role\":\"assistant\"}" },
    { "contentBlockDelta",
      "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hel\"}}" },
    { "contentBlockDelta",
      "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"lo, \"}}" },
    { "contentBlockDelta",
      "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"w\xc3\xa9rld "
      "\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\"},\"p\":\"abcdefgh\"}" },
    { "contentBlockDelta",
      "{\"contentBlockIndex\":0,\"delta\":{\"text\":\". Checking.\"}}" },
    { "contentBlockStop", "{\"contentBlockIndex\":0}" },
    { "contentBlockStart",
      "{\"contentBlockIndex\":1,\"start\":{\"toolUse\":{\"toolUseId\":"
      "\"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q\",\"name\":\"get_weather\"}}}" },
    { "contentBlockDelta",
      "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":"
      "\"{\\\"city\\\":\"}}}" },
    { "contentBlockDelta",
      "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":"
      "\"\\\"Lyon\\\"}\"}}}" },
    { "contentBlockStop", "{\"contentBlockIndex\":1}" },
    { "messageStop", "{\"stopReason\":\"tool_use\"}" },
    { "metadata",
      "{\"usage\":{\"inputTokens\":412,\"outputTokens\":48,"
      "\"totalTokens\":460},\"metrics\":{\"latencyMs\":1187}}" },
};

#define NCONVERSE  (sizeof(converse) / sizeof(converse[0]))


static void
test_converse(void)
{
    int           rc, good;
    size_t        i, off, max;
    static enc_t  e;
    static rec_t  r;

    e.len = 0;

    for (i = 0; i < NCONVERSE; i++) {
        enc_event(&e, converse[i].type, converse[i].payload);
    }

    rc = run(e.b, e.len, NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "converse: ok");
    is_int(r.n, NCONVERSE, "converse: %zu messages", NCONVERSE);
    is_int(r.copies, 0, "converse: none copied when whole");
    is_int(r.copy_errors, 0, "converse: pointers into the input");

    good = 1;

    for (i = 0; i < NCONVERSE && i < (size_t) r.n; i++) {
        good &= (strcmp(r.keep[i].et, converse[i].type) == 0);
        good &= (strcmp(r.keep[i].mt, "event") == 0);
        good &= (strcmp(r.keep[i].ct, "application/json") == 0);
        good &= (strcmp(r.keep[i].xt, "(null)") == 0);
        good &= (r.keep[i].nheaders == 3 && r.keep[i].nheaders_all == 3);
        good &= (r.keep[i].payload_len == strlen(converse[i].payload)
                 && memcmp(r.keep[i].payload, converse[i].payload,
                           r.keep[i].payload_len) == 0);
    }

    ok(good, "converse: event types, headers and payloads");

    check_splits("converse", e.b, e.len, BUF_CAP, 2000);

    /* the buffer need only hold the largest message */

    max = 0;
    e.len = 0;

    for (i = 0; i < NCONVERSE; i++) {
        off = e.len;
        enc_event(&e, converse[i].type, converse[i].payload);
        max = (e.len - off > max) ? e.len - off : max;
    }

    check_splits("converse, cap the largest", e.b, e.len, max, 500);
    rc = run(e.b, e.len, NULL, 0, max, &r);
    is_int(rc, MG_ES_OK, "converse, cap the largest (%zu): ok", max);
    is_int(r.n, NCONVERSE, "converse, cap the largest: all messages");

    rc = run(e.b, e.len, NULL, 0, max - 1, &r);
    is_int(rc, MG_ES_ETOOBIG, "converse, cap one less: too big");
}


static void
test_exception(void)
{
    int                    rc;
    static enc_t           e;
    static rec_t           r;

    static const char  throttle[] =
        "{\"message\":\"Too many requests, please wait before trying "
        "again.\"}";

    e.len = 0;
    enc_event(&e, "messageStart", "{\"role\":\"assistant\"}");
    enc_event(&e, "contentBlockDelta",
              "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hel\"}}");
    enc_begin(&e);
    enc_string(&e, ":exception-type", "ThrottlingException");
    enc_string(&e, ":content-type", "application/json");
    enc_string(&e, ":message-type", "exception");
    enc_end(&e, S(throttle));

    rc = run(e.b, e.len, NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "exception: ok");
    is_int(r.n, 3, "exception: three messages");
    is_str(r.keep[2].mt, strlen(r.keep[2].mt), "exception",
           "exception: :message-type");
    is_str(r.keep[2].xt, strlen(r.keep[2].xt), "ThrottlingException",
           "exception: :exception-type");
    is_str(r.keep[2].et, strlen(r.keep[2].et), "(null)",
           "exception: no :event-type");
    is_str(r.keep[2].payload, r.keep[2].payload_len, throttle,
           "exception: payload");

    check_splits("exception", e.b, e.len, BUF_CAP, 500);

    /* a generic error: the code and text are headers, no payload */

    e.len = 0;
    enc_begin(&e);
    enc_string(&e, ":message-type", "error");
    enc_string(&e, ":error-code", "InternalFailure");
    enc_string(&e, ":error-message", "We encountered an internal error.");
    enc_end(&e, "", 0);

    rc = run(e.b, e.len, NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "error message: ok");
    ok(r.n == 1 && strstr(r.out, "ec:15:496e7465726e616c4661696c757265;")
       != NULL, "error message: :error-code");
    ok(strstr(r.out, "em:33:") != NULL, "error message: :error-message");
}


static int
types_handler(void *ctx, const mg_es_message_t *m)
{
    const mg_es_header_t  *h;
    int                   *n = ctx;

    (*n)++;

    is_int(m->nheaders, 14, "types: 14 headers");

#define num_of(name)                                                          \
    ((h = mg_es_header(m, S(name))) ? h->num : -999)
#define type_of(name)                                                         \
    ((h = mg_es_header(m, S(name))) ? (int) h->type : -1)

    is_int(type_of("t"), MG_ES_TRUE, "types: true");
    is_int(num_of("t"), 1, "types: true is 1");
    is_int(type_of("f"), MG_ES_FALSE, "types: false");
    is_int(num_of("f"), 0, "types: false is 0");
    is_int(num_of("byte"), -5, "types: byte -5");
    is_int(num_of("byte+"), 127, "types: byte 127");
    is_int(num_of("i16"), -2, "types: int16 -2");
    is_int(num_of("i16+"), 0x1234, "types: int16 0x1234");
    is_int(num_of("i32"), -2147483647LL - 1, "types: int32 min");
    is_int(num_of("i32+"), 0x7fffffff, "types: int32 max");
    is_int(num_of("i64"), -1, "types: int64 -1");
    is_int(num_of("ts"), 1718000000123LL, "types: timestamp ms");

    h = mg_es_header(m, S("i64"));
    ok(h && h->value_len == 8 && h->value[0] == 0xff, "types: int64 bytes");

    h = mg_es_header(m, S("bytes"));
    ok(h && h->type == MG_ES_BYTES && h->value_len == 4
       && memcmp(h->value, "\0\1\2\377", 4) == 0, "types: byte array");

    h = mg_es_header(m, S("uuid"));
    ok(h && h->type == MG_ES_UUID && h->value_len == 16
       && memcmp(h->value, "0123456789abcdef", 16) == 0, "types: uuid");

    h = mg_es_header(m, S("empty"));
    ok(h && h->type == MG_ES_STRING && h->value_len == 0,
       "types: empty string");

    ok(mg_es_header(m, S("nope")) == NULL, "types: absent header");
    ok(mg_es_header(m, S("i")) == NULL, "types: no prefix match");

    h = mg_es_header(m, S("i1"));
    ok(h && h->value_len == 1 && h->value[0] == 'x',
       "types: a name that is a prefix of others");

    is_str((const char *) m->payload, m->payload_len, "{}", "types: payload");

#undef num_of
#undef type_of

    return 0;
}


static void
test_types(void)
{
    int              rc, n;
    static enc_t     e;
    static rec_t     r;
    mg_es_decoder_t  d;
    static u_char    buf[1024];

    e.len = 0;
    enc_begin(&e);
    enc_name(&e, "t", MG_ES_TRUE);
    enc_name(&e, "f", MG_ES_FALSE);
    enc_int(&e, "byte", MG_ES_BYTE, -5, 1);
    enc_int(&e, "byte+", MG_ES_BYTE, 127, 1);
    enc_int(&e, "i16", MG_ES_INT16, -2, 2);
    enc_int(&e, "i16+", MG_ES_INT16, 0x1234, 2);
    enc_int(&e, "i32", MG_ES_INT32, -2147483647LL - 1, 4);
    enc_int(&e, "i32+", MG_ES_INT32, 0x7fffffff, 4);
    enc_int(&e, "i64", MG_ES_INT64, -1, 8);
    enc_str(&e, "bytes", MG_ES_BYTES, "\0\1\2\377", 4);
    enc_int(&e, "ts", MG_ES_TIMESTAMP, 1718000000123LL, 8);
    enc_name(&e, "uuid", MG_ES_UUID);
    enc_bytes(&e, "0123456789abcdef", 16);
    enc_string(&e, "empty", "");
    enc_string(&e, "i1", "x");
    enc_end(&e, "{}", 2);

    n = 0;
    mg_es_init(&d, buf, sizeof(buf));
    rc = mg_es_feed(&d, e.b, e.len, types_handler, &n);
    is_int(rc, MG_ES_OK, "types: ok");
    is_int(n, 1, "types: one message");

    check_splits("types", e.b, e.len, BUF_CAP, 300);

    /* known names with another type, repeated, past the array's end */

    e.len = 0;
    enc_begin(&e);
    enc_str(&e, ":message-type", MG_ES_BYTES, "event", 5);
    enc_string(&e, ":event-type", "first");
    enc_string(&e, ":event-type", "second");

    for (n = 0; n < 40; n++) {
        enc_name(&e, "x-flag", MG_ES_TRUE);
    }

    enc_string(&e, ":content-type", "text/plain");
    enc_end(&e, "late", 4);

    rc = run(e.b, e.len, NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "many headers: ok");
    is_int(r.keep[0].nheaders, MG_ES_MAX_HEADERS, "many headers: %d kept",
           MG_ES_MAX_HEADERS);
    is_int(r.keep[0].nheaders_all, 44, "many headers: 44 counted");
    is_str(r.keep[0].mt, strlen(r.keep[0].mt), "(null)",
           "many headers: a non-string :message-type is ignored");
    is_str(r.keep[0].et, strlen(r.keep[0].et), "first",
           "many headers: the first :event-type counts");
    is_str(r.keep[0].ct, strlen(r.keep[0].ct), "text/plain",
           "many headers: a known header beyond the array still found");
}


/* a broken stream gives the same messages and error however it is cut */

static void
check_broken(const char *name, const u_char *s, size_t len, size_t cap,
    int nmsgs, int err)
{
    int            rc;
    static rec_t   r;

    rc = run(s, len, NULL, 0, cap, &r);
    is_int(rc, err, "%s: %s", name, mg_es_strerror(err));
    is_int(r.n, nmsgs, "%s: %d good messages before", name, nmsgs);

    check_splits(name, s, len, cap, 300);
}


static void
test_broken(void)
{
    int              rc;
    size_t           off, off2, total;
    u_char           b[64];
    static enc_t     e, g;
    static rec_t     r;
    mg_es_decoder_t  d;
    static u_char    buf[256];

    /* g: two good messages to put before each broken one */

    g.len = 0;
    enc_event(&g, "messageStart", "{\"role\":\"assistant\"}");
    enc_event(&g, "contentBlockDelta",
              "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"}}");

#define broken_begin()                                                        \
    memcpy(e.b, g.b, g.len);                                                 \
    e.len = g.len

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    e.b[off + 9] ^= 0x01;
    check_broken("prelude CRC", e.b, e.len, BUF_CAP, 2, MG_ES_EPRELUDE);

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    e.b[off + 3] ^= 0x01;
    check_broken("total length changed", e.b, e.len, BUF_CAP, 2,
                 MG_ES_EPRELUDE);

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    e.b[e.len - 1] ^= 0x80;
    check_broken("message CRC", e.b, e.len, BUF_CAP, 2, MG_ES_ECRC);

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    e.b[e.len - 6] ^= 0x20;
    check_broken("payload byte", e.b, e.len, BUF_CAP, 2, MG_ES_ECRC);

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    e.b[off + 20] ^= 0x20;
    check_broken("header byte", e.b, e.len, BUF_CAP, 2, MG_ES_ECRC);

    /* then a good message after the bad one is never seen */

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    e.b[e.len - 6] ^= 0x20;
    enc_event(&e, "metadata", "{}");
    check_broken("message CRC, more after", e.b, e.len, BUF_CAP, 2,
                 MG_ES_ECRC);

    /* truncated: at every length short of the end */

    broken_begin();
    off = enc_event(&e, "messageStop", "{\"stopReason\":\"end_turn\"}");
    total = e.len - off;

    for (off2 = 1; off2 < total; off2 += (off2 < 16) ? 1 : 17) {
        rc = run(e.b, e.len - off2, NULL, 0, BUF_CAP, &r);

        if (!is_int(rc, MG_ES_ETRUNCATED, "truncated by %zu: %s", off2,
                    mg_es_strerror(rc)))
        {
            break;
        }
    }

    check_broken("truncated", e.b, e.len - 1, BUF_CAP, 2, MG_ES_ETRUNCATED);

    mg_es_init(&d, buf, sizeof(buf));
    rc = mg_es_feed(&d, e.b + off, total - 5, rec_handler, &r);
    is_int(rc, MG_ES_OK, "truncated: feed ok");
    is_int(mg_es_pending(&d), total - 5, "truncated: bytes pending");
    is_int(mg_es_finish(&d), MG_ES_ETRUNCATED, "truncated: finish");
    is_int(mg_es_feed(&d, e.b + off + total - 5, 5, rec_handler, &r),
           MG_ES_ETRUNCATED, "truncated: sticky");
    is_int(mg_es_finish(&d), MG_ES_ETRUNCATED, "truncated: finish again");

    mg_es_init(&d, buf, sizeof(buf));
    is_int(mg_es_finish(&d), MG_ES_OK, "nothing fed: finish ok");
    is_int(mg_es_feed(&d, e.b, 0, rec_handler, &r), MG_ES_OK,
           "nothing fed: zero bytes ok");
    is_int(mg_es_feed(&d, NULL, 0, rec_handler, &r), MG_ES_OK,
           "nothing fed: NULL ok");

    /* oversize: one byte over cap, wherever the message falls */

    broken_begin();
    off = enc_event(&e, "metadata",
                    "{\"usage\":{\"inputTokens\":25,\"outputTokens\":12,"
                    "\"totalTokens\":37},\"metrics\":{\"latencyMs\":640}}");
    total = e.len - off;
    ok(total > off / 2 && total > off - g.len / 2,
       "oversize: the last message is the largest");
    check_broken("oversize", e.b, e.len, total - 1, 2, MG_ES_ETOOBIG);

    rc = run(e.b, e.len, NULL, 0, total, &r);
    is_int(rc, MG_ES_OK, "cap exactly the largest message: ok");

    /* an oversize message is refused from its prelude alone */

    mg_es_init(&d, buf, 16);
    rc = mg_es_feed(&d, e.b + off, 12, rec_handler, &r);
    is_int(rc, MG_ES_ETOOBIG, "oversize: refused at the prelude");
    is_int(mg_es_feed(&d, vec_empty, sizeof(vec_empty), rec_handler, &r),
           MG_ES_ETOOBIG, "oversize: sticky");

    /* a huge declared length, CRC right */

    memset(b, 0, sizeof(b));
    put32(b, 0x7fffffff);
    put32(b + 8, crc32_bitwise(b, 8));
    broken_begin();
    enc_bytes(&e, b, 20);
    check_broken("2 GiB declared", e.b, e.len, BUF_CAP, 2, MG_ES_ETOOBIG);

    /* lengths: total < 16, headers beyond the end, CRCs right */

    memset(b, 0, sizeof(b));
    put32(b, 15);
    put32(b + 8, crc32_bitwise(b, 8));
    broken_begin();
    enc_bytes(&e, b, 16);
    check_broken("total 15", e.b, e.len, BUF_CAP, 2, MG_ES_ELENGTH);

    memset(b, 0, sizeof(b));
    put32(b, 0);
    put32(b + 8, crc32_bitwise(b, 8));
    broken_begin();
    enc_bytes(&e, b, 16);
    check_broken("total 0", e.b, e.len, BUF_CAP, 2, MG_ES_ELENGTH);

    memset(b, 0, sizeof(b));
    put32(b, 20);
    put32(b + 4, 5);
    put32(b + 8, crc32_bitwise(b, 8));
    broken_begin();
    enc_bytes(&e, b, 20);
    check_broken("headers 5 of total 20", e.b, e.len, BUF_CAP, 2,
                 MG_ES_ELENGTH);

    memset(b, 0, sizeof(b));
    put32(b, 20);
    put32(b + 4, 0xffffffff);
    put32(b + 8, crc32_bitwise(b, 8));
    broken_begin();
    enc_bytes(&e, b, 20);
    check_broken("headers 4 GiB", e.b, e.len, BUF_CAP, 2, MG_ES_ELENGTH);

    /* exactly: headers fill the message, no payload */

    e.len = 0;
    enc_begin(&e);
    enc_string(&e, ":event-type", "x");
    enc_end(&e, "", 0);
    rc = run(e.b, e.len, NULL, 0, BUF_CAP, &r);
    is_int(rc, MG_ES_OK, "headers and no payload: ok");
    ok(r.n == 1 && r.keep[0].payload_len == 0,
       "headers and no payload: empty payload");

    /* header blocks that are wrong, with right CRCs */

#define bad_header(name, bytes)                                               \
    broken_begin();                                                          \
    off = e.len;                                                             \
    enc_begin(&e);                                                           \
    enc_bytes(&e, bytes, sizeof(bytes) - 1);                                 \
    enc_end(&e, "{}", 2);                                                    \
    check_broken(name, e.b, e.len, BUF_CAP, 2, MG_ES_EHEADER)

    bad_header("header name length 0", "\x00\x07\x00\x00");
    bad_header("header name past the block", "\x05:abc");
    bad_header("header without its type", "\x04:abc");
    bad_header("header type 10", "\x02:a\x0a");
    bad_header("header type 255", "\x02:a\xff");
    bad_header("string length past the block", "\x02:a\x07\x00\x05" "abcd");
    bad_header("string length cut", "\x02:a\x07\x00");
    bad_header("bytes length past the block", "\x02:a\x06\x01\x00" "abcd");
    bad_header("int32 cut", "\x02:a\x04\x00\x00\x00");
    bad_header("int64 cut", "\x02:a\x05\x00\x00\x00\x00\x00\x00\x00");
    bad_header("byte missing", "\x02:a\x02");
    bad_header("int16 cut", "\x02:a\x03\x00");
    bad_header("timestamp cut", "\x02:a\x08\x00\x00\x00");
    bad_header("uuid cut", "\x02:a\x09" "0123456789abcde");
    bad_header("a good header then a bad one",
               "\x02:a\x00\x02:b\x07\x00\x09" "abc");

    (void) off;
}


static void
test_stop(void)
{
    int              rc;
    size_t           i;
    static enc_t     e;
    static rec_t     r;
    mg_es_decoder_t  d;
    static u_char    buf[1024];

    e.len = 0;

    for (i = 0; i < 4; i++) {
        enc_event(&e, "contentBlockDelta",
                  "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"x\"}}");
    }

    memset(&r, 0, sizeof(r));
    r.dbuf = buf;
    r.piece = e.b;
    r.piece_len = e.len;
    r.stop_at = 2;

    mg_es_init(&d, buf, sizeof(buf));
    rc = mg_es_feed(&d, e.b, e.len, rec_handler, &r);
    is_int(rc, 7, "stop: the handler's value returned");
    is_int(r.n, 2, "stop: no message after the stop");
    is_int(mg_es_feed(&d, e.b, e.len, rec_handler, &r), MG_ES_ESTOPPED,
           "stop: stopped for good");
    is_int(mg_es_finish(&d), MG_ES_ESTOPPED, "stop: finish says stopped");
    is_int(r.n, 2, "stop: still two messages");

    for (i = 0; i <= 8; i++) {
        ok(strlen(mg_es_strerror(-(int) i)) > 0, "strerror(%d): %s",
           -(int) i, mg_es_strerror(-(int) i));
    }
}


int
main(void)
{
    test_crc();
    test_vectors();
    test_converse();
    test_exception();
    test_types();
    test_broken();
    test_stop();

    return tap_done();
}
