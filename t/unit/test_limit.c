/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The limit rules with the time passed in: a rate limit's burst and
 * refill, refusals and their waits, corrections after the real usage, the
 * UTC day, budgets, the reservation estimate and OpenAI's durations.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_limit.h"


#define NOW  1796083200000LL            /* 2026-12-01T00:00:00Z */

#define is(g, e, n)  is_int((long long) (g), (long long) (e), n)


static char  dur[MG_LIMIT_DURATION_LEN + 1];


static const char *
duration(int64_t ms)
{
    size_t  n;

    n = mg_limit_duration(dur, ms);
    dur[n] = '\0';

    return dur;
}


int
main(void)
{
    int                i, passed;
    mg_limit_state_t   s, next;
    mg_limit_result_t  res;

    /* a rate limit of 3 per minute: the burst, then one every 20 s */

    memset(&s, 0, sizeof(s));
    passed = 0;

    for (i = 0; i < 5; i++) {
        mg_limit_take(&s, &next, MG_LIMIT_RATE, 3, 1, NOW, &res);

        if (res.ok) {
            s = next;
            passed++;
        }
    }

    is(passed, 3, "rate: a minute's limit passes at once, no more");
    is(res.remaining, 0, "rate: nothing remains");
    is(res.retry_ms, 20000, "rate: the next one fits in 60000/3 ms");
    is(res.reset_ms, 60000, "rate: full again in a minute");

    mg_limit_take(&s, &next, MG_LIMIT_RATE, 3, 1, NOW + 19999, &res);
    ok(!res.ok, "rate: still refused 1 ms before");

    mg_limit_take(&s, &next, MG_LIMIT_RATE, 3, 1, NOW + 20000, &res);
    ok(res.ok, "rate: passes when one unit came back");
    is(res.remaining, 0, "rate: and that unit is spent");

    /* 60000 / 7 is not exact: still 7 at once */

    memset(&s, 0, sizeof(s));
    passed = 0;

    for (i = 0; i < 8; i++) {
        mg_limit_take(&s, &next, MG_LIMIT_RATE, 7, 1, NOW, &res);

        if (res.ok) {
            s = next;
            passed++;
        }
    }

    is(passed, 7, "rate: 7 per minute pass at once");

    memset(&s, 0, sizeof(s));
    mg_limit_take(&s, &next, MG_LIMIT_RATE, 7, 1, NOW, &res);
    is(res.remaining, 6, "rate: 6 of 7 remain after one");

    /* a refusal changes nothing */

    memset(&s, 0, sizeof(s));
    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 600, NOW, &res);
    ok(res.ok, "tokens: 600 of 1000 pass");
    is(res.remaining, 400, "tokens: 400 remain");
    is(res.reset_ms, 36000, "tokens: full again in 36 s");
    s = next;

    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 500, NOW, &res);
    ok(!res.ok, "tokens: 500 more do not fit");
    is(res.remaining, 400, "tokens: the refusal reports 400 left");
    is(res.retry_ms, 6000, "tokens: 100 more come back in 6 s");
    ok(next.tat == s.tat, "tokens: a refusal leaves the state");

    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 1001, NOW + 3600000, &res);
    ok(!res.ok && res.retry_ms == -1, "tokens: more than the limit never");

    /* corrections: the real usage replaces the reservation */

    memset(&s, 0, sizeof(s));
    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 900, NOW, &res);
    s = next;
    mg_limit_adjust(&s, MG_LIMIT_RATE, 1000, -800, 0, NOW);
    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 900, NOW, &res);
    ok(res.ok, "adjust: a refund makes room at once");
    s = next;

    mg_limit_adjust(&s, MG_LIMIT_RATE, 1000, 5000, 0, NOW);
    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 1, NOW + 60000, &res);
    ok(!res.ok, "adjust: an overrun refuses the next request...");
    mg_limit_take(&s, &next, MG_LIMIT_RATE, 1000, 1, NOW + 360000, &res);
    ok(res.ok, "adjust: ...until it came back");

    mg_limit_adjust(&s, MG_LIMIT_RATE, 1000, -100000, 0, NOW + 600000);
    ok(s.tat == (double) (NOW + 600000), "adjust: never below empty");

    /* the UTC day */

    memset(&s, 0, sizeof(s));
    mg_limit_take(&s, &next, MG_LIMIT_DAY, 100, 60, NOW + 1000, &res);
    ok(res.ok && res.remaining == 40, "day: 60 of 100");
    is(res.reset_ms, 86400000 - 1000, "day: resets at 00:00 UTC");
    s = next;

    mg_limit_take(&s, &next, MG_LIMIT_DAY, 100, 50, NOW + 86399999, &res);
    ok(!res.ok, "day: 50 more refused the same day");
    is(res.retry_ms, 1, "day: until midnight");

    mg_limit_take(&s, &next, MG_LIMIT_DAY, 100, 50, NOW + 86400000, &res);
    ok(res.ok && res.remaining == 50, "day: the next day starts at 0");

    mg_limit_adjust(&s, MG_LIMIT_DAY, 100, -60, NOW / 86400000 - 1, NOW);
    is((long long) s.used, 60, "day: another day's correction is ignored");
    mg_limit_adjust(&s, MG_LIMIT_DAY, 100, -70, NOW / 86400000, NOW);
    is((long long) s.used, 0, "day: nothing below 0");

    /* budgets */

    memset(&s, 0, sizeof(s));
    mg_limit_take(&s, &next, MG_LIMIT_BUDGET, 100, 100, NOW, &res);
    ok(res.ok && res.remaining == 0, "budget: all of it");
    s = next;
    mg_limit_take(&s, &next, MG_LIMIT_BUDGET, 100, 1, NOW + 1000000000,
                  &res);
    ok(!res.ok && res.retry_ms == -1 && res.reset_ms == -1,
       "budget: spent is spent");

    /* estimates */

    is(mg_limit_estimate(0, 4, 16), 16, "estimate: no body");
    is(mg_limit_estimate(9, 4, 16), 19, "estimate: bytes / 4 rounded up");
    is(mg_limit_estimate(9, 0, 0), 9, "estimate: 0 bytes per token is 1");

    /* durations as OpenAI writes them */

    ok(strcmp(duration(0), "0ms") == 0, "duration 0");
    ok(strcmp(duration(20), "20ms") == 0, "duration 20ms");
    ok(strcmp(duration(1000), "1s") == 0, "duration 1s");
    ok(strcmp(duration(7660), "7.66s") == 0, "duration 7.66s");
    ok(strcmp(duration(360000), "6m0s") == 0, "duration 6m0s");
    ok(strcmp(duration(179560), "2m59.56s") == 0, "duration 2m59.56s");
    ok(strcmp(duration(3723000), "1h2m3s") == 0, "duration 1h2m3s");
    ok(strcmp(duration(-5), "0ms") == 0, "duration below 0");
    ok(strcmp(duration(61001), "1m1.001s") == 0, "duration 1m1.001s");
    ok(strcmp(duration(60010), "1m0.01s") == 0, "duration 1m0.01s");
    ok(strcmp(duration(1100), "1.1s") == 0, "duration 1.1s");
    ok(mg_limit_duration(dur, INT64_MAX) <= MG_LIMIT_DURATION_LEN,
       "duration of INT64_MAX fits");
    ok(mg_limit_duration(dur, 86400000LL * 365 * 1000)
       <= MG_LIMIT_DURATION_LEN, "duration of 1000 years fits");

    return tap_done();
}
