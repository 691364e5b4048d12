/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The breaker of a backend: failures counted within a window, cool-downs,
 * the half-open trial after one, credential refusals, and the rate-limit
 * cool-down of a (backend, model) pair.  Pure functions over a state the
 * caller keeps (in shared memory, under its lock) with the time passed in,
 * so every rule is tested without a clock; the caller logs what they
 * report.
 */

#ifndef _MG_BREAKER_H_INCLUDED_
#define _MG_BREAKER_H_INCLUDED_

#include <stdint.h>


/* milliseconds of a monotonic clock; the type of nginx's ngx_msec_t */
typedef uintptr_t  mg_msec_t;


typedef struct {
    mg_msec_t      cooldown_until;      /* nonzero: cooled down once */
    mg_msec_t      trial_until;         /* a trial is in flight until */
    mg_msec_t      window_start;
    uintptr_t      fails;
    mg_msec_t      auth_window_start;
    uintptr_t      auth_fails;          /* 401/403 */
    uint32_t       auth_caller;         /* the first refused caller */
    uintptr_t      auth_callers;        /* distinct ones, at most 2 */
    mg_msec_t      success_at;
    mg_msec_t      limited_until;       /* a pair's 429 cool-down */
} mg_breaker_t;


typedef struct {
    uintptr_t      max_fails;           /* 0: no failure cool-downs */
    mg_msec_t      fail_window;
    mg_msec_t      cooldown;
    mg_msec_t      retry_after_max;     /* 0: no rate-limit cool-downs */
    mg_msec_t      rate_limit_cooldown; /* a 429 without Retry-After */
} mg_breaker_conf_t;


/* whether a target may be picked now, and if not why */
typedef enum {
    MG_BREAKER_AVAILABLE = 0,           /* closed, or half-open and free */
    MG_BREAKER_LIMITED,                 /* the pair is rate limited */
    MG_BREAKER_COOLING,                 /* the backend cools down */
    MG_BREAKER_TRIAL_BUSY               /* another request is the trial */
} mg_breaker_state_e;


/* the shortest wait over the targets that are not available */
typedef struct {
    mg_msec_t      wait;                /* 0: none seen yet */
    unsigned       limited:1;           /* the wait is a rate limit's */
} mg_breaker_wait_t;


/* how an attempt ended, as far as the backend's health is concerned */
typedef enum {
    MG_BREAKER_SUCCESS = 0,
    MG_BREAKER_NO_VERDICT,              /* stale keepalive, client gone */
    MG_BREAKER_FAILURE,                 /* connect, timeout, 5xx, broken */
    MG_BREAKER_REFUSED,                 /* 401/403 */
    MG_BREAKER_RATE_LIMITED,            /* 429 */
    MG_BREAKER_NOT_HEALTH               /* too big, total timeout */
} mg_breaker_outcome_e;


/* what an outcome did to the backend, for the caller to log */
typedef enum {
    MG_BREAKER_NOTHING = 0,
    MG_BREAKER_PASSED_TRIAL,            /* the cool-down ended */
    MG_BREAKER_COOLS_FAILED,            /* max_fails within the window */
    MG_BREAKER_COOLS_REFUSED,           /* credential rejected */
    MG_BREAKER_COOLS_TRIAL_FAILED,
    MG_BREAKER_COOLS_TRIAL_REFUSED,
    MG_BREAKER_EXTENDED                 /* a running cool-down restarted */
} mg_breaker_event_e;


/*
 * Whether the target with this backend state and pair state may be picked
 * at now; when not, *wait is how long until that may change.
 */
mg_breaker_state_e mg_breaker_check(const mg_breaker_t *backend,
    const mg_breaker_t *pair, mg_msec_t now, mg_msec_t *wait);

/* folds one target's check into the shortest wait (rate limits first) */
void mg_breaker_wait_add(mg_breaker_wait_t *w, mg_breaker_state_e state,
    mg_msec_t wait);

/*
 * The backend was picked at now: returns 1 if the attempt is its trial
 * (the first after a cool-down), which then holds it for trial_timeout.
 */
int mg_breaker_pick(mg_breaker_t *backend, mg_msec_t now,
    mg_msec_t trial_timeout);

/*
 * Records an attempt's outcome at now.  pair is the (backend, model)
 * state, retry_after_ms a 429's wait (-1: none given), trial whether
 * mg_breaker_pick() said so, caller who sent the request (a nonzero hash
 * of its identity, or 0 where identity is off).
 */
mg_breaker_event_e mg_breaker_done(mg_breaker_t *backend, mg_breaker_t *pair,
    const mg_breaker_conf_t *conf, mg_breaker_outcome_e outcome, int trial,
    long retry_after_ms, uint32_t caller, mg_msec_t now);

/* why a cool-down started, for the log; NULL for other events */
const char *mg_breaker_reason(mg_breaker_event_e event);


#endif /* _MG_BREAKER_H_INCLUDED_ */
