/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Whether two translated streams are the same, for the unit tests and the
 * fuzz targets that run a fast path against the tree: the same OpenAI
 * events ("data: <json>\n\n"), each pair equal as JSON values (texts may
 * be escaped differently), or as bytes when not JSON ("data: [DONE]").
 * Header only.
 */

#ifndef _SAME_EVENTS_H_INCLUDED_
#define _SAME_EVENTS_H_INCLUDED_

#include <string.h>

#include <jansson.h>


/* ida, the first stream's chunk id, counts as idb (NULL: ids compared) */

static inline int
same_events(const char *a, size_t alen, const char *b, size_t blen,
    const char *ida, const char *idb)
{
    int          same;
    json_t      *ja, *jb, *id;
    const char  *ae, *be, *an, *bn;

    if (alen == 0 || blen == 0) {
        return alen == blen;      /* and no arithmetic on a NULL buffer */
    }

    ae = a + alen;
    be = b + blen;

    while (a < ae && b < be) {
        an = memmem(a, ae - a, "\n\n", 2);
        bn = memmem(b, be - b, "\n\n", 2);

        if (an == NULL || bn == NULL || an - a < 6 || bn - b < 6) {
            return 0;
        }

        ja = json_loadb(a + 6, an - a - 6, JSON_ALLOW_NUL, NULL);
        jb = json_loadb(b + 6, bn - b - 6, JSON_ALLOW_NUL, NULL);

        if (ja && jb) {
            id = json_object_get(ja, "id");

            if (ida && json_is_string(id)
                && strcmp(json_string_value(id), ida) == 0)
            {
                json_object_set_new(ja, "id", json_string(idb));
            }

            same = json_equal(ja, jb);

        } else {
            same = (an - a == bn - b && memcmp(a, b, an - a) == 0);
        }

        json_decref(ja);
        json_decref(jb);

        if (!same) {
            return 0;
        }

        a = an + 2;
        b = bn + 2;
    }

    return a >= ae && b >= be;
}

#endif /* _SAME_EVENTS_H_INCLUDED_ */
