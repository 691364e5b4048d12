
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin record's text (see mg_admin.h).  It comes from Redis, which
 * the gateway does not trust to be well formed: every number is bounded,
 * and anything else reads as "no override".
 */


#include <stdio.h>
#include <string.h>

#include "mg_admin.h"


/* a decimal number of at most 15 digits (below 2^53): its end, or NULL */

static const char *
mg_admin_number(const char *p, const char *end, uint64_t *out)
{
    size_t    n;
    uint64_t  v;

    v = 0;

    for (n = 0; p < end && *p >= '0' && *p <= '9'; p++, n++) {
        if (n == 15) {
            return NULL;
        }

        v = v * 10 + (uint64_t) (*p - '0');
    }

    if (n == 0) {
        return NULL;
    }

    *out = v;

    return p;
}


int
mg_admin_parse(const char *s, size_t len, mg_admin_rec_t *rec)
{
    int          i;
    uint64_t     v[4];
    const char  *p, *end;

    memset(rec, 0, sizeof(mg_admin_rec_t));

    p = s;
    end = s + len;

    for (i = 0; i < 4; i++) {
        if (i && (p == end || *p++ != '|')) {
            return -1;
        }

        p = mg_admin_number(p, end, &v[i]);
        if (p == NULL) {
            return -1;
        }
    }

    if (p != end || v[0] > MG_ADMIN_WEIGHT_MAX || v[1] > 1) {
        return -1;
    }

    rec->weight = (long) v[0];
    rec->drain = (int) v[1];
    rec->forced_until = (int64_t) v[2];
    rec->clear = v[3];

    return 0;
}


size_t
mg_admin_format(const mg_admin_rec_t *rec, char *buf)
{
    int  n;

    n = snprintf(buf, MG_ADMIN_REC_LEN, "%ld|%d|%lld|%llu", rec->weight,
                 rec->drain, (long long) rec->forced_until,
                 (unsigned long long) rec->clear);

    return (n > 0 && n < MG_ADMIN_REC_LEN) ? (size_t) n : 0;
}
