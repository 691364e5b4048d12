/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A validating, allocation-free JSON scanner.  The gateway's hot path only
 * needs to know that a body is well-formed JSON and where a few top-level
 * members are; building a tree for a 20 KB chat history would cost more than
 * proxying it.
 */

#ifndef _MG_JSON_H_INCLUDED_
#define _MG_JSON_H_INCLUDED_

#include <stddef.h>
#include <sys/types.h>


typedef enum {
    MG_JSON_NONE = 0,       /* member absent */
    MG_JSON_STRING,
    MG_JSON_NUMBER,
    MG_JSON_OBJECT,
    MG_JSON_ARRAY,
    MG_JSON_TRUE,
    MG_JSON_FALSE,
    MG_JSON_NULL
} mg_json_type_t;


typedef struct {
    const char      *name;      /* in: member name, plain ASCII, unescaped */
    size_t           name_len;  /* in */
    mg_json_type_t   type;      /* out: MG_JSON_NONE if absent */
    size_t           start;     /* out: offset of the value's first byte */
    size_t           len;       /* out: value length; strings include quotes */
    unsigned         dup;       /* out: the member appeared more than once */
} mg_json_field_t;


typedef struct {
    const char      *message;   /* static text, e.g. "unexpected character" */
    size_t           offset;    /* byte offset of the problem */
} mg_json_error_t;


#define MG_JSON_OK        0
#define MG_JSON_EINVAL   -1     /* not valid JSON (syntax or UTF-8) */
#define MG_JSON_EDEPTH   -2     /* nesting deeper than max_depth */


/*
 * Validates that [p, p + len) holds exactly one JSON value (RFC 8259,
 * strings must be valid UTF-8), optionally surrounded by whitespace.
 * If the value is an object, every field whose name matches a top-level
 * member is filled in (the last duplicate wins, and dup is set); fields of
 * other values
 * are left with type MG_JSON_NONE.  Member names are compared after
 * unescaping.  Returns MG_JSON_OK or a negative error with *err set.
 */
int mg_json_scan(const char *p, size_t len, mg_json_field_t *fields,
    size_t nfields, size_t max_depth, mg_json_error_t *err);

/*
 * Unescapes a JSON string token (quotes included, as returned by
 * mg_json_scan) into out.  Returns the unescaped length, or -1 if the token
 * is malformed or does not fit in cap bytes.  \u escapes become UTF-8.
 */
ssize_t mg_json_unescape(const char *tok, size_t len, char *out, size_t cap);

/*
 * Escapes bytes as the inside of a JSON string (no quotes added): ", \ and
 * control characters.  Writes at most cap bytes and returns the length the
 * full escaped text needs, as snprintf does.
 */
size_t mg_json_escape(char *out, size_t cap, const char *s, size_t len);

/*
 * Finds member name in the object [p, p + len), which must already have
 * been validated.  Returns the member's type and fills *start and *vlen, or
 * MG_JSON_NONE.  For looking into nested objects found by mg_json_scan.
 */
mg_json_type_t mg_json_member(const char *p, size_t len, const char *name,
    size_t name_len, size_t *start, size_t *vlen);


#endif /* _MG_JSON_H_INCLUDED_ */
