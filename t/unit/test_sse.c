/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The SSE tokenizer: real OpenAI and Anthropic streams and a stream of odd
 * cases, fed whole, byte by byte and cut at every point, must give the
 * same events; raw bytes must add up to the stream; limits and the error
 * and [DONE] predicates.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "mg_sse.h"


#define S(s)  s, sizeof(s) - 1

#define BUF_CAP   4096
#define DBUF_CAP  4096
#define REC_CAP   65536


/* the events seen, serialized so that two runs compare with memcmp */

typedef struct {
    char            out[REC_CAP];
    size_t          len;
    int             n;
    int             stop_at;        /* return 7 from this event on, if > 0 */

    /* for the zero-copy check */
    const char     *piece;
    size_t          piece_len;
    size_t          piece_off;      /* of the piece in the stream */
    size_t          off;            /* of the next event in the stream */
    const char     *pbuf;
    int             copy_errors;
    int             copies;
} rec_t;


static void
rec_put(rec_t *r, const char *tag, const char *s, size_t len)
{
    int  n;

    if (s == NULL) {
        n = snprintf(r->out + r->len, REC_CAP - r->len, "%s:NULL;", tag);

    } else {
        n = snprintf(r->out + r->len, REC_CAP - r->len, "%s:%zu:", tag, len);
    }

    r->len += n;

    if (s && r->len + len + 1 < REC_CAP) {
        memcpy(r->out + r->len, s, len);
        r->len += len;
        r->out[r->len++] = ';';
    }
}


static int
rec_handler(void *ctx, const mg_sse_event_t *ev)
{
    int     inside;
    rec_t  *r = ctx;

    rec_put(r, "event", ev->event, ev->event_len);
    rec_put(r, "data", ev->data, ev->data_len);
    rec_put(r, "raw", ev->raw, ev->raw_len);
    r->out[r->len++] = '\n';

    /* an event wholly inside this call's bytes must not be copied */

    inside = (r->off >= r->piece_off
              && r->off + ev->raw_len <= r->piece_off + r->piece_len);

    if (inside) {
        if (r->piece && ev->raw != r->piece + (r->off - r->piece_off)) {
            r->copy_errors++;
        }

    } else {
        r->copies++;

        if (ev->raw != r->pbuf) {
            r->copy_errors++;
        }
    }

    r->off += ev->raw_len;
    r->n++;

    if (r->stop_at > 0 && r->n >= r->stop_at) {
        return 7;
    }

    return 0;
}


/*
 * Feeds the stream cut at the given points (sorted, may repeat) and
 * records the events.  Returns the last result of mg_sse_feed().
 */

static int
run(const char *s, size_t len, const size_t *cuts, size_t ncuts,
    size_t cap, size_t dcap, rec_t *r, size_t *pending)
{
    int                      rc;
    size_t                   i, from, to, bom;
    mg_sse_parser_t          p;
    static char              buf[BUF_CAP], dbuf[DBUF_CAP];

    memset(r, 0, sizeof(rec_t));
    mg_sse_init(&p, buf, cap, dbuf, dcap);

    bom = (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) ? 3 : 0;
    r->off = bom;
    r->pbuf = buf;

    rc = MG_SSE_OK;
    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        /* a private copy, so that a pointer into an old piece is caught */

        char  *piece = malloc(to - from + 1);

        memcpy(piece, s + from, to - from);
        r->piece = piece;
        r->piece_len = to - from;
        r->piece_off = from;

        rc = mg_sse_feed(&p, piece, to - from, rec_handler, r);

        free(piece);
        from = to;

        if (rc != MG_SSE_OK) {
            break;
        }
    }

    if (pending) {
        *pending = mg_sse_pending(&p);
    }

    return rc;
}


static const char  openai[] =
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
    "\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
    "\"index\":0,\"delta\":{\"content\":\"H\xc3\xa9llo\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
    "\"index\":0,\"delta\":{\"content\":\" w\xf0\x9f\x98\x80rld\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
    "\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}"
    "]}\n\n"
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,"
    "\"total_tokens\":12}}\n\n"
    "data: [DONE]\n\n";

static const char  anthropic[] =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
    "\"model\":\"claude-3-5-sonnet-20240620\",\"stop_reason\":null,"
    "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,"
    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n"
    "event: ping\r\n"
    "data: {\"type\": \"ping\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
    "\"type\":\"text_delta\",\"text\":\"Hello \xe4\xb8\x96\xe7\x95\x8c\"}}"
    "\r\n\r\n"
    "event: content_block_stop\r\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n"
    "event: message_delta\r\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
    "\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n"
    "event: error\r\n"
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
    "\"message\":\"Overloaded\"}}\r\n\r\n"
    "event: message_stop\r\n"
    "data: {\"type\":\"message_stop\"}\r\n\r\n";

static const char  odd[] =
    "\xef\xbb\xbf"
    "data:nospace\n\n"
    "data:  two spaces\n\n"
    "data\n\n"
    "data:\n\n"
    "event:x\ndata: a\ndata:b\ndata\ndata: c\n\n"
    "id: 5\nretry: 100\nfoo: bar\n\n"
    ": only a comment\n: another\n\n"
    "event: e1\nevent: e2\n: note\ndata: d\nid: 6\n\n"
    "data: cr only\r\r"
    "data: mixed\r\ndata: line\n\r\n"
    "event\ndata: x\n\n"
    "\n"
    "\r\n"
    "data: colon: inside\n\n"
    "Data: case\n\n"
    "data: \xef\xbb\xbf" "bom inside\n\n"
    "event: \n\n"
    "data: trailing\r\n\r\n";

static const char  bomish[] =
    "\xef\xbb" "data: x\n\n"
    "\xef\xbb\xbf" "data: y\n\n";


typedef struct {
    const char  *event;
    const char  *data;
} want_t;


static const want_t  openai_want[] = {
    { NULL, "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
      "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
      "\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
      "\"logprobs\":null,\"finish_reason\":null}]}" },
    { NULL, "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
      "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
      "\"index\":0,\"delta\":{\"content\":\"H\xc3\xa9llo\"},"
      "\"logprobs\":null,\"finish_reason\":null}]}" },
    { NULL, "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
      "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
      "\"index\":0,\"delta\":{\"content\":\" w\xf0\x9f\x98\x80rld\"},"
      "\"logprobs\":null,\"finish_reason\":null}]}" },
    { NULL, NULL },
    { NULL, "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
      "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[{"
      "\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}"
      "]}" },
    { NULL, "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
      "\"created\":1718000000,\"model\":\"gpt-4o-2024-05-13\",\"choices\":[],"
      "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,"
      "\"total_tokens\":12}}" },
    { NULL, "[DONE]" },
};

static const want_t  anthropic_want[] = {
    { "message_start",
      "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\","
      "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
      "\"model\":\"claude-3-5-sonnet-20240620\",\"stop_reason\":null,"
      "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}" },
    { "content_block_start",
      "{\"type\":\"content_block_start\",\"index\":0,"
      "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}" },
    { "ping", "{\"type\": \"ping\"}" },
    { "content_block_delta",
      "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
      "\"type\":\"text_delta\",\"text\":\"Hello \xe4\xb8\x96\xe7\x95\x8c\"}}" },
    { "content_block_stop",
      "{\"type\":\"content_block_stop\",\"index\":0}" },
    { "message_delta",
      "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
      "\"end_turn\"},\"usage\":{\"output_tokens\":15}}" },
    { "error",
      "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
      "\"message\":\"Overloaded\"}}" },
    { "message_stop", "{\"type\":\"message_stop\"}" },
};

static const want_t  odd_want[] = {
    { NULL, "nospace" },
    { NULL, " two spaces" },
    { NULL, "" },
    { NULL, "" },
    { "x", "a\nb\n\nc" },
    { NULL, NULL },
    { NULL, NULL },
    { "e2", "d" },
    { NULL, "cr only" },
    { NULL, "mixed\nline" },
    { "", "x" },
    { NULL, NULL },
    { NULL, NULL },
    { NULL, "colon: inside" },
    { NULL, NULL },
    { NULL, "\xef\xbb\xbf" "bom inside" },
    { "", NULL },
    { NULL, "trailing" },
};

static const want_t  bomish_want[] = {
    { NULL, NULL },
    { NULL, NULL },
};

/* a broken BOM followed at once by the end of its line */
static const char  bomnl[] = "\xef\xbb\n\ndata: y\n\n";

static const want_t  bomnl_want[] = {
    { NULL, NULL },
    { NULL, "y" },
};


/* checks the reference run against the expected list, event by event */

static void
check_events(const char *name, const char *s, size_t len,
    const want_t *want, size_t nwant)
{
    int          rc;
    char         exp[REC_CAP];
    size_t       i, n, pending, bom, raw;
    const char  *p, *e;
    static rec_t r;

    rc = run(s, len, NULL, 0, BUF_CAP, DBUF_CAP, &r, &pending);
    is_int(rc, MG_SSE_OK, "%s: fed whole", name);
    is_int(r.n, nwant, "%s: %zu events", name, nwant);
    is_int(pending, 0, "%s: nothing pending at the end", name);
    is_int(r.copy_errors, 0, "%s: raw points into the input", name);
    is_int(r.copies, 0, "%s: no event copied", name);

    /* rebuild the expected record, raw taken line by line from s */

    bom = (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) ? 3 : 0;
    p = s + bom;
    n = 0;

    for (i = 0; i < nwant && n < REC_CAP - 64; i++) {
        n += snprintf(exp + n, REC_CAP - n, want[i].event ? "event:%zu:"
                      : "event:NULL;",
                      want[i].event ? strlen(want[i].event) : 0);

        if (want[i].event) {
            n += snprintf(exp + n, REC_CAP - n, "%s;", want[i].event);
        }

        if (want[i].data) {
            n += snprintf(exp + n, REC_CAP - n, "data:%zu:",
                          strlen(want[i].data));
            memcpy(exp + n, want[i].data, strlen(want[i].data));
            n += strlen(want[i].data);
            exp[n++] = ';';

        } else {
            n += snprintf(exp + n, REC_CAP - n, "data:NULL;");
        }

        /* the raw event ends after the first blank line */

        e = p;

        for ( ;; ) {
            size_t  l = strcspn(e, "\r\n");
            int     blank = (l == 0);

            e += l;

            if (*e == '\r' && e[1] == '\n') {
                e += 2;

            } else {
                e++;
            }

            if (blank) {
                break;
            }
        }

        raw = e - p;
        n += snprintf(exp + n, REC_CAP - n, "raw:%zu:", raw);
        memcpy(exp + n, p, raw);
        n += raw;
        exp[n++] = ';';
        exp[n++] = '\n';
        p = e;
    }

    ok(r.len == n && memcmp(r.out, exp, n) == 0,
       "%s: events are as expected", name);

    if (r.len != n || memcmp(r.out, exp, n) != 0) {
        tap_diag_str("got", r.out, r.len);
        tap_diag_str("expected", exp, n);
    }

    /* the raw bytes are the whole stream, less the BOM */

    is_int(r.off, len, "%s: raw bytes add up to the stream", name);
}


static uint64_t  rng_state = 0x2545f4914f6cdd1dULL;

static uint32_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t) (rng_state >> 11);
}


static int
cmp_size(const void *a, const void *b)
{
    size_t  x = *(const size_t *) a, y = *(const size_t *) b;

    return (x > y) - (x < y);
}


static void
check_splits(const char *name, const char *s, size_t len)
{
    int            rc, bad, badrc, copies, copy_errors;
    size_t         i, j, k, n, pending, cuts[64];
    static rec_t   ref, r;

    rc = run(s, len, NULL, 0, BUF_CAP, DBUF_CAP, &ref, &pending);
    is_int(rc, MG_SSE_OK, "%s: reference run", name);

    /* byte by byte */

    {
        size_t  *all = malloc(len * sizeof(size_t));

        for (i = 0; i < len; i++) {
            all[i] = i;
        }

        rc = run(s, len, all, len, BUF_CAP, DBUF_CAP, &r, &pending);
        free(all);
    }

    ok(rc == MG_SSE_OK && r.len == ref.len
       && memcmp(r.out, ref.out, r.len) == 0 && pending == 0,
       "%s: byte by byte gives the same events", name);
    is_int(r.copy_errors, 0, "%s: byte by byte: raw from buf", name);

    /* every 2-piece split */

    bad = 0;
    badrc = 0;
    copies = 0;
    copy_errors = 0;

    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        rc = run(s, len, cuts, 1, BUF_CAP, DBUF_CAP, &r, &pending);

        badrc += (rc != MG_SSE_OK || pending != 0);
        copies += r.copies;
        copy_errors += r.copy_errors;

        if (r.len != ref.len || memcmp(r.out, ref.out, r.len) != 0) {
            if (bad++ == 0) {
                tap_diag("%s: first bad split at %zu", name, i);
            }
        }
    }

    ok(bad == 0 && badrc == 0, "%s: all %zu two-piece splits agree", name,
       len + 1);
    is_int(copy_errors, 0, "%s: two-piece splits: zero-copy when whole",
           name);

    /* at most one event per split is copied: the one cut */
    ok(copies <= (int) (len + 1), "%s: copies only of cut events (%d)",
       name, copies);

    /* random 3-piece splits */

    bad = 0;
    badrc = 0;
    copy_errors = 0;

    for (k = 0; k < 3000; k++) {
        cuts[0] = rnd() % (len + 1);
        cuts[1] = rnd() % (len + 1);
        qsort(cuts, 2, sizeof(size_t), cmp_size);

        rc = run(s, len, cuts, 2, BUF_CAP, DBUF_CAP, &r, &pending);

        badrc += (rc != MG_SSE_OK || pending != 0);
        copy_errors += r.copy_errors;

        if (r.len != ref.len || memcmp(r.out, ref.out, r.len) != 0) {
            if (bad++ == 0) {
                tap_diag("%s: bad split at %zu, %zu", name, cuts[0],
                         cuts[1]);
            }
        }
    }

    ok(bad == 0 && badrc == 0 && copy_errors == 0,
       "%s: 3000 random three-piece splits agree", name);

    /* random many-piece splits */

    bad = 0;

    for (k = 0; k < 1000; k++) {
        n = 1 + rnd() % 63;

        for (j = 0; j < n; j++) {
            cuts[j] = rnd() % (len + 1);
        }

        qsort(cuts, n, sizeof(size_t), cmp_size);

        rc = run(s, len, cuts, n, BUF_CAP, DBUF_CAP, &r, &pending);

        if (rc != MG_SSE_OK || pending != 0 || r.copy_errors
            || r.len != ref.len || memcmp(r.out, ref.out, r.len) != 0)
        {
            bad++;
        }
    }

    is_int(bad, 0, "%s: 1000 random many-piece splits agree", name);
}


static void
test_streams(void)
{
    check_events("openai", S(openai), openai_want,
                 sizeof(openai_want) / sizeof(want_t));
    check_events("anthropic", S(anthropic), anthropic_want,
                 sizeof(anthropic_want) / sizeof(want_t));
    check_events("odd", S(odd), odd_want, sizeof(odd_want) / sizeof(want_t));
    check_events("bomish", S(bomish), bomish_want,
                 sizeof(bomish_want) / sizeof(want_t));
    check_events("bomnl", S(bomnl), bomnl_want,
                 sizeof(bomnl_want) / sizeof(want_t));

    check_splits("openai", S(openai));
    check_splits("anthropic", S(anthropic));
    check_splits("odd", S(odd));
    check_splits("bomish", S(bomish));
    check_splits("bomnl", S(bomnl));
}


static void
test_bom(void)
{
    int            rc;
    size_t         pending, cuts[2];
    static rec_t   r;

    /* "\xef\xbb" is not a BOM: it is the start of the first event */

    rc = run(S(bomish), NULL, 0, BUF_CAP, DBUF_CAP, &r, &pending);
    is_int(rc, MG_SSE_OK, "bomish: fed whole");
    is_int(r.n, 2, "bomish: 2 events");
    is_str(r.out, r.len,
           "event:NULL;data:NULL;raw:11:\xef\xbb" "data: x\n\n;\n"
           "event:NULL;data:NULL;raw:12:\xef\xbb\xbf" "data: y\n\n;\n",
           "bomish: a broken BOM and a later BOM are kept in raw");

    /* a BOM cut in three, then the rest */

    cuts[0] = 1;
    cuts[1] = 2;
    rc = run(S("\xef\xbb\xbf" "data: z\n\n"), cuts, 2, BUF_CAP, DBUF_CAP, &r,
             &pending);
    is_str(r.out, r.len, "event:NULL;data:1:z;raw:9:data: z\n\n;\n",
           "BOM cut in pieces is skipped");
    is_int(r.copy_errors, 0, "event after a cut BOM is not copied");

    /* a stream of just a BOM */

    rc = run(S("\xef\xbb\xbf"), NULL, 0, BUF_CAP, DBUF_CAP, &r, &pending);
    ok(rc == MG_SSE_OK && r.n == 0 && pending == 0, "lone BOM: nothing");

    /* a partial BOM is held back */

    rc = run(S("\xef\xbb"), NULL, 0, BUF_CAP, DBUF_CAP, &r, &pending);
    ok(rc == MG_SSE_OK && r.n == 0 && pending == 2,
       "partial BOM is pending (%zu)", pending);
}


static void
test_pending(void)
{
    int                rc;
    char               buf[64];
    mg_sse_parser_t    p;
    static rec_t       r;

    memset(&r, 0, sizeof(r));
    r.pbuf = buf;
    mg_sse_init(&p, buf, sizeof(buf), NULL, 0);

    rc = mg_sse_feed(&p, S("data: x\n"), rec_handler, &r);
    ok(rc == MG_SSE_OK && r.n == 0, "a line alone is no event");
    is_int(mg_sse_pending(&p), 8, "the line is pending");

    rc = mg_sse_feed(&p, S(""), rec_handler, &r);
    ok(rc == MG_SSE_OK && r.n == 0 && mg_sse_pending(&p) == 8,
       "feeding nothing changes nothing");

    r.off = 8;
    r.piece_off = 8;
    r.piece_len = 1;
    rc = mg_sse_feed(&p, S("\n"), rec_handler, &r);
    is_int(r.n, 1, "the blank line completes it");
    is_str(r.out, r.len, "event:NULL;data:1:x;raw:9:data: x\n\n;\n",
           "assembled in buf");
    is_int(mg_sse_pending(&p), 0, "nothing pending after");

    /* a CR at the end of a call: the LF may follow, so the event waits */

    memset(&r, 0, sizeof(r));
    r.pbuf = buf;
    mg_sse_init(&p, buf, sizeof(buf), NULL, 0);

    rc = mg_sse_feed(&p, S("data: x\r\r"), rec_handler, &r);
    ok(rc == MG_SSE_OK && r.n == 0, "event ended by CR waits");
    is_int(mg_sse_pending(&p), 9, "it is pending");

    r.piece_off = 9;
    r.piece_len = 11;
    r.off = 9;
    rc = mg_sse_feed(&p, S("\ndata: y\n\n"), rec_handler, &r);
    is_int(r.n, 2, "both events once the next byte is known");
    is_str(r.out, r.len,
           "event:NULL;data:1:x;raw:10:data: x\r\r\n;\n"
           "event:NULL;data:1:y;raw:9:data: y\n\n;\n",
           "the LF after the CR belongs to the first event");

    memset(&r, 0, sizeof(r));
    r.pbuf = buf;
    mg_sse_init(&p, buf, sizeof(buf), NULL, 0);

    mg_sse_feed(&p, S("data: x\r\r"), rec_handler, &r);
    rc = mg_sse_feed(&p, S("data: y\r\r"), rec_handler, &r);
    is_str(r.out, r.len, "event:NULL;data:1:x;raw:9:data: x\r\r;\n",
           "a CR-ended event is out when another byte comes");
    is_int(mg_sse_pending(&p), 9, "the second one waits");
}


static void
test_limits(void)
{
    int              rc;
    char             buf[32], dbuf[16];
    size_t           i, pending, cuts[1];
    mg_sse_parser_t  p;
    static rec_t     r;

    /* exactly cap bytes: fine however it is cut */

    for (i = 0; i <= 32; i++) {
        cuts[0] = i;
        rc = run(S("data: 012345678901234567890123\n\n"), cuts, 1, 32, 16, &r,
                 &pending);

        if (rc != MG_SSE_OK || r.n != 1) {
            break;
        }
    }

    is_int(i, 33, "an event of exactly cap bytes, every split");

    /* one byte more: ETOOBIG however it is cut, after earlier events */

    for (i = 0; i <= 42; i++) {
        cuts[0] = i;
        rc = run(S("data: a\n\ndata: 0123456789012345678901234\n\n"), cuts, 1,
                 32, 16, &r, &pending);

        if (rc != MG_SSE_ETOOBIG || r.n != 1) {
            break;
        }
    }

    is_int(i, 43, "an event of cap + 1 bytes gives ETOOBIG, every split");

    /* an unterminated event too big already */

    rc = run(S("data: 0123456789012345678901234567890123456789"), NULL, 0,
             32, 16, &r, &pending);
    is_int(rc, MG_SSE_ETOOBIG, "unterminated event larger than cap");

    /* the error sticks */

    memset(&r, 0, sizeof(r));
    mg_sse_init(&p, buf, sizeof(buf), dbuf, sizeof(dbuf));
    rc = mg_sse_feed(&p, S("data: 0123456789012345678901234567890\n\n"),
                     rec_handler, &r);
    is_int(rc, MG_SSE_ETOOBIG, "too big");
    rc = mg_sse_feed(&p, S("data: a\n\n"), rec_handler, &r);
    is_int(rc, MG_SSE_ETOOBIG, "the parser stays failed");
    is_int(r.n, 0, "and reports nothing more");

    /* joined data must fit dbuf */

    rc = run(S("data: abcd\ndata: efghijklm\ndata: l\n\n"), NULL, 0, 64,
             16, &r, &pending);
    is_int(rc, MG_SSE_OK, "joined data of exactly dcap bytes");
    is_str(r.out, r.len,
           "event:NULL;data:16:abcd\nefghijklm\nl;"
           "raw:36:data: abcd\ndata: efghijklm\ndata: l\n\n;\n",
           "joined data");

    for (i = 0; i <= 37; i++) {
        cuts[0] = i;
        rc = run(S("data: abcd\ndata: efghijklm\ndata: lm\n\n"), cuts, 1,
                 64, 16, &r, &pending);

        if (rc != MG_SSE_ETOOBIG || r.n != 0) {
            break;
        }
    }

    is_int(i, 38, "joined data of dcap + 1 bytes gives ETOOBIG, every split");

    rc = run(S("data: 0123456789012345678901\n\n"), NULL, 0, 32, 0, &r,
             &pending);
    is_int(rc, MG_SSE_OK, "one data line needs no dbuf, even past dcap");

    memset(&r, 0, sizeof(r));
    mg_sse_init(&p, buf, sizeof(buf), NULL, 0);
    rc = mg_sse_feed(&p, S("data: a\ndata: b\n\n"), rec_handler, &r);
    is_int(rc, MG_SSE_ETOOBIG, "two data lines without dbuf");

    memset(&r, 0, sizeof(r));
    mg_sse_init(&p, buf, sizeof(buf), NULL, 0);
    rc = mg_sse_feed(&p, S("data\ndata\n\n"), rec_handler, &r);
    is_int(rc, MG_SSE_ETOOBIG, "two empty data lines without dbuf");

    /* the handler stops the feed */

    memset(&r, 0, sizeof(r));
    r.stop_at = 2;
    mg_sse_init(&p, buf, sizeof(buf), dbuf, sizeof(dbuf));
    r.pbuf = buf;
    r.piece_len = 27;
    rc = mg_sse_feed(&p, S("data: 1\n\ndata: 2\n\ndata: 3\n\n"), rec_handler,
                     &r);
    is_int(rc, 7, "the handler's result is returned");
    is_int(r.n, 2, "no event after the stop");
}


static int
is_error(const char *event, const char *data)
{
    mg_sse_event_t  ev;

    memset(&ev, 0, sizeof(ev));
    ev.event = event;
    ev.event_len = event ? strlen(event) : 0;
    ev.data = data;
    ev.data_len = data ? strlen(data) : 0;

    return mg_sse_is_error(&ev);
}


static int
is_error_kind(const char *kind, const char *event, const char *data)
{
    mg_sse_event_t  ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.kind_len = strlen(kind);
    ev.event = event;
    ev.event_len = strlen(event);
    ev.data = data;
    ev.data_len = strlen(data);

    return mg_sse_is_error(&ev);
}


static int
is_done(const char *data, size_t len)
{
    mg_sse_event_t  ev;

    memset(&ev, 0, sizeof(ev));
    ev.data = data;
    ev.data_len = len;

    return mg_sse_is_done(&ev);
}


static void
test_predicates(void)
{
    ok(is_error("error", NULL), "event error");
    ok(is_error("error", "{}"), "event error with any data");
    ok(!is_error("errors", NULL), "event errors");
    ok(!is_error("Error", NULL), "event Error");
    ok(!is_error("message", "{\"a\":1}"), "plain message");
    ok(!is_error(NULL, NULL), "no event, no data");
    ok(is_error(NULL, "{\"error\":{\"message\":\"x\",\"type\":\"y\"}}"),
       "OpenAI error object");
    ok(is_error(NULL, "{\"type\":\"error\",\"error\":{\"type\":"
                "\"overloaded_error\",\"message\":\"Overloaded\"}}"),
       "Anthropic error object");
    ok(is_error(NULL, " \n{\"error\":\"boom\"} "), "string error, spaces");
    ok(is_error(NULL, "{\"error\":false}"), "false is not null");
    ok(is_error(NULL, "{\"error\":0}"), "0 is not null");
    ok(is_error(NULL, "{\"\\u0065rror\":1}"), "escaped member name");
    ok(is_error(NULL, "{\"error\":null,\"error\":1}"), "last duplicate");
    ok(!is_error(NULL, "{\"error\":1,\"error\":null}"),
       "last duplicate null");
    ok(!is_error(NULL, "{\"error\":null}"), "null error");
    ok(!is_error(NULL, "{\"errors\":1}"), "errors member");
    ok(!is_error(NULL, "{\"choices\":[{\"error\":1}],\"x\":{\"error\":1}}"),
       "nested error members");
    ok(!is_error(NULL, "[{\"error\":1}]"), "array");
    ok(!is_error(NULL, "\"error\""), "string");
    ok(!is_error(NULL, "{\"error\":1"), "invalid JSON");
    ok(!is_error(NULL, "{\"error\":1} x"), "trailing garbage");
    ok(!is_error(NULL, "error"), "plain text");
    ok(!is_error(NULL, ""), "empty data");
    ok(!is_error(NULL, "[DONE]"), "[DONE]");
    ok(is_error_kind("exception", "throttlingException", "{}"),
       "eventstream exception");
    ok(is_error_kind("error", "InternalFailure", "boom"),
       "eventstream error");
    ok(!is_error_kind("event", "contentBlockDelta",
                      "{\"error\":null,\"delta\":{}}"),
       "eventstream event");
    ok(!is_error_kind("event", "error", "{\"error\":1}"),
       "an eventstream event is never an error by its name or data");

    ok(is_done(S("[DONE]")), "[DONE]");
    ok(is_done(S(" [DONE] ")), "[DONE] with spaces");
    ok(is_done(S("\t[DONE]\r\n")), "[DONE] with other whitespace");
    ok(!is_done(S("[done]")), "[done]");
    ok(!is_done(S("[DONE]x")), "[DONE]x");
    ok(!is_done(S("[DONE")), "[DONE");
    ok(!is_done(S("\"[DONE]\"")), "quoted");
    ok(!is_done(S("")), "empty");
    ok(!is_done(NULL, 0), "no data");
    ok(!is_done(S("[DONE] [DONE]")), "twice");
}


int
main(void)
{
    test_streams();
    test_bom();
    test_pending();
    test_limits();
    test_predicates();

    return tap_done();
}
