/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Request and token limits (mg_limit.h).  The Lua of the LIMIT and SETTLE
 * scripts (ngx_module/ngx_http_model_gateway_scripts.c) is this code
 * written again: a change here is a change there.
 */

#include <math.h>

#include "mg_limit.h"


void
mg_limit_take(const mg_limit_state_t *cur, mg_limit_state_t *next, int kind,
    uint64_t limit, uint64_t cost, int64_t now, mg_limit_result_t *res)
{
    double   t, tat, end, used;
    int64_t  day;

    *next = *cur;

    switch (kind) {

    case MG_LIMIT_RATE:
        t = (double) MG_LIMIT_PERIOD / (double) limit;
        tat = cur->tat > (double) now ? cur->tat : (double) now;
        end = tat + (double) cost * t;

        /* a millisecond's slack: 60000 / limit is rarely exact */

        if (end - (double) now <= MG_LIMIT_PERIOD + 0.001) {
            next->tat = end;
            res->ok = 1;
            res->remaining = (end - (double) now >= MG_LIMIT_PERIOD) ? 0
                             : (uint64_t) floor((MG_LIMIT_PERIOD
                                                 - (end - (double) now)) / t
                                                + 1e-6);
            res->reset_ms = (int64_t) ceil(end - (double) now);
            res->retry_ms = 0;
            return;
        }

        res->ok = 0;
        res->remaining = (tat - (double) now >= MG_LIMIT_PERIOD) ? 0
                         : (uint64_t) floor((MG_LIMIT_PERIOD
                                             - (tat - (double) now)) / t
                                            + 1e-6);
        res->reset_ms = (int64_t) ceil(tat - (double) now);
        res->retry_ms = (cost > limit) ? -1
                        : (int64_t) ceil(end - MG_LIMIT_PERIOD - (double) now);
        return;

    case MG_LIMIT_DAY:
        day = now / MG_LIMIT_DAY_MS;
        used = (cur->day == day) ? cur->used : 0;

        res->reset_ms = (day + 1) * MG_LIMIT_DAY_MS - now;

        if (used + (double) cost <= (double) limit) {
            next->day = day;
            next->used = used + (double) cost;
            res->ok = 1;
            res->remaining = (uint64_t) ((double) limit - next->used);
            res->retry_ms = 0;
            return;
        }

        res->ok = 0;
        res->remaining = (used >= (double) limit) ? 0
                         : (uint64_t) ((double) limit - used);
        res->retry_ms = (cost > limit) ? -1 : res->reset_ms;
        return;

    default: /* MG_LIMIT_BUDGET */
        res->reset_ms = -1;

        if (cur->used + (double) cost <= (double) limit) {
            next->used = cur->used + (double) cost;
            res->ok = 1;
            res->remaining = (uint64_t) ((double) limit - next->used);
            res->retry_ms = 0;
            return;
        }

        res->ok = 0;
        res->remaining = (cur->used >= (double) limit) ? 0
                         : (uint64_t) ((double) limit - cur->used);
        res->retry_ms = -1;
        return;
    }
}


void
mg_limit_adjust(mg_limit_state_t *s, int kind, uint64_t limit, int64_t delta,
    int64_t day, int64_t now)
{
    double  tat;

    switch (kind) {

    case MG_LIMIT_RATE:
        tat = s->tat > (double) now ? s->tat : (double) now;
        tat += (double) delta * (double) MG_LIMIT_PERIOD / (double) limit;
        s->tat = tat > (double) now ? tat : (double) now;
        return;

    case MG_LIMIT_DAY:
        if (s->day != day) {
            return;
        }

        /* fall through */

    default:
        s->used += (double) delta;

        if (s->used < 0) {
            s->used = 0;
        }
    }
}


uint64_t
mg_limit_estimate(size_t body_len, uint64_t bytes_per_token,
    uint64_t max_tokens)
{
    uint64_t  input;

    if (bytes_per_token == 0) {
        bytes_per_token = 1;
    }

    input = ((uint64_t) body_len + bytes_per_token - 1) / bytes_per_token;

    return input + max_tokens;
}


/* the decimal digits of v at p; returns the end (no NUL) */

static char *
mg_limit_digits(char *p, uint64_t v)
{
    char   tmp[20];
    int    n;

    n = 0;

    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);

    while (n) {
        *p++ = tmp[--n];
    }

    return p;
}


/* on every answer of a limited request: digits written by hand, no printf */

size_t
mg_limit_duration(char *buf, int64_t ms)
{
    char     *p;
    int64_t   h, m, s, frac;

    if (ms < 0) {
        ms = 0;
    }

    p = buf;

    if (ms < 1000) {
        p = mg_limit_digits(p, (uint64_t) ms);
        *p++ = 'm';
        *p++ = 's';
        return p - buf;
    }

    h = ms / 3600000;
    m = ms / 60000 % 60;
    s = ms / 1000 % 60;
    frac = ms % 1000;

    if (h) {
        p = mg_limit_digits(p, (uint64_t) h);
        *p++ = 'h';
    }

    if (h || m) {
        p = mg_limit_digits(p, (uint64_t) m);
        *p++ = 'm';
    }

    /* seconds with up to three decimals, trailing zeros dropped: "7.66s" */

    p = mg_limit_digits(p, (uint64_t) s);

    if (frac) {
        *p++ = '.';
        *p++ = (char) ('0' + frac / 100);

        if (frac % 100) {
            *p++ = (char) ('0' + frac / 10 % 10);

            if (frac % 10) {
                *p++ = (char) ('0' + frac % 10);
            }
        }
    }

    *p++ = 's';

    return p - buf;
}
