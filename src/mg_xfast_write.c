/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Tree-free request bodies: what the walk of mg_xfast_request.c read,
 * written as an Anthropic, Bedrock or Gemini request.
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


static int mg_xf_params(mg_xf_req_t *rq, int provider, double temp,
    int *first, mg_buf_t *out);
static int mg_xf_blocks(mg_xf_req_t *rq, size_t from, size_t to,
    const char *open, size_t open_len, mg_buf_t *out);


/*
 * Anthropic: system texts to "system" (one as a string, more as text
 * blocks), consecutive turns of one role merged, a lone text as a string.
 */

int
mg_xf_anthropic(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out)
{
    int     first;
    size_t  i, j, nsys, n;
    char    model[512];

    static const char  block[] = "{\"type\":\"text\",\"text\":";

    if (o->model == NULL || o->model_len == 0) {
        return MG_XF_DECLINED;
    }

    for (i = 0, n = 0; i < rq->ntexts; i++) {
        n += (rq->texts[i].role != MG_XF_SYSTEM);
    }

    if (n == 0) {
        return MG_XF_DECLINED;
    }

    n = mg_json_escape(model, sizeof(model), o->model, o->model_len);

    if (n >= sizeof(model)) {
        return MG_XF_DECLINED;
    }

    if (mg_xf_lit(out, "{\"model\":\"") != MG_X_OK
        || mg_buf_append(out, model, n) != MG_X_OK
        || mg_xf_lit(out, "\",\"max_tokens\":") != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    if (max->p) {
        if (mg_buf_append(out, max->p, max->len) != MG_X_OK) {
            return MG_X_NOMEM;
        }

    } else if (mg_buf_int(out, o->default_max_tokens) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    for (i = 0, nsys = 0; i < rq->ntexts; i++) {
        nsys += (rq->texts[i].role == MG_XF_SYSTEM);
    }

    if (nsys) {
        if (mg_xf_lit(out, ",\"system\":") != MG_X_OK) {
            return MG_X_NOMEM;
        }

        if (nsys > 1 && mg_xf_lit(out, "[") != MG_X_OK) {
            return MG_X_NOMEM;
        }

        for (i = 0, j = 0; i < rq->ntexts; i++) {
            if (rq->texts[i].role != MG_XF_SYSTEM) {
                continue;
            }

            if ((j++ && mg_xf_lit(out, ",") != MG_X_OK)
                || (nsys > 1 && mg_xf_lit(out, block) != MG_X_OK)
                || mg_buf_append(out, rq->texts[i].text.p,
                                 rq->texts[i].text.len)
                   != MG_X_OK
                || (nsys > 1 && mg_xf_lit(out, "}") != MG_X_OK))
            {
                return MG_X_NOMEM;
            }
        }

        if (nsys > 1 && mg_xf_lit(out, "]") != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    if (mg_xf_lit(out, ",\"messages\":[") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    first = 1;

    for (i = 0; i < rq->ntexts; i = j) {
        if (rq->texts[i].role == MG_XF_SYSTEM) {
            j = i + 1;
            continue;
        }

        /* the turn runs until the other role speaks */

        for (j = i + 1, n = 1; j < rq->ntexts; j++) {
            if (rq->texts[j].role == MG_XF_SYSTEM) {
                continue;
            }

            if (rq->texts[j].role != rq->texts[i].role) {
                break;
            }

            n++;
        }

        if ((!first && mg_xf_lit(out, ",") != MG_X_OK)
            || (rq->texts[i].role == MG_XF_USER
                ? mg_xf_lit(out, "{\"role\":\"user\",\"content\":")
                : mg_xf_lit(out, "{\"role\":\"assistant\",\"content\":"))
               != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 0;

        if (n == 1) {
            if (mg_buf_append(out, rq->texts[i].text.p,
                              rq->texts[i].text.len)
                != MG_X_OK)
            {
                return MG_X_NOMEM;
            }

        } else if (mg_xf_blocks(rq, i, j, block, sizeof(block) - 1, out)
                   != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        if (mg_xf_lit(out, "}") != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    if (mg_xf_lit(out, "]") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    first = 0;

    if (mg_xf_params(rq, MG_XF_ANTHROPIC, temp, &first, out) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    if (rq->m[MG_XF_STREAM].p
        && (mg_xf_lit(out, ",\"stream\":") != MG_X_OK
            || mg_buf_append(out, rq->m[MG_XF_STREAM].p,
                             rq->m[MG_XF_STREAM].len)
               != MG_X_OK))
    {
        return MG_X_NOMEM;
    }

    return mg_xf_lit(out, "}");
}


/*
 * Converse: every text a block of its own, consecutive turns of one role
 * merged; the parameters in inferenceConfig.  Gemini's body has the same
 * shape under other names: contents of parts, the model's turns "model",
 * systemInstruction, generationConfig.
 */

int
mg_xf_bedrock(const mg_xf_opts_t *o, mg_xf_req_t *rq,
    const mg_xf_tok_t *max, double temp, mg_buf_t *out)
{
    int          first, g;
    size_t       i, j, nsys, at;
    const char  *user, *model;

    static const char  block[] = "{\"text\":";

    for (i = 0, nsys = 0; i < rq->ntexts; i++) {
        nsys += (rq->texts[i].role == MG_XF_SYSTEM);
    }

    if (nsys == rq->ntexts) {
        return MG_XF_DECLINED;
    }

    g = (o->provider == MG_XF_GEMINI);

    user = g ? "{\"role\":\"user\",\"parts\":"
             : "{\"role\":\"user\",\"content\":";
    model = g ? "{\"role\":\"model\",\"parts\":"
              : "{\"role\":\"assistant\",\"content\":";

    if ((g ? mg_xf_lit(out, "{\"contents\":[")
           : mg_xf_lit(out, "{\"messages\":["))
        != MG_X_OK)
    {
        return MG_X_NOMEM;
    }

    first = 1;

    for (i = 0; i < rq->ntexts; i = j) {
        if (rq->texts[i].role == MG_XF_SYSTEM) {
            j = i + 1;
            continue;
        }

        for (j = i + 1; j < rq->ntexts; j++) {
            if (rq->texts[j].role != MG_XF_SYSTEM
                && rq->texts[j].role != rq->texts[i].role)
            {
                break;
            }
        }

        if ((!first && mg_xf_lit(out, ",") != MG_X_OK)
            || mg_buf_append(out, rq->texts[i].role == MG_XF_USER
                                  ? user : model,
                             strlen(rq->texts[i].role == MG_XF_USER
                                    ? user : model))
               != MG_X_OK
            || mg_xf_blocks(rq, i, j, block, sizeof(block) - 1, out)
               != MG_X_OK
            || mg_xf_lit(out, "}") != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 0;
    }

    if (mg_xf_lit(out, "]") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    if (nsys) {
        if ((g ? mg_xf_lit(out, ",\"systemInstruction\":{\"parts\":[")
               : mg_xf_lit(out, ",\"system\":["))
            != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        for (i = 0, j = 0; i < rq->ntexts; i++) {
            if (rq->texts[i].role != MG_XF_SYSTEM) {
                continue;
            }

            if ((j++ && mg_xf_lit(out, ",") != MG_X_OK)
                || mg_xf_lit(out, block) != MG_X_OK
                || mg_buf_append(out, rq->texts[i].text.p,
                                 rq->texts[i].text.len)
                   != MG_X_OK
                || mg_xf_lit(out, "}") != MG_X_OK)
            {
                return MG_X_NOMEM;
            }
        }

        if ((g ? mg_xf_lit(out, "]}") : mg_xf_lit(out, "]")) != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    if (max->p || o->default_max_tokens > 0
        || rq->m[MG_XF_TEMPERATURE].p || rq->m[MG_XF_TOP_P].p)
    {
        at = out->len;

        if ((g ? mg_xf_lit(out, ",\"generationConfig\":{")
               : mg_xf_lit(out, ",\"inferenceConfig\":{"))
            != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 1;

        if (max->p || o->default_max_tokens > 0) {
            if ((g ? mg_xf_lit(out, "\"maxOutputTokens\":")
                   : mg_xf_lit(out, "\"maxTokens\":"))
                != MG_X_OK)
            {
                return MG_X_NOMEM;
            }

            if (max->p) {
                if (mg_buf_append(out, max->p, max->len) != MG_X_OK) {
                    return MG_X_NOMEM;
                }

            } else if (mg_buf_int(out, o->default_max_tokens) != MG_X_OK) {
                return MG_X_NOMEM;
            }

            first = 0;
        }

        if (mg_xf_params(rq, o->provider, temp, &first, out) != MG_X_OK) {
            return MG_X_NOMEM;
        }

        if (first) {

            /* only a top_p of 1, left out: no empty inferenceConfig */

            out->len = at;

        } else if (mg_xf_lit(out, "}") != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    return mg_xf_lit(out, "}");
}


/*
 * temperature (OpenAI's 0..2 clamped to Anthropic's and Converse's 0..1,
 * Gemini's range is OpenAI's) and top_p (left out when 1, OpenAI's
 * default, but for Gemini: recent Claude models refuse both).
 */

static int
mg_xf_params(mg_xf_req_t *rq, int provider, double temp, int *first,
    mg_buf_t *out)
{
    double        top_p;
    mg_xf_tok_t  *t;

    t = &rq->m[MG_XF_TEMPERATURE];

    if (t->p) {
        if ((!*first && mg_xf_lit(out, ",") != MG_X_OK)
            || mg_xf_lit(out, "\"temperature\":") != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        *first = 0;

        if (provider != MG_XF_GEMINI && (temp < 0 || temp > 1)) {
            if (mg_buf_append(out, temp < 0 ? "0.0" : "1.0", 3) != MG_X_OK) {
                return MG_X_NOMEM;
            }

        } else if (mg_buf_append(out, t->p, t->len) != MG_X_OK) {
            return MG_X_NOMEM;
        }
    }

    t = &rq->m[MG_XF_TOP_P];

    if (t->p && mg_xf_number(t, &top_p) == MG_X_OK
        && (top_p != 1 || provider == MG_XF_GEMINI))
    {
        if ((!*first && mg_xf_lit(out, ",") != MG_X_OK)
            || (provider == MG_XF_ANTHROPIC
                ? mg_xf_lit(out, "\"top_p\":") : mg_xf_lit(out, "\"topP\":"))
               != MG_X_OK
            || mg_buf_append(out, t->p, t->len) != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        *first = 0;
    }

    return MG_X_OK;
}


/* the texts of one turn, [from, to) but for system ones, as blocks */

static int
mg_xf_blocks(mg_xf_req_t *rq, size_t from, size_t to, const char *open,
    size_t open_len, mg_buf_t *out)
{
    int     first;
    size_t  i;

    if (mg_xf_lit(out, "[") != MG_X_OK) {
        return MG_X_NOMEM;
    }

    first = 1;

    for (i = from; i < to; i++) {
        if (rq->texts[i].role == MG_XF_SYSTEM) {
            continue;
        }

        if ((!first && mg_xf_lit(out, ",") != MG_X_OK)
            || mg_buf_append(out, open, open_len) != MG_X_OK
            || mg_buf_append(out, rq->texts[i].text.p, rq->texts[i].text.len)
               != MG_X_OK
            || mg_xf_lit(out, "}") != MG_X_OK)
        {
            return MG_X_NOMEM;
        }

        first = 0;
    }

    return mg_xf_lit(out, "]");
}
