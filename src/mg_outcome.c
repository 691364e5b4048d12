/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>

#include "mg_outcome.h"


#define MG_OUTCOME_RATE_LIMITED                                              \
    "Every backend serving this model is rate limited; retry after the "    \
    "time in Retry-After."


/* whole seconds, rounded up: never tell a client to retry too soon */

static long
mg_outcome_seconds(uintptr_t ms)
{
    long  s;

    s = (long) ((ms + 999) / 1000);

    return (s == 0) ? 1 : s;
}


void
mg_outcome(const mg_outcome_in_t *in, mg_outcome_t *out)
{
    memset(out, 0, sizeof(mg_outcome_t));

    if (in->total_expired) {
        out->status = 504;
        out->type = "timeout_error";
        out->code = "timeout";
        out->message = "The request did not complete within "
                       "model_gateway_total_timeout.";
        return;
    }

    if (in->all_cooling && in->failures == 0) {

        /* nothing was tried: every candidate is cooling down */

        out->retry_after = mg_outcome_seconds(in->cool_wait);

        if (in->cool_limited) {
            out->status = 429;
            out->type = "rate_limit_error";
            out->code = "rate_limit_exceeded";
            out->message = MG_OUTCOME_RATE_LIMITED;
            return;
        }

        out->status = 503;
        out->type = "server_error";
        out->code = "no_backend_available";
        out->message = "Every backend serving this model is cooling down "
                       "after failures; retry after the time in "
                       "Retry-After.";
        return;
    }

    if (in->rate_limited && in->rate_limited == in->failures) {
        out->status = 429;
        out->type = "rate_limit_error";
        out->code = "rate_limit_exceeded";
        out->message = MG_OUTCOME_RATE_LIMITED;
        out->retry_after = (in->min_retry_after_ms < 0)
                           ? 1
                           : mg_outcome_seconds(
                                 (uintptr_t) in->min_retry_after_ms);
        return;
    }

    switch (in->last_fail) {

    case MG_OUTCOME_FAIL_TIMEOUT:
        out->status = 504;
        out->type = "timeout_error";
        out->code = "backend_timeout";
        out->message = "The model backend timed out.";
        return;

    case MG_OUTCOME_FAIL_AUTH:
        out->status = 502;
        out->type = "server_error";
        out->code = "backend_auth_failed";
        out->message = "backend authentication failed";
        return;

    case MG_OUTCOME_FAIL_STATUS:

        if (in->last_fail_status != 529) {
            break;
        }

        /* Anthropic's "overloaded": the client may well retry later */

        out->status = 503;
        out->type = "server_error";
        out->code = "overloaded";
        out->message = "The model backend is overloaded.";
        return;

    case MG_OUTCOME_FAIL_TOO_BIG:
        out->status = 502;
        out->type = "server_error";
        out->code = "backend_response_too_large";
        out->message = "The model backend's response exceeds the "
                       "gateway's limit.";
        return;

    default:
        break;
    }

    /* nginx's 503 (no live upstream) stays; any other failure is a 502 */

    out->status = (in->status == 503) ? 503 : 502;
    out->type = "server_error";
    out->code = "backend_error";
    out->message = "The model backend failed.";
    out->list_attempts = 1;
}
