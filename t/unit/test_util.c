/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Endpoint names, the OpenAI error object, retryable statuses and
 * Retry-After parsing.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tap.h"
#include "mg_json.h"
#include "mg_util.h"


#define S(s)  s, sizeof(s) - 1


typedef struct {
    const char     *path;
    mg_endpoint_t   ep;
    const char     *id;
} ep_case_t;


static const ep_case_t  ep_cases[] = {
    { "/v1/chat/completions", MG_EP_CHAT, NULL },
    { "v1/chat/completions", MG_EP_CHAT, NULL },
    { "/chat/completions", MG_EP_CHAT, NULL },
    { "chat/completions", MG_EP_CHAT, NULL },
    { "/v1/chat/completions/", MG_EP_CHAT, NULL },
    { "chat/completions/", MG_EP_CHAT, NULL },
    { "/v1/embeddings", MG_EP_EMBEDDINGS, NULL },
    { "v1/embeddings/", MG_EP_EMBEDDINGS, NULL },
    { "/embeddings", MG_EP_EMBEDDINGS, NULL },
    { "/v1/models", MG_EP_MODELS, NULL },
    { "/v1/models/", MG_EP_MODELS, NULL },
    { "models", MG_EP_MODELS, NULL },
    { "/models/", MG_EP_MODELS, NULL },
    { "/v1/models/gpt-4o", MG_EP_MODEL, "gpt-4o" },
    { "/v1/models/gpt-4o/", MG_EP_MODEL, "gpt-4o" },
    { "models/x", MG_EP_MODEL, "x" },
    { "/v1/models/ft:gpt-4o-mini:org::9abc", MG_EP_MODEL,
      "ft:gpt-4o-mini:org::9abc" },
    { "/v1/models/meta-llama/Llama-3-8B", MG_EP_MODEL,
      "meta-llama/Llama-3-8B" },
    { "/v1/models//", MG_EP_UNKNOWN, NULL },
    { "/v1/models//x", MG_EP_UNKNOWN, NULL },
    { "/v1/foo", MG_EP_UNKNOWN, NULL },
    { "/v1/responses", MG_EP_RESPONSES, NULL },
    { "/v1/responses/", MG_EP_RESPONSES, NULL },
    { "/v1/responses/resp_123", MG_EP_RESPONSE, "resp_123" },
    { "/v1/responses/resp_123/input_items", MG_EP_RESPONSE, "resp_123" },
    { "/v1/responses/resp_1/cancel", MG_EP_RESPONSE, "resp_1" },
    { "/v1/responses/bad.id", MG_EP_UNKNOWN, NULL },
    { "/v1/responses//x", MG_EP_UNKNOWN, NULL },
    { "/conversations", MG_EP_CONVERSATIONS, NULL },
    { "/v1/conversations/conv_9/items", MG_EP_CONVERSATION, "conv_9" },
    { "/v1/conversations/conv_9", MG_EP_CONVERSATION, "conv_9" },
    { "/v2/chat/completions", MG_EP_UNKNOWN, NULL },
    { "", MG_EP_UNKNOWN, NULL },
    { "/", MG_EP_UNKNOWN, NULL },
    { "//", MG_EP_UNKNOWN, NULL },
    { "/v1", MG_EP_UNKNOWN, NULL },
    { "/v1/", MG_EP_UNKNOWN, NULL },
    { "v1", MG_EP_UNKNOWN, NULL },
    { "//v1/models", MG_EP_UNKNOWN, NULL },
    { "/v1/v1/models", MG_EP_UNKNOWN, NULL },
    { "/V1/models", MG_EP_UNKNOWN, NULL },
    { "/v1/Models", MG_EP_UNKNOWN, NULL },
    { "/v1/chat", MG_EP_UNKNOWN, NULL },
    { "/v1/chat/completion", MG_EP_UNKNOWN, NULL },
    { "/v1/chat/completionsx", MG_EP_UNKNOWN, NULL },
    { "/v1/chat/completions//", MG_EP_UNKNOWN, NULL },
    { "/v1/chat/completions/x", MG_EP_UNKNOWN, NULL },
    { "/v1/modelsx", MG_EP_UNKNOWN, NULL },
    { "/v1/embeddings/x", MG_EP_UNKNOWN, NULL },
    { "/v1//chat/completions", MG_EP_UNKNOWN, NULL },
};


static void
test_endpoint(void)
{
    size_t          i, id_len;
    const char     *id;
    mg_endpoint_t   ep;

    for (i = 0; i < sizeof(ep_cases) / sizeof(ep_cases[0]); i++) {
        id = "stale";
        id_len = 99;

        ep = mg_endpoint_match(ep_cases[i].path, strlen(ep_cases[i].path),
                               &id, &id_len);

        is_int(ep, ep_cases[i].ep, "endpoint \"%s\"", ep_cases[i].path);
        is_str(id, id_len, ep_cases[i].id, "endpoint \"%s\" id",
               ep_cases[i].path);
    }

    /* only len bytes count */

    ep = mg_endpoint_match("/v1/models/gpt-4o", 10, &id, &id_len);
    is_int(ep, MG_EP_MODELS, "length is respected");

    ep = mg_endpoint_match("/v1/models/gpt-4o", 17, NULL, NULL);
    is_int(ep, MG_EP_MODEL, "NULL id pointers are allowed");

    ep = mg_endpoint_match(NULL, 0, &id, &id_len);
    is_int(ep, MG_EP_UNKNOWN, "NULL path");
}


static void
test_error_json(void)
{
    int              rc;
    char             buf[512], out[256];
    size_t           n, full, cap, s, l;
    ssize_t          m;
    const char      *msg;
    mg_json_field_t  f;
    mg_json_error_t  err;

    n = mg_error_json(buf, sizeof(buf), "Rate limit reached",
                      "rate_limit_error", NULL, NULL);
    is_str(buf, n,
           "{\"error\":{\"message\":\"Rate limit reached\","
           "\"type\":\"rate_limit_error\",\"param\":null,\"code\":null}}",
           "error object with null param and code");

    n = mg_error_json(buf, sizeof(buf), "The model `x` does not exist",
                      "invalid_request_error", "model", "model_not_found");
    is_str(buf, n,
           "{\"error\":{\"message\":\"The model `x` does not exist\","
           "\"type\":\"invalid_request_error\",\"param\":\"model\","
           "\"code\":\"model_not_found\"}}",
           "error object with param and code");

    n = mg_error_json(buf, sizeof(buf), "", "t", NULL, "c");
    is_str(buf, n,
           "{\"error\":{\"message\":\"\",\"type\":\"t\",\"param\":null,"
           "\"code\":\"c\"}}", "empty message");

    n = mg_error_json(buf, sizeof(buf), NULL, NULL, NULL, NULL);
    is_str(buf, n,
           "{\"error\":{\"message\":\"\",\"type\":null,\"param\":null,"
           "\"code\":null}}", "NULL message and type");

    msg = "bad \"body\": \\ \n\t\x01 caf\xc3\xa9";
    n = mg_error_json(buf, sizeof(buf), msg, "x\"y", "p\\", NULL);
    is_str(buf, n,
           "{\"error\":{\"message\":\"bad \\\"body\\\": \\\\ \\n\\t\\u0001 "
           "caf\xc3\xa9\",\"type\":\"x\\\"y\",\"param\":\"p\\\\\","
           "\"code\":null}}", "everything escaped");

    f.name = "error";
    f.name_len = 5;
    rc = mg_json_scan(buf, n, &f, 1, 4, &err);
    is_int(rc, MG_JSON_OK, "the error object is valid JSON");
    is_int(mg_json_member(buf + f.start, f.len, S("message"), &s, &l),
           MG_JSON_STRING, "error.message is a string");
    m = mg_json_unescape(buf + f.start + s, l, out, sizeof(out));
    is_str(out, m < 0 ? 0 : (size_t) m, msg,
           "error.message unescapes to the message");

    /* snprintf-like: the full length, a prefix, nothing past cap */

    full = mg_error_json(buf, sizeof(buf), msg, "type", "param", "code");

    for (cap = 0; cap <= full + 1; cap++) {
        memset(out, '#', sizeof(out));
        n = mg_error_json(out, cap, msg, "type", "param", "code");

        if (n != full || memcmp(out, buf, cap < full ? cap : full) != 0
            || out[cap < full ? cap : full] != '#')
        {
            break;
        }
    }

    is_int(cap, full + 2, "every cap gives the full length and a prefix");

    n = mg_error_json(NULL, 0, msg, "type", "param", "code");
    is_int(n, full, "NULL buffer with cap 0 gives the length");
}


static void
test_retryable(void)
{
    int  s, bad, want;

    bad = 0;

    for (s = 0; s < 1000; s++) {
        want = (s == 408 || s == 429 || s == 500 || s == 502 || s == 503
                || s == 504 || s == 529 || (s >= 520 && s <= 524));

        if (!mg_status_retryable(s) != !want) {
            tap_diag("status %d", s);
            bad++;
        }
    }

    is_int(bad, 0, "retryable statuses are exactly 408 429 500 502-504 "
           "520-524 529");
    ok(!mg_status_retryable(501) && !mg_status_retryable(505)
       && !mg_status_retryable(400) && !mg_status_retryable(404)
       && !mg_status_retryable(200) && !mg_status_retryable(-1),
       "501, 505, 4xx, 2xx and -1 are not retryable");
}


typedef struct {
    const char  *v;
    long long    now;
    long long    ms;
} ra_case_t;


#define MAX_MS  1000000000000LL


static const ra_case_t  ra_cases[] = {
    { "120", 0, 120000 },
    { " 120 ", 0, 120000 },
    { "\t7\t", 0, 7000 },
    { "0", 0, 0 },
    { "00", 0, 0 },
    { "1.5", 0, 1500 },
    { "2.25", 0, 2250 },
    { "1.000", 0, 1000 },
    { "1.0005", 0, 1001 },
    { "0.0001", 0, 1 },
    { "0.0000", 0, 0 },
    { "0.1234999", 0, 124 },
    { "1000000000", 0, MAX_MS },
    { "1000000001", 0, MAX_MS },
    { "999999999.9995", 0, MAX_MS },
    { "999999999.999", 0, 999999999999LL },
    { "99999999999999999999999999999999", 0, MAX_MS },
    { "99999999999999999999999999999999.5", 0, MAX_MS },
    { "-1", 0, -1 },
    { "-0", 0, -1 },
    { "", 0, -1 },
    { "   ", 0, -1 },
    { "abc", 0, -1 },
    { "1e3", 0, -1 },
    { "1.", 0, -1 },
    { ".5", 0, -1 },
    { "+1", 0, -1 },
    { "1 2", 0, -1 },
    { "0x10", 0, -1 },
    { "12s", 0, -1 },
    { "1,5", 0, -1 },

    { "Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 10, 10000 },
    { "  Sun, 06 Nov 1994 08:49:37 GMT ", 784111777 - 1, 1000 },
    { "Sun, 06 Nov 1994 08:49:37 GMT", 784111777, 0 },
    { "Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 3600, 0 },
    { "Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 120, 120000 },
    { "Thu, 29 Feb 2024 00:00:00 GMT", 1709164800 - 1, 1000 },
    { "Tue, 29 Feb 2000 12:00:00 GMT", 951825600 - 2, 2000 },
    { "Thu, 01 Jan 1970 00:00:00 GMT", 0, 0 },
    { "Wed, 31 Dec 1969 23:59:59 GMT", 1000, 0 },
    { "Mon, 01 Jan 0001 00:00:00 GMT", 0, 0 },
    { "Fri, 31 Dec 9999 23:59:59 GMT", 0, MAX_MS },
    { "Fri, 31 Dec 9999 23:59:59 GMT", 253402300799LL - 5, 5000 },
    { "Wed, 21 Oct 2015 07:28:60 GMT", 1445412480, 60000 },

    { "Wed, 29 Feb 2023 00:00:00 GMT", 0, -1 },
    { "Thu, 29 Feb 1900 00:00:00 GMT", 0, -1 },
    { "Mon, 31 Apr 2024 00:00:00 GMT", 0, -1 },
    { "Mon, 00 Apr 2024 00:00:00 GMT", 0, -1 },
    { "Mon, 32 Jan 2024 00:00:00 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 24:00:00 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 08:60:00 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 08:49:61 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 08:49:37 UTC", 0, -1 },
    { "Sun, 06 Nov 1994 08:49:37 gmt", 0, -1 },
    { "sun, 06 Nov 1994 08:49:37 GMT", 0, -1 },
    { "Xyz, 06 Nov 1994 08:49:37 GMT", 0, -1 },
    { "Sun, 06 Foo 1994 08:49:37 GMT", 0, -1 },
    { "Sun, 06 nov 1994 08:49:37 GMT", 0, -1 },
    { "Sun, 6 Nov 1994 08:49:37 GMT", 0, -1 },
    { "Sun, 06 Nov 94 08:49:37 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 8:49:37 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 08:49:37 GMTx", 0, -1 },
    { "Sun, 06 Nov 1994 08:49:37", 0, -1 },
    { "Sun, 0a Nov 1994 08:49:37 GMT", 0, -1 },
    { "Sun, 06 Nov 19a4 08:49:37 GMT", 0, -1 },
    { "Sun, 06 Nov 1994 08-49-37 GMT", 0, -1 },
    { "Sun 06 Nov 1994 08:49:37 GMT ", 0, -1 },
    { "Sunday, 06-Nov-94 08:49:37 GMT", 0, -1 },
    { "Sun Nov  6 08:49:37 1994", 0, -1 },
};


static void
test_retry_after(void)
{
    int         bad;
    char        date[64];
    size_t      i;
    time_t      t;
    uint64_t    x;
    struct tm   tm;
    long long   ms;

    for (i = 0; i < sizeof(ra_cases) / sizeof(ra_cases[0]); i++) {
        ms = mg_retry_after_ms(ra_cases[i].v, strlen(ra_cases[i].v),
                               (time_t) ra_cases[i].now);
        is_int(ms, ra_cases[i].ms, "Retry-After \"%s\" at %lld",
               ra_cases[i].v, ra_cases[i].now);
    }

    is_int(mg_retry_after_ms("120", 2, 0), 12000, "length is respected");
    is_int(mg_retry_after_ms(NULL, 0, 0), -1, "NULL value");

    /* dates agree with gmtime() over 4 centuries */

    bad = 0;
    x = 88172645463325252ULL;

    for (i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;

        t = (time_t) (x % 12622780800ULL);      /* up to year 2370 */

        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);

        if (mg_retry_after_ms(date, strlen(date), t - 7) != 7000
            || mg_retry_after_ms(date, strlen(date), t) != 0)
        {
            if (bad++ == 0) {
                tap_diag("date %s (%lld)", date, (long long) t);
            }
        }
    }

    is_int(bad, 0, "20000 random dates agree with gmtime()");

    /* retry-after-ms */

    is_int(mg_retry_after_ms_value(S("250")), 250, "ms 250");
    is_int(mg_retry_after_ms_value(S("12.5")), 13, "ms 12.5 rounds up");
    is_int(mg_retry_after_ms_value(S("12.0")), 12, "ms 12.0");
    is_int(mg_retry_after_ms_value(S("0.1")), 1, "ms 0.1 rounds up");
    is_int(mg_retry_after_ms_value(S("0")), 0, "ms 0");
    is_int(mg_retry_after_ms_value(S(" 7 ")), 7, "ms with spaces");
    is_int(mg_retry_after_ms_value(S("1000000000000")), MAX_MS, "ms cap");
    is_int(mg_retry_after_ms_value(S("1000000000001")), MAX_MS,
           "ms above cap");
    is_int(mg_retry_after_ms_value(S("999999999999.5")), MAX_MS,
           "ms rounded up to cap");
    is_int(mg_retry_after_ms_value(S("99999999999999999999999999")), MAX_MS,
           "ms huge");
    is_int(mg_retry_after_ms_value(S("-5")), -1, "ms negative");
    is_int(mg_retry_after_ms_value(S("")), -1, "ms empty");
    is_int(mg_retry_after_ms_value(S("abc")), -1, "ms garbage");
    is_int(mg_retry_after_ms_value(S("1e3")), -1, "ms exponent");
    is_int(mg_retry_after_ms_value(S("12.")), -1, "ms 12.");
    is_int(mg_retry_after_ms_value(S("Sun, 06 Nov 1994 08:49:37 GMT")), -1,
           "ms date");
    is_int(mg_retry_after_ms_value(NULL, 0), -1, "ms NULL");
}


int
main(void)
{
    test_endpoint();
    test_error_json();
    test_retryable();
    test_retry_after();

    return tap_done();
}
