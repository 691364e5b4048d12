
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A backend's admin record, as the fleet keeps it in Redis (one field of
 * the hash <prefix>:{admin}:backends per backend): "W|D|UNTIL|CLEAR",
 * four decimal numbers.  W replaces the configured weight (0: it does
 * not), D is 1 while the backend is drained, UNTIL ends a forced cool-down
 * (ms of Redis' clock, 0: none), CLEAR counts the cool-down clears asked
 * for, so that every node applies each clear once.
 */

#ifndef _MG_ADMIN_H_INCLUDED_
#define _MG_ADMIN_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>


#define MG_ADMIN_WEIGHT_MAX    1000
#define MG_ADMIN_REC_LEN       64       /* the longest record, with NUL */


typedef struct {
    long           weight;              /* 0: the configured one */
    int            drain;
    int64_t        forced_until;        /* ms; 0: none */
    uint64_t       clear;
} mg_admin_rec_t;


/* 0, or -1 for a malformed record (which then reads as all zero) */
int mg_admin_parse(const char *s, size_t len, mg_admin_rec_t *rec);

/* writes rec as a record into buf (MG_ADMIN_REC_LEN); its length */
size_t mg_admin_format(const mg_admin_rec_t *rec, char *buf);


#endif /* _MG_ADMIN_H_INCLUDED_ */
