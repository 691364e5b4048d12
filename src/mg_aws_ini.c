/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 */


#include <string.h>
#include <strings.h>

#include "mg_aws_ini.h"
#include "mg_sigv4.h"


static mg_aws_ini_rc_e mg_aws_ini_check(const char *v, size_t len,
    size_t max);


mg_aws_ini_rc_e
mg_aws_ini_parse(const char *p, size_t len, const char *profile,
    size_t profile_len, mg_aws_ini_t *ini)
{
    int                  in;
    size_t               max, klen;
    unsigned             n;
    const char          *line, *end, *last, *eq, *k, *ke, *v, *ve, *sec;
    const char          *key;
    mg_aws_ini_rc_e      rc;
    mg_aws_ini_value_t  *out;

    memset(ini, 0, sizeof(mg_aws_ini_t));

    in = 0;
    n = 0;
    last = p + len;

    for (line = p; line < last; line = end + 1) {
        n++;

        end = memchr(line, '\n', last - line);
        if (end == NULL) {
            end = last;
        }

        k = line;
        ve = end;

        while (k < ve && (*k == ' ' || *k == '\t')) {
            k++;
        }

        while (ve > k && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
        {
            ve--;
        }

        if (k == ve || *k == '#' || *k == ';') {
            continue;
        }

        if (*k == '[') {

            /* a section header that does not end with "]" is no section */

            if (ve[-1] != ']') {
                in = 0;
                continue;
            }

            sec = k + 1;
            klen = ve - 1 - sec;

            if (klen > 8 && memcmp(sec, "profile ", 8) == 0) {
                sec += 8;
                klen -= 8;
            }

            in = (klen == profile_len && memcmp(sec, profile, klen) == 0);
            continue;
        }

        if (!in) {
            continue;
        }

        eq = memchr(k, '=', ve - k);
        if (eq == NULL) {
            continue;
        }

        ke = eq;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t')) {
            ke--;
        }

        v = eq + 1;
        while (v < ve && (*v == ' ' || *v == '\t')) {
            v++;
        }

        klen = ke - k;
        max = MG_AWS_INI_VALUE_MAX;

#define mg_aws_ini_key(s)                                                    \
    (klen == sizeof(s) - 1 && strncasecmp(k, s, sizeof(s) - 1) == 0)

        if (mg_aws_ini_key("aws_access_key_id")) {
            out = &ini->access_key;
            key = "aws_access_key_id";

        } else if (mg_aws_ini_key("aws_secret_access_key")) {
            out = &ini->secret;
            key = "aws_secret_access_key";
            max = MG_SIGV4_MAX_SECRET;

        } else if (mg_aws_ini_key("aws_session_token")) {
            out = &ini->token;
            key = "aws_session_token";

        } else {

            /* region, output and others are not the gateway's business */

            continue;
        }

#undef mg_aws_ini_key

        rc = mg_aws_ini_check(v, ve - v, max);
        if (rc != MG_AWS_INI_OK) {
            ini->err_line = n;
            ini->err_key = key;
            return rc;
        }

        out->data = v;
        out->len = ve - v;
        out->line = n;
    }

    if ((ini->access_key.data == NULL) != (ini->secret.data == NULL)) {
        memset(&ini->access_key, 0, sizeof(mg_aws_ini_value_t));
    }

    return MG_AWS_INI_OK;
}


/* a credential: printable ASCII, as it goes into a header or a signature */

static mg_aws_ini_rc_e
mg_aws_ini_check(const char *v, size_t len, size_t max)
{
    size_t  i;

    if (len == 0 || len > MG_AWS_INI_VALUE_MAX || len > max) {
        return MG_AWS_INI_BAD_LENGTH;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) v[i] < 0x21 || (unsigned char) v[i] > 0x7e) {
            return MG_AWS_INI_BAD_CHAR;
        }
    }

    return MG_AWS_INI_OK;
}
