/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Tree-free translation of a text-only answer and of a Gemini stream's
 * text chunks (see mg_xfast.h).
 */


#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"
#include "mg_json.h"
#include "mg_xfast.h"
#include "mg_xfast_int.h"


/* answers */

typedef struct {
    mg_xf_tok_t    texts[16];       /* string tokens, joined */
    size_t         ntexts;
    const char    *finish;
    mg_xf_tok_t    id;              /* Anthropic's, Gemini's; prefixed */
    long long      n[6];            /* the provider's usage counts */
    unsigned       usage:1;
} mg_xf_answer_t;


static int mg_xf_answer_anthropic(mg_xf_answer_t *a, const mg_xf_tok_t *in);
static int mg_xf_answer_bedrock(mg_xf_answer_t *a, const mg_xf_tok_t *in);
static int mg_xf_answer_gemini(mg_xf_answer_t *a, const mg_xf_tok_t *in);
static int mg_xf_object(const char *p, size_t len, mg_xf_tok_t *in);
static int mg_xf_gemini_candidate(mg_xf_answer_t *a,
    const mg_xf_tok_t *cands, mg_xf_tok_t *c);
static int mg_xf_gemini_usage(const mg_xf_answer_t *a, mg_buf_t *out);
static int mg_xf_texts(mg_xf_answer_t *a, const mg_xf_tok_t *content,
    const char *type);
static int mg_xf_counts(mg_xf_answer_t *a, const mg_xf_tok_t *usage,
    const char **names, size_t n);
static const char *mg_xf_finish(const mg_xf_tok_t *reason, int provider);


int
mg_xf_answer(int provider, const char *body, size_t len, const char *model,
    size_t model_len, long created, mg_buf_t *out)
{
    int             rc;
    size_t          i, keep, n;
    mg_xf_tok_t     in;
    mg_x_usage_t    u;
    mg_xf_answer_t  a;
    char            id[48], name[512];

    if (mg_xf_object(body, len, &in) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    memset(&a, 0, sizeof(mg_xf_answer_t));

    switch (provider) {

    case MG_XF_ANTHROPIC:
        rc = mg_xf_answer_anthropic(&a, &in);
        break;

    case MG_XF_BEDROCK:
        rc = mg_xf_answer_bedrock(&a, &in);
        break;

    default: /* MG_XF_GEMINI */
        rc = mg_xf_answer_gemini(&a, &in);
    }

    if (rc != MG_X_OK) {
        return rc;
    }

    n = mg_json_escape(name, sizeof(name), model ? model : "",
                       model ? model_len : 0);
    if (n >= sizeof(name)) {
        return MG_XF_DECLINED;
    }

    keep = out->len;

    if (provider != MG_XF_BEDROCK) {
        rc = mg_buf_append(out, "{\"id\":\"chatcmpl-", 16);

        if (rc == MG_X_OK && a.id.p) {
            rc = mg_buf_append(out, a.id.p + 1, a.id.len - 2);
        }

    } else {
        mg_bedrock_make_id(id, sizeof(id), created);
        rc = mg_buf_printf(out, "{\"id\":\"%s", id);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\",\"object\":\"chat.completion\",\"created\":");
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_int(out, created);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, ",\"model\":\"");
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(out, name, n);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\",\"choices\":[{\"index\":0,\"message\":{"
                       "\"role\":\"assistant\",\"content\":\"");
    }

    for (i = 0; rc == MG_X_OK && i < a.ntexts; i++) {
        rc = mg_buf_append(out, a.texts[i].p + 1, a.texts[i].len - 2);
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\",\"refusal\":null},\"logprobs\":null,"
                       "\"finish_reason\":\"");
    }

    if (rc == MG_X_OK) {
        rc = mg_buf_append(out, a.finish, strlen(a.finish));
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "\"}]");
    }

    if (rc == MG_X_OK && a.usage && provider == MG_XF_GEMINI) {
        rc = mg_xf_gemini_usage(&a, out);

    } else if (rc == MG_X_OK && a.usage) {
        if (provider == MG_XF_ANTHROPIC) {
            mg_anthropic_usage(a.n[0], a.n[1], a.n[2], a.n[3], &u);

        } else {
            mg_bedrock_usage(a.n[0], a.n[1], a.n[2], a.n[3], a.n[4], &u);
        }

        rc = mg_xf_lit(out, ",\"usage\":");

        if (rc == MG_X_OK) {
            rc = mg_x_usage_print(out, &u);
        }
    }

    if (rc == MG_X_OK) {
        rc = mg_xf_lit(out, "}");
    }

    if (rc != MG_X_OK) {
        out->len = keep;
    }

    return rc;
}


/*
 * The valid JSON object [p, p + len) into in, whitespace skipped; declined
 * when it is not one, or when jansson would refuse a member not looked at.
 */

static int
mg_xf_object(const char *p, size_t len, mg_xf_tok_t *in)
{
    if (p == NULL || mg_json_scan(p, len, NULL, 0, 64, NULL) != MG_JSON_OK) {
        return MG_XF_DECLINED;
    }

    in->p = mg_xf_ws(p, p + len);
    in->len = p + len - in->p;

    return (*in->p == '{' && mg_xf_parsable(in->p, in->len))
           ? MG_X_OK : MG_XF_DECLINED;
}


/*
 * {"id":..,"type":"message","content":[{"type":"text","text":..}..],
 * "stop_reason":..,"usage":{..}}; other members are not looked at.
 */

static int
mg_xf_answer_anthropic(mg_xf_answer_t *a, const mg_xf_tok_t *in)
{
    mg_xf_tok_t  m[5];

    static const char  *names[] = {
        "type", "content", "id", "stop_reason", "usage"
    };

    static const char  *counts[] = {
        "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens"
    };

    if (mg_xf_pick(in, names, 5, 0, m, NULL) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    /* an error, or a type written with escapes */

    if (m[0].p && m[0].p[0] == '"'
        && (mg_xf_is(&m[0], "\"error\"") || memchr(m[0].p, '\\', m[0].len)))
    {
        return MG_XF_DECLINED;
    }

    if (m[1].p == NULL || m[1].p[0] != '['
        || m[2].p == NULL || m[2].p[0] != '"')
    {
        return MG_XF_DECLINED;
    }

    a->id = m[2];

    if (mg_xf_texts(a, &m[1], "\"text\"") != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    a->finish = mg_xf_finish(&m[3], MG_XF_ANTHROPIC);

    if (a->finish == NULL) {
        return MG_XF_DECLINED;
    }

    a->n[2] = 0;

    return mg_xf_counts(a, &m[4], counts, 4);
}


/*
 * {"output":{"message":{"role":..,"content":[{"text":..}..]}},
 * "stopReason":..,"usage":{..}}.
 */

static int
mg_xf_answer_bedrock(mg_xf_answer_t *a, const mg_xf_tok_t *in)
{
    mg_xf_tok_t   key, v, m[3], msg, content;
    mg_xf_iter_t  it;

    static const char  *names[] = {
        "output", "stopReason", "usage"
    };

    static const char  *counts[] = {
        "inputTokens", "outputTokens", "totalTokens",
        "cacheReadInputTokens", "cacheWriteInputTokens"
    };

    if (mg_xf_pick(in, names, 3, 0, m, NULL) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    if (m[0].p == NULL || m[0].p[0] != '{') {
        return MG_XF_DECLINED;
    }

    /* output holds only the message, the message a role and content */

    msg.p = NULL;
    mg_xf_open(&it, &m[0]);

    while (mg_xf_next(&it, &key, &v)) {
        if (key.len != 7 || memcmp(key.p, "message", 7) != 0 || msg.p) {
            return MG_XF_DECLINED;
        }

        msg = v;
    }

    if (msg.p == NULL || msg.p[0] != '{') {
        return MG_XF_DECLINED;
    }

    content.p = NULL;
    mg_xf_open(&it, &msg);

    while (mg_xf_next(&it, &key, &v)) {
        if (key.len == 7 && memcmp(key.p, "content", 7) == 0
            && content.p == NULL)
        {
            content = v;

        } else if (!(key.len == 4 && memcmp(key.p, "role", 4) == 0)) {
            return MG_XF_DECLINED;
        }
    }

    if (content.p == NULL || content.p[0] != '['
        || mg_xf_texts(a, &content, NULL) != MG_X_OK)
    {
        return MG_XF_DECLINED;
    }

    a->finish = mg_xf_finish(&m[1], MG_XF_BEDROCK);

    if (a->finish == NULL) {
        return MG_XF_DECLINED;
    }

    a->n[2] = -1;

    return mg_xf_counts(a, &m[2], counts, 5);
}


/*
 * {"candidates":[{"content":{"parts":[{"text":..}..],..},"finishReason":..,
 * ..}],"usageMetadata":{..},"responseId":..}: one candidate whose parts are
 * texts only (no thoughts, no calls), not all empty; an "error" member, a
 * blocked prompt (no candidate) or anything else is declined.
 */

static int
mg_xf_answer_gemini(mg_xf_answer_t *a, const mg_xf_tok_t *in)
{
    size_t        i, n;
    char          reason[64];
    mg_xf_tok_t   m[4], c[2];

    static const char  *names[] = {
        "candidates", "usageMetadata", "responseId", "error"
    };

    static const char  *counts[] = {
        "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
        "toolUsePromptTokenCount", "cachedContentTokenCount",
        "totalTokenCount"
    };

    if (mg_xf_pick(in, names, 4, 0, m, NULL) != MG_X_OK
        || m[3].p != NULL
        || (m[2].p && m[2].p[0] != '"')
        || mg_xf_gemini_candidate(a, &m[0], c) != MG_X_OK)
    {
        return MG_XF_DECLINED;
    }

    /* no text at all: the tree tells an empty answer from a failed one */

    for (i = 0, n = 0; i < a->ntexts; i++) {
        n += a->texts[i].len - 2;
    }

    if (n == 0) {
        return MG_XF_DECLINED;
    }

    if (c[0].p && c[0].p[0] == '"') {
        if (c[0].len - 2 >= sizeof(reason)
            || memchr(c[0].p, '\\', c[0].len))
        {
            return MG_XF_DECLINED;
        }

        memcpy(reason, c[0].p + 1, c[0].len - 2);
        reason[c[0].len - 2] = '\0';

        a->finish = mg_gemini_finish(reason, 0);

    } else {
        a->finish = mg_gemini_finish(NULL, 0);
    }

    a->id = m[2];
    a->n[5] = -1;

    return mg_xf_counts(a, &m[1], counts, 6);
}


/*
 * Gemini's candidates array holding one candidate whose content's parts are
 * texts only (at most 16): the texts into a, its finishReason and index
 * tokens into c[0] and c[1] (p NULL: absent).
 */

static int
mg_xf_gemini_candidate(mg_xf_answer_t *a, const mg_xf_tok_t *cands,
    mg_xf_tok_t *c)
{
    mg_xf_tok_t   m[3], parts, cand, more;
    mg_xf_iter_t  it;

    static const char  *cnames[] = { "content", "finishReason", "index" };
    static const char  *pnames[] = { "parts" };

    if (cands->p == NULL || cands->p[0] != '[') {
        return MG_XF_DECLINED;
    }

    mg_xf_open(&it, cands);

    if (!mg_xf_elem(&it, &cand) || cand.p[0] != '{'
        || mg_xf_elem(&it, &more)
        || mg_xf_pick(&cand, cnames, 3, 0, m, NULL) != MG_X_OK
        || m[0].p == NULL || m[0].p[0] != '{'
        || mg_xf_pick(&m[0], pnames, 1, 0, &parts, NULL) != MG_X_OK
        || parts.p == NULL || parts.p[0] != '['
        || mg_xf_texts(a, &parts, NULL) != MG_X_OK)
    {
        return MG_XF_DECLINED;
    }

    c[0] = m[1];
    c[1] = m[2];

    return MG_X_OK;
}


/*
 * Gemini's usage as the tree writes it: thoughts are output billed apart
 * from candidatesTokenCount, a tool-use prompt is input; the total is the
 * one given, or the sum.
 */

static int
mg_xf_gemini_usage(const mg_xf_answer_t *a, mg_buf_t *out)
{
    long long  in, o;

    in = a->n[0] + a->n[3];
    o = a->n[1] + a->n[2];

    if (mg_xf_lit(out, ",\"usage\":{\"prompt_tokens\":") != MG_X_OK
        || mg_buf_int(out, in) != MG_X_OK
        || mg_xf_lit(out, ",\"completion_tokens\":") != MG_X_OK
        || mg_buf_int(out, o) != MG_X_OK
        || mg_xf_lit(out, ",\"total_tokens\":") != MG_X_OK
        || mg_buf_int(out, a->n[5] < 0 ? in + o : a->n[5]) != MG_X_OK
        || mg_xf_lit(out, ",\"prompt_tokens_details\":{\"cached_tokens\":")
           != MG_X_OK
        || mg_buf_int(out, a->n[4]) != MG_X_OK
        || mg_xf_lit(out, "},\"completion_tokens_details\":"
                     "{\"reasoning_tokens\":") != MG_X_OK
        || mg_buf_int(out, a->n[2]) != MG_X_OK
        || mg_xf_lit(out, "}}") != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    return MG_X_OK;
}


/*
 * A Gemini stream chunk in the middle of a text answer: one candidate (index
 * 0 or none) of text parts, no finishReason, no error, no prompt feedback.
 * Its text goes out as one content delta, as mg_gemini_stream_event() would
 * send it; usageMetadata counts update n[6] as mg_x_tokens() reads them.
 */

int
mg_xf_gemini_chunk(const char *data, size_t len, const char *prefix,
    size_t prefix_len, long long *n, int *sent, mg_buf_t *out)
{
    int             rc;
    size_t          i, k, total;
    mg_buf_t        joined;
    mg_xf_tok_t     in, m[4], c[2];
    mg_xf_answer_t  a;

    static const char  *names[] = {
        "candidates", "usageMetadata", "promptFeedback", "error"
    };

    static const char  *counts[] = {
        "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
        "toolUsePromptTokenCount", "cachedContentTokenCount",
        "totalTokenCount"
    };

    *sent = 0;

    if (mg_xf_object(data, len, &in) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    memset(&a, 0, sizeof(mg_xf_answer_t));

    if (mg_xf_pick(&in, names, 4, 0, m, NULL) != MG_X_OK
        || m[2].p != NULL || m[3].p != NULL
        || mg_xf_gemini_candidate(&a, &m[0], c) != MG_X_OK
        || c[0].p != NULL
        || (c[1].p != NULL && !mg_xf_is(&c[1], "0")))
    {
        return MG_XF_DECLINED;
    }

    for (k = 0; k < 6; k++) {
        a.n[k] = n[k];
    }

    if (mg_xf_counts(&a, &m[1], counts, 6) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    for (i = 0, total = 0; i < a.ntexts; i++) {
        total += a.texts[i].len - 2;
    }

    rc = MG_X_OK;

    if (total) {

        /* the parts' texts as one string token, as the client gets it */

        memset(&joined, 0, sizeof(mg_buf_t));
        rc = mg_buf_reserve(&joined, total + 2);

        if (rc == MG_X_OK) {
            joined.data[joined.len++] = '"';

            for (i = 0; i < a.ntexts; i++) {
                memcpy(joined.data + joined.len, a.texts[i].p + 1,
                       a.texts[i].len - 2);
                joined.len += a.texts[i].len - 2;
            }

            joined.data[joined.len++] = '"';

            rc = mg_x_chunk_content(out, prefix, prefix_len, joined.data,
                                    joined.len);
        }

        mg_buf_free(&joined);

        if (rc != MG_X_OK) {
            return MG_X_NOMEM;
        }

        *sent = 1;
    }

    for (k = 0; k < 6; k++) {
        n[k] = a.n[k];
    }

    return MG_X_OK;
}


/*
 * Content blocks that are text only: {"type":"text","text":..} (type
 * given) or {"text":..}, at most 16.
 */

static int
mg_xf_texts(mg_xf_answer_t *a, const mg_xf_tok_t *content, const char *type)
{
    int           typed;
    mg_xf_tok_t   b, key, v, text;
    mg_xf_iter_t  it, bit;

    mg_xf_open(&it, content);

    while (mg_xf_elem(&it, &b)) {
        if (b.p[0] != '{' || a->ntexts == 16) {
            return MG_XF_DECLINED;
        }

        typed = 0;
        text.p = NULL;
        mg_xf_open(&bit, &b);

        while (mg_xf_next(&bit, &key, &v)) {
            if (key.len == 4 && memcmp(key.p, "text", 4) == 0
                && text.p == NULL && v.p[0] == '"')
            {
                text = v;

            } else if (type && key.len == 4 && memcmp(key.p, "type", 4) == 0
                       && !typed && mg_xf_is(&v, type))
            {
                typed = 1;

            } else {
                return MG_XF_DECLINED;
            }
        }

        if (text.p == NULL || (type && !typed)) {
            return MG_XF_DECLINED;
        }

        a->texts[a->ntexts++] = text;
    }

    return MG_X_OK;
}


/*
 * The usage counts, as mg_x_tokens() reads them: an integer, clamped to
 * 0..MG_X_TOKENS_MAX; anything else is the default already in a->n.
 */

static int
mg_xf_counts(mg_xf_answer_t *a, const mg_xf_tok_t *usage, const char **names,
    size_t n)
{
    size_t        k, i;
    long long     v;
    mg_xf_tok_t   m[6], *t;

    if (usage->p == NULL || usage->p[0] != '{') {

        /* not an object: the translators leave usage out */
        return MG_X_OK;
    }

    if (mg_xf_pick(usage, names, n, 0, m, NULL) != MG_X_OK) {
        return MG_XF_DECLINED;
    }

    a->usage = 1;

    for (k = 0; k < n; k++) {
        t = &m[k];

        if (t->p == NULL
            || (t->p[0] != '-' && (t->p[0] < '0' || t->p[0] > '9'))
            || memchr(t->p, '.', t->len) || memchr(t->p, 'e', t->len)
            || memchr(t->p, 'E', t->len))
        {
            continue;
        }

        if (t->len > 18) {
            return MG_XF_DECLINED;
        }

        v = 0;

        for (i = (t->p[0] == '-'); i < t->len; i++) {
            v = v * 10 + (t->p[i] - '0');
        }

        a->n[k] = (t->p[0] == '-') ? 0
                  : (v > MG_X_TOKENS_MAX ? MG_X_TOKENS_MAX : v);
    }

    return MG_X_OK;
}


/* stop_reason or stopReason; NULL: declined (malformed output, escapes) */

static const char *
mg_xf_finish(const mg_xf_tok_t *reason, int provider)
{
    if (reason->p == NULL || reason->p[0] != '"') {
        return "stop";
    }

    if (memchr(reason->p, '\\', reason->len)) {
        return NULL;
    }

    if (mg_xf_is(reason, "\"tool_use\"")) {
        return "tool_calls";
    }

    if (mg_xf_is(reason, "\"max_tokens\"")
        || mg_xf_is(reason, "\"model_context_window_exceeded\""))
    {
        return "length";
    }

    if (provider == MG_XF_ANTHROPIC) {
        return mg_xf_is(reason, "\"refusal\"") ? "content_filter" : "stop";
    }

    if (mg_xf_is(reason, "\"guardrail_intervened\"")
        || mg_xf_is(reason, "\"content_filtered\""))
    {
        return "content_filter";
    }

    if (mg_xf_is(reason, "\"malformed_model_output\"")
        || mg_xf_is(reason, "\"malformed_tool_use\""))
    {
        return NULL;
    }

    return "stop";
}
