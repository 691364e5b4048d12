/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gemini streamGenerateContent SSE events -> OpenAI chat completion
 * chunks.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "mg_gemini.h"
#include "mg_gemini_int.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


/* the candidate indexes a stream may use (candidateCount is at most 8) */
#define MG_G_CHOICES_MAX   64


static int mg_g_stream_fast(mg_gemini_stream_t *st, const char *data,
    size_t len, mg_buf_t *out);
static int mg_g_stream_start(mg_gemini_stream_t *st, json_t *j);
static int mg_g_stream_chunk(mg_gemini_stream_t *st, json_t *j,
    mg_buf_t *out, mg_xerror_t *err);
static int mg_g_stream_index(json_t *c, size_t pos, size_t *idx);
static int mg_g_stream_candidate(mg_gemini_stream_t *st, json_t *c,
    size_t idx, mg_buf_t *out);
static mg_gemini_choice_t *mg_g_stream_choice(mg_gemini_stream_t *st,
    size_t idx);
static int mg_g_stream_text(mg_gemini_stream_t *st, size_t idx,
    mg_buf_t *text, mg_buf_t *out);
static void mg_g_stream_usage(mg_gemini_stream_t *st, json_t *u);
static int mg_g_chunk(mg_gemini_stream_t *st, mg_buf_t *out, size_t idx,
    json_t *delta, const char *finish);


/* the stream */

void
mg_gemini_stream_init(mg_gemini_stream_t *st, const char *model,
    size_t model_len, long created, int include_usage)
{
    memset(st, 0, sizeof(mg_gemini_stream_t));

    st->created = created;
    st->include_usage = include_usage != 0;
    st->total_tokens = -1;

    /* init cannot fail: a failed copy is reported by the first event */

    st->model = mg_x_strndup(model, model_len);

    if (st->model == NULL) {
        st->nomem = 1;
        return;
    }

    st->model_len = model ? model_len : 0;
}


int
mg_gemini_stream_event(mg_gemini_stream_t *st, const char *data,
    size_t data_len, mg_buf_t *out, mg_xerror_t *err)
{
    int      rc;
    size_t   start;
    json_t  *j, *e;

    if (st->nomem) {
        return mg_x_nomem(err);
    }

    if (st->done) {
        return MG_X_DONE;
    }

    if (data == NULL) {
        /* comments only */
        return MG_X_OK;
    }

    /* the chunks in the middle of a text answer need no tree */

    if (st->started && !st->full && st->nchoices
        && st->choices[0].started && !st->choices[0].finished)
    {
        rc = mg_g_stream_fast(st, data, data_len, out);

        if (rc != MG_XF_DECLINED) {
            return (rc == MG_X_NOMEM) ? mg_x_nomem(err) : rc;
        }
    }

    j = json_loadb(data, data_len, JSON_ALLOW_NUL, NULL);

    e = mg_g_error_body(j);

    if (e) {
        mg_g_error_map(0, e, err);
        json_decref(j);
        return MG_X_ERROR;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        return mg_x_bad_backend(err, "stream chunk");
    }

    start = out->len;

    rc = mg_g_stream_chunk(st, j, out, err);

    json_decref(j);

    if (rc == MG_X_NOMEM) {
        (void) mg_x_nomem(err);
    }

    if (rc != MG_X_OK) {
        out->len = start;
    }

    return rc;
}


static int
mg_g_stream_fast(mg_gemini_stream_t *st, const char *data, size_t len,
    mg_buf_t *out)
{
    int        rc, sent;
    long long  n[6];

    n[0] = st->prompt_tokens;
    n[1] = st->candidates_tokens;
    n[2] = st->thoughts_tokens;
    n[3] = st->tool_prompt_tokens;
    n[4] = st->cached_tokens;
    n[5] = st->total_tokens;

    rc = mg_xf_gemini_chunk(data, len, st->prefix, st->prefix_len, n, &sent,
                            out);

    if (rc != MG_X_OK) {
        return rc;
    }

    st->prompt_tokens = n[0];
    st->candidates_tokens = n[1];
    st->thoughts_tokens = n[2];
    st->tool_prompt_tokens = n[3];
    st->cached_tokens = n[4];
    st->total_tokens = n[5];

    if (sent) {
        st->content = 1;
    }

    return MG_X_OK;
}


static int
mg_g_stream_start(mg_gemini_stream_t *st, json_t *j)
{
    json_t  *rid;

    rid = json_object_get(j, "responseId");

    /* every chunk goes on after these members */

    st->prefix = mg_x_chunk_head("chatcmpl-",
                                 json_is_string(rid) ? json_string_value(rid)
                                                     : "",
                                 json_string_length(rid), st->created,
                                 st->model, st->model_len, &st->prefix_len);
    if (st->prefix == NULL) {
        return MG_X_NOMEM;
    }

    st->seed = mg_g_seed(rid, st->created);
    st->started = 1;

    return MG_X_OK;
}


/*
 * A chunk is checked whole before anything of it is sent, so that a chunk
 * that fails changes nothing: the state stays that of what was sent.
 */

static int
mg_g_stream_chunk(mg_gemini_stream_t *st, json_t *j, mg_buf_t *out,
    mg_xerror_t *err)
{
    int                  rc, usable;
    size_t               i, idx;
    json_t              *cands, *c, *delta;
    const char          *reason, *malformed;
    mg_gemini_choice_t  *ch;

    cands = json_object_get(j, "candidates");
    usable = 0;
    malformed = NULL;

    json_array_foreach(cands, i, c) {
        if (mg_g_stream_index(c, i, &idx) != MG_X_OK) {
            return mg_x_bad_backend(err, "stream (a candidate index out of "
                                    "range)");
        }

        if (idx < st->nchoices && st->choices[idx].finished) {
            continue;
        }

        usable |= mg_g_usable(c);

        reason = json_string_value(json_object_get(c, "finishReason"));

        if (mg_g_malformed(reason)) {
            malformed = reason;
        }
    }

    /* as whole: nothing sent yet, so another try may still be made */

    if (malformed && !usable && !st->content) {
        mg_xerror_set(err, 502, 1, "server_error", "backend_error", NULL,
                      "The model backend gave no usable answer (%s).",
                      malformed);

        return MG_X_ERROR;
    }

    if (!st->started) {
        rc = mg_g_stream_start(st, j);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    mg_g_stream_usage(st, json_object_get(j, "usageMetadata"));

    json_array_foreach(cands, i, c) {
        (void) mg_g_stream_index(c, i, &idx);

        rc = mg_g_stream_candidate(st, c, idx, out);
        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (json_array_size(cands)
        || json_string_value(json_object_get(json_object_get(j,
                                 "promptFeedback"), "blockReason"))
           == NULL)
    {
        return MG_X_OK;
    }

    /* the prompt was blocked: the answer ends before it began */

    ch = mg_g_stream_choice(st, 0);
    if (ch == NULL) {
        return MG_X_NOMEM;
    }

    if (ch->finished) {
        return MG_X_OK;
    }

    if (!ch->started) {
        delta = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
        if (delta == NULL) {
            return MG_X_NOMEM;
        }

        rc = mg_g_chunk(st, out, 0, delta, NULL);

        json_decref(delta);

        if (rc != MG_X_OK) {
            return rc;
        }

        ch->started = 1;
    }

    delta = json_object();
    if (delta == NULL) {
        return MG_X_NOMEM;
    }

    rc = mg_g_chunk(st, out, 0, delta, "content_filter");

    json_decref(delta);

    if (rc == MG_X_OK) {
        ch->finished = 1;
        st->finished = 1;
    }

    return rc;
}


/* a candidate's index: its own, or its place in the chunk */

static int
mg_g_stream_index(json_t *c, size_t pos, size_t *idx)
{
    json_t  *v;

    v = json_object_get(c, "index");

    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0
            || json_integer_value(v) >= MG_G_CHOICES_MAX)
        {
            return MG_X_ERROR;
        }

        *idx = (size_t) json_integer_value(v);
        return MG_X_OK;
    }

    *idx = pos;

    return pos < MG_G_CHOICES_MAX ? MG_X_OK : MG_X_ERROR;
}


/*
 * One candidate of a chunk: a role chunk the first time, then its text
 * (consecutive text parts as one delta) and its function calls (whole, as
 * Gemini sends them) in order, then the finish chunk if it says why it
 * ended.
 */

static int
mg_g_stream_candidate(mg_gemini_stream_t *st, json_t *c, size_t idx,
    mg_buf_t *out)
{
    int                  rc;
    size_t               i;
    json_t              *parts, *p, *v, *call, *delta;
    mg_buf_t             text;
    const char          *reason;
    mg_gemini_choice_t  *ch;

    ch = mg_g_stream_choice(st, idx);
    if (ch == NULL) {
        return MG_X_NOMEM;
    }

    if (ch->finished) {
        return MG_X_OK;
    }

    if (!ch->started) {
        delta = json_pack("{s:s,s:s}", "role", "assistant", "content", "");
        if (delta == NULL) {
            return MG_X_NOMEM;
        }

        rc = mg_g_chunk(st, out, idx, delta, NULL);

        json_decref(delta);

        if (rc != MG_X_OK) {
            return rc;
        }

        ch->started = 1;
    }

    memset(&text, 0, sizeof(mg_buf_t));
    rc = MG_X_NOMEM;

    parts = json_object_get(json_object_get(c, "content"), "parts");

    json_array_foreach(parts, i, p) {
        if (json_is_true(json_object_get(p, "thought"))) {
            continue;
        }

        v = json_object_get(p, "text");

        if (json_is_string(v)) {
            if (mg_buf_append(&text, json_string_value(v),
                              json_string_length(v))
                != MG_X_OK)
            {
                goto done;
            }

            continue;
        }

        if (!json_is_object(json_object_get(p, "functionCall"))) {
            continue;
        }

        if (mg_g_stream_text(st, idx, &text, out) != MG_X_OK) {
            goto done;
        }

        call = mg_g_tool_call(p, st->seed, idx, ch->ntools, 1);
        delta = call ? json_pack("{s:[o]}", "tool_calls", call) : NULL;

        if (delta == NULL) {
            goto done;
        }

        rc = mg_g_chunk(st, out, idx, delta, NULL);

        json_decref(delta);

        if (rc != MG_X_OK) {
            goto done;
        }

        rc = MG_X_NOMEM;
        ch->ntools++;
        st->content = 1;
    }

    if (mg_g_stream_text(st, idx, &text, out) != MG_X_OK) {
        goto done;
    }

    reason = json_string_value(json_object_get(c, "finishReason"));

    if (reason == NULL) {
        rc = MG_X_OK;
        goto done;
    }

    delta = json_object();
    if (delta == NULL) {
        goto done;
    }

    rc = mg_g_chunk(st, out, idx, delta,
                    mg_gemini_finish(reason, ch->ntools != 0));

    json_decref(delta);

    if (rc == MG_X_OK) {
        ch->finished = 1;
        st->finished = 1;
    }

done:

    mg_buf_free(&text);

    return rc;
}


/* the state of choice idx, made as needed */

static mg_gemini_choice_t *
mg_g_stream_choice(mg_gemini_stream_t *st, size_t idx)
{
    mg_gemini_choice_t  *c;

    if (idx >= st->nchoices) {
        c = realloc(st->choices, (idx + 1) * sizeof(mg_gemini_choice_t));
        if (c == NULL) {
            return NULL;
        }

        memset(c + st->nchoices, 0,
               (idx + 1 - st->nchoices) * sizeof(mg_gemini_choice_t));

        st->choices = c;
        st->nchoices = idx + 1;
    }

    return &st->choices[idx];
}


/* the text gathered so far as one delta; emptied */

static int
mg_g_stream_text(mg_gemini_stream_t *st, size_t idx, mg_buf_t *text,
    mg_buf_t *out)
{
    int      rc;
    json_t  *delta;

    if (text->len == 0) {
        return MG_X_OK;
    }

    delta = json_object();

    if (delta == NULL
        || mg_x_set(delta, "content", json_stringn(text->data, text->len))
           != MG_X_OK)
    {
        json_decref(delta);
        return MG_X_NOMEM;
    }

    rc = mg_g_chunk(st, out, idx, delta, NULL);

    json_decref(delta);

    if (rc == MG_X_OK) {
        text->len = 0;
        st->content = 1;
    }

    return rc;
}


/* counts grow as the stream goes: the last ones given are the totals */

static void
mg_g_stream_usage(mg_gemini_stream_t *st, json_t *u)
{
    if (!json_is_object(u)) {
        return;
    }

    st->prompt_tokens = mg_x_tokens(u, "promptTokenCount",
                                    st->prompt_tokens);
    st->candidates_tokens = mg_x_tokens(u, "candidatesTokenCount",
                                        st->candidates_tokens);
    st->thoughts_tokens = mg_x_tokens(u, "thoughtsTokenCount",
                                      st->thoughts_tokens);
    st->tool_prompt_tokens = mg_x_tokens(u, "toolUsePromptTokenCount",
                                         st->tool_prompt_tokens);
    st->cached_tokens = mg_x_tokens(u, "cachedContentTokenCount",
                                    st->cached_tokens);
    st->total_tokens = mg_x_tokens(u, "totalTokenCount", st->total_tokens);
}


int
mg_gemini_stream_finish(mg_gemini_stream_t *st, mg_buf_t *out)
{
    int      rc;
    size_t   i, start;
    json_t  *delta, *u;

    if (st->nomem) {
        return MG_X_NOMEM;
    }

    if (st->done) {
        return MG_X_DONE;
    }

    /* Gemini ends every answer with a finishReason: none, it was cut */

    if (!st->finished) {
        return MG_X_ERROR;
    }

    start = out->len;
    rc = MG_X_NOMEM;

    delta = json_object();
    u = NULL;

    if (delta == NULL) {
        goto done;
    }

    for (i = 0; i < st->nchoices; i++) {
        if (st->choices[i].started && !st->choices[i].finished) {
            if (mg_g_chunk(st, out, i, delta, "stop") != MG_X_OK) {
                goto done;
            }
        }
    }

    if (st->include_usage) {
        u = mg_g_usage(st->prompt_tokens, st->candidates_tokens,
                       st->thoughts_tokens, st->tool_prompt_tokens,
                       st->cached_tokens, st->total_tokens);
        if (u == NULL) {
            goto done;
        }
    }

    if (mg_x_stream_end(out, st->prefix, st->prefix_len, u) != MG_X_OK) {
        goto done;
    }

    for (i = 0; i < st->nchoices; i++) {
        st->choices[i].finished = st->choices[i].started;
    }

    st->done = 1;
    rc = MG_X_DONE;

done:

    if (rc != MG_X_DONE) {
        out->len = start;
    }

    json_decref(u);
    json_decref(delta);

    return rc;
}


/* one chunk with choices[idx].delta = delta (borrowed) */

static int
mg_g_chunk(mg_gemini_stream_t *st, mg_buf_t *out, size_t idx, json_t *delta,
    const char *finish)
{
    if (mg_buf_append(out, "data: ", 6) != MG_X_OK
        || mg_buf_append(out, st->prefix, st->prefix_len) != MG_X_OK
        || mg_buf_printf(out, ",\"choices\":[{\"index\":%zu,\"delta\":", idx)
           != MG_X_OK
        || mg_x_dump(delta, out, 0) != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    if (finish) {
        return mg_buf_printf(out, ",\"logprobs\":null,\"finish_reason\":"
                             "\"%s\"}],\"usage\":null}\n\n", finish);
    }

    return mg_buf_printf(out, ",\"logprobs\":null,\"finish_reason\":null}],"
                         "\"usage\":null}\n\n");
}


int
mg_gemini_stream_has_content(const mg_gemini_stream_t *st)
{
    return st->content;
}


int
mg_gemini_stream_usage(const mg_gemini_stream_t *st, mg_x_usage_t *u)
{
    /* counts start at 0 and total at -1 (not given) until one comes */

    if (st->total_tokens < 0 && st->prompt_tokens == 0
        && st->candidates_tokens == 0 && st->thoughts_tokens == 0
        && st->tool_prompt_tokens == 0)
    {
        return 0;
    }

    mg_gemini_usage(st->prompt_tokens, st->candidates_tokens,
                    st->thoughts_tokens, st->tool_prompt_tokens,
                    st->cached_tokens, u);

    return 1;
}


void
mg_gemini_stream_free(mg_gemini_stream_t *st)
{
    free(st->model);
    free(st->prefix);
    free(st->choices);

    memset(st, 0, sizeof(mg_gemini_stream_t));
}
