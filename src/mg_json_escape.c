/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The writing side of JSON strings: text escaped as the inside of a JSON
 * string, snprintf-like.  Apart from the scanner (mg_json.c), which only
 * reads.
 */


#include <string.h>
#include <sys/types.h>

#include "mg_json.h"


size_t
mg_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t         i, j, k, n;
    u_char         c, e[6];
    const u_char  *src;

    static const u_char  hex[] = "0123456789abcdef";

    src = (const u_char *) s;
    n = 0;
    i = 0;

    while (i < len) {

        j = i;

        while (j < len && src[j] >= 0x20 && src[j] != '"' && src[j] != '\\')
        {
            j++;
        }

        if (j > i) {
            k = j - i;

            if (n < cap) {
                memcpy(out + n, src + i, (k < cap - n) ? k : cap - n);
            }

            n += k;
            i = j;
            continue;
        }

        c = src[i++];

        e[0] = '\\';
        k = 2;

        switch (c) {
        case '"':
        case '\\':
            e[1] = c;
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 0xf];
            k = 6;
            break;
        }

        /* a truncated result is a prefix of the whole, as with snprintf */

        if (n < cap) {
            memcpy(out + n, e, (k < cap - n) ? k : cap - n);
        }

        n += k;
    }

    return n;
}
