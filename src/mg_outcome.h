/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the client is told when every attempt of a request failed, or none
 * could be made: the status, the OpenAI error's type, code and message,
 * and Retry-After, decided from how the attempts ended (README "Errors").
 */

#ifndef _MG_OUTCOME_H_INCLUDED_
#define _MG_OUTCOME_H_INCLUDED_

#include <stdint.h>


/* how the last attempt failed, as far as the client's answer goes */
typedef enum {
    MG_OUTCOME_FAIL_OTHER = 0,          /* connect, 5xx, broken, ... */
    MG_OUTCOME_FAIL_TIMEOUT,            /* connect, first byte, idle */
    MG_OUTCOME_FAIL_AUTH,               /* 401/403 */
    MG_OUTCOME_FAIL_STATUS,             /* a retryable status */
    MG_OUTCOME_FAIL_TOO_BIG             /* over the response limit */
} mg_outcome_fail_e;


typedef struct {
    unsigned            total_expired:1;   /* model_gateway_total_timeout */
    unsigned            all_cooling:1;     /* no candidate was available */
    unsigned            cool_limited:1;    /* ... and one is rate limited */
    uintptr_t           cool_wait;         /* ms until one may be */
    uintptr_t           failures;          /* attempts that failed */
    uintptr_t           rate_limited;      /* ... with a 429 */
    long                min_retry_after_ms;  /* of the 429s; -1: none */
    mg_outcome_fail_e   last_fail;
    unsigned            last_fail_status;  /* for MG_OUTCOME_FAIL_STATUS */
    unsigned            status;            /* what nginx chose */
} mg_outcome_in_t;


typedef struct {
    unsigned            status;
    const char         *type;
    const char         *code;
    const char         *message;
    long                retry_after;       /* seconds; 0: no header */
    unsigned            list_attempts:1;   /* the caller may name them */
} mg_outcome_t;


/*
 * Fills out for in.  With list_attempts, message is the fallback for a
 * caller that cannot name the backends tried ("The model backend failed
 * (attempts: ...).").
 */
void mg_outcome(const mg_outcome_in_t *in, mg_outcome_t *out);


#endif /* _MG_OUTCOME_H_INCLUDED_ */
