/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The history limiter of gateway-held Responses (see mg_history.h).
 *
 * Every item is dumped once into one buffer, where it stays as a slice;
 * the kept slices make the output.  Items sharing a call_id are linked in
 * a group by one sort; moving the cut past a group's first item drops the
 * rest of the group, so every item is dropped at most once and every
 * group walked at most once.  The kept items only shrink as the cut moves
 * on, so the first turn start where both limits hold is the answer.
 */

#include <stdlib.h>
#include <string.h>

#include "mg_history.h"


#define MG_H_NONE  ((size_t) -1)


typedef struct {
    size_t          off;        /* the item's dump in the buffer */
    size_t          len;
    size_t          first;      /* its call_id group's first item; itself
                                   when none */
    size_t          next;       /* the group's next item, or MG_H_NONE */
    unsigned        user:1;     /* a message of role user */
    unsigned        instr:1;    /* system or developer, before the first
                                   user message: always kept */
    unsigned        gone:1;
} mg_h_item_t;


typedef struct {
    const char     *id;
    size_t          len;
    size_t          pos;
} mg_h_call_t;


typedef struct {
    mg_h_item_t          *it;
    size_t                n;
    mg_history_result_t  *res;
} mg_h_t;


static int mg_h_cmp(const void *a, const void *b);
static int mg_h_fits(const mg_history_opts_t *o, const mg_history_result_t *r);
static void mg_h_drop(mg_h_t *h, size_t j);
static int mg_h_refuse(const mg_history_opts_t *o,
    const mg_history_result_t *r, int cut, mg_xerror_t *err);
static int mg_h_write(mg_h_t *h, const mg_buf_t *dump, size_t end,
    mg_buf_t *out);


int
mg_history_limit(const char *items, size_t len, size_t ninput,
    const mg_history_opts_t *o, mg_buf_t *kept, mg_buf_t *history,
    mg_history_result_t *res, mg_xerror_t *err)
{
    int                  rc, aut, seen_user;
    size_t               n, i, j, ncalls, first, start, last, maxcut;
    size_t               kept_len, hist_len;
    json_t              *arr, *v, *t, *c;
    mg_h_t               h;
    mg_buf_t             dump;
    const char          *type, *role;
    mg_h_call_t         *calls;
    json_error_t         jerr;

    memset(res, 0, sizeof(mg_history_result_t));

    if (o->truncation == NULL
        || (o->truncation_len == 8
            && memcmp(o->truncation, "disabled", 8) == 0))
    {
        aut = 0;

    } else if (o->truncation_len == 4
               && memcmp(o->truncation, "auto", 4) == 0)
    {
        aut = 1;

    } else {
        return mg_x_bad(err, "truncation", "truncation must be \"auto\" or "
                        "\"disabled\".");
    }

    arr = json_loadb(items, items ? len : 0, JSON_ALLOW_NUL, &jerr);

    if (!json_is_array(arr)) {
        json_decref(arr);
        return mg_x_bad(err, "input", "The input items with their history "
                        "must be a JSON array.");
    }

    n = json_array_size(arr);

    if (ninput > n) {
        json_decref(arr);
        return mg_x_bad(err, "input", "%zu input items asked for, of %zu.",
                        ninput, n);
    }

    memset(&dump, 0, sizeof(mg_buf_t));
    calls = NULL;
    h.n = n;
    h.res = res;
    h.it = calloc(n ? n : 1, sizeof(mg_h_item_t));

    if (h.it == NULL) {
        goto nomem;
    }

    calls = calloc(n ? n : 1, sizeof(mg_h_call_t));

    if (calls == NULL) {
        goto nomem;
    }

    /* one pass: each item dumped, its kind and call_id noted */

    ncalls = 0;
    seen_user = 0;

    for (i = 0; i < n; i++) {
        res->steps++;
        v = json_array_get(arr, i);

        if (!json_is_object(v)) {
            rc = mg_x_bad(err, "input", "input[%zu] must be an object.", i);
            goto done;
        }

        h.it[i].off = dump.len;

        if (mg_x_dump(v, &dump, 0) != MG_X_OK) {
            goto nomem;
        }

        h.it[i].len = dump.len - h.it[i].off;
        h.it[i].first = i;
        h.it[i].next = MG_H_NONE;
        res->bytes += h.it[i].len;

        t = mg_x_get(v, "type");
        type = json_string_value(t);

        if (t == NULL || mg_x_streq(type, "message")) {
            role = json_string_value(json_object_get(v, "role"));

            if (mg_x_streq(role, "user")) {
                h.it[i].user = 1;
                seen_user = 1;

            } else if (!seen_user
                       && (mg_x_streq(role, "system")
                           || mg_x_streq(role, "developer")))
            {
                h.it[i].instr = 1;
            }

            continue;
        }

        c = json_object_get(v, "call_id");

        /* an empty call_id names no call: it groups nothing */

        if (json_is_string(c) && json_string_length(c)) {
            calls[ncalls].id = json_string_value(c);
            calls[ncalls].len = json_string_length(c);
            calls[ncalls].pos = i;
            ncalls++;
        }
    }

    res->items = n;

    /* the groups: sorted by call_id, then by position */

    qsort(calls, ncalls, sizeof(mg_h_call_t), mg_h_cmp);

    for (i = 0; i < ncalls; i++) {
        res->steps++;

        if (i > 0 && calls[i].len == calls[i - 1].len
            && memcmp(calls[i].id, calls[i - 1].id, calls[i].len) == 0)
        {
            h.it[calls[i].pos].first = h.it[calls[i - 1].pos].first;
            h.it[calls[i - 1].pos].next = calls[i].pos;
        }
    }

    /*
     * maxcut: the cut may not pass the first input item (or the end, with
     * no input), nor the first of a group an input item is in; last, the
     * last turn start at or before it, is the farthest the cut may go:
     * the turn the input starts in (the last turn, with no input) stays
     */

    start = n - ninput;
    maxcut = start;

    for (i = start; i < n; i++) {
        res->steps++;

        if (h.it[i].first < maxcut) {
            maxcut = h.it[i].first;
        }
    }

    last = 0;

    for (i = 1; i <= maxcut && i < n; i++) {
        res->steps++;

        if (h.it[i].user) {
            last = i;
        }
    }

    /* the cut moves on, a turn at a time, while the limits do not hold */

    rc = MG_X_OK;

    if (!mg_h_fits(o, res)) {

        if (!aut) {
            rc = mg_h_refuse(o, res, 0, err);
            goto done;
        }

        first = 0;

        for (j = 0; j < last; j++) {
            res->steps++;
            mg_h_drop(&h, j);

            if (h.it[j + 1].user) {
                res->turns++;

                if (mg_h_fits(o, res)) {
                    first = j + 1;
                    break;
                }
            }
        }

        if (first == 0) {
            rc = mg_h_refuse(o, res, 1, err);
            goto done;
        }
    }

    /* the output: nothing is appended unless both can be */

    kept_len = kept ? kept->len : 0;
    hist_len = history ? history->len : 0;

    if ((kept && mg_h_write(&h, &dump, n, kept) != MG_X_OK)
        || (history && mg_h_write(&h, &dump, start, history) != MG_X_OK))
    {
        if (kept) {
            kept->len = kept_len;
        }

        if (history) {
            history->len = hist_len;
        }

        goto nomem;
    }

    res->dropped = n - res->items;
    res->history = res->items - ninput;

done:

    json_decref(arr);
    free(h.it);
    free(calls);
    mg_buf_free(&dump);

    return rc;

nomem:

    rc = mg_x_nomem(err);
    goto done;
}


static int
mg_h_cmp(const void *a, const void *b)
{
    int                 d;
    size_t              len;
    const mg_h_call_t  *x = a, *y = b;

    len = x->len < y->len ? x->len : y->len;
    d = memcmp(x->id, y->id, len);

    if (d != 0) {
        return d;
    }

    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }

    return x->pos < y->pos ? -1 : (x->pos > y->pos);
}


static int
mg_h_fits(const mg_history_opts_t *o, const mg_history_result_t *r)
{
    return (o->max_items == 0 || r->items <= o->max_items)
           && (o->max_bytes == 0 || r->bytes <= o->max_bytes);
}


/* item j goes as the cut passes it, and with it the rest of its group */

static void
mg_h_drop(mg_h_t *h, size_t j)
{
    size_t        k;
    mg_h_item_t  *it;

    it = &h->it[j];

    if (it->gone || it->instr) {
        return;
    }

    it->gone = 1;
    h->res->items--;
    h->res->bytes -= it->len;

    if (it->first != j) {
        return;
    }

    for (k = it->next; k != MG_H_NONE; k = h->it[k].next) {
        h->res->steps++;
        it = &h->it[k];

        if (!it->gone) {
            it->gone = 1;
            h->res->items--;
            h->res->bytes -= it->len;
        }
    }
}


static int
mg_h_refuse(const mg_history_opts_t *o, const mg_history_result_t *r,
    int cut, mg_xerror_t *err)
{
    const char  *what;
    const char  *hint;
    size_t       got, max;

    if (o->max_items && r->items > o->max_items) {
        what = "items";
        got = r->items;
        max = o->max_items;

    } else {
        what = "bytes";
        got = r->bytes;
        max = o->max_bytes;
    }

    hint = cut ? "even with truncation \"auto\", which keeps this "
                 "request's input whole"
               : "with truncation \"disabled\"; \"auto\" drops the oldest "
                 "turns";

    mg_xerror_set(err, 400, 0, "invalid_request_error",
                  "context_length_exceeded", "input",
                  "The input with its history is %zu %s, over this "
                  "gateway's history limit of %zu %s, %s.",
                  got, what, max, what, hint);

    return MG_X_ERROR;
}


/* the kept items before end, as a JSON array */

static int
mg_h_write(mg_h_t *h, const mg_buf_t *dump, size_t end, mg_buf_t *out)
{
    size_t  i, k;

    if (mg_buf_append(out, "[", 1) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    k = 0;

    for (i = 0; i < end; i++) {
        h->res->steps++;

        if (h->it[i].gone) {
            continue;
        }

        if ((k++ && mg_buf_append(out, ",", 1) != MG_X_OK)
            || mg_buf_append(out, dump->data + h->it[i].off, h->it[i].len)
               != MG_X_OK)
        {
            return MG_X_NOMEM;
        }
    }

    return mg_buf_append(out, "]", 1);
}
