/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The tokens an OpenAI-shaped answer used, as its "usage" says, found
 * without reading the whole answer where the answer allows it: usage is
 * one of the last members of a chat completion, an embeddings list or a
 * Responses object, so it is looked for backwards from the end.  And the
 * request side: the edit that makes an OpenAI chat stream end with its
 * usage chunk (stream_options.include_usage).
 */

#ifndef _MG_USAGE_H_INCLUDED_
#define _MG_USAGE_H_INCLUDED_

#include <stddef.h>

#include "mg_json.h"


typedef struct {
    long long    prompt;        /* prompt_tokens or input_tokens */
    long long    completion;    /* completion_tokens or output_tokens */
    long long    cached;        /* the input read from a cache:
                                   prompt_tokens_details.cached_tokens or
                                   input_tokens_details.cached_tokens */
} mg_usage_t;


#define MG_USAGE_NONE      0    /* no usage there */
#define MG_USAGE_FOUND     1

/* counts beyond this are clamped */
#define MG_USAGE_MAX       1000000000000000LL


/*
 * The counts of a usage object [p, p + len): prompt_tokens (or
 * input_tokens) and completion_tokens (or output_tokens), a missing one
 * read as 0.  MG_USAGE_FOUND when the object is valid JSON and one of
 * them is a non-negative integer.
 */
int mg_usage_object(const char *p, size_t len, mg_usage_t *u);

/*
 * The top-level "usage" object of the JSON object that ends at p + len
 * (trailing whitespace allowed).  p may be anywhere in the document, at a
 * value's boundary or not (a bounded tail of a longer answer): only the
 * bytes from the usage member to the end are read.  MG_USAGE_NONE when
 * the last top-level "usage" is not an object (null) or none is there.
 */
int mg_usage_tail(const char *p, size_t len, mg_usage_t *u);

/*
 * The data of one chat completions stream chunk: its usage, and in
 * *usage_only whether its "choices" is an empty array (the chunk that
 * stream_options.include_usage adds at the end).
 */
int mg_usage_chunk(const char *data, size_t len, mg_usage_t *u,
    int *usage_only);

/*
 * The data of one Responses stream event: the response's usage of a
 * response.completed, response.incomplete or response.failed event.
 */
int mg_usage_responses_event(const char *data, size_t len, mg_usage_t *u);


/* one replacement in a body: len bytes of text instead of cut at "at" */
typedef struct {
    size_t       at;
    size_t       cut;
    const char  *text;          /* static */
    size_t       len;
} mg_usage_edit_t;


#define MG_USAGE_ASKED     0    /* include_usage is already true */
#define MG_USAGE_EDIT      1    /* *e says what to change */
#define MG_USAGE_DECLINED  2    /* stream_options is no object: left */

/*
 * What makes a chat request body (a validated JSON object, its top-level
 * "stream_options" member found by mg_json_scan as *so) ask for the usage
 * chunk: "include_usage":true merged into stream_options, which is added
 * when missing or null; an include_usage of another value becomes true.
 */
int mg_usage_stream_options(const char *body, size_t len,
    const mg_json_field_t *so, mg_usage_edit_t *e);


#endif /* _MG_USAGE_H_INCLUDED_ */
