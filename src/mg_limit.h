/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Request and token limits: the rules, over a state the caller keeps, with
 * the time passed in.  The gateway keeps the state in Redis (the LIMIT and
 * SETTLE scripts apply the same rules in Lua, so every node shares it) and,
 * while Redis is down and limits fail open, in shared memory per node.
 *
 *   MG_LIMIT_RATE    LIMIT per minute, as GCRA: a full minute's limit may
 *                    be spent at once, and it comes back continuously, one
 *                    unit every 60000 / LIMIT ms.  The state is the
 *                    theoretical arrival time (tat, ms).
 *   MG_LIMIT_DAY     LIMIT per UTC day, a counter that starts at 0 at
 *                    00:00 UTC.  The state is the day and what it used.
 *   MG_LIMIT_BUDGET  LIMIT in all, never reset by the gateway.
 *
 * A charge passes only if it fits whole: a cost larger than the limit
 * never passes (retry -1).  A charge is corrected later by a delta (the
 * real tokens minus the reservation), which may take the state past the
 * limit: the next request is then refused until it comes back.
 */

#ifndef _MG_LIMIT_H_INCLUDED_
#define _MG_LIMIT_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>


#define MG_LIMIT_RATE     'r'
#define MG_LIMIT_DAY      'd'
#define MG_LIMIT_BUDGET   'b'

#define MG_LIMIT_PERIOD   60000         /* ms of a rate limit's period */
#define MG_LIMIT_DAY_MS   86400000

/* the length of the longest duration mg_limit_duration() writes */
#define MG_LIMIT_DURATION_LEN  32


typedef struct {
    double          tat;                /* RATE: ms */
    double          used;               /* DAY, BUDGET */
    int64_t         day;                /* DAY: days since the epoch */
} mg_limit_state_t;


typedef struct {
    int             ok;
    uint64_t        remaining;          /* after the charge, if ok */
    int64_t         reset_ms;           /* until full again; -1 never */
    int64_t         retry_ms;           /* refused: until it fits; -1 never */
} mg_limit_result_t;


/*
 * Whether cost fits at now (ms since the epoch); next gets the state with
 * the charge made (the caller stores it only if every limit passed).
 */
void mg_limit_take(const mg_limit_state_t *cur, mg_limit_state_t *next,
    int kind, uint64_t limit, uint64_t cost, int64_t now,
    mg_limit_result_t *res);

/*
 * Corrects a charge by delta (may be negative).  A DAY state of another
 * day than the charge's is left alone; nothing goes below empty.
 */
void mg_limit_adjust(mg_limit_state_t *s, int kind, uint64_t limit,
    int64_t delta, int64_t day, int64_t now);

/*
 * The tokens reserved for a request: its body bytes divided by
 * bytes_per_token (rounded up), plus the output tokens it may use.
 */
uint64_t mg_limit_estimate(size_t body_len, uint64_t bytes_per_token,
    uint64_t max_tokens);

/*
 * A duration as OpenAI writes its x-ratelimit-reset-* headers: "20ms",
 * "1s", "7.66s", "6m0s", "1h2m3s".  Writes at most MG_LIMIT_DURATION_LEN
 * bytes, no NUL; returns the length.
 */
size_t mg_limit_duration(char *buf, int64_t ms);


#endif /* _MG_LIMIT_H_INCLUDED_ */
