/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the Anthropic translator's files share (mg_anthropic_request.c,
 * mg_anthropic_answer.c, mg_anthropic_stream.c); not for use outside them.
 */

#ifndef _MG_ANTHROPIC_INT_H_INCLUDED_
#define _MG_ANTHROPIC_INT_H_INCLUDED_

#include <jansson.h>

#include "mg_anthropic.h"


const char *mg_a_finish(const char *reason);
json_t *mg_a_usage(long long input, long long output,
    long long cache_read, long long cache_creation);
void mg_a_error_map(int status, json_t *body, mg_xerror_t *err);


#endif /* _MG_ANTHROPIC_INT_H_INCLUDED_ */
