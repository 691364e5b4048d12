/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * An incremental Server-Sent Events tokenizer.  Bytes may be split anywhere
 * across calls; every complete event (terminated by a blank line) is handed
 * to a callback together with its exact raw bytes, so a pass-through caller
 * can forward them untouched.  Storage is supplied by the caller: the
 * tokenizer never allocates and never holds more than one event.
 */

#ifndef _MG_SSE_H_INCLUDED_
#define _MG_SSE_H_INCLUDED_

#include <stddef.h>


typedef struct {
    const char  *event;         /* value of the last "event:" line, or NULL */
    size_t       event_len;
    const char  *data;          /* "data:" lines joined with "\n", or NULL */
    size_t       data_len;
    const char  *raw;           /* exact bytes, terminating blank line too */
    size_t       raw_len;

    /*
     * NULL for SSE.  Events decoded from another framing (an AWS
     * eventstream message) say what they are here: "event", "exception"
     * or "error"; event is then the event, exception or error type.
     */
    const char  *kind;
    size_t       kind_len;
} mg_sse_event_t;


/* return 0 to go on; anything else stops mg_sse_feed(), which returns it */
typedef int (*mg_sse_handler_pt)(void *ctx, const mg_sse_event_t *ev);


typedef struct {
    char        *buf;           /* raw bytes of a partial event */
    size_t       cap;
    size_t       len;
    char        *dbuf;          /* joined data of a multi-line event */
    size_t       dcap;
    unsigned     state;         /* private */
    size_t       scan;          /* private: bytes of buf already scanned */
    size_t       line;          /* private: offset of the current line */
    unsigned     bom_checked:1; /* private */
} mg_sse_parser_t;


#define MG_SSE_OK        0
#define MG_SSE_ETOOBIG  -1      /* an event is larger than cap (or dcap) */


void mg_sse_init(mg_sse_parser_t *p, char *buf, size_t cap, char *dbuf,
    size_t dcap);

/*
 * Tokenizes len bytes.  Events wholly inside data are reported with raw
 * pointing into data (no copy); an event that spans calls is assembled in
 * buf.  Line endings may be "\n", "\r\n" or "\r"; lines starting with ':'
 * are comments (kept in raw); an event made only of comments is reported
 * with data == NULL.  One space after "data:" is dropped, as the SSE
 * specification says.
 */
int mg_sse_feed(mg_sse_parser_t *p, const char *data, size_t len,
    mg_sse_handler_pt handler, void *ctx);

/* returns the number of bytes of an unterminated event held back */
size_t mg_sse_pending(const mg_sse_parser_t *p);

/*
 * Nonzero if the event reports an error: its kind is not "event" (an
 * eventstream exception or error), its name is "error", or its data is a
 * JSON object with a non-null top-level "error" member.
 */
int mg_sse_is_error(const mg_sse_event_t *ev);

/* nonzero if the event's data is the OpenAI terminator "[DONE]" */
int mg_sse_is_done(const mg_sse_event_t *ev);


#endif /* _MG_SSE_H_INCLUDED_ */
