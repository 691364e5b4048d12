/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * OpenAI function tools -> Gemini function declarations, with their
 * JSON schemas rewritten into the OpenAPI subset Gemini takes.
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


/*
 * A tool's parameters are rewritten into the OpenAPI subset Gemini takes;
 * $refs are expanded in place, so that a small schema could grow without
 * bound: these cap the nodes written, the $refs followed one inside
 * another (a recursive schema has no finite expansion) and the nesting.
 */
#define MG_G_SCHEMA_NODES  4096
#define MG_G_SCHEMA_REFS   16
#define MG_G_SCHEMA_DEPTH  64


typedef struct {
    json_t      *root;          /* where "#/$defs/..." is looked up */
    size_t       nodes;         /* left to write */
    mg_g_req_t  *req;           /* its copies are charged */
    unsigned     refs;          /* $refs being expanded */
    unsigned     depth;
    unsigned     over:1;        /* the copies' budget ran out */
    const char  *why;           /* what was wrong, for the 400 */
} mg_g_schema_t;


static int mg_g_req_tool_choice(json_t *in, json_t *req, size_t ntools,
    mg_xerror_t *err);
static int mg_g_schema(mg_g_schema_t *sc, json_t *in, json_t **out);
static int mg_g_schema_ref(mg_g_schema_t *sc, json_t *in, const char *ref,
    json_t **out);
static int mg_g_schema_keys(mg_g_schema_t *sc, json_t *in, json_t *o);
static int mg_g_schema_charge(mg_g_schema_t *sc, const char *key,
    json_t *v);
static int mg_g_schema_put(mg_g_schema_t *sc, json_t *o, const char *key,
    json_t *v);
static int mg_g_schema_count(mg_g_schema_t *sc, size_t n);
static int mg_g_schema_type(json_t *v, json_t *o, int *nullable);
static int mg_g_schema_props(mg_g_schema_t *sc, json_t *v, json_t *o);
static int mg_g_schema_any(mg_g_schema_t *sc, json_t *v, json_t *o,
    int *nullable);
static int mg_g_schema_all(mg_g_schema_t *sc, json_t *v, json_t *o);
static int mg_g_schema_enum(json_t *v, json_t *o, int *nullable);
static int mg_g_schema_strings(json_t *v, json_t *o, const char *key);
static int mg_g_merge(json_t *o, json_t *s);


/*
 * OpenAI function tools -> one Gemini tool with the function declarations.
 * strict has no counterpart (Gemini validates the arguments it writes
 * against the declaration anyway) and is dropped.
 */

int
mg_g_req_tools(mg_g_req_t *rq, json_t *in, json_t *req, mg_xerror_t *err)
{
    int             rc;
    size_t          i;
    json_t         *tools, *decls, *t, *name, *desc, *params, *schema;
    json_t         *d, *v;
    mg_g_schema_t   sc;

    tools = mg_x_get(in, "tools");

    if (tools == NULL) {
        return mg_g_req_tool_choice(in, req, 0, err);
    }

    if (!json_is_array(tools)) {
        return mg_x_bad(err, "tools", "tools must be an array.");
    }

    decls = json_array();
    if (decls == NULL) {
        return MG_X_NOMEM;
    }

    d = NULL;
    schema = NULL;

    json_array_foreach(tools, i, t) {
        rc = mg_x_tool_def(t, i, &name, &desc, &params, &v, err);
        if (rc != MG_X_OK) {
            goto done;
        }

        if (params) {
            sc.root = params;
            sc.nodes = MG_G_SCHEMA_NODES;
            sc.req = rq;
            sc.refs = 0;
            sc.depth = 0;
            sc.over = 0;
            sc.why = NULL;

            rc = mg_g_schema(&sc, params, &schema);

            if (rc == MG_X_ERROR && sc.over && rq->bound) {
                rc = mg_x_too_large(err, "gemini", rq->max);
                goto done;
            }

            if (rc == MG_X_ERROR) {
                rc = mg_x_bad(err, "tools", "tools[%zu].function.parameters "
                              "%s.", i, sc.why);
                goto done;
            }

            if (rc != MG_X_OK) {
                goto done;
            }

            /* no arguments: Gemini refuses an object without properties */

            if (json_object_get(schema, "properties") == NULL
                && json_object_get(schema, "anyOf") == NULL)
            {
                json_decref(schema);
                schema = NULL;
            }
        }

        d = json_object();

        if (d == NULL
            || json_object_set(d, "name", name) != 0
            || (desc && json_object_set(d, "description", desc) != 0)
            || (schema && json_object_set(d, "parameters", schema) != 0)
            || json_array_append(decls, d) != 0)
        {
            rc = MG_X_NOMEM;
            goto done;
        }

        json_decref(schema);
        json_decref(d);
        schema = NULL;
        d = NULL;
    }

    if (json_array_size(decls)
        && mg_x_set(req, "tools",
                    json_pack("[{s:O}]", "functionDeclarations", decls))
           != MG_X_OK)
    {
        rc = MG_X_NOMEM;
        goto done;
    }

    rc = mg_g_req_tool_choice(in, req, json_array_size(decls), err);

done:

    json_decref(schema);
    json_decref(d);
    json_decref(decls);

    return rc;
}


/*
 * auto, none, required and a named function -> functionCallingConfig
 * AUTO, NONE, ANY, and ANY limited to that function.  Gemini has no
 * switch for parallel calls: parallel_tool_calls is checked and dropped.
 */

static int
mg_g_req_tool_choice(json_t *in, json_t *req, size_t ntools,
    mg_xerror_t *err)
{
    int             rc;
    json_t         *fcc, *name;
    const char     *mode;
    mg_x_choice_t   c;

    static const char  *modes[] = { NULL, "AUTO", "ANY", "NONE", "ANY" };

    rc = mg_x_tool_choice(in, ntools, &c, err);

    /* without tools there is nothing to choose from */

    if (rc != MG_X_OK || ntools == 0 || c.kind == MG_X_CHOICE_UNSET) {
        return rc;
    }

    mode = modes[c.kind];
    name = c.name;

    fcc = json_pack("{s:s}", "mode", mode);

    if (fcc == NULL
        || (name && mg_x_set(fcc, "allowedFunctionNames",
                             json_pack("[O]", name))
                    != MG_X_OK))
    {
        json_decref(fcc);
        return MG_X_NOMEM;
    }

    return mg_x_set(req, "toolConfig",
                    json_pack("{s:o}", "functionCallingConfig", fcc));
}


/*
 * A JSON Schema -> the OpenAPI 3.0 subset of Gemini's Schema: what it
 * would refuse as unknown ($schema, additionalProperties, ...) goes,
 * type ["x", "null"] and anyOf [x, {"type": "null"}] become x with
 * nullable, const a one-value enum, $ref the schema it points to.  *out
 * is a new object.  MG_X_ERROR: sc->why says what cannot be sent.
 */

static int
mg_g_schema(mg_g_schema_t *sc, json_t *in, json_t **out)
{
    int          rc;
    json_t      *o;
    const char  *ref;

    *out = NULL;

    if (sc->nodes == 0) {
        sc->why = "are too large once their $refs are expanded";
        return MG_X_ERROR;
    }

    if (sc->depth >= MG_G_SCHEMA_DEPTH) {
        sc->why = "nest too deeply";
        return MG_X_ERROR;
    }

    sc->nodes--;

    if (mg_g_schema_charge(sc, NULL, NULL) != MG_X_OK) {
        return MG_X_ERROR;
    }

    if (json_is_boolean(in)) {
        /* true (anything) or false: nothing a model can be told */
        *out = json_object();
        return *out ? MG_X_OK : MG_X_NOMEM;
    }

    if (!json_is_object(in)) {
        sc->why = "hold a schema that is not an object";
        return MG_X_ERROR;
    }

    ref = json_string_value(json_object_get(in, "$ref"));

    if (ref) {
        return mg_g_schema_ref(sc, in, ref, out);
    }

    o = json_object();
    if (o == NULL) {
        return MG_X_NOMEM;
    }

    sc->depth++;
    rc = mg_g_schema_keys(sc, in, o);
    sc->depth--;

    if (rc != MG_X_OK) {
        json_decref(o);
        return rc;
    }

    *out = o;

    return MG_X_OK;
}


/* "#", "#/$defs/NAME" and "#/definitions/NAME", expanded in place; a
 * description or title beside the $ref overrides the target's */

static int
mg_g_schema_ref(mg_g_schema_t *sc, json_t *in, const char *ref,
    json_t **out)
{
    int          rc;
    size_t       k;
    json_t      *target, *v;
    const char  *key;

    static const char  *keep[] = { "description", "title" };

    if (strcmp(ref, "#") == 0) {
        target = sc->root;

    } else if (strncmp(ref, "#/$defs/", 8) == 0) {
        target = json_object_get(json_object_get(sc->root, "$defs"),
                                 ref + 8);

    } else if (strncmp(ref, "#/definitions/", 14) == 0) {
        target = json_object_get(json_object_get(sc->root, "definitions"),
                                 ref + 14);

    } else {
        target = NULL;
    }

    if (target == NULL) {
        sc->why = "hold a $ref that cannot be resolved (only \"#/$defs/...\""
                  " and \"#/definitions/...\" can)";
        return MG_X_ERROR;
    }

    if (sc->refs >= MG_G_SCHEMA_REFS) {
        sc->why = "nest $refs too deeply (a recursive schema cannot be sent "
                  "to this model's backend)";
        return MG_X_ERROR;
    }

    sc->refs++;
    sc->depth++;

    rc = mg_g_schema(sc, target, out);

    sc->refs--;
    sc->depth--;

    if (rc != MG_X_OK) {
        return rc;
    }

    for (k = 0; k < sizeof(keep) / sizeof(keep[0]); k++) {
        key = keep[k];
        v = json_object_get(in, key);

        if (json_is_string(v)) {
            rc = mg_g_schema_put(sc, *out, key, v);

            if (rc != MG_X_OK) {
                json_decref(*out);
                *out = NULL;
                return rc;
            }
        }
    }

    return MG_X_OK;
}


static int
mg_g_schema_keys(mg_g_schema_t *sc, json_t *in, json_t *o)
{
    int          rc, nullable;
    size_t       k;
    json_t      *v, *s;
    const char  *key, *fmt;

    static const char  *strings[] = { "title", "description", "pattern" };
    static const char  *numbers[] = { "minimum", "maximum" };
    static const char  *counts[] = {
        "minItems", "maxItems", "minLength", "maxLength", "minProperties",
        "maxProperties"
    };
    static const char  *formats[] = {
        "enum", "date-time", "int32", "int64", "float", "double"
    };

    nullable = 0;

    json_object_foreach(in, key, v) {
        rc = MG_X_OK;

        if (strcmp(key, "type") == 0) {

            /* a list of types may become anyOf [{"type": ...}, ...] */

            rc = mg_g_schema_charge(sc, key, v);

            if (rc == MG_X_OK && json_is_array(v)) {
                rc = mg_g_schema_count(sc, sizeof("\"anyOf\":[]")
                                       + json_array_size(v)
                                         * sizeof("{\"type\":},"));
            }

            if (rc == MG_X_OK) {
                rc = mg_g_schema_type(v, o, &nullable);
            }

        } else if (strcmp(key, "properties") == 0) {
            rc = mg_g_schema_charge(sc, key, NULL);

            if (rc == MG_X_OK) {
                rc = mg_g_schema_props(sc, v, o);
            }

        } else if (strcmp(key, "items") == 0) {

            /* a tuple's list of item schemas has no counterpart: its
             * first one stands for all (Gemini wants items for arrays) */

            if (json_is_array(v)) {
                v = json_array_get(v, 0);
            }

            if (json_is_object(v) || json_is_boolean(v)) {
                rc = mg_g_schema_charge(sc, key, NULL);

                if (rc == MG_X_OK) {
                    rc = mg_g_schema(sc, v, &s);
                }

                if (rc == MG_X_OK) {
                    rc = mg_x_set(o, "items", s);
                }
            }

        } else if (strcmp(key, "anyOf") == 0 || strcmp(key, "oneOf") == 0) {
            rc = mg_g_schema_any(sc, v, o, &nullable);

        } else if (strcmp(key, "allOf") == 0) {
            rc = mg_g_schema_all(sc, v, o);

        } else if (strcmp(key, "enum") == 0) {

            /* what is kept of the list is charged as the whole list */

            rc = mg_g_schema_charge(sc, key, v);

            if (rc == MG_X_OK) {
                rc = mg_g_schema_enum(v, o, &nullable);
            }

        } else if (strcmp(key, "const") == 0) {
            if (json_is_string(v)) {
                rc = mg_g_schema_charge(sc, "enum[]", v);

                if (rc == MG_X_OK) {
                    rc = mg_x_set(o, "enum", json_pack("[O]", v));
                }
            }

        } else if (strcmp(key, "format") == 0) {

            /* Gemini refuses the other formats (email, uri, ...) */

            fmt = json_string_value(v);

            for (k = 0; fmt && k < sizeof(formats) / sizeof(formats[0]);
                 k++)
            {
                if (strcmp(fmt, formats[k]) == 0) {
                    rc = mg_g_schema_put(sc, o, key, v);
                    break;
                }
            }

        } else if (strcmp(key, "required") == 0
                   || strcmp(key, "propertyOrdering") == 0)
        {
            rc = mg_g_schema_charge(sc, key, v);

            if (rc == MG_X_OK) {
                rc = mg_g_schema_strings(v, o, key);
            }

        } else if (strcmp(key, "default") == 0
                   || strcmp(key, "example") == 0)
        {
            rc = mg_g_schema_put(sc, o, key, v);

        } else if (strcmp(key, "nullable") == 0) {
            nullable |= json_is_true(v);

        } else {
            for (k = 0; k < sizeof(strings) / sizeof(strings[0]); k++) {
                if (strcmp(key, strings[k]) == 0 && json_is_string(v)) {
                    rc = mg_g_schema_put(sc, o, key, v);
                }
            }

            for (k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++) {
                if (strcmp(key, numbers[k]) == 0 && json_is_number(v)) {
                    rc = mg_g_schema_put(sc, o, key, v);
                }
            }

            for (k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
                if (strcmp(key, counts[k]) == 0 && json_is_integer(v)
                    && json_integer_value(v) >= 0)
                {
                    rc = mg_g_schema_put(sc, o, key, v);
                }
            }

            /* anything else ($schema, additionalProperties, $defs, ...)
             * would be refused as an unknown field */
        }

        if (rc != MG_X_OK) {
            return rc;
        }
    }

    if (nullable && mg_x_set(o, "nullable", json_true()) != MG_X_OK) {
        return MG_X_NOMEM;
    }

    v = json_object_get(o, "properties");

    if (v && json_object_size(v) == 0) {
        /* "should be non-empty for OBJECT type" */
        (void) json_object_del(o, "properties");
        v = NULL;
    }

    if (json_object_get(o, "type") == NULL
        && json_object_get(o, "anyOf") == NULL)
    {
        if (v) {
            return mg_x_set_str(o, "type", "object");
        }

        if (json_object_get(o, "items")) {
            return mg_x_set_str(o, "type", "array");
        }

        /* Gemini's enums are of type string */

        if (json_object_get(o, "enum")) {
            return mg_x_set_str(o, "type", "string");
        }
    }

    return MG_X_OK;
}


/*
 * What a member of the schema written costs the request's copies: its
 * name (NULL: a node's own braces and the members the conversion adds)
 * and, when v is given, v as the dump writes it.  Counting a value takes
 * as long as writing it would, but no longer than the budget lasts.
 */

static int
mg_g_schema_charge(mg_g_schema_t *sc, const char *key, json_t *v)
{
    size_t  n;

    n = key ? strlen(key) + 4 : MG_G_NODE_BYTES;

    if (v) {
        n += json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    }

    return mg_g_schema_count(sc, n);
}


static int
mg_g_schema_count(mg_g_schema_t *sc, size_t n)
{
    if (mg_g_copies(sc->req, n) != MG_X_OK) {
        sc->over = 1;
        sc->why = "are too large once their $refs are expanded";
        return MG_X_ERROR;
    }

    return MG_X_OK;
}


/* v, a value of the client's schema, shared into o once it is charged */

static int
mg_g_schema_put(mg_g_schema_t *sc, json_t *o, const char *key, json_t *v)
{
    if (mg_g_schema_charge(sc, key, v) != MG_X_OK) {
        return MG_X_ERROR;
    }

    return json_object_set(o, key, v) == 0 ? MG_X_OK : MG_X_NOMEM;
}


/* a type, or a list of them: "null" among them makes it nullable */

static int
mg_g_schema_type(json_t *v, json_t *o, int *nullable)
{
    size_t       i;
    json_t      *t, *types, *any;
    const char  *s;

    if (json_is_string(v)) {
        return json_object_set(o, "type", v) == 0 ? MG_X_OK : MG_X_NOMEM;
    }

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    types = json_array();
    if (types == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, t) {
        s = json_string_value(t);

        if (s == NULL) {
            continue;
        }

        if (strcmp(s, "null") == 0) {
            *nullable = 1;
            continue;
        }

        if (json_array_append(types, t) != 0) {
            json_decref(types);
            return MG_X_NOMEM;
        }
    }

    if (json_array_size(types) == 0) {
        json_decref(types);
        return *nullable ? mg_x_set_str(o, "type", "null") : MG_X_OK;
    }

    if (json_array_size(types) == 1) {
        t = json_incref(json_array_get(types, 0));
        json_decref(types);
        return mg_x_set(o, "type", t);
    }

    any = json_array();
    if (any == NULL) {
        json_decref(types);
        return MG_X_NOMEM;
    }

    json_array_foreach(types, i, t) {
        if (json_array_append_new(any, json_pack("{s:O}", "type", t)) != 0) {
            json_decref(any);
            json_decref(types);
            return MG_X_NOMEM;
        }
    }

    json_decref(types);

    return mg_x_set(o, "anyOf", any);
}


static int
mg_g_schema_props(mg_g_schema_t *sc, json_t *v, json_t *o)
{
    int          rc;
    json_t      *props, *p, *s;
    const char  *key;

    if (!json_is_object(v)) {
        return MG_X_OK;
    }

    props = json_object();
    if (props == NULL) {
        return MG_X_NOMEM;
    }

    json_object_foreach(v, key, p) {
        rc = mg_g_schema_charge(sc, key, NULL);

        if (rc == MG_X_OK) {
            rc = mg_g_schema(sc, p, &s);
        }

        if (rc == MG_X_OK) {
            rc = mg_x_set(props, key, s);
        }

        if (rc != MG_X_OK) {
            json_decref(props);
            return rc;
        }
    }

    return mg_x_set(o, "properties", props);
}


/* anyOf (oneOf is taken as anyOf): {"type": "null"} members make it
 * nullable, and a single member left is merged in */

static int
mg_g_schema_any(mg_g_schema_t *sc, json_t *v, json_t *o, int *nullable)
{
    int      rc;
    size_t   i;
    json_t  *list, *e, *s;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    list = json_array();
    if (list == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, e) {
        if (json_object_size(e) == 1
            && mg_x_streq(json_string_value(json_object_get(e, "type")),
                          "null"))
        {
            *nullable = 1;
            continue;
        }

        rc = mg_g_schema(sc, e, &s);

        if (rc == MG_X_OK && json_array_append_new(list, s) != 0) {
            rc = MG_X_NOMEM;
        }

        if (rc != MG_X_OK) {
            json_decref(list);
            return rc;
        }
    }

    if (json_array_size(list) == 1) {
        rc = mg_g_merge(o, json_array_get(list, 0));
        json_decref(list);
        return rc;
    }

    if (json_array_size(list) == 0) {
        json_decref(list);
        return MG_X_OK;
    }

    return mg_x_set(o, "anyOf", list);
}


/* allOf: its members merged in (pydantic wraps a $ref in one) */

static int
mg_g_schema_all(mg_g_schema_t *sc, json_t *v, json_t *o)
{
    int      rc;
    size_t   i;
    json_t  *e, *s;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    json_array_foreach(v, i, e) {
        rc = mg_g_schema(sc, e, &s);
        if (rc != MG_X_OK) {
            return rc;
        }

        rc = mg_g_merge(o, s);

        json_decref(s);

        if (rc != MG_X_OK) {
            return rc;
        }
    }

    return MG_X_OK;
}


/* Gemini's enums are of strings; null among them makes it nullable, and
 * an enum of other values cannot be said at all */

static int
mg_g_schema_enum(json_t *v, json_t *o, int *nullable)
{
    size_t   i;
    json_t  *list, *e;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    json_array_foreach(v, i, e) {
        if (!json_is_string(e) && !json_is_null(e)) {
            return MG_X_OK;
        }
    }

    list = json_array();
    if (list == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, e) {
        if (json_is_null(e)) {
            *nullable = 1;
            continue;
        }

        if (json_array_append(list, e) != 0) {
            json_decref(list);
            return MG_X_NOMEM;
        }
    }

    if (json_array_size(list) == 0) {
        json_decref(list);
        return MG_X_OK;
    }

    return mg_x_set(o, "enum", list);
}


/* a list of names, without what is not a string */

static int
mg_g_schema_strings(json_t *v, json_t *o, const char *key)
{
    size_t   i;
    json_t  *list, *e;

    if (!json_is_array(v)) {
        return MG_X_OK;
    }

    list = json_array();
    if (list == NULL) {
        return MG_X_NOMEM;
    }

    json_array_foreach(v, i, e) {
        if (json_is_string(e) && json_array_append(list, e) != 0) {
            json_decref(list);
            return MG_X_NOMEM;
        }
    }

    return mg_x_set(o, key, list);
}


/* s's members that o does not have yet */

static int
mg_g_merge(json_t *o, json_t *s)
{
    json_t      *v;
    const char  *key;

    json_object_foreach(s, key, v) {
        if (json_object_get(o, key) == NULL
            && json_object_set(o, key, v) != 0)
        {
            return MG_X_NOMEM;
        }
    }

    return MG_X_OK;
}
