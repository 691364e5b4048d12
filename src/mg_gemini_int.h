/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the Gemini translator's files share (mg_gemini_request.c,
 * mg_gemini_schema.c, mg_gemini_answer.c, mg_gemini_stream.c); not for use
 * outside them.
 */

#ifndef _MG_GEMINI_INT_H_INCLUDED_
#define _MG_GEMINI_INT_H_INCLUDED_

#include <stdint.h>

#include <jansson.h>

#include "mg_gemini.h"


/*
 * What the translation writes more than once from a value sent once (a
 * $ref's target, with its descriptions, defaults, examples and enums,
 * each time it is referenced; a function's name in each tool result that
 * answers its call) is counted in bytes of output against one budget per
 * request: MG_G_COPY_RATIO times the body plus MG_G_COPY_SLACK, or the
 * request's bound when that is lower.  So the request written stays within
 * a small multiple of the one received however the values are shared; the
 * tree shares them (json_object_set), and only the dump would multiply.
 * A schema node is charged MG_G_NODE_BYTES besides what it copies: its
 * braces and the few members the conversion adds (type, nullable).
 */
#define MG_G_COPY_RATIO    4
#define MG_G_COPY_SLACK    (64 * 1024)
#define MG_G_NODE_BYTES    32


/* one request's translation */

typedef struct {
    json_t      *calls;         /* tool call id -> the function's name, of
                                   the assistant messages walked so far */
    size_t       copies;        /* bytes the copies may still take */
    size_t       max;           /* the bound of the request written */
    unsigned     bound:1;       /* copies is max, not the multiple */
} mg_g_req_t;


json_t *mg_g_string(json_t *v);
int mg_g_copies(mg_g_req_t *rq, size_t n);
int mg_g_req_tools(mg_g_req_t *rq, json_t *in, json_t *req,
    mg_xerror_t *err);
uint64_t mg_g_seed(json_t *rid, long created);
json_t *mg_g_tool_call(json_t *part, uint64_t seed, size_t cand,
    size_t k, int with_index);
int mg_g_malformed(const char *reason);
int mg_g_usable(json_t *c);
json_t *mg_g_usage(long long prompt, long long candidates,
    long long thoughts, long long tool_prompt, long long cached,
    long long total);
json_t *mg_g_error_body(json_t *j);
void mg_g_error_map(int status, json_t *body, mg_xerror_t *err);


#endif /* _MG_GEMINI_INT_H_INCLUDED_ */
