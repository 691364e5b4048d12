/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>
#include <stdint.h>
#include <sys/types.h>

#include "mg_eventstream.h"


/*
 * Framing (all integers big-endian):
 *
 *     0   total length    u32, the whole message with both CRCs
 *     4   headers length  u32
 *     8   prelude CRC     u32, of bytes 0..7
 *    12   headers
 *         payload         total - headers length - 16 bytes
 *   end-4 message CRC     u32, of everything before it
 *
 * Checks run in a fixed order on each message, prelude first, before its
 * lengths are trusted: which error a broken stream gives cannot depend on
 * how its bytes were cut.
 */


static int mg_es_prelude(mg_es_decoder_t *d, const u_char *p,
    size_t *total);
static int mg_es_message(const u_char *m, size_t total,
    mg_es_header_t *headers, mg_es_message_t *msg);
static int mg_es_headers(const u_char *h, const u_char *end,
    mg_es_header_t *headers, mg_es_message_t *msg);
static void mg_es_known(mg_es_message_t *msg, const mg_es_header_t *h);
static uint32_t mg_es_be32(const u_char *p);


/* the reflected polynomial 0xEDB88320, as zlib */

static const uint32_t  mg_es_crc_table[256] = {
    0x00000000, 0x77073096, 0xee0e612c, 0x990951ba, 0x076dc419, 0x706af48f,
    0xe963a535, 0x9e6495a3, 0x0edb8832, 0x79dcb8a4, 0xe0d5e91e, 0x97d2d988,
    0x09b64c2b, 0x7eb17cbd, 0xe7b82d07, 0x90bf1d91, 0x1db71064, 0x6ab020f2,
    0xf3b97148, 0x84be41de, 0x1adad47d, 0x6ddde4eb, 0xf4d4b551, 0x83d385c7,
    0x136c9856, 0x646ba8c0, 0xfd62f97a, 0x8a65c9ec, 0x14015c4f, 0x63066cd9,
    0xfa0f3d63, 0x8d080df5, 0x3b6e20c8, 0x4c69105e, 0xd56041e4, 0xa2677172,
    0x3c03e4d1, 0x4b04d447, 0xd20d85fd, 0xa50ab56b, 0x35b5a8fa, 0x42b2986c,
    0xdbbbc9d6, 0xacbcf940, 0x32d86ce3, 0x45df5c75, 0xdcd60dcf, 0xabd13d59,
    0x26d930ac, 0x51de003a, 0xc8d75180, 0xbfd06116, 0x21b4f4b5, 0x56b3c423,
    0xcfba9599, 0xb8bda50f, 0x2802b89e, 0x5f058808, 0xc60cd9b2, 0xb10be924,
    0x2f6f7c87, 0x58684c11, 0xc1611dab, 0xb6662d3d, 0x76dc4190, 0x01db7106,
    0x98d220bc, 0xefd5102a, 0x71b18589, 0x06b6b51f, 0x9fbfe4a5, 0xe8b8d433,
    0x7807c9a2, 0x0f00f934, 0x9609a88e, 0xe10e9818, 0x7f6a0dbb, 0x086d3d2d,
    0x91646c97, 0xe6635c01, 0x6b6b51f4, 0x1c6c6162, 0x856530d8, 0xf262004e,
    0x6c0695ed, 0x1b01a57b, 0x8208f4c1, 0xf50fc457, 0x65b0d9c6, 0x12b7e950,
    0x8bbeb8ea, 0xfcb9887c, 0x62dd1ddf, 0x15da2d49, 0x8cd37cf3, 0xfbd44c65,
    0x4db26158, 0x3ab551ce, 0xa3bc0074, 0xd4bb30e2, 0x4adfa541, 0x3dd895d7,
    0xa4d1c46d, 0xd3d6f4fb, 0x4369e96a, 0x346ed9fc, 0xad678846, 0xda60b8d0,
    0x44042d73, 0x33031de5, 0xaa0a4c5f, 0xdd0d7cc9, 0x5005713c, 0x270241aa,
    0xbe0b1010, 0xc90c2086, 0x5768b525, 0x206f85b3, 0xb966d409, 0xce61e49f,
    0x5edef90e, 0x29d9c998, 0xb0d09822, 0xc7d7a8b4, 0x59b33d17, 0x2eb40d81,
    0xb7bd5c3b, 0xc0ba6cad, 0xedb88320, 0x9abfb3b6, 0x03b6e20c, 0x74b1d29a,
    0xead54739, 0x9dd277af, 0x04db2615, 0x73dc1683, 0xe3630b12, 0x94643b84,
    0x0d6d6a3e, 0x7a6a5aa8, 0xe40ecf0b, 0x9309ff9d, 0x0a00ae27, 0x7d079eb1,
    0xf00f9344, 0x8708a3d2, 0x1e01f268, 0x6906c2fe, 0xf762575d, 0x806567cb,
    0x196c3671, 0x6e6b06e7, 0xfed41b76, 0x89d32be0, 0x10da7a5a, 0x67dd4acc,
    0xf9b9df6f, 0x8ebeeff9, 0x17b7be43, 0x60b08ed5, 0xd6d6a3e8, 0xa1d1937e,
    0x38d8c2c4, 0x4fdff252, 0xd1bb67f1, 0xa6bc5767, 0x3fb506dd, 0x48b2364b,
    0xd80d2bda, 0xaf0a1b4c, 0x36034af6, 0x41047a60, 0xdf60efc3, 0xa867df55,
    0x316e8eef, 0x4669be79, 0xcb61b38c, 0xbc66831a, 0x256fd2a0, 0x5268e236,
    0xcc0c7795, 0xbb0b4703, 0x220216b9, 0x5505262f, 0xc5ba3bbe, 0xb2bd0b28,
    0x2bb45a92, 0x5cb36a04, 0xc2d7ffa7, 0xb5d0cf31, 0x2cd99e8b, 0x5bdeae1d,
    0x9b64c2b0, 0xec63f226, 0x756aa39c, 0x026d930a, 0x9c0906a9, 0xeb0e363f,
    0x72076785, 0x05005713, 0x95bf4a82, 0xe2b87a14, 0x7bb12bae, 0x0cb61b38,
    0x92d28e9b, 0xe5d5be0d, 0x7cdcefb7, 0x0bdbdf21, 0x86d3d2d4, 0xf1d4e242,
    0x68ddb3f8, 0x1fda836e, 0x81be16cd, 0xf6b9265b, 0x6fb077e1, 0x18b74777,
    0x88085ae6, 0xff0f6a70, 0x66063bca, 0x11010b5c, 0x8f659eff, 0xf862ae69,
    0x616bffd3, 0x166ccf45, 0xa00ae278, 0xd70dd2ee, 0x4e048354, 0x3903b3c2,
    0xa7672661, 0xd06016f7, 0x4969474d, 0x3e6e77db, 0xaed16a4a, 0xd9d65adc,
    0x40df0b66, 0x37d83bf0, 0xa9bcae53, 0xdebb9ec5, 0x47b2cf7f, 0x30b5ffe9,
    0xbdbdf21c, 0xcabac28a, 0x53b39330, 0x24b4a3a6, 0xbad03605, 0xcdd70693,
    0x54de5729, 0x23d967bf, 0xb3667a2e, 0xc4614ab8, 0x5d681b02, 0x2a6f2b94,
    0xb40bbe37, 0xc30c8ea1, 0x5a05df1b, 0x2d02ef8d,
};


void
mg_es_init(mg_es_decoder_t *d, u_char *buf, size_t cap)
{
    d->buf = buf;
    d->cap = cap;
    d->len = 0;
    d->total = 0;
    d->error = MG_ES_OK;
}


int
mg_es_feed(mg_es_decoder_t *d, const u_char *data, size_t len,
    mg_es_handler_pt handler, void *ctx)
{
    int              rc;
    size_t           n, total;
    const u_char    *p, *end;
    mg_es_header_t   headers[MG_ES_MAX_HEADERS];
    mg_es_message_t  msg;

    if (d->error != MG_ES_OK || len == 0) {
        return d->error;
    }

    p = data;
    end = data + len;

    while (p < end) {

        if (d->len == 0 && (size_t) (end - p) >= MG_ES_PRELUDE_LEN) {

            /* the prelude is at hand: maybe the whole message too */

            rc = mg_es_prelude(d, p, &total);

            if (rc != MG_ES_OK) {
                return rc;
            }

            if ((size_t) (end - p) >= total) {
                rc = mg_es_message(p, total, headers, &msg);

                if (rc != MG_ES_OK) {
                    d->error = rc;
                    return rc;
                }

                p += total;

                rc = handler(ctx, &msg);

                if (rc != MG_ES_OK) {
                    d->error = MG_ES_ESTOPPED;
                    return rc;
                }

                continue;
            }

            /* checked against cap by mg_es_prelude() */

            memcpy(d->buf, p, end - p);
            d->len = end - p;
            d->total = total;

            return MG_ES_OK;
        }

        if (d->len < MG_ES_PRELUDE_LEN) {

            /* the prelude is kept apart until its lengths are trusted */

            n = MG_ES_PRELUDE_LEN - d->len;
            n = ((size_t) (end - p) < n) ? (size_t) (end - p) : n;

            memcpy(d->prelude + d->len, p, n);
            d->len += n;
            p += n;

            if (d->len < MG_ES_PRELUDE_LEN) {
                return MG_ES_OK;
            }

            rc = mg_es_prelude(d, d->prelude, &total);

            if (rc != MG_ES_OK) {
                return rc;
            }

            memcpy(d->buf, d->prelude, MG_ES_PRELUDE_LEN);
            d->total = total;
        }

        n = d->total - d->len;
        n = ((size_t) (end - p) < n) ? (size_t) (end - p) : n;

        memcpy(d->buf + d->len, p, n);
        d->len += n;
        p += n;

        if (d->len == d->total) {
            d->len = 0;

            rc = mg_es_message(d->buf, d->total, headers, &msg);

            if (rc != MG_ES_OK) {
                d->error = rc;
                return rc;
            }

            rc = handler(ctx, &msg);

            if (rc != MG_ES_OK) {
                d->error = MG_ES_ESTOPPED;
                return rc;
            }
        }
    }

    return MG_ES_OK;
}


int
mg_es_finish(mg_es_decoder_t *d)
{
    if (d->error == MG_ES_OK && d->len) {
        d->error = MG_ES_ETRUNCATED;
    }

    return d->error;
}


size_t
mg_es_pending(const mg_es_decoder_t *d)
{
    return d->len;
}


const mg_es_header_t *
mg_es_header(const mg_es_message_t *msg, const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < msg->nheaders; i++) {
        if (msg->headers[i].name_len == len
            && memcmp(msg->headers[i].name, name, len) == 0)
        {
            return &msg->headers[i];
        }
    }

    return NULL;
}


const char *
mg_es_strerror(int rc)
{
    switch (rc) {

    case MG_ES_OK:
        return "ok";

    case MG_ES_EPRELUDE:
        return "bad prelude CRC";

    case MG_ES_ECRC:
        return "bad message CRC";

    case MG_ES_ETOOBIG:
        return "message too large";

    case MG_ES_ELENGTH:
        return "bad message lengths";

    case MG_ES_EHEADER:
        return "bad message header";

    case MG_ES_ETRUNCATED:
        return "stream ended inside a message";

    case MG_ES_ESTOPPED:
        return "stopped by the handler";

    default:
        return "unknown result";
    }
}


uint32_t
mg_es_crc32(uint32_t crc, const u_char *p, size_t len)
{
    crc = ~crc;

    while (len--) {
        crc = mg_es_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }

    return ~crc;
}


/* checks a prelude (12 bytes) and returns the message's total length */

static int
mg_es_prelude(mg_es_decoder_t *d, const u_char *p, size_t *total)
{
    uint32_t  t, h;

    t = mg_es_be32(p);
    h = mg_es_be32(p + 4);

    if (mg_es_crc32(0, p, 8) != mg_es_be32(p + 8)) {
        d->error = MG_ES_EPRELUDE;

    } else if (t < MG_ES_MIN_LEN || h > t - MG_ES_MIN_LEN) {
        d->error = MG_ES_ELENGTH;

    } else if (t > d->cap) {
        d->error = MG_ES_ETOOBIG;

    } else {
        *total = t;
        return MG_ES_OK;
    }

    /* what was held is lost with the stream: nothing is pending */

    d->len = 0;

    return d->error;
}


/* a whole message, its prelude checked, contiguous in m */

static int
mg_es_message(const u_char *m, size_t total, mg_es_header_t *headers,
    mg_es_message_t *msg)
{
    int     rc;
    size_t  hlen;

    if (mg_es_crc32(0, m, total - 4) != mg_es_be32(m + total - 4)) {
        return MG_ES_ECRC;
    }

    hlen = mg_es_be32(m + 4);

    memset(msg, 0, sizeof(mg_es_message_t));

    rc = mg_es_headers(m + MG_ES_PRELUDE_LEN, m + MG_ES_PRELUDE_LEN + hlen,
                       headers, msg);

    if (rc != MG_ES_OK) {
        return rc;
    }

    msg->headers = headers;
    msg->payload = m + MG_ES_PRELUDE_LEN + hlen;
    msg->payload_len = total - hlen - MG_ES_MIN_LEN;
    msg->raw = m;
    msg->raw_len = total;

    return MG_ES_OK;
}


/*
 * Decodes the header block [h, end): name length (1..255), name, type,
 * value.  Every field must lie inside the block; an unknown type cannot
 * be skipped, its width being unknown.
 */

static int
mg_es_headers(const u_char *h, const u_char *end, mg_es_header_t *headers,
    mg_es_message_t *msg)
{
    size_t          n, w;
    uint64_t        v;
    mg_es_header_t  hdr;

    while (h < end) {
        n = *h++;

        /* the name and the type byte */

        if (n == 0 || (size_t) (end - h) < n + 1) {
            return MG_ES_EHEADER;
        }

        hdr.name = (const char *) h;
        hdr.name_len = n;
        h += n;
        hdr.type = *h++;

        switch (hdr.type) {

        case MG_ES_TRUE:
        case MG_ES_FALSE:
            w = 0;
            break;

        case MG_ES_BYTE:
            w = 1;
            break;

        case MG_ES_INT16:
            w = 2;
            break;

        case MG_ES_INT32:
            w = 4;
            break;

        case MG_ES_INT64:
        case MG_ES_TIMESTAMP:
            w = 8;
            break;

        case MG_ES_BYTES:
        case MG_ES_STRING:
            if (end - h < 2) {
                return MG_ES_EHEADER;
            }

            w = (size_t) h[0] << 8 | h[1];
            h += 2;
            break;

        case MG_ES_UUID:
            w = 16;
            break;

        default:
            return MG_ES_EHEADER;
        }

        if ((size_t) (end - h) < w) {
            return MG_ES_EHEADER;
        }

        hdr.value = h;
        hdr.value_len = w;
        h += w;

        /* numbers are two's complement, sign-extended from their width */

        switch (hdr.type) {

        case MG_ES_TRUE:
            hdr.num = 1;
            break;

        case MG_ES_BYTE:
        case MG_ES_INT16:
        case MG_ES_INT32:
        case MG_ES_INT64:
        case MG_ES_TIMESTAMP:
            v = 0;

            for (n = 0; n < w; n++) {
                v = v << 8 | hdr.value[n];
            }

            if (w < 8 && (v >> (8 * w - 1))) {
                v |= ~(uint64_t) 0 << (8 * w);
            }

            hdr.num = (int64_t) v;
            break;

        default:
            hdr.num = 0;
            break;
        }

        mg_es_known(msg, &hdr);

        if (msg->nheaders < MG_ES_MAX_HEADERS) {
            headers[msg->nheaders++] = hdr;
        }

        msg->nheaders_all++;
    }

    return MG_ES_OK;
}


/* fills the message's shortcuts to the well-known string headers */

static void
mg_es_known(mg_es_message_t *msg, const mg_es_header_t *h)
{
    const char  **s;
    size_t       *len;

    if (h->type != MG_ES_STRING || h->name[0] != ':') {
        return;
    }

#define mg_es_is(lit)                                                         \
    (h->name_len == sizeof(lit) - 1 && memcmp(h->name, lit, h->name_len) == 0)

    if (mg_es_is(":message-type")) {
        s = &msg->message_type;
        len = &msg->message_type_len;

    } else if (mg_es_is(":event-type")) {
        s = &msg->event_type;
        len = &msg->event_type_len;

    } else if (mg_es_is(":exception-type")) {
        s = &msg->exception_type;
        len = &msg->exception_type_len;

    } else if (mg_es_is(":content-type")) {
        s = &msg->content_type;
        len = &msg->content_type_len;

    } else if (mg_es_is(":error-code")) {
        s = &msg->error_code;
        len = &msg->error_code_len;

    } else if (mg_es_is(":error-message")) {
        s = &msg->error_message;
        len = &msg->error_message_len;

    } else {
        return;
    }

#undef mg_es_is

    if (*s == NULL) {
        *s = (const char *) h->value;
        *len = h->value_len;
    }
}


static uint32_t
mg_es_be32(const u_char *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}
