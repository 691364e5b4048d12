/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * An incremental decoder of AWS event streams
 * (application/vnd.amazon.eventstream, Bedrock's ConverseStream and
 * InvokeModelWithResponseStream).  Bytes may be split anywhere across
 * calls; each complete message is checked (both CRCs, the lengths, the
 * header block) and handed to a callback with its headers decoded.
 * Storage is supplied by the caller: the decoder never allocates and never
 * holds more than one message, whose size the buffer bounds.
 */

#ifndef _MG_EVENTSTREAM_H_INCLUDED_
#define _MG_EVENTSTREAM_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


#define MG_ES_PRELUDE_LEN   12      /* total, headers length, prelude CRC */
#define MG_ES_MIN_LEN       16      /* prelude and message CRC */
#define MG_ES_MAX_HEADERS   32      /* headers kept in a message's array */

/* header value types (the byte that follows the name) */
#define MG_ES_TRUE          0
#define MG_ES_FALSE         1
#define MG_ES_BYTE          2
#define MG_ES_INT16         3
#define MG_ES_INT32         4
#define MG_ES_INT64         5
#define MG_ES_BYTES         6
#define MG_ES_STRING        7
#define MG_ES_TIMESTAMP     8
#define MG_ES_UUID          9

/* results; the errors are sticky: every later call returns them again */
#define MG_ES_OK            0
#define MG_ES_EPRELUDE     -1   /* prelude CRC mismatch */
#define MG_ES_ECRC         -2   /* message CRC mismatch */
#define MG_ES_ETOOBIG      -3   /* total length over the buffer's cap */
#define MG_ES_ELENGTH      -4   /* total < 16, or headers beyond the end */
#define MG_ES_EHEADER      -5   /* malformed header block */
#define MG_ES_ETRUNCATED   -6   /* mg_es_finish() inside a message */
#define MG_ES_ESTOPPED     -7   /* a handler stopped the stream before */


typedef struct {
    const char                *name;
    size_t                     name_len;
    unsigned                   type;       /* MG_ES_TRUE .. MG_ES_UUID */

    /*
     * The value's bytes as sent: the contents of a string or byte array
     * (without the length), the big-endian bytes of a number, the 16 bytes
     * of a uuid; empty for booleans.
     */
    const u_char              *value;
    size_t                     value_len;

    /* booleans as 1 or 0, numbers (signed), timestamps in ms */
    int64_t                    num;
} mg_es_header_t;


typedef struct {
    const mg_es_header_t      *headers;
    size_t                     nheaders;   /* in headers[] */
    size_t                     nheaders_all; /* in the message, if more */

    /* the string headers Bedrock sends, or NULL: the first one counts */
    const char                *message_type;      /* :message-type */
    size_t                     message_type_len;
    const char                *event_type;        /* :event-type */
    size_t                     event_type_len;
    const char                *exception_type;    /* :exception-type */
    size_t                     exception_type_len;
    const char                *content_type;      /* :content-type */
    size_t                     content_type_len;
    const char                *error_code;        /* :error-code */
    size_t                     error_code_len;
    const char                *error_message;     /* :error-message */
    size_t                     error_message_len;

    const u_char              *payload;
    size_t                     payload_len;

    const u_char              *raw;        /* the whole message, CRCs too */
    size_t                     raw_len;
} mg_es_message_t;


/*
 * Return 0 to go on; anything else (best positive, unlike the errors)
 * stops mg_es_feed(), which returns it, and the decoder for good
 * (MG_ES_ESTOPPED afterwards), since the rest of the bytes given were not
 * looked at.  Everything in the message points into the caller's data or
 * the decoder's buffer: valid during the call only.
 */
typedef int (*mg_es_handler_pt)(void *ctx, const mg_es_message_t *msg);


typedef struct {
    u_char                    *buf;        /* a message spanning calls */
    size_t                     cap;        /* the largest message accepted */
    size_t                     len;        /* private: bytes of it so far */
    size_t                     total;      /* private: its total length */
    int                        error;      /* private: sticky result */
    u_char                     prelude[MG_ES_PRELUDE_LEN]; /* private */
} mg_es_decoder_t;


void mg_es_init(mg_es_decoder_t *d, u_char *buf, size_t cap);

/*
 * Decodes len bytes.  A message wholly inside data is reported in place
 * (no copy); one that spans calls is assembled in buf.  A message longer
 * than cap is an error (MG_ES_ETOOBIG) however the bytes arrive, so the
 * results never depend on the cuts.  Returns MG_ES_OK, a negative error,
 * or a handler's nonzero value.
 */
int mg_es_feed(mg_es_decoder_t *d, const u_char *data, size_t len,
    mg_es_handler_pt handler, void *ctx);

/*
 * At the end of the stream: MG_ES_OK if it ended between messages,
 * MG_ES_ETRUNCATED if inside one, or the sticky error.
 */
int mg_es_finish(mg_es_decoder_t *d);

/* bytes of an incomplete message held back */
size_t mg_es_pending(const mg_es_decoder_t *d);

/* a header by name among msg->headers, or NULL */
const mg_es_header_t *mg_es_header(const mg_es_message_t *msg,
    const char *name, size_t len);

/* a static description of a result, e.g. "bad message CRC" */
const char *mg_es_strerror(int rc);

/* CRC-32 (IEEE 802.3) as zlib's crc32(): crc 0 to start */
uint32_t mg_es_crc32(uint32_t crc, const u_char *p, size_t len);


#endif /* _MG_EVENTSTREAM_H_INCLUDED_ */
