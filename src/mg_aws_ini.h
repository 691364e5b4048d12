/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The AWS shared credentials file, as the AWS CLI writes it: the keys of
 * one "[PROFILE]" (or "[profile PROFILE]") section, lines of
 * "name = value", "#" and ";" beginning comments.  The values found point
 * into the buffer; nothing is copied or kept.
 */

#ifndef _MG_AWS_INI_H_INCLUDED_
#define _MG_AWS_INI_H_INCLUDED_

#include <stddef.h>


#define MG_AWS_INI_VALUE_MAX  4096


typedef enum {
    MG_AWS_INI_OK = 0,
    MG_AWS_INI_BAD_LENGTH,              /* a value empty or too long */
    MG_AWS_INI_BAD_CHAR                 /* not printable ASCII */
} mg_aws_ini_rc_e;


typedef struct {
    const char          *data;          /* NULL: not in the profile */
    size_t               len;
    unsigned             line;          /* 1-based */
} mg_aws_ini_value_t;


typedef struct {
    mg_aws_ini_value_t   access_key;    /* aws_access_key_id */
    mg_aws_ini_value_t   secret;        /* aws_secret_access_key */
    mg_aws_ini_value_t   token;         /* aws_session_token */

    /* where parsing stopped on an error */
    unsigned             err_line;
    const char          *err_key;
} mg_aws_ini_t;


/*
 * Reads the keys of profile from the file's text p[0 .. len).  A key
 * given twice keeps its last value; every value is checked as it is met,
 * and the first bad one stops with its line and key name.  An access key
 * without a secret, or a secret without an access key, is not a
 * credential: the access key is then left unset.
 */
mg_aws_ini_rc_e mg_aws_ini_parse(const char *p, size_t len,
    const char *profile, size_t profile_len, mg_aws_ini_t *ini);


#endif /* _MG_AWS_INI_H_INCLUDED_ */
