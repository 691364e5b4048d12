/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * libFuzzer target for gateway-held Responses (mg_responses_request.c,
 * mg_responses_items.c, mg_responses_answer.c, mg_responses_stream.c,
 * mg_responses_calls.c).
 * The first byte of the input chooses what the rest is and how it is
 * called; the rest is cut into pieces at blank lines ("\n\n"):
 *
 *   mode 0  a Responses request body, no history;
 *   mode 1  a request body, then (after the first blank line) the history;
 *   mode 2  a chat completion to answer;
 *   mode 3  chat chunks, one per piece ("data: " optional), "[DONE]"
 *           ending the stream where it comes, the end otherwise.
 *
 * In modes 2 and 3 the echo is none, a fixed one, an unreadable one (a
 * 500), or made by mg_resp_request() from the first piece.  What is
 * checked besides crashes, leaks and UB:
 *
 *   - every output buffer starts with bytes of its own: a call that fails
 *     leaves each one as it was (length and bytes); one that succeeds
 *     only appends, and what it appends is JSON of the right type (chat
 *     and echo objects, input and items arrays, the response an object
 *     whose output is the items);
 *   - errors are 400 (request), 500 (unreadable history or echo, out of
 *     memory), 502 (answer, chunk), with a valid UTF-8 message;
 *   - the request's cap: with a cap, the translation succeeds with the
 *     same outputs as without it when they all fit, else it is a 400
 *     request_too_large; no output is ever longer than the cap, nor than
 *     MG_FZ_K times the input plus MG_FZ_C;
 *   - the stream: each call appends whole "event: NAME\ndata: JSON\n\n"
 *     events whose "type" is NAME, sequence_number 0, 1, 2, ...;
 *     response.created and response.in_progress first, one final event
 *     (response.completed or .incomplete) last, whose output is the items
 *     handed back; nothing after the end; at most MG_FZ_SK times the
 *     input plus MG_FZ_SC per chunk and per output item.
 *
 * An item id function that fails after a count the input chooses makes
 * the out-of-memory paths run too.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *         -Isrc fuzz/fuzz_responses.c src/*.c -ljansson -lcrypto -lm \
 *         -o /tmp/fr
 *     mkdir -p /tmp/fr-corpus
 *     /tmp/fr -max_total_time=20 /tmp/fr-corpus t/fixtures/responses/corpus
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mg_responses.h"
#include "fuzz_common.h"


/*
 * Request and answer outputs: at most MG_FZ_K times what was read plus
 * MG_FZ_C.  Each value is copied once into each output; jansson writes a
 * short real at most 4.6 times longer ("1e-7," -> "9.9999999999999995e-08,"),
 * and the smallest item the stored input rewrites grows 2.6 times
 * ({"role":"user","content":""} as a typed message with a part).
 */
#define MG_FZ_K   6
#define MG_FZ_C   (4 * 1024)

/*
 * The stream: a text or arguments are written at most five times (delta,
 * .done, the part, the item, response.completed), the echo three times
 * (created, in_progress, the end) at most 4.6 times longer; each event,
 * with an item id of up to 127 bytes, is under 512 bytes besides them,
 * and a chunk makes at most a handful (a part closed and opened twice,
 * one delta each), an output item at most four (added, .done, item done,
 * its part).
 */
#define MG_FZ_SK  16
#define MG_FZ_SC  (4 * 1024)

#define MG_FZ_PRE      "\x01prefix\x02"
#define MG_FZ_PRE_LEN  (sizeof(MG_FZ_PRE) - 1)

#define MG_FZ_ECHO                                                            \
    "{\"instructions\":\"Be brief.\",\"temperature\":0.5,\"tools\":"          \
    "[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":\"auto\","      \
    "\"metadata\":{\"k\":\"v\"},\"conversation\":{\"id\":\"conv_1\"}}"


typedef struct {
    unsigned    n;              /* ids made */
    unsigned    fail;           /* fail at this one; 0: never */
    size_t      pad;            /* the id's length past its prefix */
} mg_fz_ids_t;


static int
mg_fz_id(void *data, const char *prefix, char *buf, size_t size)
{
    size_t        n;
    mg_fz_ids_t  *ids = data;

    if (++ids->n == ids->fail) {
        return -1;
    }

    n = (size_t) snprintf(buf, size, "%s%u_", prefix, ids->n);

    for ( /* void */ ; n < ids->pad && n + 1 < size; n++) {
        buf[n] = 'x';
    }

    buf[n < size ? n : size - 1] = '\0';

    return 0;
}


/* a buffer with bytes of its own before what a call appends */

static void
mg_fz_buf(mg_buf_t *b)
{
    memset(b, 0, sizeof(mg_buf_t));

    if (mg_buf_append(b, MG_FZ_PRE, MG_FZ_PRE_LEN) != MG_X_OK) {
        abort();
    }
}


/* its own bytes still there; what follows them */

static size_t
mg_fz_added(const mg_buf_t *b, const char **p)
{
    if (b->len < MG_FZ_PRE_LEN
        || memcmp(b->data, MG_FZ_PRE, MG_FZ_PRE_LEN) != 0)
    {
        abort();
    }

    *p = b->data + MG_FZ_PRE_LEN;

    return b->len - MG_FZ_PRE_LEN;
}


static void
mg_fz_untouched(const mg_buf_t *b)
{
    const char  *p;

    if (b != NULL && mg_fz_added(b, &p) != 0) {
        abort();
    }
}


/* what was appended, parsed; it must be JSON of that type */

static json_t *
mg_fz_json(const mg_buf_t *b, json_type type)
{
    size_t       n;
    json_t      *j;
    const char  *p;

    n = mg_fz_added(b, &p);
    j = json_loadb(p, n, JSON_ALLOW_NUL, NULL);

    if (j == NULL || json_typeof(j) != type) {
        abort();
    }

    return j;
}


static void
mg_fz_error(const mg_xerror_t *err, int rc, int s1, int s2)
{
    mg_fz_check_error(err);

    if (rc == MG_X_NOMEM) {
        if (err->status != 500) {
            abort();
        }

        return;
    }

    if (rc != MG_X_ERROR || (err->status != s1 && err->status != s2)) {
        abort();
    }
}


/* the next piece of [*p, end): up to a blank line, which is skipped */

static int
mg_fz_piece(const char **p, const char *end, const char **s, size_t *len)
{
    const char  *e;

    if (*p >= end) {
        return 0;
    }

    *s = *p;
    e = memmem(*p, end - *p, "\n\n", 2);

    if (e == NULL) {
        *len = end - *p;
        *p = end;

    } else {
        *len = e - *p;
        *p = e + 2;
    }

    return 1;
}


/* the request */

typedef struct {
    int          rc;
    int          stream;
    mg_buf_t     chat;
    mg_buf_t     echo;
    mg_buf_t     input;
    mg_xerror_t  err;
} mg_fz_req_t;


static void
mg_fz_req_free(mg_fz_req_t *r)
{
    mg_buf_free(&r->chat);
    mg_buf_free(&r->echo);
    mg_buf_free(&r->input);
}


static void
mg_fz_request_run(mg_fz_req_t *r, const char *body, size_t len,
    const char *hist, size_t hist_len, const mg_resp_opts_t *o, int bufs)
{
    size_t   in, max, n;
    json_t  *chat, *echo, *input, *v;

    memset(r, 0, sizeof(mg_fz_req_t));
    mg_fz_buf(&r->chat);
    mg_fz_buf(&r->echo);
    mg_fz_buf(&r->input);
    r->stream = -1;

    r->rc = mg_resp_request(body, len, hist, hist_len, o, &r->chat,
                            bufs ? &r->echo : NULL,
                            bufs ? &r->input : NULL, &r->stream, &r->err);

    if (r->rc != MG_X_OK) {
        mg_fz_error(&r->err, r->rc, 400, hist_len ? 500 : 400);
        mg_fz_untouched(&r->chat);
        mg_fz_untouched(&r->echo);
        mg_fz_untouched(&r->input);

        if (r->stream != 0) {
            abort();
        }

        return;
    }

    in = len + (hist ? hist_len : 0);
    max = mg_x_out_max(o ? o->max_out : 0);

    chat = mg_fz_json(&r->chat, JSON_OBJECT);
    n = r->chat.len - MG_FZ_PRE_LEN;

    if (n > max || n > MG_FZ_K * in + MG_FZ_C) {
        abort();
    }

    /* a model, at least one message; the stream asked for, with usage */

    v = json_object_get(chat, "model");

    if (!json_is_string(v)
        || (o && o->model_len
            && (json_string_length(v) != o->model_len
                || memcmp(json_string_value(v), o->model, o->model_len)
                   != 0))
        || json_array_size(json_object_get(chat, "messages")) == 0
        || (r->stream != 0 && r->stream != 1)
        || r->stream != json_is_true(json_object_get(chat, "stream")))
    {
        abort();
    }

    json_decref(chat);

    if (!bufs) {
        mg_fz_untouched(&r->echo);
        mg_fz_untouched(&r->input);
        return;
    }

    echo = mg_fz_json(&r->echo, JSON_OBJECT);
    input = mg_fz_json(&r->input, JSON_ARRAY);

    n = r->echo.len - MG_FZ_PRE_LEN;

    if (n > max || n > MG_FZ_K * in + MG_FZ_C) {
        abort();
    }

    n = r->input.len - MG_FZ_PRE_LEN;

    if (n > max || n > MG_FZ_K * in + MG_FZ_C) {
        abort();
    }

    json_decref(echo);
    json_decref(input);
}


static int
mg_fz_same_buf(const mg_buf_t *a, const mg_buf_t *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}


static void
mg_fz_request(const char *body, size_t len, const char *hist,
    size_t hist_len, unsigned sel, uint64_t h)
{
    int              bufs;
    size_t           cap, most;
    mg_fz_req_t      a, b;
    mg_resp_opts_t   o;

    memset(&o, 0, sizeof(o));

    if (sel & 0x04) {
        o.model = "prov-model";
        o.model_len = sizeof("prov-model") - 1;
    }

    bufs = (sel & 0x10) == 0;

    mg_fz_request_run(&a, body, len, hist, hist_len,
                      (sel & 0x0c) ? &o : NULL, bufs);

    if (!(sel & 0x08) || a.rc == MG_X_NOMEM) {
        mg_fz_req_free(&a);
        return;
    }

    /* again with a cap near what it wrote: the same, or too large */

    most = a.chat.len - MG_FZ_PRE_LEN;

    if (a.rc == MG_X_OK && bufs) {
        if (a.echo.len - MG_FZ_PRE_LEN > most) {
            most = a.echo.len - MG_FZ_PRE_LEN;
        }

        if (a.input.len - MG_FZ_PRE_LEN > most) {
            most = a.input.len - MG_FZ_PRE_LEN;
        }
    }

    cap = 1 + (size_t) (h % (2 * most + 64));
    o.max_out = cap;

    mg_fz_request_run(&b, body, len, hist, hist_len, &o, bufs);

    if (a.rc != MG_X_OK) {
        if (b.rc != a.rc || b.err.status != a.err.status) {
            abort();
        }

    } else if (most <= cap) {
        if (b.rc != MG_X_OK || b.stream != a.stream
            || !mg_fz_same_buf(&a.chat, &b.chat)
            || !mg_fz_same_buf(&a.echo, &b.echo)
            || !mg_fz_same_buf(&a.input, &b.input))
        {
            abort();
        }

    } else if (b.rc != MG_X_ERROR || b.err.status != 400
               || !mg_x_streq(b.err.code, "request_too_large"))
    {
        abort();
    }

    mg_fz_req_free(&a);
    mg_fz_req_free(&b);
}


/* the echo for an answer or a stream, as the selector says */

static int
mg_fz_echo(unsigned sel, const char **p, const char *end, mg_buf_t *echo,
    const char **e, size_t *elen)
{
    int          stream;
    size_t       n;
    mg_buf_t     chat;
    const char  *s;
    mg_xerror_t  err;

    *e = NULL;
    *elen = 0;

    switch ((sel >> 5) & 3) {

    case 0:
        return 0;

    case 1:
        *e = MG_FZ_ECHO;
        *elen = sizeof(MG_FZ_ECHO) - 1;
        return 0;

    case 2:
        *e = "[\"not an object\"]";
        *elen = strlen(*e);
        return 1;

    default:
        break;
    }

    /* the first piece is the request: its echo */

    if (!mg_fz_piece(p, end, &s, &n)) {
        return 0;
    }

    memset(&chat, 0, sizeof(mg_buf_t));
    memset(echo, 0, sizeof(mg_buf_t));

    if (mg_resp_request(s, n, NULL, 0, NULL, &chat, echo, NULL, &stream,
                        &err)
        == MG_X_OK)
    {
        mg_fz_check_json(echo->data, echo->len);

        *e = echo->data;
        *elen = echo->len;
    }

    mg_buf_free(&chat);

    return 0;
}


static void
mg_fz_opts(mg_resp_answer_opts_t *o, mg_fz_ids_t *ids, unsigned sel,
    uint64_t h, const char *e, size_t elen)
{
    memset(o, 0, sizeof(mg_resp_answer_opts_t));
    memset(ids, 0, sizeof(mg_fz_ids_t));

    o->id = "resp_fz01";
    o->model = "gpt-fz";
    o->created_at = 1700000000LL;
    o->echo = e;
    o->echo_len = elen;

    if (sel & 0x80) {
        o->item_id = mg_fz_id;
        o->data = ids;
        ids->pad = (size_t) ((h >> 16) % 160);
        ids->fail = ((h >> 8) & 3) == 0 ? 1 + (unsigned) ((h >> 24) % 16)
                                        : 0;
    }
}


/* the answer */

static void
mg_fz_answer(const char *body, size_t len, unsigned sel, uint64_t h,
    const char *e, size_t elen, int bad_echo)
{
    int                     rc;
    size_t                  n;
    json_t                 *res, *items, *echo, *v;
    mg_buf_t                response, it, *itp;
    const char             *key;
    mg_xerror_t             err;
    mg_fz_ids_t             ids;
    mg_resp_answer_opts_t   o;

    mg_fz_opts(&o, &ids, sel, h, e, elen);
    mg_fz_buf(&response);
    mg_fz_buf(&it);
    itp = (sel & 0x10) ? NULL : &it;

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_resp_answer(body, len, &o, &response, itp, &err);

    if (rc != MG_X_OK) {
        mg_fz_error(&err, rc, 502, bad_echo ? 500 : 502);
        mg_fz_untouched(&response);
        mg_fz_untouched(&it);
        goto done;
    }

    if (bad_echo) {
        abort();
    }

    res = mg_fz_json(&response, JSON_OBJECT);
    v = json_object_get(res, "output");

    if (!mg_x_streq(json_string_value(json_object_get(res, "object")),
                    "response")
        || !mg_x_streq(json_string_value(json_object_get(res, "id")), o.id)
        || !(mg_x_streq(json_string_value(json_object_get(res, "status")),
                        "completed")
             || mg_x_streq(json_string_value(json_object_get(res, "status")),
                           "incomplete"))
        || json_array_size(v) == 0)
    {
        abort();
    }

    if (itp) {
        items = mg_fz_json(&it, JSON_ARRAY);

        if (!json_equal(items, v)) {
            abort();
        }

        json_decref(items);

    } else {
        mg_fz_untouched(&it);
    }

    /* what the request set is repeated as it was */

    echo = e ? json_loadb(e, elen, JSON_ALLOW_NUL, NULL) : NULL;

    json_object_foreach(echo, key, v) {
        if (!json_is_null(v) && !json_equal(json_object_get(res, key), v)) {
            abort();
        }
    }

    json_decref(echo);
    json_decref(res);

    n = response.len - MG_FZ_PRE_LEN;

    if (n > MG_FZ_K * (len + elen) + MG_FZ_C
        || it.len - MG_FZ_PRE_LEN > MG_FZ_K * len + MG_FZ_C)
    {
        abort();
    }

done:

    mg_buf_free(&response);
    mg_buf_free(&it);
}


/* the stream */

typedef struct {
    long long    seq;           /* the next sequence_number */
    json_t      *final;         /* the final event, once seen */
} mg_fz_events_t;


/* what one call appended: whole events, named and numbered in order */

static void
mg_fz_events(mg_fz_events_t *ev, const char *p, size_t len)
{
    size_t       n;
    json_t      *j, *t;
    const char  *end, *nl, *name;

    end = p + len;

    while (p < end) {
        if (end - p < 7 || memcmp(p, "event: ", 7) != 0) {
            abort();
        }

        p += 7;
        nl = memchr(p, '\n', end - p);

        if (nl == NULL) {
            abort();
        }

        name = p;
        n = nl - p;
        p = nl + 1;

        if (end - p < 6 || memcmp(p, "data: ", 6) != 0) {
            abort();
        }

        p += 6;
        nl = memchr(p, '\n', end - p);

        if (nl == NULL || nl + 1 >= end || nl[1] != '\n') {
            abort();
        }

        j = json_loadb(p, nl - p, JSON_ALLOW_NUL, NULL);
        t = json_object_get(j, "type");

        if (!json_is_object(j) || !json_is_string(t)
            || json_string_length(t) != n
            || memcmp(json_string_value(t), name, n) != 0
            || json_integer_value(json_object_get(j, "sequence_number"))
               != ev->seq
            || !json_is_integer(json_object_get(j, "sequence_number")))
        {
            abort();
        }

        /* created and in_progress first; nothing after the end */

        if (ev->final
            || (ev->seq == 0 && !mg_x_streq(json_string_value(t),
                                            "response.created"))
            || (ev->seq == 1 && !mg_x_streq(json_string_value(t),
                                            "response.in_progress")))
        {
            abort();
        }

        if (mg_x_streq(json_string_value(t), "response.completed")
            || mg_x_streq(json_string_value(t), "response.incomplete")
            || mg_x_streq(json_string_value(t), "response.failed"))
        {
            ev->final = j;

        } else {
            json_decref(j);
        }

        ev->seq++;
        p = nl + 2;
    }
}


static void
mg_fz_stream(const char *p, const char *end, unsigned sel, uint64_t h,
    const char *e, size_t elen, int bad_echo)
{
    int                     rc, done, failed;
    size_t                  n, in, chunks, before;
    json_t                 *j, *items;
    mg_buf_t                out, it, *itp;
    const char             *s;
    mg_xerror_t             err;
    mg_fz_ids_t             ids;
    mg_fz_events_t          ev;
    mg_resp_stream_t        st;
    mg_resp_answer_opts_t   o;

    mg_fz_opts(&o, &ids, sel, h, e, elen);
    memset(&err, 0, sizeof(mg_xerror_t));

    rc = mg_resp_stream_init(&st, &o, &err);

    if (rc != MG_X_OK) {
        mg_fz_error(&err, rc, 500, 500);

        if (rc == MG_X_ERROR && !bad_echo) {
            abort();
        }

        mg_resp_stream_free(&st);
        return;
    }

    if (bad_echo) {
        abort();
    }

    mg_fz_buf(&out);
    mg_fz_buf(&it);
    itp = (sel & 0x10) ? NULL : &it;

    memset(&ev, 0, sizeof(mg_fz_events_t));
    in = elen;
    chunks = 0;
    done = 0;
    failed = 0;

    for ( ;; ) {
        before = out.len;

        if (!mg_fz_piece(&p, end, &s, &n)) {
            s = "[DONE]";
            n = 6;
            p = NULL;
        }

        in += n + 2;

        if (n >= 6 && memcmp(s, "data: ", 6) == 0) {
            s += 6;
            n -= 6;
        }

        if (n == 6 && memcmp(s, "[DONE]", 6) == 0) {
            rc = mg_resp_stream_end(&st, &out, itp, &err);

            /* after a failure: the same, then response.failed ends it */

            if (failed) {
                if (rc != failed || out.len != before) {
                    abort();
                }

                mg_fz_error(&err, rc, 500, 502);
                mg_fz_untouched(&it);

                rc = mg_resp_stream_fail(&st, err.message, &out, &err);

                if (rc == MG_X_NOMEM) {
                    mg_fz_error(&err, rc, 500, 500);

                    if (out.len != before) {
                        abort();
                    }

                    break;
                }

                if (rc != MG_X_DONE) {
                    abort();
                }

                mg_fz_events(&ev, out.data + before, out.len - before);

                if (!mg_x_streq(json_string_value(json_object_get(
                                    ev.final, "type")), "response.failed"))
                {
                    abort();
                }

                break;
            }

            if (rc == MG_X_NOMEM) {
                mg_fz_error(&err, rc, 500, 500);

                if (out.len != before || done) {
                    abort();
                }

                mg_fz_untouched(&it);
                break;
            }

            if (rc != MG_X_DONE || (done && out.len != before)) {
                abort();
            }

            mg_fz_events(&ev, out.data + before, out.len - before);

            if (ev.final == NULL) {
                abort();
            }

            if (!done && itp) {
                items = mg_fz_json(&it, JSON_ARRAY);

                if (!json_equal(items, json_object_get(
                                    json_object_get(ev.final, "response"),
                                    "output")))
                {
                    abort();
                }

                json_decref(items);
            }

            done = 1;

            if (p == NULL) {
                break;
            }

            continue;
        }

        j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

        if (j == NULL) {
            continue;
        }

        chunks++;

        rc = mg_resp_stream_chunk(&st, j, &out, &err);

        if (rc != MG_X_OK) {

            /* a failure is final: later calls repeat it */

            mg_fz_error(&err, rc, failed ? 500 : 502, 502);

            if (out.len != before
                || memcmp(out.data, MG_FZ_PRE, MG_FZ_PRE_LEN) != 0
                || (failed && rc != failed)
                || (!failed && rc == MG_X_ERROR && json_is_object(j)
                    && mg_x_get(j, "error") == NULL))
            {
                abort();
            }

            failed = rc;

        } else if ((!json_is_object(j) && !done) || failed
                   || (done && out.len != before))
        {
            abort();
        }

        json_decref(j);

        if (rc == MG_X_NOMEM) {
            break;
        }

        mg_fz_events(&ev, out.data + before, out.len - before);
    }

    if (done
        && out.len - MG_FZ_PRE_LEN
           > MG_FZ_SK * in
             + MG_FZ_SC * (1 + chunks + json_array_size(st.output)))
    {
        abort();
    }

    json_decref(ev.final);
    mg_resp_stream_free(&st);
    mg_buf_free(&out);
    mg_buf_free(&it);
}


static char *
mg_fz_dup(const char *s, size_t n)
{
    char  *p;

    p = malloc(n ? n : 1);
    if (p == NULL) {
        abort();
    }

    memcpy(p, s, n);

    return p;
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          bad;
    char        *buf, *body;
    size_t       n, elen;
    uint64_t     h;
    unsigned     sel;
    mg_buf_t     echo;
    const char  *p, *end, *s, *e;

    if (size == 0) {
        return 0;
    }

    sel = data[0];
    h = mg_fz_hash(data, size);

    /* a copy of its own size, so that a read past the end is seen */

    buf = mg_fz_dup((const char *) data + 1, size - 1);
    p = buf;
    end = buf + size - 1;

    memset(&echo, 0, sizeof(mg_buf_t));

    switch (sel & 3) {

    case 0:
        mg_fz_request(buf, size - 1, NULL, 0, sel, h);
        break;

    case 1:
        if (!mg_fz_piece(&p, end, &s, &n)) {
            break;
        }

        body = mg_fz_dup(s, n);
        mg_fz_request(body, n, p, end - p, sel, h);
        free(body);
        break;

    case 2:
        bad = mg_fz_echo(sel, &p, end, &echo, &e, &elen);
        body = mg_fz_dup(p, end - p);
        mg_fz_answer(body, end - p, sel, h, e, elen, bad);
        free(body);
        break;

    default:
        bad = mg_fz_echo(sel, &p, end, &echo, &e, &elen);
        mg_fz_stream(p, end, sel, h, e, elen, bad);
        break;
    }

    mg_buf_free(&echo);
    free(buf);

    return 0;
}
