/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the Bedrock translator's files share (mg_bedrock_request.c,
 * mg_bedrock_tools.c, mg_bedrock_answer.c, mg_bedrock_stream.c); not for use
 * outside them.
 */

#ifndef _MG_BEDROCK_INT_H_INCLUDED_
#define _MG_BEDROCK_INT_H_INCLUDED_

#include <jansson.h>

#include "mg_bedrock.h"


/* ToolUseId: [a-zA-Z0-9_-]{1,64}; DocumentBlock name: 1..200 bytes */
#define MG_B_TOOL_ID_MAX   64
#define MG_B_DOC_NAME_MAX  200


/* what the messages tell the tools: Bedrock wants a toolConfig whenever
 * the conversation holds toolUse or toolResult blocks */

typedef struct {
    json_t      *names;         /* the toolUse blocks' tool names, once */
    size_t       ndocs;         /* documents so far, to name unnamed ones */
    unsigned     tool_blocks:1;
} mg_b_req_t;


json_t *mg_b_tool_id(json_t *id);
int mg_b_add_name(mg_b_req_t *ctx, json_t *name);
int mg_b_results_first(json_t *blocks);
int mg_b_req_tools(json_t *in, json_t *req, mg_b_req_t *ctx,
    mg_xerror_t *err);
const char *mg_b_finish(const char *reason);
json_t *mg_b_usage(long long input, long long output,
    long long total, long long cache_read, long long cache_write);
void mg_b_error_map(int status, const char *name, size_t name_len,
    const char *msg, mg_xerror_t *err);


#endif /* _MG_BEDROCK_INT_H_INCLUDED_ */
