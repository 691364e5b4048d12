/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The history limiter: the limits and their refusal, truncation auto
 * dropping whole turns, leading instructions kept, call/output pairs kept
 * or dropped together across turns, this request's input (and what it
 * needs) never dropped, and 20,000 items in linear work.
 *
 * Items are written from a spec, one token an item: sN systemN, dN
 * developer, uN user, aN assistant, cN:ID a function_call of call_id ID,
 * oN:ID its function_call_output.  Each item is written as jansson dumps
 * it compactly, so its size is its strlen, and carries its token as "id",
 * by which the kept items are read back.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "mg_history.h"


#define is(g, e, ...)  is_int((long long) (g), (long long) (e), __VA_ARGS__)


typedef struct {
    int                  rc;
    mg_history_result_t  res;
    mg_xerror_t          err;
    char                 kept[4096];    /* the kept ids, space-separated */
    char                 hist[4096];    /* the kept history's ids */
} run_t;


static size_t  total;       /* the bytes of the last spec built */
static size_t  count;       /* and its items */


/* appends the item for one token; returns its length */

static size_t
item(mg_buf_t *b, const char *tok, size_t len)
{
    char         label[64], id[64];
    const char  *colon, *role;
    size_t       before;

    before = b->len;
    colon = memchr(tok, ':', len);

    snprintf(label, sizeof(label), "%.*s",
             (int) (colon ? (size_t) (colon - tok) : len), tok);

    if (colon) {
        snprintf(id, sizeof(id), "%.*s", (int) (len - (colon + 1 - tok)),
                 colon + 1);
    }

    switch (tok[0]) {

    case 'c':
        mg_buf_printf(b, "{\"id\":\"%s\",\"type\":\"function_call\","
                      "\"call_id\":\"%s\",\"name\":\"f\","
                      "\"arguments\":\"{}\"}", label, id);
        break;

    case 'o':
        mg_buf_printf(b, "{\"id\":\"%s\",\"type\":\"function_call_output\","
                      "\"call_id\":\"%s\",\"output\":\"ok\"}", label, id);
        break;

    default:
        role = tok[0] == 's' ? "system" : tok[0] == 'd' ? "developer"
               : tok[0] == 'u' ? "user" : "assistant";
        mg_buf_printf(b, "{\"id\":\"%s\",\"type\":\"message\","
                      "\"role\":\"%s\",\"content\":\"text of %s\"}",
                      label, role, label);
        break;
    }

    return b->len - before;
}


/* the spec as a JSON array; total and count set */

static void
build(mg_buf_t *b, const char *spec)
{
    const char  *p, *e;

    mg_buf_reset(b);
    mg_buf_append(b, "[", 1);
    total = 0;
    count = 0;

    for (p = spec; *p; p = e) {
        while (*p == ' ') {
            p++;
        }

        if (*p == '\0') {
            break;
        }

        for (e = p; *e && *e != ' '; e++) { /* void */ }

        if (count++) {
            mg_buf_append(b, ",", 1);
        }

        total += item(b, p, e - p);
    }

    mg_buf_append(b, "]", 1);
}


/* a JSON array of items -> their ids, space-separated */

static void
ids(const mg_buf_t *b, char *out, size_t size)
{
    size_t       i, n;
    json_t      *a;
    const char  *id;

    out[0] = '\0';
    a = json_loadb(b->data, b->len, 0, NULL);

    if (!json_is_array(a)) {
        snprintf(out, size, "(not an array)");
        json_decref(a);
        return;
    }

    n = 0;

    for (i = 0; i < json_array_size(a); i++) {
        id = json_string_value(json_object_get(json_array_get(a, i), "id"));
        n += snprintf(out + n, size - n, "%s%s", i ? " " : "",
                      id ? id : "?");

        if (n >= size) {
            break;
        }
    }

    json_decref(a);
}


static run_t  R;


static int
run(const char *spec, size_t ninput, size_t max_items, size_t max_bytes,
    const char *truncation)
{
    mg_buf_t           in, kept, hist;
    mg_history_opts_t  o;

    memset(&in, 0, sizeof(mg_buf_t));
    memset(&kept, 0, sizeof(mg_buf_t));
    memset(&hist, 0, sizeof(mg_buf_t));
    memset(&R, 0, sizeof(run_t));

    build(&in, spec);

    o.max_items = max_items;
    o.max_bytes = max_bytes;
    o.truncation = truncation;
    o.truncation_len = truncation ? strlen(truncation) : 0;

    R.rc = mg_history_limit(in.data, in.len, ninput, &o, &kept, &hist,
                            &R.res, &R.err);

    if (R.rc == MG_X_OK) {
        ids(&kept, R.kept, sizeof(R.kept));
        ids(&hist, R.hist, sizeof(R.hist));

    } else {
        snprintf(R.kept, sizeof(R.kept), "(refused)");
        snprintf(R.hist, sizeof(R.hist), "(refused, %zu and %zu bytes)",
                 kept.len, hist.len);
    }

    mg_buf_free(&in);
    mg_buf_free(&kept);
    mg_buf_free(&hist);

    return R.rc;
}


#define kept_is(exp, name)                                                    \
    is_str(R.kept, strlen(R.kept), exp, "%s: kept", name)

#define refused(name, limit)                                                  \
    do {                                                                      \
        is(R.rc, MG_X_ERROR, "%s: refused", name);                            \
        is(R.err.status, 400, "%s: a 400", name);                             \
        is_str(R.err.code, R.err.code ? strlen(R.err.code) : 0,               \
               "context_length_exceeded", "%s: its code", name);              \
        is_str(R.err.param, R.err.param ? strlen(R.err.param) : 0, "input",   \
               "%s: param input", name);                                      \
        ok(strstr(R.err.message, limit) != NULL,                              \
           "%s: the message names \"%s\" (%s)", name, limit, R.err.message);  \
    } while (0)


static void
test_limits(void)
{
    char               lim[64], s[64];
    size_t             bytes, hlen;
    mg_buf_t           in, kept, hist;
    const char        *spec;
    mg_history_opts_t  o;

    spec = "s1 u1 a1 u2 a2 u3";

    /* under both limits: everything, byte for byte */

    memset(&in, 0, sizeof(mg_buf_t));
    build(&in, spec);
    bytes = total;

    run(spec, 1, 6, bytes, NULL);
    is(R.rc, MG_X_OK, "at the limits: passes");
    kept_is("s1 u1 a1 u2 a2 u3", "at the limits");
    is_str(R.hist, strlen(R.hist), "s1 u1 a1 u2 a2",
           "at the limits: the history is all but the input");
    is(R.res.items, 6, "at the limits: 6 items");
    is(R.res.bytes, bytes, "at the limits: the bytes are the items' own");
    is(R.res.history, 5, "at the limits: 5 from the history");
    is(R.res.dropped, 0, "at the limits: nothing dropped");

    /* no limits: appended after what the buffers hold, byte for byte */

    memset(&kept, 0, sizeof(mg_buf_t));
    memset(&hist, 0, sizeof(mg_buf_t));
    mg_buf_append(&kept, "x", 1);
    mg_buf_append(&hist, "y", 1);
    memset(&o, 0, sizeof(mg_history_opts_t));

    is(mg_history_limit(in.data, in.len, 1, &o, &kept, &hist, &R.res,
                        &R.err), MG_X_OK, "no limits: passes");
    ok(kept.len == in.len + 1 && kept.data[0] == 'x'
       && memcmp(kept.data + 1, in.data, in.len) == 0,
       "no limits: the items appended as they came");
    ok(hist.len > 1 && hist.data[0] == 'y', "no limits: history appended");
    hlen = hist.len;

    /* a refusal appends nothing */

    o.max_items = 5;
    is(mg_history_limit(in.data, in.len, 1, &o, &kept, &hist, &R.res,
                        &R.err), MG_X_ERROR, "refused: fails");
    ok(kept.len == in.len + 1 && hist.len == hlen,
       "refused: nothing appended");

    mg_buf_free(&kept);
    mg_buf_free(&hist);

    /* one item over, one byte over, with truncation disabled */

    run(spec, 1, 5, 0, NULL);
    snprintf(lim, sizeof(lim), "limit of 5 items");
    refused("one item over", lim);
    ok(strstr(R.err.message, "6 items") != NULL,
       "one item over: the message says 6 items");

    run(spec, 1, 5, 0, "disabled");
    refused("one item over, disabled by name", "limit of 5 items");

    run(spec, 1, 0, bytes - 1, NULL);
    snprintf(lim, sizeof(lim), "limit of %zu bytes", bytes - 1);
    refused("one byte over", lim);
    snprintf(s, sizeof(s), "%zu bytes", bytes);
    ok(strstr(R.err.message, s) != NULL, "one byte over: the message says %s",
       s);

    run(spec, 1, 6, bytes - 1, NULL);
    refused("the bytes over, the items not", "bytes");

    run(spec, 1, 5, bytes, NULL);
    refused("the items over, the bytes not", "items");

    run(spec, 1, 5, 0, "bogus");
    is(R.rc, MG_X_ERROR, "truncation bogus: refused");
    is_str(R.err.param, R.err.param ? strlen(R.err.param) : 0, "truncation",
           "truncation bogus: param truncation");

    mg_buf_free(&in);
}


/* truncation auto: whole oldest turns, until both limits hold */

static void
test_auto(void)
{
    size_t    last2;
    mg_buf_t  b;

    run("u1 a1 u2 a2 u3 a3 u4", 1, 7, 0, "auto");
    kept_is("u1 a1 u2 a2 u3 a3 u4", "auto, under the limits");
    is(R.res.dropped, 0, "auto, under the limits: nothing dropped");

    run("u1 a1 u2 a2 u3 a3 u4", 1, 5, 0, "auto");
    kept_is("u2 a2 u3 a3 u4", "auto, 2 items over");
    is(R.res.dropped, 2, "auto, 2 items over: 2 dropped");
    is(R.res.turns, 1, "auto, 2 items over: 1 turn dropped");
    is(R.res.items, 5, "auto, 2 items over: 5 kept");
    is_str(R.hist, strlen(R.hist), "u2 a2 u3 a3",
           "auto, 2 items over: the kept history");
    is(R.res.history, 4, "auto, 2 items over: 4 of the history kept");

    /* one item over still drops the whole turn, not one item */

    run("u1 a1 u2 a2 u3 a3 u4", 1, 6, 0, "auto");
    kept_is("u2 a2 u3 a3 u4", "auto, 1 item over: a whole turn");

    run("u1 a1 u2 a2 u3 a3 u4", 1, 4, 0, "auto");
    kept_is("u3 a3 u4", "auto, 3 items over: two whole turns");
    is(R.res.turns, 2, "auto, 3 items over: 2 turns dropped");

    /* a turn of many items, and turns that are a user message alone */

    run("u1 a1 c1:k o1:k a2 u2 u3 a3 u4", 1, 4, 0, "auto");
    kept_is("u2 u3 a3 u4", "auto, a long turn goes");

    run("u1 a1 c1:k o1:k a2 u2 u3 a3 u4", 1, 3, 0, "auto");
    kept_is("u3 a3 u4", "auto, then a turn of a user message alone");

    /* the bytes: exactly the last two turns, then one byte less */

    memset(&b, 0, sizeof(mg_buf_t));
    build(&b, "u3 a3 u4");
    last2 = total;
    mg_buf_free(&b);

    run("u1 a1 u2 a2 u3 a3 u4", 1, 0, last2, "auto");
    kept_is("u3 a3 u4", "auto, bytes exactly of the last turns");
    is(R.res.bytes, last2, "auto, bytes exactly: the kept bytes");

    run("u1 a1 u2 a2 u3 a3 u4", 1, 0, last2 - 1, "auto");
    kept_is("u4", "auto, one byte less: one more turn goes");
    is(R.res.dropped, 6, "auto, one byte less: 6 dropped");
    is_str(R.hist, strlen(R.hist), "", "auto, one byte less: no history");

    /* both limits: the items hold at one turn, the bytes at the next */

    run("u1 a1 u2 a2 u3 a3 u4", 1, 5, last2, "auto");
    kept_is("u3 a3 u4", "auto, both limits: the stricter one decides");
}


/* system and developer messages before the first user message stay */

static void
test_instructions(void)
{
    run("s1 d1 u1 a1 u2 a2 u3", 1, 5, 0, "auto");
    kept_is("s1 d1 u2 a2 u3", "instructions: kept when their turn goes");
    is(R.res.dropped, 2, "instructions: 2 dropped");

    run("s1 d1 u1 a1 u2 a2 u3", 1, 3, 0, "auto");
    kept_is("s1 d1 u3", "instructions: kept when every turn goes");

    run("s1 a0 u1 a1 u2", 1, 4, 0, "auto");
    kept_is("s1 u1 a1 u2", "instructions: an assistant message before the "
            "first user message is not one");

    run("s1 u1 s2 a1 u2 a2 u3", 1, 4, 0, "auto");
    kept_is("s1 u2 a2 u3", "instructions: a system message after the "
            "first user message goes with its turn");

    run("s1 d1 u1 a1 u2", 1, 2, 0, "auto");
    refused("instructions: counted, and more than the limit",
            "limit of 2 items");
    is(R.res.items, 3, "instructions: what could not be dropped, counted");
}


/* a function_call and its output stay or go together */

static void
test_pairs(void)
{
    run("u1 c1:x o1:x a1 u2 a2 u3", 1, 3, 0, "auto");
    kept_is("u2 a2 u3", "pairs: a pair inside a turn goes with it");

    /* the call in one turn, its output in the next */

    run("u1 c1:x u2 o1:x a2 u3 a3 u4", 1, 6, 0, "auto");
    kept_is("u2 a2 u3 a3 u4", "pairs: the output of a dropped call goes");
    is(R.res.dropped, 3, "pairs: 3 dropped, the output with them");
    is(R.res.turns, 1, "pairs: one turn dropped");

    run("u1 c1:x u2 o1:x a2 u3 a3 u4", 1, 8, 0, "auto");
    kept_is("u1 c1 u2 o1 a2 u3 a3 u4", "pairs: kept when nothing goes");

    /* the reverse: the output first, the call in a later turn */

    run("u1 o1:y u2 c1:y a2 u3", 1, 5, 0, "auto");
    kept_is("u2 a2 u3", "pairs: the call of a dropped output goes");

    /* the output two turns on; and calls of one id that are not a pair */

    run("u1 c1:x c2:z u2 o2:z u3 o1:x u4", 1, 5, 0, "auto");
    kept_is("u2 u3 u4", "pairs: outputs of dropped calls go, turns on");

    run("u1 c1:x u2 o1:xy u3", 1, 4, 0, "auto");
    kept_is("u2 o1 u3", "pairs: call_ids x and xy are not one pair");

    /* an empty call_id names no call: such items are not one group */

    run("u1 c1: u2 o1: a2 u3", 1, 4, 0, "auto");
    kept_is("u2 o1 a2 u3", "pairs: empty call_ids are not one pair");

    /* a call with its output and an orphan output of another call */

    run("u1 c1:x u2 o1:x o2:w u3", 1, 4, 0, "auto");
    kept_is("u2 o2 u3", "pairs: only the dropped call's output goes");

    /* with disabled, pairs change nothing: all or the refusal */

    run("u1 c1:x u2 o1:x u3", 1, 5, 0, NULL);
    kept_is("u1 c1 u2 o1 u3", "pairs, disabled: at the limit, all kept");
}


/* this request's input, and what it needs, is never dropped */

static void
test_input(void)
{
    /* the input answers a call of the turn before: that turn stays */

    run("u0 a0 u1 c1:x a1 u2 a2 o1:x", 1, 6, 0, "auto");
    kept_is("u1 c1 a1 u2 a2 o1", "input: the turn of its call stays");

    run("u0 a0 u1 c1:x a1 u2 a2 o1:x", 1, 3, 0, "auto");
    refused("input: its call cannot go", "limit of 3 items");
    is(R.res.items, 6, "input: what the refusal counted");

    /* the input continues a turn begun in the history: that turn stays */

    run("u1 a1 u2 c2:z o2:z", 1, 3, 0, "auto");
    kept_is("u2 c2 o2", "input: the turn it continues stays");

    run("u1 a1 u2 c2:z o2:z", 1, 2, 0, "auto");
    refused("input: the turn it continues cannot go", "limit of 2 items");

    run("u1 a1 u2 a2 u3", 2, 2, 0, "auto");
    refused("input: a later user message in it is no cut",
            "limit of 2 items");
    is(R.res.items, 3, "input: the turn it continues, counted");

    /* the input alone over the limits */

    run("u1 a1 u2 u3", 2, 1, 0, "auto");
    refused("input alone over the items", "limit of 1 items");
    ok(strstr(R.err.message, "auto") != NULL,
       "input alone: the message says auto could not help");
    is(R.res.items, 2, "input alone: its 2 items counted");

    run("u1 a1 u2", 1, 0, 10, "auto");
    refused("input alone over the bytes", "limit of 10 bytes");

    /* nothing droppable: one turn, no user message, no history */

    run("a1 a2 a3", 1, 2, 0, "auto");
    refused("auto, one turn only", "limit of 2 items");

    run("u1 a1 a2", 3, 2, 0, "auto");
    refused("auto, no history", "limit of 2 items");

    /* no input: the last turn is this request's */

    run("u1 a1 u2 a2", 0, 2, 0, "auto");
    kept_is("u2 a2", "no input: older turns go");
    is(R.res.history, 2, "no input: all kept are history");

    run("u1 a1 u2 a2", 0, 1, 0, "auto");
    refused("no input: the last turn stays", "limit of 1 items");

    run("", 0, 1, 0, "auto");
    is(R.rc, MG_X_OK, "nothing at all: passes");
    kept_is("", "nothing at all");
}


static void
test_bad(void)
{
    size_t             i;
    mg_history_opts_t  o;
    static const char  *bad[] = {
        "", "{}", "[1]", "[{},\"x\"]", "[{]", NULL
    };

    memset(&o, 0, sizeof(mg_history_opts_t));

    for (i = 0; bad[i]; i++) {
        is(mg_history_limit(bad[i], strlen(bad[i]), 0, &o, NULL, NULL,
                            &R.res, &R.err), MG_X_ERROR,
           "bad: '%s' refused", bad[i]);
        ok(R.err.status == 400 && mg_x_streq(R.err.param, "input"),
           "bad: '%s' a 400 on input", bad[i]);
    }

    is(mg_history_limit("[{}]", 4, 2, &o, NULL, NULL, &R.res, &R.err),
       MG_X_ERROR, "bad: more input items than items");
}


/* 20,000 items: the work counted, not timed */

static void
test_big(void)
{
    char    *spec, *p;
    size_t   i, n;

    /* 5000 turns of a user message, a call, its output, an answer */

    n = 20000;
    spec = malloc(n * 16);
    p = spec;

    for (i = 0; i < n / 4; i++) {
        p += sprintf(p, "u%zu c%zu:k%zu o%zu:k%zu a%zu ", i, i, i, i, i, i);
    }

    run(spec, 4, 100, 0, "auto");
    is(R.rc, MG_X_OK, "big: passes");
    is(R.res.items, 100, "big: 100 kept");
    is(R.res.dropped, n - 100, "big: the rest dropped");
    is(R.res.turns, n / 4 - 25, "big: whole turns dropped");
    ok(strncmp(R.kept, "u4975 c4975 o4975 a4975 u4976 ", 30) == 0,
       "big: the last 25 turns kept");
    ok(R.res.steps <= 8 * n, "big, auto: %zu steps for %zu items",
       R.res.steps, n);

    run(spec, 4, 100, 0, NULL);
    refused("big, disabled", "limit of 100 items");
    ok(R.res.steps <= 8 * n, "big, disabled: %zu steps", R.res.steps);

    /*
     * every call in the first turn (no user message: it starts at the
     * first item), their outputs, reversed, in the next
     */

    p = spec;

    for (i = 0; i < n / 2 - 1; i++) {
        p += sprintf(p, "c%zu:k%zu ", i, i);
    }

    p += sprintf(p, "u1 ");

    for (i = n / 2 - 1; i-- > 0; /* void */) {
        p += sprintf(p, "o%zu:k%zu ", i, i);
    }

    p += sprintf(p, "u2");

    run(spec, 1, 2, 0, "auto");
    kept_is("u1 u2", "big pairs: every output of a dropped call goes");
    is(R.res.dropped, n - 2, "big pairs: all but 2 dropped");
    ok(R.res.steps <= 8 * n, "big pairs: %zu steps for %zu items",
       R.res.steps, n);

    /* one 20,000-item turn: nothing to drop, still linear */

    p = spec;
    p += sprintf(p, "s0 u0");

    for (i = 1; i < n - 1; i++) {
        p += sprintf(p, " a%zu", i);
    }

    run(spec, 1, n - 1, 0, "auto");
    refused("big, one turn", "limit of 19999 items");
    ok(R.res.steps <= 8 * n, "big, one turn: %zu steps", R.res.steps);

    free(spec);
}


int
main(void)
{
    test_limits();
    test_auto();
    test_instructions();
    test_pairs();
    test_input();
    test_bad();
    test_big();

    return tap_done();
}
