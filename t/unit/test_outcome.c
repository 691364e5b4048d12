/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The outcome -> status table (README "Errors"): every row.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_outcome.h"


static mg_outcome_in_t  in;
static mg_outcome_t     out;


static void
reset(void)
{
    memset(&in, 0, sizeof(in));
    in.min_retry_after_ms = -1;
    in.status = 502;
}


static void
row(const char *name, unsigned status, const char *type, const char *code,
    long retry_after, int list)
{
    mg_outcome(&in, &out);

    is_int(out.status, status, "%s: status %u", name, status);
    is_str(out.type, out.type ? strlen(out.type) : 0, type, "%s: type",
           name);
    is_str(out.code, out.code ? strlen(out.code) : 0, code, "%s: code",
           name);
    ok(out.message && *out.message, "%s: a message", name);
    is_int(out.retry_after, retry_after, "%s: Retry-After %ld", name,
           retry_after);
    is_int(out.list_attempts, list, "%s: %s the attempts", name,
           list ? "lists" : "does not list");
}


int
main(void)
{
    /* model_gateway_total_timeout wins over everything */

    reset();
    in.total_expired = 1;
    in.failures = 2;
    in.rate_limited = 2;
    in.last_fail = MG_OUTCOME_FAIL_AUTH;
    row("total timeout", 504, "timeout_error", "timeout", 0, 0);
    is_str(out.message, strlen(out.message),
           "The request did not complete within model_gateway_total_timeout.",
           "total timeout: message");

    /* nothing tried: every candidate cooling down (t/061 "flap 4") */

    reset();
    in.all_cooling = 1;
    in.cool_wait = 1200;
    row("all cooling", 503, "server_error", "no_backend_available", 2, 0);
    is_str(out.message, strlen(out.message),
           "Every backend serving this model is cooling down after "
           "failures; retry after the time in Retry-After.",
           "all cooling: message");

    in.cool_wait = 2000;
    mg_outcome(&in, &out);
    is_int(out.retry_after, 2, "all cooling 2000 ms: Retry-After 2");
    in.cool_wait = 2001;
    mg_outcome(&in, &out);
    is_int(out.retry_after, 3, "all cooling 2001 ms: rounded up to 3");
    in.cool_wait = 0;
    mg_outcome(&in, &out);
    is_int(out.retry_after, 1, "all cooling 0 ms: at least 1");

    reset();
    in.all_cooling = 1;
    in.cool_limited = 1;
    in.cool_wait = 2500;
    row("all limited, none tried", 429, "rate_limit_error",
        "rate_limit_exceeded", 3, 0);
    is_str(out.message, strlen(out.message),
           "Every backend serving this model is rate limited; retry after "
           "the time in Retry-After.", "all limited: message");

    /* cooling after some were tried: the attempts decide */

    reset();
    in.all_cooling = 1;
    in.cool_wait = 5000;
    in.failures = 1;
    in.last_fail = MG_OUTCOME_FAIL_OTHER;
    row("tried, then all cooling", 502, "server_error", "backend_error", 0,
        1);

    /* every attempt rate limited */

    reset();
    in.failures = 2;
    in.rate_limited = 2;
    in.min_retry_after_ms = 2100;
    row("every attempt 429", 429, "rate_limit_error", "rate_limit_exceeded",
        3, 0);
    in.min_retry_after_ms = -1;
    mg_outcome(&in, &out);
    is_int(out.retry_after, 1, "every attempt 429, no Retry-After: 1");
    in.min_retry_after_ms = 0;
    mg_outcome(&in, &out);
    is_int(out.retry_after, 1, "every attempt 429, Retry-After 0: 1");
    in.min_retry_after_ms = 3000;
    mg_outcome(&in, &out);
    is_int(out.retry_after, 3, "every attempt 429, 3000 ms: 3");

    reset();
    in.failures = 2;
    in.rate_limited = 1;
    in.last_fail = MG_OUTCOME_FAIL_OTHER;
    row("one 429 of two", 502, "server_error", "backend_error", 0, 1);

    /* the last failure's kind */

    reset();
    in.failures = 1;
    in.last_fail = MG_OUTCOME_FAIL_TIMEOUT;
    row("timeout", 504, "timeout_error", "backend_timeout", 0, 0);

    reset();
    in.failures = 1;
    in.last_fail = MG_OUTCOME_FAIL_AUTH;
    row("401/403", 502, "server_error", "backend_auth_failed", 0, 0);
    is_str(out.message, strlen(out.message), "backend authentication failed",
           "401/403: message");

    reset();
    in.failures = 1;
    in.last_fail = MG_OUTCOME_FAIL_STATUS;
    in.last_fail_status = 529;
    row("529", 503, "server_error", "overloaded", 0, 0);

    in.last_fail_status = 500;
    row("500", 502, "server_error", "backend_error", 0, 1);

    in.last_fail_status = 503;
    in.status = 503;
    row("503, nginx chose 503", 503, "server_error", "backend_error", 0, 1);

    reset();
    in.failures = 1;
    in.last_fail = MG_OUTCOME_FAIL_TOO_BIG;
    row("too big", 502, "server_error", "backend_response_too_large", 0, 0);

    reset();
    in.failures = 1;
    in.last_fail = MG_OUTCOME_FAIL_OTHER;
    in.status = 504;
    row("other, nginx chose 504", 502, "server_error", "backend_error", 0, 1);
    is_str(out.message, strlen(out.message), "The model backend failed.",
           "other: the message without the attempts");

    return tap_done();
}
