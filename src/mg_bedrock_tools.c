/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI tools, tool calls and their ids -> Converse toolConfig,
 * toolUse and toolResult blocks.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "mg_bedrock.h"
#include "mg_bedrock_int.h"
#include "mg_json.h"
#include "mg_xfast.h"
#include "mg_xrequest.h"


static int mg_b_req_tool_choice(json_t *in, size_t ntools, json_t **choice,
    int *none, mg_xerror_t *err);


/*
 * Bedrock's tool use ids must match [a-zA-Z0-9_-]{1,64}; other clients and
 * models make ids such as "functions.get_weather:0", or longer ones.  Other
 * characters become '_'; a long id keeps 47 characters and gets '_' and
 * 16 hex digits of a hash of the whole.  A call and its result go through
 * the same mapping, so they still pair.  A new reference.
 */

json_t *
mg_b_tool_id(json_t *id)
{
    char                  buf[MG_B_TOOL_ID_MAX + 1];
    size_t                i, n;
    uint64_t              h;
    const char           *s;
    const unsigned char  *u;

    s = json_string_value(id);
    n = json_string_length(id);

    for (i = 0; i < n; i++) {
        if (!mg_x_id_char(s[i])) {
            break;
        }
    }

    if (i == n && n <= MG_B_TOOL_ID_MAX) {
        return json_incref(id);
    }

    if (n <= MG_B_TOOL_ID_MAX) {
        for (i = 0; i < n; i++) {
            buf[i] = mg_x_id_char(s[i]) ? s[i] : '_';
        }

        return json_stringn(buf, n);
    }

    /* FNV-1a */

    h = 0xcbf29ce484222325ULL;
    u = (const unsigned char *) s;

    for (i = 0; i < n; i++) {
        h = (h ^ u[i]) * 0x100000001b3ULL;
    }

    for (i = 0; i < 47; i++) {
        buf[i] = mg_x_id_char(s[i]) ? s[i] : '_';
    }

    (void) snprintf(buf + 47, sizeof(buf) - 47, "_%016llx",
                    (unsigned long long) h);

    return json_stringn(buf, MG_B_TOOL_ID_MAX);
}


/* the names of the tools the conversation called, each once */

int
mg_b_add_name(mg_b_req_t *ctx, json_t *name)
{
    size_t   i;
    json_t  *v;

    json_array_foreach(ctx->names, i, v) {
        if (json_equal(v, name)) {
            return MG_X_OK;
        }
    }

    return json_array_append(ctx->names, name) == 0 ? MG_X_OK : MG_X_NOMEM;
}


/*
 * Claude, behind Converse, wants a user turn's tool results before
 * anything else in it; a user message merged into the results (or sent
 * between a call and its result) would put text first.  The order among
 * results is kept.
 */

int
mg_b_results_first(json_t *blocks)
{
    int      rc;
    size_t   i;
    json_t  *sorted, *b;

    sorted = json_array();
    if (sorted == NULL) {
        return MG_X_NOMEM;
    }

    rc = MG_X_OK;

    json_array_foreach(blocks, i, b) {
        if (json_object_get(b, "toolResult")
            && json_array_append(sorted, b) != 0)
        {
            rc = MG_X_NOMEM;
        }
    }

    json_array_foreach(blocks, i, b) {
        if (json_object_get(b, "toolResult") == NULL
            && json_array_append(sorted, b) != 0)
        {
            rc = MG_X_NOMEM;
        }
    }

    if (rc == MG_X_OK
        && (json_array_clear(blocks) != 0
            || json_array_extend(blocks, sorted) != 0))
    {
        rc = MG_X_NOMEM;
    }

    json_decref(sorted);

    return rc;
}


/*
 * tools -> toolConfig.tools[].toolSpec.  Converse's toolChoice has no
 * "none": tool_choice "none" sends no toolConfig, but Bedrock refuses a
 * conversation with toolUse or toolResult blocks and no toolConfig
 * (protocols.md 5.2), so then the tools are listed without a toolChoice
 * (the model may still call one: that cannot be forbidden), and a request
 * without tools lists the tools its history called, with empty schemas.
 */

int
mg_b_req_tools(json_t *in, json_t *req, mg_b_req_t *ctx, mg_xerror_t *err)
{
    int          rc, none;
    size_t       i;
    json_t      *tools, *specs, *t, *name, *desc, *params, *schema;
    json_t      *b, *v, *choice, *tc;

    tools = mg_x_get(in, "tools");

    if (tools && !json_is_array(tools)) {
        return mg_x_bad(err, "tools", "tools must be an array.");
    }

    specs = json_array();
    if (specs == NULL) {
        return MG_X_NOMEM;
    }

    b = NULL;
    schema = NULL;
    choice = NULL;
    tc = NULL;

    json_array_foreach(tools, i, t) {
        rc = mg_x_tool_def(t, i, &name, &desc, &params, &v, err);
        if (rc != MG_X_OK) {
            goto done;
        }

        /* the schema's top-level type must be "object"; {} means "no
         * arguments".  strict has no Converse counterpart: the schema
         * still goes, and the model is asked to follow it */

        if (params == NULL) {
            schema = json_pack("{s:s,s:{}}", "type", "object",
                               "properties");

        } else if (json_object_get(params, "type") == NULL) {
            schema = json_copy(params);

            if (schema
                && mg_x_set(schema, "type", json_string("object"))
                   != MG_X_OK)
            {
                json_decref(schema);
                schema = NULL;
            }

        } else {
            schema = json_incref(params);
        }

        /* an empty description is refused: it is the same as none */

        if (desc && json_string_length(desc) == 0) {
            desc = NULL;
        }

        b = schema ? json_pack("{s:{s:O,s:{s:O}}}", "toolSpec", "name", name,
                               "inputSchema", "json", schema)
                   : NULL;

        if (b == NULL
            || (desc
                && json_object_set(json_object_get(b, "toolSpec"),
                                   "description", desc) != 0)
            || json_array_append(specs, b) != 0)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

        json_decref(schema);
        json_decref(b);
        schema = NULL;
        b = NULL;
    }

    rc = mg_b_req_tool_choice(in, json_array_size(specs), &choice, &none,
                              err);
    if (rc != MG_X_OK) {
        goto done;
    }

    if (json_array_size(specs) == 0 && ctx->tool_blocks) {
        json_array_foreach(ctx->names, i, name) {
            b = json_pack("{s:{s:O,s:{s:{s:s,s:{}}}}}", "toolSpec", "name",
                          name, "inputSchema", "json", "type", "object",
                          "properties");

            if (b == NULL || json_array_append_new(specs, b) != 0) {
                b = NULL;
                rc = MG_X_NOMEM;
                goto done;
            }

            b = NULL;
        }
    }

    if (json_array_size(specs) == 0 || (none && !ctx->tool_blocks)) {
        rc = MG_X_OK;
        goto done;
    }

    tc = json_pack("{s:O}", "tools", specs);

    if (tc == NULL
        || (choice && !none && json_object_set(tc, "toolChoice", choice)
                               != 0))
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = json_object_set(req, "toolConfig", tc) == 0 ? MG_X_OK : MG_X_NOMEM;

done:

    json_decref(tc);
    json_decref(choice);
    json_decref(schema);
    json_decref(b);
    json_decref(specs);

    return rc;
}


/* *choice: the toolChoice to send (NULL: none); *none: "none" was asked */

static int
mg_b_req_tool_choice(json_t *in, size_t ntools, json_t **choice, int *none,
    mg_xerror_t *err)
{
    int            rc;
    json_t        *ptc;
    mg_x_choice_t  c;

    *choice = NULL;
    *none = 0;

    rc = mg_x_tool_choice(in, ntools, &c, err);
    if (rc != MG_X_OK) {
        return rc;
    }

    ptc = c.parallel;

    switch (c.kind) {

    case MG_X_CHOICE_AUTO:
        *choice = json_pack("{s:{}}", "auto");
        break;

    case MG_X_CHOICE_REQUIRED:
        *choice = json_pack("{s:{}}", "any");
        break;

    case MG_X_CHOICE_NONE:
        *none = 1;
        return MG_X_OK;

    case MG_X_CHOICE_NAMED:
        *choice = json_pack("{s:{s:O}}", "tool", "name", c.name);
        break;

    default:
        break;
    }

    if (c.kind != MG_X_CHOICE_UNSET && *choice == NULL) {
        return MG_X_NOMEM;
    }

    /* Converse cannot keep a model to one call at a time */

    if (json_is_false(ptc) && ntools) {
        json_decref(*choice);
        *choice = NULL;

        return mg_x_bad(err, "parallel_tool_calls", "parallel_tool_calls "
                        "false is not supported by this model's backend.");
    }

    return MG_X_OK;
}
