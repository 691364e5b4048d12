/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the jansson request translators read alike from an OpenAI chat
 * request (mg_xrequest.c).  Values handed back are borrowed from the
 * request unless said otherwise; errors are the client's 400s.
 */

#ifndef _MG_XREQUEST_H_INCLUDED_
#define _MG_XREQUEST_H_INCLUDED_

#include "mg_translate.h"


/* OpenAI features no provider has: refused, not dropped */
int mg_x_req_check(json_t *in, int penalties, mg_xerror_t *err);


/*
 * The walk of a chat request's messages the translators share: system and
 * developer messages go to system; every other message becomes blocks,
 * made by the provider's callback (kind: MG_X_USER, MG_X_ASSISTANT,
 * MG_X_TOOL, or MG_X_SYSTEM for the system ones), and messages with no
 * block are dropped; consecutive turns of one role are merged, since
 * providers want user and model turns to alternate.  Turns are appended
 * to out as {"role": .., key: [blocks]}, the model's role named
 * assistant; tool results are user turns.  Errors are the client's 400s.
 */
#define MG_X_SYSTEM     0
#define MG_X_USER       1
#define MG_X_ASSISTANT  2
#define MG_X_TOOL       3

typedef int (*mg_x_blocks_pt)(void *data, int kind, json_t *msgs,
    json_t *m, size_t i, json_t *blocks, mg_xerror_t *err);

int mg_x_messages(json_t *in, const char *assistant, const char *key,
    mg_x_blocks_pt blocks, void *data, json_t *system, json_t *out,
    mg_xerror_t *err);


/*
 * A message's content, a string or an array of parts, made into blocks:
 * text (and refusal parts, with MG_X_PART_REFUSAL in allow) by text(),
 * the image, file and audio parts allowed in this message by media();
 * add() appends a block with what its part asks besides (prompt caching
 * markers; MG_X_PART_CACHE in allow says where they are wanted), or, when
 * NULL, the block alone.  A part the message does not allow is a 400 that
 * says so; audio, without audio set, is one that says the provider takes
 * none.
 */
#define MG_X_PART_REFUSAL  0x01
#define MG_X_PART_IMAGE    0x02
#define MG_X_PART_FILE     0x04
#define MG_X_PART_AUDIO    0x08
#define MG_X_PART_CACHE    0x10

typedef struct {
    json_t    *(*text)(json_t *s);
    int        (*media)(void *data, unsigned kind, json_t *part, size_t i,
                        size_t j, json_t **block, mg_xerror_t *err);
    int        (*add)(void *data, unsigned allow, json_t *part,
                      json_t *block, json_t *blocks);
    unsigned     audio;
} mg_x_content_t;

int mg_x_content(const mg_x_content_t *cc, void *data, json_t *content,
    unsigned allow, json_t *blocks, size_t i, mg_xerror_t *err);

/* an assistant message's text and its tool_calls (NULL: none) */
int mg_x_assistant(const mg_x_content_t *cc, void *data, json_t *m,
    unsigned allow, json_t *blocks, size_t i, json_t **calls,
    mg_xerror_t *err);


/* an image_url part and a file part, taken apart */
typedef struct {
    json_t      *url;
    const char  *s;
    size_t       len;
    unsigned     data:1;          /* a data URL, taken apart below */
    unsigned     http:1;          /* an http(s) URL */
    const char  *mt;
    size_t       mt_len;
    const char  *b64;
    size_t       b64_len;
} mg_x_image_t;

typedef struct {
    const char  *mt;              /* NULL: bare base64 */
    size_t       mt_len;
    const char  *data;
    size_t       data_len;
    const char  *name;            /* NULL: no filename */
    size_t       name_len;
} mg_x_file_t;

int mg_x_image_url(json_t *part, size_t i, size_t j, mg_x_image_t *im,
    mg_xerror_t *err);
int mg_x_file_data(json_t *part, size_t i, size_t j, mg_x_file_t *f,
    mg_xerror_t *err);
int mg_x_file_is_pdf(const mg_x_file_t *f);


/* tools, tool_choice and an assistant's calls */
int mg_x_tool_def(json_t *t, size_t i, json_t **name, json_t **desc,
    json_t **params, json_t **strict, mg_xerror_t *err);

#define MG_X_CHOICE_UNSET     0
#define MG_X_CHOICE_AUTO      1
#define MG_X_CHOICE_REQUIRED  2
#define MG_X_CHOICE_NONE      3
#define MG_X_CHOICE_NAMED     4

typedef struct {
    int          kind;          /* MG_X_CHOICE_* */
    json_t      *name;          /* NAMED: the function's name */
    json_t      *parallel;      /* parallel_tool_calls, or NULL */
} mg_x_choice_t;

int mg_x_tool_choice(json_t *in, size_t ntools, mg_x_choice_t *c,
    mg_xerror_t *err);

int mg_x_tool_call(json_t *c, size_t i, size_t k, json_t **id,
    json_t **name, json_t **input, mg_xerror_t *err);
int mg_x_tool_args(json_t *fn, size_t i, size_t k, json_t **out,
    mg_xerror_t *err);


/* max tokens, temperature and top_p, stop */
int mg_x_max_tokens(json_t *in, json_t **v, mg_xerror_t *err);
int mg_x_sampling(json_t *in, json_t **temp, json_t **top_p,
    mg_xerror_t *err);
int mg_x_stop(json_t *in, int drop_empty, json_t **seq, mg_xerror_t *err);


#endif /* _MG_XREQUEST_H_INCLUDED_ */
