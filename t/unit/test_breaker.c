/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The breaker, with the time passed in: failure windows, cool-downs, the
 * half-open trial, credential refusals and the 429 pair cool-down.  These
 * replace t/061-cooldown.t's and t/060-balance.t's assertions that only
 * held when the machine was fast enough ("if $in_time").
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_breaker.h"


#define T0        100000        /* ngx_current_msec is far from 0 */
#define WINDOW    5000
#define COOLDOWN  2000
#define TRIAL     1500          /* connect + first byte timeouts */


static mg_breaker_conf_t  conf;
static mg_breaker_t       bk, pr;


static void
reset(uintptr_t max_fails)
{
    memset(&bk, 0, sizeof(bk));
    memset(&pr, 0, sizeof(pr));

    conf.max_fails = max_fails;
    conf.fail_window = WINDOW;
    conf.cooldown = COOLDOWN;
    conf.retry_after_max = 60000;
    conf.rate_limit_cooldown = 5000;
}


static mg_breaker_event_e
done(mg_breaker_outcome_e outcome, int trial, mg_msec_t now)
{
    return mg_breaker_done(&bk, &pr, &conf, outcome, trial, -1, 0, now);
}


static mg_breaker_state_e
check(mg_msec_t now, mg_msec_t *wait)
{
    mg_msec_t  w;

    return mg_breaker_check(&bk, &pr, now, wait ? wait : &w);
}


/* the backend is picked at now: returns whether that is the trial */

static int
pick(mg_msec_t now)
{
    if (check(now, NULL) != MG_BREAKER_AVAILABLE) {
        return -1;
    }

    return mg_breaker_pick(&bk, now, TRIAL);
}


int
main(void)
{
    int                 trial;
    mg_msec_t           w;
    mg_breaker_wait_t   cw;
    mg_breaker_event_e  ev;
    mg_breaker_state_e  st;

    /* a fresh backend */

    reset(2);
    is_int(check(T0, &w), MG_BREAKER_AVAILABLE, "fresh: available");
    is_int(w, 0, "fresh: no wait");
    is_int(pick(T0), 0, "fresh: no trial");
    is_int(done(MG_BREAKER_SUCCESS, 0, T0), MG_BREAKER_NOTHING,
           "fresh: a success changes nothing to report");
    is_int(bk.success_at, T0, "success: remembered");

    /* max_fails failures within the window start a cool-down */

    reset(2);
    is_int(done(MG_BREAKER_FAILURE, 0, T0), MG_BREAKER_NOTHING,
           "1 failure of max_fails 2: nothing");
    is_int(check(T0 + 1, NULL), MG_BREAKER_AVAILABLE,
           "1 failure: still available");
    ev = done(MG_BREAKER_FAILURE, 0, T0 + 100);
    is_int(ev, MG_BREAKER_COOLS_FAILED, "2 failures in the window: cools down");
    is_str(mg_breaker_reason(ev), strlen(mg_breaker_reason(ev)),
           "it failed too often", "the reason logged");
    is_int(bk.cooldown_until, T0 + 100 + COOLDOWN, "for cooldown from now");
    is_int(bk.fails, 0, "the count starts again");

    /* t/061 "fw cooling: bad received nothing" */

    is_int(check(T0 + 100, &w), MG_BREAKER_COOLING, "cooling at its start");
    is_int(w, COOLDOWN, "cooling: the wait is the whole cool-down");
    is_int(check(T0 + 100 + COOLDOWN - 1, &w), MG_BREAKER_COOLING,
           "cooling 1 ms before its end");
    is_int(w, 1, "cooling: 1 ms left");
    is_int(pick(T0 + 100 + COOLDOWN - 1), -1, "cooling: never picked");

    /* exactly one trial after it */

    is_int(check(T0 + 100 + COOLDOWN, NULL), MG_BREAKER_AVAILABLE,
           "half-open when the cool-down ends");
    trial = pick(T0 + 100 + COOLDOWN);
    is_int(trial, 1, "the first pick after it is the trial");
    is_int(bk.trial_until, T0 + 100 + COOLDOWN + TRIAL,
           "the trial holds it for connect + first byte timeouts");
    is_int(check(T0 + 100 + COOLDOWN + 1, &w), MG_BREAKER_TRIAL_BUSY,
           "trial in flight: nobody else");
    is_int(w, TRIAL - 1, "trial in flight: wait until it times out");
    is_int(check(T0 + 100 + COOLDOWN + TRIAL, NULL), MG_BREAKER_AVAILABLE,
           "a trial that never ended frees the backend for another trial");
    is_int(pick(T0 + 100 + COOLDOWN + TRIAL), 1, "which is a trial again");

    /* the trial passes */

    ev = done(MG_BREAKER_SUCCESS, 1, T0 + 3000);
    is_int(ev, MG_BREAKER_PASSED_TRIAL, "trial success: passed its trial");
    ok(mg_breaker_reason(ev) == NULL, "passed: no cool-down reason");
    is_int(bk.cooldown_until, 0, "trial success: the cool-down is over");
    is_int(bk.trial_until, 0, "trial success: no trial");
    is_int(pick(T0 + 3001), 0, "trial success: the next pick is no trial");

    /* the trial fails: a cool-down again at once (t/061 "fw after the
     * failed trial: bad cooled down after one failure") */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_FAILURE, 0, T0);
    is_int(pick(T0 + COOLDOWN), 1, "trial picked");
    ev = done(MG_BREAKER_FAILURE, 1, T0 + COOLDOWN + 50);
    is_int(ev, MG_BREAKER_COOLS_TRIAL_FAILED,
           "trial failure: cools down after one failure");
    is_str(mg_breaker_reason(ev), strlen(mg_breaker_reason(ev)),
           "its trial request failed", "trial failure: the reason");
    is_int(bk.cooldown_until, T0 + 2 * COOLDOWN + 50,
           "trial failure: a whole cool-down again");
    is_int(bk.trial_until, 0, "trial failure: no trial in flight");
    is_int(check(T0 + 2 * COOLDOWN + 49, NULL), MG_BREAKER_COOLING,
           "trial failure: cooling until then");
    is_int(pick(T0 + 2 * COOLDOWN + 50), 1, "then a trial again");

    /* a straggler: a success sent before the cool-down started is no
     * trial and does not end it (t/061 "straggler: strag still cooling
     * down") */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_FAILURE, 0, T0 + 10);
    is_int(done(MG_BREAKER_SUCCESS, 0, T0 + 500), MG_BREAKER_NOTHING,
           "straggler success: nothing to report");
    is_int(check(T0 + 500, NULL), MG_BREAKER_COOLING,
           "straggler success: still cooling");
    is_int(bk.cooldown_until, T0 + 10 + COOLDOWN,
           "straggler success: the cool-down keeps its end");

    /* failures outside the window do not add up */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    is_int(done(MG_BREAKER_FAILURE, 0, T0 + WINDOW + 1), MG_BREAKER_NOTHING,
           "2 failures a window + 1 ms apart: no cool-down");
    is_int(bk.window_start, T0 + WINDOW + 1, "a new window from the second");
    is_int(done(MG_BREAKER_FAILURE, 0, T0 + WINDOW + 2),
           MG_BREAKER_COOLS_FAILED, "a third right after: cools down");

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    is_int(done(MG_BREAKER_FAILURE, 0, T0 + WINDOW), MG_BREAKER_COOLS_FAILED,
           "2 failures exactly a window apart: within it");

    /* a success between two failures does not reset them (t/061 "flap
     * 4: not sent to flap") */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_SUCCESS, 0, T0 + 10);
    is_int(done(MG_BREAKER_FAILURE, 0, T0 + 20), MG_BREAKER_COOLS_FAILED,
           "failure, success, failure: cools down");
    is_int(check(T0 + 21, NULL), MG_BREAKER_COOLING, "flap: cooling");

    /* two requests failing at the same time: one cool-down, reported once
     * (the second restarts it) */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    is_int(done(MG_BREAKER_FAILURE, 0, T0), MG_BREAKER_COOLS_FAILED,
           "concurrent: the first cools down");
    done(MG_BREAKER_FAILURE, 0, T0 + 5);
    is_int(done(MG_BREAKER_FAILURE, 0, T0 + 5), MG_BREAKER_EXTENDED,
           "concurrent: the others restart it, unreported");
    ok(mg_breaker_reason(MG_BREAKER_EXTENDED) == NULL,
       "extended: no reason to log");
    is_int(bk.cooldown_until, T0 + 5 + COOLDOWN, "restarted from the last");

    /* max_fails 0: no failure or credential cool-downs */

    reset(0);
    for (w = 0; w < 10; w++) {
        ev = done(MG_BREAKER_FAILURE, 0, T0 + w);
        if (ev != MG_BREAKER_NOTHING) {
            break;
        }
        ev = done(MG_BREAKER_REFUSED, 0, T0 + w);
        if (ev != MG_BREAKER_NOTHING) {
            break;
        }
    }
    is_int(ev, MG_BREAKER_NOTHING, "max_fails 0: 10 failures and refusals");
    is_int(check(T0 + 10, NULL), MG_BREAKER_AVAILABLE,
           "max_fails 0: available");
    is_int(bk.fails + bk.auth_fails, 0, "max_fails 0: nothing counted");

    /* max_fails 1 (t/060 "prio: p1 cooling down: its mock got nothing") */

    reset(1);
    conf.cooldown = 3000;
    is_int(done(MG_BREAKER_FAILURE, 0, T0), MG_BREAKER_COOLS_FAILED,
           "max_fails 1: one failure cools down");
    is_int(check(T0 + 2999, NULL), MG_BREAKER_COOLING,
           "max_fails 1: cooling for the whole 3 s");
    is_int(pick(T0 + 3000), 1, "max_fails 1: then the trial");

    /* 401/403 with no success in the window: a cool-down (t/061 "401:
     * unauth1 cools down after the second") */

    reset(2);
    is_int(done(MG_BREAKER_REFUSED, 0, T0), MG_BREAKER_NOTHING,
           "1 refusal: nothing");
    ev = done(MG_BREAKER_REFUSED, 0, T0 + 100);
    is_int(ev, MG_BREAKER_COOLS_REFUSED, "2 refusals, no success: cools down");
    is_str(mg_breaker_reason(ev), strlen(mg_breaker_reason(ev)),
           "its credential was rejected", "refused: the reason");
    is_int(check(T0 + 100 + COOLDOWN - 1, NULL), MG_BREAKER_COOLING,
           "refused: cooling for the whole cool-down");
    is_int(bk.auth_fails, 0, "refused: the count starts again");

    /* two refusals at the same time: one cool-down (t/061 "401 x2:
     * unauth2 received nothing more") */

    reset(2);
    done(MG_BREAKER_REFUSED, 0, T0);
    is_int(done(MG_BREAKER_REFUSED, 0, T0), MG_BREAKER_COOLS_REFUSED,
           "refused x2: the first cools down");
    is_int(done(MG_BREAKER_REFUSED, 0, T0), MG_BREAKER_NOTHING,
           "refused x2: the third counts 1 again");
    is_int(check(T0 + 1, NULL), MG_BREAKER_COOLING, "refused x2: cooling");

    /* refusals while requests succeed within the window: never */

    reset(2);
    for (w = 0; w < 24; w++) {
        done(MG_BREAKER_SUCCESS, 0, T0 + w * 100);
        ev = done(MG_BREAKER_REFUSED, 0, T0 + w * 100 + 1);
        if (ev != MG_BREAKER_NOTHING) {
            break;
        }
        ev = done(MG_BREAKER_REFUSED, 0, T0 + w * 100 + 2);
        if (ev != MG_BREAKER_NOTHING) {
            break;
        }
    }
    is_int(ev, MG_BREAKER_NOTHING,
           "48 refusals among successes: no cool-down");
    is_int(check(T0 + 2400, NULL), MG_BREAKER_AVAILABLE,
           "refusals among successes: available");

    /* callers known: refusals drawn by one caller alone never cool down */

    reset(2);
    for (w = 0; w < 10; w++) {
        ev = mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_REFUSED, 0, -1,
                             0xaaaa, T0 + w);
        if (ev != MG_BREAKER_NOTHING) {
            break;
        }
    }
    is_int(ev, MG_BREAKER_NOTHING, "10 refusals of one caller: nothing");
    is_int(check(T0 + 10, NULL), MG_BREAKER_AVAILABLE,
           "one caller's refusals: available");
    is_int(mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_REFUSED, 0, -1,
                           0xbbbb, T0 + 11),
           MG_BREAKER_COOLS_REFUSED,
           "a second caller's refusal: cools down");
    is_int(bk.auth_callers, 0, "the cool-down forgets the callers");

    reset(2);
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_REFUSED, 0, -1, 0xaaaa, T0);
    is_int(mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_REFUSED, 0, -1,
                           0xbbbb, T0 + WINDOW + 1),
           MG_BREAKER_NOTHING,
           "two callers a window + 1 ms apart: nothing");
    is_int(mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_REFUSED, 0, -1,
                           0xbbbb, T0 + WINDOW + 2),
           MG_BREAKER_NOTHING,
           "the window forgot the first caller: one caller again");

    /* a success a window ago proves nothing any more */

    reset(2);
    done(MG_BREAKER_SUCCESS, 0, T0);
    done(MG_BREAKER_REFUSED, 0, T0 + WINDOW - 2);
    is_int(done(MG_BREAKER_REFUSED, 0, T0 + WINDOW - 1), MG_BREAKER_NOTHING,
           "refusals 1 ms short of a window after a success: nothing");
    is_int(done(MG_BREAKER_REFUSED, 0, T0 + WINDOW), MG_BREAKER_COOLS_REFUSED,
           "a refusal a window after the success: cools down");

    /* refusals outside their window do not add up */

    reset(2);
    done(MG_BREAKER_REFUSED, 0, T0);
    is_int(done(MG_BREAKER_REFUSED, 0, T0 + WINDOW + 1), MG_BREAKER_NOTHING,
           "2 refusals a window + 1 ms apart: nothing");

    /* refusals and failures are counted apart */

    reset(2);
    done(MG_BREAKER_REFUSED, 0, T0);
    is_int(done(MG_BREAKER_FAILURE, 0, T0 + 1), MG_BREAKER_NOTHING,
           "a refusal then a failure: nothing");

    /* a refused trial */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_SUCCESS, 0, T0 + 1);
    pick(T0 + COOLDOWN);
    ev = done(MG_BREAKER_REFUSED, 1, T0 + COOLDOWN + 1);
    is_int(ev, MG_BREAKER_COOLS_TRIAL_REFUSED,
           "refused trial: cools down, even after a success");
    is_str(mg_breaker_reason(ev), strlen(mg_breaker_reason(ev)),
           "its trial request was refused", "refused trial: the reason");
    is_int(bk.cooldown_until, T0 + 2 * COOLDOWN + 1,
           "refused trial: a whole cool-down");

    /* 429: the pair cools down, not the backend (t/061 "429: no worker
     * sent m1 to ra") */

    reset(2);
    is_int(mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0,
                           2000, 0, T0),
           MG_BREAKER_NOTHING, "429: nothing to log");
    is_int(pr.limited_until, T0 + 2000, "429: the pair waits Retry-After");
    is_int(bk.cooldown_until, 0, "429: the backend does not cool down");
    is_int(bk.fails, 0, "429: no failure counted");
    is_int(check(T0 + 1999, &w), MG_BREAKER_LIMITED, "429: limited");
    is_int(w, 1, "429: 1 ms left");
    is_int(check(T0 + 2000, NULL), MG_BREAKER_AVAILABLE,
           "429: available when the wait is over");

    memset(&pr, 0, sizeof(pr));
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0, -1, 0, T0);
    is_int(pr.limited_until, T0 + 5000, "429 without Retry-After: "
           "rate_limit_cooldown");

    memset(&pr, 0, sizeof(pr));
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0, 600000, 0, T0);
    is_int(pr.limited_until, T0 + 60000, "429: capped by retry_after_max");

    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0, 1000, 0, T0);
    is_int(pr.limited_until, T0 + 60000, "429: a shorter wait never "
           "shortens the pair's");

    memset(&pr, 0, sizeof(pr));
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0, 0, 0, T0);
    is_int(pr.limited_until, 0, "429 with Retry-After 0: no wait");

    memset(&pr, 0, sizeof(pr));
    conf.rate_limit_cooldown = 0;
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0, -1, 0, T0);
    is_int(pr.limited_until, 0, "429, none given, rate_limit_cooldown 0: "
           "no wait");

    reset(2);
    conf.retry_after_max = 0;
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 0, 2000, 0, T0);
    is_int(pr.limited_until, 0, "retry_after_max 0: no rate-limit cool-down");
    is_int(check(T0 + 1, NULL), MG_BREAKER_AVAILABLE,
           "retry_after_max 0: available");

    /* a 429 for the trial says nothing of its health */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_FAILURE, 0, T0);
    pick(T0 + COOLDOWN);
    mg_breaker_done(&bk, &pr, &conf, MG_BREAKER_RATE_LIMITED, 1, 1000, 0,
                    T0 + COOLDOWN + 1);
    is_int(bk.trial_until, 0, "429 trial: the trial is free again");
    is_int(bk.cooldown_until, T0 + COOLDOWN, "429 trial: still half-open");
    is_int(check(T0 + COOLDOWN + 2, NULL), MG_BREAKER_LIMITED,
           "429 trial: this pair limited");
    memset(&pr, 0, sizeof(pr));
    is_int(pick(T0 + COOLDOWN + 2), 1, "429 trial: another pair may try");

    /* no verdict, and outcomes that are not the backend's health */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    is_int(done(MG_BREAKER_NO_VERDICT, 0, T0 + 1), MG_BREAKER_NOTHING,
           "no verdict: nothing");
    is_int(done(MG_BREAKER_NOT_HEALTH, 0, T0 + 2), MG_BREAKER_NOTHING,
           "not health: nothing");
    is_int(bk.fails, 1, "no verdict, not health: not counted");
    is_int(bk.success_at, 0, "no verdict, not health: no success");

    done(MG_BREAKER_FAILURE, 0, T0 + 3);
    is_int(pick(T0 + 3 + COOLDOWN), 1, "trial picked");
    is_int(done(MG_BREAKER_NO_VERDICT, 1, T0 + 3 + COOLDOWN + 1),
           MG_BREAKER_NOTHING, "no-verdict trial: nothing");
    is_int(bk.trial_until, 0, "no-verdict trial: free for another trial");
    is_int(pick(T0 + 3 + COOLDOWN + 2), 1, "no-verdict trial: the next "
           "request is the trial");
    done(MG_BREAKER_NOT_HEALTH, 1, T0 + 3 + COOLDOWN + 3);
    is_int(bk.trial_until, 0, "too-big trial: free for another trial");
    is_int(bk.cooldown_until, T0 + 3 + COOLDOWN, "too-big trial: still "
           "half-open");

    /* the shortest wait over targets that are not available (t/061 "all
     * cooling: no backend reached") */

    memset(&cw, 0, sizeof(cw));
    mg_breaker_wait_add(&cw, MG_BREAKER_COOLING, 1500);
    mg_breaker_wait_add(&cw, MG_BREAKER_TRIAL_BUSY, 700);
    mg_breaker_wait_add(&cw, MG_BREAKER_COOLING, 900);
    mg_breaker_wait_add(&cw, MG_BREAKER_AVAILABLE, 0);
    is_int(cw.wait, 700, "cooling: the shortest wait");
    is_int(cw.limited, 0, "cooling: not limited");

    mg_breaker_wait_add(&cw, MG_BREAKER_LIMITED, 3000);
    is_int(cw.wait, 3000, "a rate limit's wait wins over cooling's");
    is_int(cw.limited, 1, "limited");
    mg_breaker_wait_add(&cw, MG_BREAKER_COOLING, 100);
    is_int(cw.wait, 3000, "limited: cooling waits no longer count");
    mg_breaker_wait_add(&cw, MG_BREAKER_LIMITED, 2000);
    mg_breaker_wait_add(&cw, MG_BREAKER_LIMITED, 2500);
    is_int(cw.wait, 2000, "limited: the shortest rate-limit wait");

    /* both backends of a model cooling down */

    reset(2);
    done(MG_BREAKER_FAILURE, 0, T0);
    done(MG_BREAKER_FAILURE, 0, T0);
    memset(&cw, 0, sizeof(cw));
    st = check(T0 + 300, &w);
    mg_breaker_wait_add(&cw, st, w);
    is_int(cw.wait, COOLDOWN - 300, "all cooling: the wait left");
    ok(!cw.limited, "all cooling: not limited");

    return tap_done();
}
