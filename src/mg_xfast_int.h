/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the tree-free paths' files share (mg_xfast_request.c,
 * mg_xfast_write.c, mg_xfast_answer.c): tokens of a validated body and the
 * walk over them; not for use outside them.
 */

#ifndef _MG_XFAST_INT_H_INCLUDED_
#define _MG_XFAST_INT_H_INCLUDED_

#include <stddef.h>

#include "mg_xfast.h"


#define MG_XF_SYSTEM     0
#define MG_XF_USER       1
#define MG_XF_ASSISTANT  2


/* the top-level members the path knows, as bits */
enum {
    MG_XF_MODEL = 0,
    MG_XF_MESSAGES,
    MG_XF_MAX_COMPLETION,
    MG_XF_MAX_TOKENS,
    MG_XF_TEMPERATURE,
    MG_XF_TOP_P,
    MG_XF_STREAM,
    MG_XF_STREAM_OPTIONS,
    MG_XF_NMEMBERS
};


typedef struct {
    const char  *p;             /* a value's raw bytes; NULL: absent */
    size_t       len;
} mg_xf_tok_t;


/* one text of the conversation, by role, as the client escaped it */
typedef struct {
    int          role;
    mg_xf_tok_t  text;          /* the string token, quotes included */
} mg_xf_text_t;


typedef struct {
    const char  *p;
    const char  *end;
} mg_xf_iter_t;


typedef struct {
    mg_xf_tok_t     m[MG_XF_NMEMBERS];
    mg_xf_text_t   *texts;
    size_t          ntexts;
    size_t          cap;
} mg_xf_req_t;


/*
 * A member's value read in place while its object is picked, so that the
 * bulk of a body (the messages) is walked once instead of being skipped
 * first and read after; it leaves it->p at the value's end.
 */

typedef struct {
    size_t          k;              /* the member, an index in names[] */
    int           (*handler)(void *data, mg_xf_iter_t *it);
    void           *data;
} mg_xf_walk_t;


#define mg_xf_lit(out, s)  mg_buf_append(out, s, sizeof(s) - 1)


const char *mg_xf_ws(const char *p, const char *end);
int mg_xf_pick(const mg_xf_tok_t *obj, const char **names, size_t n,
    int strict, mg_xf_tok_t *m, const mg_xf_walk_t *walk);
void mg_xf_open(mg_xf_iter_t *it, const mg_xf_tok_t *v);
int mg_xf_elem(mg_xf_iter_t *it, mg_xf_tok_t *v);
int mg_xf_next(mg_xf_iter_t *it, mg_xf_tok_t *key, mg_xf_tok_t *v);
int mg_xf_is(const mg_xf_tok_t *t, const char *s);
int mg_xf_number(const mg_xf_tok_t *t, double *d);
int mg_xf_anthropic(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out);
int mg_xf_bedrock(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out);


#endif /* _MG_XFAST_INT_H_INCLUDED_ */
