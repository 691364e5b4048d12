/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <stddef.h>

#include "mg_breaker.h"


static mg_breaker_event_e mg_breaker_cool(mg_breaker_t *b,
    const mg_breaker_conf_t *conf, mg_msec_t now, mg_breaker_event_e why);


mg_breaker_state_e
mg_breaker_check(const mg_breaker_t *backend, const mg_breaker_t *pair,
    mg_msec_t now, mg_msec_t *wait)
{
    *wait = 0;

    if (pair->limited_until > now) {
        *wait = pair->limited_until - now;
        return MG_BREAKER_LIMITED;
    }

    if (backend->cooldown_until > now) {
        *wait = backend->cooldown_until - now;
        return MG_BREAKER_COOLING;
    }

    if (backend->cooldown_until && backend->trial_until > now) {

        /* half-open, and another request is already the trial */

        *wait = backend->trial_until - now;
        return MG_BREAKER_TRIAL_BUSY;
    }

    return MG_BREAKER_AVAILABLE;
}


void
mg_breaker_wait_add(mg_breaker_wait_t *w, mg_breaker_state_e state,
    mg_msec_t wait)
{
    switch (state) {

    case MG_BREAKER_LIMITED:

        /* a client told to wait for a rate limit may retry sooner */

        if (!w->limited || wait < w->wait) {
            w->wait = wait;
        }

        w->limited = 1;
        break;

    case MG_BREAKER_COOLING:
    case MG_BREAKER_TRIAL_BUSY:

        if (!w->limited && (w->wait == 0 || wait < w->wait)) {
            w->wait = wait;
        }

        break;

    default:
        break;
    }
}


int
mg_breaker_pick(mg_breaker_t *backend, mg_msec_t now,
    mg_msec_t trial_timeout)
{
    if (backend->cooldown_until == 0) {
        return 0;
    }

    /* the first request after a cool-down is its trial */

    backend->trial_until = now + trial_timeout;

    return 1;
}


mg_breaker_event_e
mg_breaker_done(mg_breaker_t *backend, mg_breaker_t *pair,
    const mg_breaker_conf_t *conf, mg_breaker_outcome_e outcome, int trial,
    long retry_after_ms, uint32_t caller,
    mg_msec_t now)
{
    mg_msec_t  ms;

    switch (outcome) {

    case MG_BREAKER_SUCCESS:

        /* the credential works */

        backend->success_at = now;

        /*
         * only the trial ends a cool-down: a request that was already in
         * flight when the backend started cooling down says too little;
         * failures are counted within their window, so a success between
         * two failures does not reset them
         */

        if (!trial) {
            return MG_BREAKER_NOTHING;
        }

        backend->cooldown_until = 0;
        backend->trial_until = 0;
        backend->fails = 0;

        return MG_BREAKER_PASSED_TRIAL;

    case MG_BREAKER_RATE_LIMITED:

        if (conf->retry_after_max == 0) {
            return MG_BREAKER_NOTHING;
        }

        ms = (retry_after_ms >= 0) ? (mg_msec_t) retry_after_ms
                                   : conf->rate_limit_cooldown;
        if (ms > conf->retry_after_max) {
            ms = conf->retry_after_max;
        }

        if (ms && now + ms > pair->limited_until) {
            pair->limited_until = now + ms;
        }

        /* says nothing of the backend's health: the next may be a trial */

        if (trial) {
            backend->trial_until = 0;
        }

        return MG_BREAKER_NOTHING;

    case MG_BREAKER_REFUSED:

        /*
         * A 401 or 403 may be drawn by what one client sent, so it is no
         * proof that the gateway's credential is wrong: such failures
         * count toward max_fails within the window like others, and they
         * cool the backend down only when no request succeeded within the
         * window, which proves the credential.  A revoked key fails every
         * request and still cools the backend down; a client cannot while
         * others succeed, however many refusals it draws.  Where callers
         * are known, refusals must also come from two distinct ones: one
         * caller alone never takes a backend out of service for others.
         */

        if (conf->max_fails == 0) {
            return MG_BREAKER_NOTHING;
        }

        if (trial) {
            return mg_breaker_cool(backend, conf, now,
                                   MG_BREAKER_COOLS_TRIAL_REFUSED);
        }

        if (now - backend->auth_window_start > conf->fail_window) {
            backend->auth_window_start = now;
            backend->auth_fails = 0;
            backend->auth_callers = 0;
        }

        if (caller && backend->auth_callers == 0) {
            backend->auth_caller = caller;
            backend->auth_callers = 1;

        } else if (caller && caller != backend->auth_caller) {
            backend->auth_callers = 2;
        }

        if (++backend->auth_fails >= conf->max_fails
            && now - backend->success_at >= conf->fail_window
            && (caller == 0 || backend->auth_callers >= 2))
        {
            return mg_breaker_cool(backend, conf, now,
                                   MG_BREAKER_COOLS_REFUSED);
        }

        return MG_BREAKER_NOTHING;

    case MG_BREAKER_FAILURE:

        if (conf->max_fails == 0) {
            return MG_BREAKER_NOTHING;
        }

        if (trial) {
            return mg_breaker_cool(backend, conf, now,
                                   MG_BREAKER_COOLS_TRIAL_FAILED);
        }

        if (now - backend->window_start > conf->fail_window) {
            backend->window_start = now;
            backend->fails = 0;
        }

        if (++backend->fails >= conf->max_fails) {
            return mg_breaker_cool(backend, conf, now,
                                   MG_BREAKER_COOLS_FAILED);
        }

        return MG_BREAKER_NOTHING;

    default: /* MG_BREAKER_NO_VERDICT, MG_BREAKER_NOT_HEALTH */

        /* the trial said nothing: the next request may be the trial */

        if (trial) {
            backend->trial_until = 0;
        }

        return MG_BREAKER_NOTHING;
    }
}


static mg_breaker_event_e
mg_breaker_cool(mg_breaker_t *b, const mg_breaker_conf_t *conf,
    mg_msec_t now, mg_breaker_event_e why)
{
    mg_breaker_event_e  event;

    /*
     * reported once per cool-down, to whichever worker starts it: two
     * requests failing at the same time restart the same cool-down
     */

    event = (b->cooldown_until <= now || b->trial_until) ? why
                                                         : MG_BREAKER_EXTENDED;

    b->cooldown_until = now + conf->cooldown;
    b->trial_until = 0;
    b->fails = 0;
    b->window_start = now;
    b->auth_window_start = now;
    b->auth_fails = 0;
    b->auth_callers = 0;

    return event;
}


const char *
mg_breaker_reason(mg_breaker_event_e event)
{
    switch (event) {

    case MG_BREAKER_COOLS_FAILED:
        return "it failed too often";

    case MG_BREAKER_COOLS_REFUSED:
        return "its credential was rejected";

    case MG_BREAKER_COOLS_TRIAL_FAILED:
        return "its trial request failed";

    case MG_BREAKER_COOLS_TRIAL_REFUSED:
        return "its trial request was refused";

    default:
        return NULL;
    }
}
