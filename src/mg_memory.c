/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The JSON of the gateway's memory: see mg_memory.h.
 */

#include <stdlib.h>
#include <string.h>

#include "mg_memory.h"
#include "mg_responses_int.h"


static int mg_mem_put(json_t *it, mg_buf_t *out, size_t *n);
static int mg_mem_id(mg_buf_t *out, json_t *it);
static int mg_mem_public(const char *item, size_t len, mg_buf_t *out);


int
mg_mem_turn(const char *input, size_t ilen, const char *output, size_t olen,
    mg_resp_id_pt id, void *data, mg_buf_t *out, size_t *ninput,
    size_t *nitems, mg_xerror_t *err)
{
    int           rc;
    char          buf[MG_RESP_ID_SIZE];
    size_t        i, n, len;
    json_t       *in, *res, *it;
    const char   *type, *prefix;
    json_error_t  jerr;

    len = out->len;
    n = 0;

    in = json_loadb(input, input ? ilen : 0, 0, &jerr);
    res = json_loadb(output, output ? olen : 0, 0, &jerr);

    rc = MG_X_OK;

    if (!json_is_array(in) || !json_is_array(res)) {
        mg_xerror_set(err, 500, 0, "server_error", NULL, NULL,
                      "The items of this turn cannot be stored.");
        rc = MG_X_ERROR;
        goto done;
    }

    json_array_foreach(in, i, it) {

        if (!json_is_object(it)) {
            mg_xerror_set(err, 500, 0, "server_error", NULL, NULL,
                          "The items of this turn cannot be stored.");
            rc = MG_X_ERROR;
            goto done;
        }

        if (!json_is_string(json_object_get(it, "id"))) {
            type = json_string_value(json_object_get(it, "type"));

            prefix = (type == NULL || strcmp(type, "message") == 0)
                     ? "msg_"
                     : (strcmp(type, "function_call_output") == 0)
                       ? "fco_" : "item_";

            if (id(data, prefix, buf, sizeof(buf)) != 0
                || json_object_set_new(it, "id", json_string(buf)) != 0)
            {
                rc = MG_X_NOMEM;
                goto done;
            }
        }

        rc = mg_mem_put(it, out, &n);
        if (rc != MG_X_OK) {
            goto done;
        }
    }

    *ninput = n;

    json_array_foreach(res, i, it) {
        if (!json_is_object(it)) {
            mg_xerror_set(err, 500, 0, "server_error", NULL, NULL,
                          "The items of this turn cannot be stored.");
            rc = MG_X_ERROR;
            goto done;
        }

        rc = mg_mem_put(it, out, &n);
        if (rc != MG_X_OK) {
            goto done;
        }
    }

    *nitems = n;

done:

    if (rc != MG_X_OK) {
        out->len = len;

        if (rc == MG_X_NOMEM) {
            (void) mg_x_nomem(err);
        }
    }

    json_decref(in);
    json_decref(res);

    return rc;
}


/* one item, on a line of its own: compact JSON escapes every newline */

static int
mg_mem_put(json_t *it, mg_buf_t *out, size_t *n)
{
    if ((*n && mg_buf_append(out, "\n", 1) != MG_X_OK)
        || mg_x_dump(it, out, 0) != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    (*n)++;

    return MG_X_OK;
}


int
mg_mem_lines(const char *array, size_t len, mg_buf_t *out, size_t *n)
{
    int          in_string;
    size_t       depth, start, i, count;
    const char  *p;

    p = array;
    count = 0;

    /* past "[" and before "]": the top level is depth 0 */

    if (len < 2 || p[0] != '[' || p[len - 1] != ']') {
        *n = 0;
        return MG_X_OK;
    }

    depth = 0;
    in_string = 0;
    start = 1;

    for (i = 1; i < len - 1; i++) {

        if (in_string) {
            if (p[i] == '\\') {
                i++;

            } else if (p[i] == '"') {
                in_string = 0;
            }

            continue;
        }

        switch (p[i]) {

        case '"':
            in_string = 1;
            break;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            depth--;
            break;

        case ',':
            if (depth == 0) {
                if (out
                    && ((out->len && mg_buf_append(out, "\n", 1) != MG_X_OK)
                        || mg_buf_append(out, p + start, i - start)
                           != MG_X_OK))
                {
                    return MG_X_NOMEM;
                }

                count++;
                start = i + 1;
            }

            break;
        }
    }

    if (i > start) {
        if (out
            && ((out->len && mg_buf_append(out, "\n", 1) != MG_X_OK)
                || mg_buf_append(out, p + start, i - start) != MG_X_OK))
        {
            return MG_X_NOMEM;
        }

        count++;
    }

    *n = count;

    return MG_X_OK;
}


int
mg_mem_array(const char *const *items, const size_t *lens, size_t n,
    mg_buf_t *out)
{
    size_t  i;

    if (mg_buf_append(out, "[", 1) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    for (i = 0; i < n; i++) {
        if ((i && mg_buf_append(out, ",", 1) != MG_X_OK)
            || mg_buf_append(out, items[i], lens[i]) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }
    }

    return mg_buf_append(out, "]", 1);
}


size_t
mg_mem_count(const char *array, size_t len)
{
    size_t  n;

    return mg_mem_lines(array, len, NULL, &n) == MG_X_OK ? n : 0;
}


int
mg_mem_has_state(const char *p, size_t len)
{
    static const char  key[] = "\"" MG_RESP_STATE "\"";
    const char        *end;

    end = p + len;

    while (p + sizeof(key) - 1 <= end) {
        p = memchr(p, '"', end - p);

        if (p == NULL || p + sizeof(key) - 1 > end) {
            return 0;
        }

        if (memcmp(p, key, sizeof(key) - 1) == 0) {
            return 1;
        }

        p++;
    }

    return 0;
}


size_t
mg_mem_turn_start(const char *const *items, const size_t *lens, size_t n)
{
    size_t        i;
    json_t       *it;
    const char   *type, *role;
    json_error_t  jerr;

    for (i = 0; i < n; i++) {
        it = json_loadb(items[i], lens[i], 0, &jerr);

        type = json_string_value(json_object_get(it, "type"));
        role = json_string_value(json_object_get(it, "role"));

        if ((type == NULL || strcmp(type, "message") == 0)
            && role && strcmp(role, "user") == 0)
        {
            json_decref(it);
            return i;
        }

        json_decref(it);
    }

    return n;
}


int
mg_mem_list(const char *const *items, const size_t *lens, size_t n,
    const char *order, size_t order_len, const char *limit,
    size_t limit_len, const char *after, size_t after_len, mg_buf_t *out,
    mg_xerror_t *err)
{
    int           desc, rc;
    char          num[8], *end;
    long          max;
    size_t        i, k, from, count, *sel_lens;
    json_t       *it;
    const char   *s, **sel;
    json_error_t  jerr;

    desc = 1;

    if (order && order_len) {
        if (order_len == 3 && memcmp(order, "asc", 3) == 0) {
            desc = 0;

        } else if (!(order_len == 4 && memcmp(order, "desc", 4) == 0)) {
            return mg_x_bad(err, "order", "Invalid 'order': expected "
                            "'asc' or 'desc'.");
        }
    }

    max = 20;

    if (limit && limit_len) {
        if (limit_len >= sizeof(num)) {
            goto bad_limit;
        }

        memcpy(num, limit, limit_len);
        num[limit_len] = '\0';

        max = strtol(num, &end, 10);

        if (*end != '\0' || max < 1 || max > 100) {
            goto bad_limit;
        }
    }

    /* the position in the order asked for */

    from = 0;

    if (after && after_len) {
        for (k = 0; k < n; k++) {
            i = desc ? n - 1 - k : k;

            it = json_loadb(items[i], lens[i], 0, &jerr);
            s = json_string_value(json_object_get(it, "id"));

            if (s && strlen(s) == after_len && memcmp(s, after, after_len)
                                               == 0)
            {
                json_decref(it);
                break;
            }

            json_decref(it);
        }

        if (k == n) {
            return mg_x_bad(err, "after", "No item found with id '%.*s'.",
                            (int) (after_len > 128 ? 128 : after_len),
                            after);
        }

        from = k + 1;
    }

    count = n - from;
    if (count > (size_t) max) {
        count = (size_t) max;
    }

    if (desc) {
        sel = malloc((count + 1) * sizeof(char *));
        sel_lens = malloc((count + 1) * sizeof(size_t));

        if (sel == NULL || sel_lens == NULL) {
            free(sel);
            free(sel_lens);
            return mg_x_nomem(err);
        }

        for (k = 0; k < count; k++) {
            sel[k] = items[n - 1 - (from + k)];
            sel_lens[k] = lens[n - 1 - (from + k)];
        }

        rc = mg_mem_page(sel, sel_lens, count, from + count < n, out);

        free(sel);
        free(sel_lens);

    } else {
        rc = mg_mem_page(items + from, lens + from, count, from + count < n,
                         out);
    }

    return (rc == MG_X_OK) ? MG_X_OK : mg_x_nomem(err);

bad_limit:

    return mg_x_bad(err, "limit", "Invalid 'limit': expected an integer "
                    "from 1 to 100.");
}


/* an item's id as a JSON string, or null */

static int
mg_mem_id(mg_buf_t *out, json_t *it)
{
    json_t  *id;

    id = json_object_get(it, "id");

    if (!json_is_string(id)) {
        return mg_buf_append(out, "null", 4);
    }

    return mg_x_dump(id, out, JSON_ENCODE_ANY);
}


int
mg_mem_page(const char *const *items, const size_t *lens, size_t n,
    int has_more, mg_buf_t *out)
{
    int           rc;
    size_t        i, len;
    json_t       *first, *last;
    json_error_t  jerr;

    len = out->len;

    if (mg_buf_append(out, "{\"object\":\"list\",\"data\":[", 25)
        != MG_X_OK)
    {
        goto nomem;
    }

    for (i = 0; i < n; i++) {
        if ((i && mg_buf_append(out, ",", 1) != MG_X_OK)
            || mg_mem_public(items[i], lens[i], out) != MG_X_OK)
        {
            goto nomem;
        }
    }

    first = n ? json_loadb(items[0], lens[0], 0, &jerr) : NULL;
    last = n ? json_loadb(items[n - 1], lens[n - 1], 0, &jerr) : NULL;

    rc = (mg_buf_append(out, "],\"first_id\":", 13) == MG_X_OK
          && mg_mem_id(out, first) == MG_X_OK
          && mg_buf_append(out, ",\"last_id\":", 11) == MG_X_OK
          && mg_mem_id(out, last) == MG_X_OK
          && mg_buf_printf(out, ",\"has_more\":%s}",
                           has_more ? "true" : "false") == MG_X_OK);

    json_decref(first);
    json_decref(last);

    if (rc) {
        return MG_X_OK;
    }

nomem:

    out->len = len;

    return MG_X_NOMEM;
}


int
mg_mem_items(const char *items, size_t len, mg_resp_id_pt id, void *data,
    mg_buf_t *out, size_t *n, mg_xerror_t *err)
{
    int           rc;
    size_t        nin;
    json_t       *arr, *in, *chat, *got;
    mg_buf_t      norm;
    json_error_t  jerr;

    arr = json_loadb(items, items ? len : 0, 0, &jerr);

    if (!json_is_array(arr)) {
        json_decref(arr);
        return mg_x_bad(err, "items", "items must be an array of items.");
    }

    if (json_array_size(arr) == 0) {
        json_decref(arr);
        *n = 0;
        return MG_X_OK;
    }

    in = json_pack("{s:o}", "input", arr);
    chat = json_object();
    got = json_array();
    memset(&norm, 0, sizeof(mg_buf_t));

    if (in == NULL || chat == NULL || got == NULL) {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_r_messages(in, NULL, chat, got, NULL, err);

    if (rc == MG_X_ERROR) {
        err->param = "items";
        goto done;
    }

    if (rc == MG_X_OK) {
        rc = mg_x_dump(got, &norm, 0);
    }

    if (rc == MG_X_OK) {
        rc = mg_mem_turn(norm.data, norm.len, "[]", 2, id, data, out, &nin,
                         n, err);
    }

done:

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    mg_buf_free(&norm);
    json_decref(got);
    json_decref(chat);
    json_decref(in);

    return rc;
}


int
mg_mem_metadata(const char *p, size_t len, mg_buf_t *out, mg_xerror_t *err)
{
    int           rc;
    const char   *key;
    json_t       *m, *v;
    json_error_t  jerr;

    m = p ? json_loadb(p, len, 0, &jerr) : NULL;

    if (m == NULL || json_is_null(m)) {
        json_decref(m);
        return mg_buf_append(out, "{}", 2) == MG_X_OK ? MG_X_OK
                                                      : mg_x_nomem(err);
    }

    if (!json_is_object(m) || json_object_size(m) > 16) {
        json_decref(m);
        return mg_x_bad(err, "metadata", "metadata must be an object of at "
                        "most 16 pairs.");
    }

    json_object_foreach(m, key, v) {
        if (strlen(key) > 64 || !json_is_string(v)
            || json_string_length(v) > 512)
        {
            json_decref(m);
            return mg_x_bad(err, "metadata", "metadata keys must be at most "
                            "64 characters and its values strings of at "
                            "most 512.");
        }
    }

    rc = mg_x_dump(m, out, 0);

    json_decref(m);

    return rc == MG_X_OK ? MG_X_OK : mg_x_nomem(err);
}


int
mg_mem_conversation(const char *id, size_t id_len, long long created_at,
    const char *metadata, size_t metadata_len, mg_buf_t *out)
{
    size_t  len;

    len = out->len;

    if (mg_buf_printf(out, "{\"id\":\"%.*s\",\"object\":\"conversation\","
                      "\"created_at\":%lld,\"metadata\":", (int) id_len,
                      id, created_at)
        != MG_X_OK
        || mg_buf_append(out, metadata, metadata_len) != MG_X_OK
        || mg_buf_append(out, "}", 1) != MG_X_OK)
    {
        out->len = len;
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/* a stored item as a client sees it: without provider-only state */

static int
mg_mem_public(const char *item, size_t len, mg_buf_t *out)
{
    int                rc;
    json_t            *it;
    json_error_t       jerr;
    if (!mg_mem_has_state(item, len)) {
        return mg_buf_append(out, item, len);
    }

    it = json_loadb(item, len, 0, &jerr);

    if (it == NULL) {
        return mg_buf_append(out, item, len);
    }

    json_object_del(it, MG_RESP_STATE);
    rc = mg_x_dump(it, out, 0);
    json_decref(it);

    return rc;
}
