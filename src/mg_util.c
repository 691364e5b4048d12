/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>
#include <sys/types.h>

#include "mg_json.h"
#include "mg_util.h"


/*
 * Retry-After values above this (about 31 years) are clamped: they mean
 * "not soon", and clamping keeps every later computation far from overflow.
 */
#define MG_RETRY_MAX_MS  1000000000000LL

#define mg_digit(c)  ((unsigned) ((c) - '0') < 10)


static size_t mg_put(char *buf, size_t cap, size_t n, const char *s,
    size_t len);
static size_t mg_put_string(char *buf, size_t cap, size_t n, const char *s);
static void mg_trim(const u_char **p, const u_char **end);
static long long mg_parse_decimal(const u_char *p, const u_char *end,
    unsigned frac_digits);
static int mg_parse_http_date(const u_char *p, const u_char *end,
    long long *t);


/* an object id: one segment of id characters, then nothing or "/..." */

static mg_endpoint_t
mg_endpoint_state(const char *p, const char *end, mg_endpoint_t ep,
    const char **id, size_t *id_len)
{
    const char  *s;

    for (s = p; s < end && *s != '/'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
        {
            return MG_EP_UNKNOWN;
        }
    }

    if (s == p || s - p > 200) {
        return MG_EP_UNKNOWN;
    }

    if (id) {
        *id = p;
    }

    if (id_len) {
        *id_len = s - p;
    }

    return ep;
}


mg_endpoint_t
mg_endpoint_match(const char *path, size_t len, const char **id,
    size_t *id_len)
{
    size_t       n;
    const char  *p, *end;

    if (id) {
        *id = NULL;
    }

    if (id_len) {
        *id_len = 0;
    }

    if (path == NULL) {
        return MG_EP_UNKNOWN;
    }

    p = path;
    end = path + len;

    if (p < end && *p == '/') {
        p++;
    }

    if (end - p >= 3 && memcmp(p, "v1/", 3) == 0) {
        p += 3;
    }

    if (end > p && end[-1] == '/') {
        end--;
    }

    n = end - p;

    if (n == 16 && memcmp(p, "chat/completions", 16) == 0) {
        return MG_EP_CHAT;
    }

    if (n == 10 && memcmp(p, "embeddings", 10) == 0) {
        return MG_EP_EMBEDDINGS;
    }

    if (n == 6 && memcmp(p, "models", 6) == 0) {
        return MG_EP_MODELS;
    }

    if (n == 9 && memcmp(p, "responses", 9) == 0) {
        return MG_EP_RESPONSES;
    }

    if (n == 13 && memcmp(p, "conversations", 13) == 0) {
        return MG_EP_CONVERSATIONS;
    }

    if (n > 10 && memcmp(p, "responses/", 10) == 0) {
        return mg_endpoint_state(p + 10, end, MG_EP_RESPONSE, id, id_len);
    }

    if (n > 14 && memcmp(p, "conversations/", 14) == 0) {
        return mg_endpoint_state(p + 14, end, MG_EP_CONVERSATION, id,
                                 id_len);
    }

    /* ids such as "meta-llama/Llama-3-8B" have a slash inside, not first */

    if (n > 7 && memcmp(p, "models/", 7) == 0 && p[7] != '/') {
        if (id) {
            *id = p + 7;
        }

        if (id_len) {
            *id_len = n - 7;
        }

        return MG_EP_MODEL;
    }

    return MG_EP_UNKNOWN;
}


size_t
mg_error_json(char *buf, size_t cap, const char *message, const char *type,
    const char *param, const char *code)
{
    size_t  n;

    n = mg_put(buf, cap, 0, "{\"error\":{\"message\":", 20);
    n = mg_put_string(buf, cap, n, message ? message : "");
    n = mg_put(buf, cap, n, ",\"type\":", 8);
    n = mg_put_string(buf, cap, n, type);
    n = mg_put(buf, cap, n, ",\"param\":", 9);
    n = mg_put_string(buf, cap, n, param);
    n = mg_put(buf, cap, n, ",\"code\":", 8);
    n = mg_put_string(buf, cap, n, code);

    return mg_put(buf, cap, n, "}}", 2);
}


/* appends like snprintf: what does not fit is counted but not written */

static size_t
mg_put(char *buf, size_t cap, size_t n, const char *s, size_t len)
{
    if (n < cap) {
        memcpy(buf + n, s, (len < cap - n) ? len : cap - n);
    }

    return n + len;
}


static size_t
mg_put_string(char *buf, size_t cap, size_t n, const char *s)
{
    if (s == NULL) {
        return mg_put(buf, cap, n, "null", 4);
    }

    n = mg_put(buf, cap, n, "\"", 1);

    if (n < cap) {
        n += mg_json_escape(buf + n, cap - n, s, strlen(s));

    } else {
        n += mg_json_escape(NULL, 0, s, strlen(s));
    }

    return mg_put(buf, cap, n, "\"", 1);
}


int
mg_status_retryable(int status)
{
    switch (status) {
    case 408:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
    case 529:
        return 1;
    }

    return status >= 520 && status <= 524;
}


long long
mg_retry_after_ms(const char *v, size_t len, time_t now)
{
    long long      t;
    const u_char  *p, *end;

    if (v == NULL) {
        return -1;
    }

    p = (const u_char *) v;
    end = p + len;

    mg_trim(&p, &end);

    if (p < end && mg_digit(*p)) {
        return mg_parse_decimal(p, end, 3);
    }

    if (mg_parse_http_date(p, end, &t) != 0) {
        return -1;
    }

    if (t <= (long long) now) {
        return 0;
    }

    if (t - (long long) now > MG_RETRY_MAX_MS / 1000) {
        return MG_RETRY_MAX_MS;
    }

    return (t - (long long) now) * 1000;
}


long long
mg_retry_after_ms_value(const char *v, size_t len)
{
    const u_char  *p, *end;

    if (v == NULL) {
        return -1;
    }

    p = (const u_char *) v;
    end = p + len;

    mg_trim(&p, &end);

    return mg_parse_decimal(p, end, 0);
}


static void
mg_trim(const u_char **p, const u_char **end)
{
    while (*p < *end && (**p == ' ' || **p == '\t')) {
        (*p)++;
    }

    while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t')) {
        (*end)--;
    }
}


/*
 * Parses 1*DIGIT [ "." 1*DIGIT ] and returns the value multiplied by
 * 10^frac_digits, rounded up so that a client never retries too early;
 * -1 if the text is not such a number.
 */

static long long
mg_parse_decimal(const u_char *p, const u_char *end, unsigned frac_digits)
{
    int                 up, big;
    unsigned            i;
    unsigned long long  v, frac, mult;

    if (p == end || !mg_digit(*p)) {
        return -1;
    }

    v = 0;
    big = 0;

    while (p < end && mg_digit(*p)) {
        if (!big) {
            v = v * 10 + (*p - '0');
            big = (v > (unsigned long long) MG_RETRY_MAX_MS);
        }

        p++;
    }

    frac = 0;
    up = 0;
    i = 0;

    if (p < end && *p == '.') {
        p++;

        if (p == end || !mg_digit(*p)) {
            return -1;
        }

        while (p < end && mg_digit(*p)) {
            if (i < frac_digits) {
                frac = frac * 10 + (*p - '0');
                i++;

            } else if (*p != '0') {
                up = 1;
            }

            p++;
        }
    }

    if (p != end) {
        return -1;
    }

    if (big) {
        return MG_RETRY_MAX_MS;
    }

    mult = 1;

    for ( /* void */ ; i < frac_digits; i++) {
        frac *= 10;
    }

    for (i = 0; i < frac_digits; i++) {
        mult *= 10;
    }

    /* v <= MG_RETRY_MAX_MS and mult <= 1000 here: no overflow */

    v = v * mult + frac + up;

    return (v > (unsigned long long) MG_RETRY_MAX_MS)
           ? MG_RETRY_MAX_MS : (long long) v;
}


static int
mg_parse_2digits(const u_char *p)
{
    if (!mg_digit(p[0]) || !mg_digit(p[1])) {
        return -1;
    }

    return (p[0] - '0') * 10 + (p[1] - '0');
}


/*
 * Parses an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", into seconds
 * since the epoch without timegm(), which is neither standard nor free of
 * the TZ environment on every system.  Returns -1 if invalid.
 */

static int
mg_parse_http_date(const u_char *p, const u_char *end, long long *t)
{
    int        day, mon, hour, min, sec, i, hi, lo;
    long long  year, y, era, yoe, doy, doe, days;

    static const char  wdays[] = "MonTueWedThuFriSatSun";
    static const char  months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const int   mdays[] = {
        31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (end - p != 29
        || p[3] != ',' || p[4] != ' ' || p[7] != ' ' || p[11] != ' '
        || p[16] != ' ' || p[19] != ':' || p[22] != ':'
        || memcmp(p + 25, " GMT", 4) != 0)
    {
        return -1;
    }

    for (i = 0; i < 7; i++) {
        if (memcmp(p, wdays + i * 3, 3) == 0) {
            break;
        }
    }

    if (i == 7) {
        return -1;
    }

    for (mon = 0; mon < 12; mon++) {
        if (memcmp(p + 8, months + mon * 3, 3) == 0) {
            break;
        }
    }

    if (mon == 12) {
        return -1;
    }

    day = mg_parse_2digits(p + 5);
    hi = mg_parse_2digits(p + 12);
    lo = mg_parse_2digits(p + 14);
    hour = mg_parse_2digits(p + 17);
    min = mg_parse_2digits(p + 20);
    sec = mg_parse_2digits(p + 23);

    if (day < 1 || hi < 0 || lo < 0 || hour < 0 || hour > 23
        || min < 0 || min > 59 || sec < 0 || sec > 60
        || day > mdays[mon])
    {
        return -1;
    }

    year = hi * 100 + lo;

    if (mon == 1 && day == 29
        && !(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
    {
        return -1;
    }

    /* days from 1970-01-01 (H. Hinnant's days_from_civil) */

    mon++;
    y = year - (mon <= 2);
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (mon > 2 ? mon - 3 : mon + 9) + 2) / 5 + day - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = era * 146097 + doe - 719468;

    *t = days * 86400 + hour * 3600 + min * 60 + sec;

    return 0;
}
