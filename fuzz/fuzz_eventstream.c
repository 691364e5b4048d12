/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for the event-stream decoder: the same bytes fed whole,
 * cut once, cut twice and (when short) byte by byte must give the same
 * messages, the same result and the same pending count; every message
 * reported must be well-formed.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         fuzz/fuzz_eventstream.c src/mg_eventstream.c -o /tmp/fz
 *     /tmp/fz -max_total_time=20 [t/fixtures/eventstream/corpus]
 *
 * Input: 5 control bytes, then the stream.
 *     byte 0   bit 0: fix the CRCs of the frames first (otherwise random
 *              bytes hardly ever get past the prelude check, and the
 *              header decoder would go unexplored); bits 1-3: the
 *              buffer's cap; bits 4-6: the handler stops at that message
 *              (0: never)
 *     1-2, 3-4 the cut points (little-endian, modulo the stream length + 1)
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mg_eventstream.h"
#include "fuzz_common.h"


#define MG_FZ_BYTEWISE_MAX  512


typedef struct {
    uint64_t          hash;
    size_t            n;
    int               rc;
    int               fin;
    size_t            pending;
    int               stop_at;
    size_t            cap;
} mg_fz_rec_t;


static const size_t  mg_fz_caps[8] = {
    16, 32, 64, 128, 256, 1024, 4096, 65536
};


static uint32_t
mg_fz_be32(const u_char *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}


static int
mg_fz_inside(const void *p, size_t len, const mg_es_message_t *m)
{
    const u_char  *s = p;

    return s >= m->raw && len <= m->raw_len
           && (size_t) (s - m->raw) <= m->raw_len - len;
}


static int
mg_fz_handler(void *ctx, const mg_es_message_t *m)
{
    size_t                 i;
    mg_fz_rec_t           *r = ctx;
    const mg_es_header_t  *h;

    /* what the decoder promises about a message it reports */

    if (m->raw_len < MG_ES_MIN_LEN || m->raw_len > r->cap
        || mg_fz_be32(m->raw) != m->raw_len
        || mg_es_crc32(0, m->raw, 8) != mg_fz_be32(m->raw + 8)
        || mg_es_crc32(0, m->raw, m->raw_len - 4)
           != mg_fz_be32(m->raw + m->raw_len - 4)
        || m->payload + m->payload_len + 4 != m->raw + m->raw_len
        || !mg_fz_inside(m->payload, m->payload_len, m)
        || m->nheaders > MG_ES_MAX_HEADERS
        || m->nheaders > m->nheaders_all
        || (m->nheaders_all > m->nheaders
            && m->nheaders != MG_ES_MAX_HEADERS))
    {
        abort();
    }

    for (i = 0; i < m->nheaders; i++) {
        h = &m->headers[i];

        if (h->name_len == 0 || h->type > MG_ES_UUID
            || !mg_fz_inside(h->name, h->name_len, m)
            || (h->value_len && !mg_fz_inside(h->value, h->value_len, m)))
        {
            abort();
        }

        r->hash = mg_fz_mix(r->hash, h->name, h->name_len);
        r->hash = mg_fz_mix(r->hash, &h->type, sizeof(h->type));
        r->hash = mg_fz_mix(r->hash, &h->num, sizeof(h->num));
        r->hash = mg_fz_mix(r->hash, h->value, h->value_len);
    }

#define mg_fz_known(s, len)                                                   \
    if (s) {                                                                 \
        if (!mg_fz_inside(s, len, m)) {                                      \
            abort();                                                         \
        }                                                                    \
        r->hash = mg_fz_mix(r->hash, s, len);                                \
    } else {                                                                 \
        r->hash = mg_fz_mix(r->hash, "-", 1);                                \
    }

    mg_fz_known(m->message_type, m->message_type_len);
    mg_fz_known(m->event_type, m->event_type_len);
    mg_fz_known(m->exception_type, m->exception_type_len);
    mg_fz_known(m->content_type, m->content_type_len);
    mg_fz_known(m->error_code, m->error_code_len);
    mg_fz_known(m->error_message, m->error_message_len);

#undef mg_fz_known

    r->hash = mg_fz_mix(r->hash, &m->nheaders_all,
                        sizeof(m->nheaders_all));
    r->hash = mg_fz_mix(r->hash, m->payload, m->payload_len);
    r->hash = mg_fz_mix(r->hash, m->raw, m->raw_len);

    r->n++;

    if (r->stop_at > 0 && r->n >= (size_t) r->stop_at) {
        return 7;
    }

    return 0;
}


/* feeds s cut at the sorted points, each piece a private copy */

static void
mg_fz_run(const u_char *s, size_t len, const size_t *cuts, size_t ncuts,
    size_t cap, int stop_at, mg_fz_rec_t *r)
{
    int              rc;
    size_t           i, from, to;
    u_char          *piece;
    mg_es_decoder_t  d;
    static u_char    buf[65536];

    memset(r, 0, sizeof(mg_fz_rec_t));
    r->hash = 0xcbf29ce484222325ULL;
    r->stop_at = stop_at;
    r->cap = cap;

    mg_es_init(&d, buf, cap);

    rc = MG_ES_OK;
    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        piece = malloc(to - from + 1);
        memcpy(piece, s + from, to - from);

        rc = mg_es_feed(&d, piece, to - from, mg_fz_handler, r);

        free(piece);
        from = to;

        if (rc != MG_ES_OK) {
            break;
        }
    }

    r->rc = rc;
    r->pending = mg_es_pending(&d);
    r->fin = mg_es_finish(&d);

    if (r->pending > cap || (r->rc != MG_ES_OK && r->pending != 0)) {
        abort();
    }
}


static void
mg_fz_same(const mg_fz_rec_t *a, const mg_fz_rec_t *b)
{
    if (a->hash != b->hash || a->n != b->n || a->rc != b->rc
        || a->fin != b->fin || a->pending != b->pending)
    {
        abort();
    }
}


/* gives each frame right CRCs, following the declared lengths */

static void
mg_fz_fix_crcs(u_char *s, size_t len)
{
    size_t    off, total;
    uint32_t  crc;

    off = 0;

    while (len - off >= MG_ES_PRELUDE_LEN) {
        crc = mg_es_crc32(0, s + off, 8);
        s[off + 8] = (u_char) (crc >> 24);
        s[off + 9] = (u_char) (crc >> 16);
        s[off + 10] = (u_char) (crc >> 8);
        s[off + 11] = (u_char) crc;

        total = mg_fz_be32(s + off);

        if (total < MG_ES_MIN_LEN || total > len - off) {
            return;
        }

        crc = mg_es_crc32(0, s + off, total - 4);
        s[off + total - 4] = (u_char) (crc >> 24);
        s[off + total - 3] = (u_char) (crc >> 16);
        s[off + total - 2] = (u_char) (crc >> 8);
        s[off + total - 1] = (u_char) crc;

        off += total;
    }
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int           stop_at;
    size_t        len, cap, i, t, cuts[2];
    u_char       *s;
    size_t       *all;
    mg_fz_rec_t   whole, part;

    if (size < 5) {
        return 0;
    }

    len = size - 5;
    cap = mg_fz_caps[(data[0] >> 1) & 7];
    stop_at = (data[0] >> 4) & 7;

    s = malloc(len + 1);
    memcpy(s, data + 5, len);

    if (data[0] & 1) {
        mg_fz_fix_crcs(s, len);
    }

    cuts[0] = (data[1] | (size_t) data[2] << 8) % (len + 1);
    cuts[1] = (data[3] | (size_t) data[4] << 8) % (len + 1);

    if (cuts[0] > cuts[1]) {
        t = cuts[0];
        cuts[0] = cuts[1];
        cuts[1] = t;
    }

    mg_fz_run(s, len, NULL, 0, cap, stop_at, &whole);

    mg_fz_run(s, len, cuts, 1, cap, stop_at, &part);
    mg_fz_same(&whole, &part);

    mg_fz_run(s, len, cuts + 1, 1, cap, stop_at, &part);
    mg_fz_same(&whole, &part);

    mg_fz_run(s, len, cuts, 2, cap, stop_at, &part);
    mg_fz_same(&whole, &part);

    if (len <= MG_FZ_BYTEWISE_MAX) {
        all = malloc((len + 1) * sizeof(size_t));

        for (i = 0; i < len; i++) {
            all[i] = i;
        }

        mg_fz_run(s, len, all, len, cap, stop_at, &part);
        mg_fz_same(&whole, &part);

        free(all);
    }

    free(s);

    return 0;
}
