/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Tree-free translation of the most common chat request: plain text
 * messages and a few scalar parameters.  Building and dumping a jansson
 * tree for such a request costs tens of microseconds even when its texts
 * are set aside; here the body is validated by the scanner, walked once,
 * and the provider's body is written with every string copied as the
 * client escaped it.  Anything outside that shape is declined and goes to
 * the full translator, whose result this path must equal (a unit test and
 * a fuzz target compare the two).
 */

#ifndef _MG_XFAST_H_INCLUDED_
#define _MG_XFAST_H_INCLUDED_

#include <stddef.h>

#include "mg_translate.h"


#define MG_XF_ANTHROPIC  1
#define MG_XF_BEDROCK    2
#define MG_XF_GEMINI     3

#define MG_XF_DECLINED   2      /* not the common shape */


typedef struct {
    int          provider;          /* MG_XF_* */
    const char  *model;             /* Anthropic: the id to send (required) */
    size_t       model_len;
    long         default_max_tokens; /* as the provider's translator takes */
    int          valid;             /* the body passed mg_json_scan() */
    size_t       max_out;           /* the longest request to write; 0:
                                       MG_X_OUT_MAX */
} mg_xf_opts_t;


/*
 * The body, translated for the provider, appended to out; *stream and
 * *include_usage as the full translators report them.  Returns MG_X_OK,
 * MG_XF_DECLINED (out untouched: use the full translator, which also
 * reports any error, a translation longer than o->max_out among them) or
 * MG_X_NOMEM.
 *
 * The shape: an object whose members are among model, messages,
 * max_completion_tokens, max_tokens (positive integers), temperature,
 * top_p (numbers), stream (a boolean) and stream_options (an object), each
 * at most once; messages an array of objects with exactly a role (system,
 * developer, user or assistant) and a string content; member names
 * without escapes.  null values count as absent.
 */
int mg_xf_request(const mg_xf_opts_t *o, const char *body, size_t len,
    mg_buf_t *out, int *stream, int *include_usage);


/*
 * Whether jansson reads the valid JSON [p, p + len) as the scanner does
 * (it refuses integers beyond 64 bits, overflowing reals and member names
 * holding NUL): a fast path must decline what the tree would refuse.
 */
int mg_xf_parsable(const char *p, size_t len);

/*
 * The translators' way in: the tree-free path when the body has the
 * shape, with a MG_X_NOMEM reported in err; MG_XF_DECLINED otherwise.
 */
int mg_xf_try(int provider, const char *model, size_t model_len,
    long default_max_tokens, size_t max_out, const char *body, size_t len,
    mg_buf_t *out, int *stream, int *include_usage, mg_xerror_t *err);

/*
 * A provider's whole answer -> the OpenAI chat.completion the full
 * translator (mg_anthropic_response(), mg_bedrock_response(),
 * mg_gemini_response()) would give,
 * appended to out, when it holds text only: its texts are joined as the
 * provider escaped them.  model is the client's.  Returns MG_X_OK,
 * MG_XF_DECLINED (tool calls, other blocks, an error, anything unusual:
 * use the full translator) or MG_X_NOMEM.
 */
int mg_xf_answer(int provider, const char *body, size_t len,
    const char *model, size_t model_len, long created, mg_buf_t *out);

/*
 * A Gemini stream chunk in the middle of a text answer (one candidate,
 * index 0 or none, text parts only, no finishReason, no error, no prompt
 * feedback) -> its text as one content chunk after prefix, appended to out
 * (*sent set when there was text), and the usageMetadata counts read into
 * n[6] (prompt, candidates, thoughts, tool-use prompt, cached, total; each
 * kept when not given), as mg_gemini_stream_event() would.  Returns
 * MG_X_OK, MG_XF_DECLINED (anything else: use the tree) or MG_X_NOMEM.
 */
int mg_xf_gemini_chunk(const char *data, size_t len, const char *prefix,
    size_t prefix_len, long long *n, int *sent, mg_buf_t *out);


#endif /* _MG_XFAST_H_INCLUDED_ */
