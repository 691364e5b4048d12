/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the translator tests share: finding and reading the golden fixtures
 * in t/fixtures/<provider>, and comparing a translation with them.  Header
 * only; include it after tap.h.
 */

#ifndef _FIXTURE_H_INCLUDED_
#define _FIXTURE_H_INCLUDED_

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "mg_translate.h"


#define MAX_NAMES   256


static char  fixdir[1024];


/* fixdir: $env, else t/fixtures/<sub> */

static inline void
fixture_dir(const char *env_name, const char *sub)
{
    size_t       n;
    const char  *env, *slash;

    env = getenv(env_name);

    if (env) {
        snprintf(fixdir, sizeof(fixdir), "%s", env);
        return;
    }

    /* this file sits next to the tests; the Makefile compiles them by
     * their absolute paths; a relative __FILE__ is relative to the
     * repository root, where prove runs */

    slash = strrchr(__FILE__, '/');
    n = slash ? (size_t) (slash - __FILE__) : 1;

    snprintf(fixdir, sizeof(fixdir), "%.*s/../fixtures/%s", (int) n,
             slash ? __FILE__ : ".", sub);
}


static inline char *
slurp(const char *path, size_t *len)
{
    long   n;
    char  *p;
    FILE  *f;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        fclose(f);
        return NULL;
    }

    p = malloc(n + 1);

    if (p == NULL || fread(p, 1, n, f) != (size_t) n) {
        free(p);
        fclose(f);
        return NULL;
    }

    p[n] = '\0';
    *len = n;

    fclose(f);

    return p;
}


static inline int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char * const *) a, *(char * const *) b);
}


/* the NAMEs of dir/NAME<suffix>, sorted; returns how many */

static inline size_t
list(const char *dir, const char *suffix, char **names)
{
    char            path[1200];
    size_t          n, len, slen;
    DIR            *d;
    struct dirent  *e;

    snprintf(path, sizeof(path), "%s/%s", fixdir, dir);

    d = opendir(path);
    if (d == NULL) {
        return 0;
    }

    n = 0;
    slen = strlen(suffix);

    while ((e = readdir(d)) != NULL && n < MAX_NAMES) {
        len = strlen(e->d_name);

        if (len > slen && strcmp(e->d_name + len - slen, suffix) == 0) {
            names[n++] = strndup(e->d_name, len - slen);
        }
    }

    closedir(d);

    qsort(names, n, sizeof(char *), cmp_names);

    return n;
}


static inline json_t *
load(const char *dir, const char *name, const char *suffix)
{
    char          path[1200];
    json_t       *j;
    json_error_t  e;

    snprintf(path, sizeof(path), "%s/%s/%s%s", fixdir, dir, name, suffix);

    j = json_load_file(path, JSON_ALLOW_NUL, &e);

    if (j == NULL) {
        tap_diag("%s line %d: %s", path, e.line, e.text);
    }

    return j;
}


static inline void
diag_json(const char *what, json_t *j)
{
    char  *s;

    s = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;

    tap_diag("%s: %s", what, s ? s : "(null)");

    free(s);
}


/* a case's "body", malloc'd: a string as it is, else compact JSON; NULL for
 * null */

static inline char *
case_body(json_t *b)
{
    if (json_is_null(b)) {
        return NULL;
    }

    if (json_is_string(b)) {
        return strdup(json_string_value(b));
    }

    return json_dumps(b, JSON_COMPACT);
}


/* requests: a request/NAME.openai.json translated (rc, err, out) against
 * request/NAME.<provider>.json (exp); "what" names the provider's body */

static inline void
check_request(const char *name, const char *what, int rc,
    const mg_xerror_t *err, const mg_buf_t *out, json_t *in, json_t *exp,
    int stream, int usage)
{
    int           exp_stream, exp_usage;
    json_t       *got;
    json_error_t  e;

    if (!is_int(rc, MG_X_OK, "request %s: translated", name)) {
        tap_diag("%d %s (param %s)", err->status, err->message,
                 err->param ? err->param : "-");
    }

    got = out->len ? json_loadb(out->data, out->len, JSON_ALLOW_NUL, &e)
                   : NULL;

    if (!ok(got && exp && json_equal(got, exp),
            "request %s: the expected %s body", name, what))
    {
        diag_json("got", got);
        diag_json("expected", exp);
    }

    exp_stream = json_is_true(json_object_get(in, "stream"));
    exp_usage = json_is_true(json_object_get(json_object_get(in,
                                 "stream_options"), "include_usage"));

    ok(stream == exp_stream && usage == exp_usage,
       "request %s: stream %d, include_usage %d", name, stream, usage);

    json_decref(got);
}


/* a request-400.json case c refused (rc, err, out) as it expects */

static inline void
check_400(const char *name, json_t *c, int rc, const mg_xerror_t *err,
    const mg_buf_t *out)
{
    json_t  *param, *msg;

    param = json_object_get(c, "param");
    msg = json_object_get(c, "message");

    if (!ok(rc == MG_X_ERROR && err->status == 400 && !err->retryable
            && err->type && strcmp(err->type, "invalid_request_error") == 0
            && out->len == 0,
            "400: %s", name))
    {
        tap_diag("rc %d status %d retryable %d, %zu bytes: %.*s", rc,
                 err->status, err->retryable, out->len, (int) out->len,
                 out->data ? out->data : "");
    }

    if (!ok(json_is_null(param) ? err->param == NULL
            : (err->param
               && strcmp(err->param, json_string_value(param)) == 0),
            "400: %s: param %s", name,
            json_is_null(param) ? "null" : json_string_value(param)))
    {
        tap_diag("got param %s: %s", err->param ? err->param : "NULL",
                 err->message);
    }

    if (msg) {
        if (!ok(strstr(err->message, json_string_value(msg)) != NULL,
                "400: %s: message mentions \"%s\"", name,
                json_string_value(msg)))
        {
            tap_diag("message: %s", err->message);
        }
    }
}


/*
 * A provider's request translator as the drivers below call it: full asks
 * for the jansson path alone, no_model leaves the configured model out
 * (where the provider takes one), default_max_tokens is the option.
 */

typedef int (*fixture_request_pt)(const char *body, size_t len, int full,
    int no_model, long default_max_tokens, mg_buf_t *out, int *stream,
    int *include_usage, mg_xerror_t *err);


/*
 * Every request/NAME.openai.json (at least min) against request/NAME<ext>,
 * through the tree-free path where it applies and then through jansson
 * alone; "what" names the provider's body.
 */

static inline void
check_request_fixtures(const char *ext, const char *what, size_t min,
    fixture_request_pt translate)
{
    int           rc, stream, usage;
    char         *names[MAX_NAMES], path[1200], *body;
    size_t        i, n, len;
    json_t       *in, *exp;
    mg_buf_t      out;
    mg_xerror_t   err;

    n = list("request", ".openai.json", names);

    ok(n >= min, "request fixtures: %zu", n);

    for (i = 0; i < 2 * n; i++) {
        snprintf(path, sizeof(path), "%s/request/%s.openai.json", fixdir,
                 names[i % n]);

        body = slurp(path, &len);
        in = load("request", names[i % n], ".openai.json");
        exp = load("request", names[i % n], ext);

        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));
        stream = -1;
        usage = -1;

        rc = body ? translate(body, len, i >= n, 0, 1024, &out, &stream,
                              &usage, &err)
                  : MG_X_ERROR;

        check_request(names[i % n], what, rc, &err, &out, in, exp, stream,
                      usage);

        json_decref(exp);
        json_decref(in);
        mg_buf_free(&out);
        free(body);
    }

    for (i = 0; i < n; i++) {
        free(names[i]);
    }
}


/* every case of request-400.json (at least min) refused as it expects */

static inline void
check_request_400(size_t min, fixture_request_pt translate)
{
    int            rc, stream, usage;
    char          *body, path[1200];
    size_t         i, len;
    json_t        *cases, *c;
    mg_buf_t       out;
    const char    *name;
    mg_xerror_t    err;
    json_error_t   e;

    snprintf(path, sizeof(path), "%s/request-400.json", fixdir);

    cases = json_load_file(path, 0, &e);

    if (!ok(json_array_size(cases) >= min, "request-400 cases: %zu",
            json_array_size(cases)))
    {
        tap_diag("%d: %s", e.line, e.text);
    }

    json_array_foreach(cases, i, c) {
        name = json_string_value(json_object_get(c, "name"));
        body = case_body(json_object_get(c, "body"));

        len = strlen(body);

        memset(&out, 0, sizeof(mg_buf_t));
        memset(&err, 0, sizeof(mg_xerror_t));

        rc = translate(body, len, 0,
                       json_is_true(json_object_get(c, "no_model")), 0,
                       &out, &stream, &usage, &err);

        check_400(name, c, rc, &err, &out);

        mg_buf_free(&out);
        free(body);
    }

    json_decref(cases);
}


/*
 * Every stream fixture stream/<name><ext> (at least min) through the
 * test's variant(), once to <name>.openai.sse and once, with
 * include_usage, to <name>.usage.sse; <name>.error.json, when there,
 * is the error the stream must end with (NULL otherwise).
 */

typedef void (*fixture_stream_pt)(const char *name, const char *in,
    size_t len, const char *suffix, int include_usage, json_t *xerr);

static inline void
check_stream_fixtures(const char *ext, size_t min, fixture_stream_pt variant)
{
    char     *names[MAX_NAMES], path[1200], *in;
    size_t    i, n, len;
    json_t   *xerr;

    n = list("stream", ext, names);

    ok(n >= min, "stream fixtures: %zu", n);

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/stream/%s%s", fixdir, names[i],
                 ext);

        in = slurp(path, &len);

        snprintf(path, sizeof(path), "%s/stream/%s.error.json", fixdir,
                 names[i]);

        xerr = json_load_file(path, 0, NULL);

        if (in) {
            variant(names[i], in, len, ".openai.sse", 0, xerr);
            variant(names[i], in, len, ".usage.sse", 1, xerr);
        }

        json_decref(xerr);
        free(in);
        free(names[i]);
    }
}


/*
 * What every request translator does alike: it appends to what out holds,
 * refuses no body, and keeps its error messages valid UTF-8 (bad bytes
 * quoted by jansson replaced, a long value cut on a character boundary).
 */

static inline void
check_request_common(fixture_request_pt translate)
{
    int           rc, stream, usage;
    json_t       *j;
    mg_buf_t      out;
    mg_xerror_t   err;

    static const char  body[] =
        "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"x\"}]}";

    /* "messages[0]: the role \"x" and 115 of 2 bytes, 1 byte cut off */

    static const char  role[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"x"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\"}]}";

    memset(&out, 0, sizeof(mg_buf_t));
    memset(&err, 0, sizeof(mg_xerror_t));

    mg_buf_append(&out, "[prefix]", 8);

    rc = translate(body, sizeof(body) - 1, 0, 0, 0, &out, &stream, &usage,
                   &err);

    ok(rc == MG_X_OK && out.len > 8 && memcmp(out.data, "[prefix]{", 9) == 0
       && out.data[out.len - 1] == '}',
       "request: appended to what out held");

    rc = translate(NULL, 0, 0, 0, 0, &out, &stream, &usage, &err);

    ok(rc == MG_X_ERROR && err.status == 400, "request: no body is a 400");

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = translate("{\"messages\": [\xff\xfe\xc3]}",
                   sizeof("{\"messages\": [\xff\xfe\xc3]}") - 1, 0, 0, 0,
                   &out, &stream, &usage, &err);
    j = json_string(err.message);

    if (!ok(rc == MG_X_ERROR && err.status == 400 && j != NULL,
            "request: invalid UTF-8 quoted in the message is replaced"))
    {
        tap_diag_str("message", err.message, strlen(err.message));
    }

    json_decref(j);

    memset(&err, 0, sizeof(mg_xerror_t));

    rc = translate(role, sizeof(role) - 1, 0, 0, 0, &out, &stream, &usage,
                   &err);
    j = json_string(err.message);

    if (!ok(rc == MG_X_ERROR && j != NULL && strlen(err.message) == 254,
            "request: a long role is cut on a character boundary"))
    {
        tap_diag_str("message", err.message, strlen(err.message));
    }

    json_decref(j);

    mg_buf_free(&out);
}


/* errors */

static inline int
opt_str_is(json_t *exp, const char *got)
{
    if (exp == NULL) {
        return 1;
    }

    if (json_is_null(exp)) {
        return got == NULL;
    }

    return got && strcmp(got, json_string_value(exp)) == 0;
}


/* err against the expected error x: status, retryable, type, code, param,
 * message, message_len (each but status only where x has it) */

static inline void
check_error(const char *name, json_t *x, const mg_xerror_t *err)
{
    json_t  *v;

    v = json_object_get(x, "status");

    if (!ok(err->status == json_integer_value(v)
            && (!json_object_get(x, "retryable")
                || err->retryable
                   == json_is_true(json_object_get(x, "retryable"))),
            "%s: status %d%s", name, (int) json_integer_value(v),
            json_is_true(json_object_get(x, "retryable"))
            ? ", retryable" : ""))
    {
        tap_diag("got status %d retryable %d: %s", err->status,
                 err->retryable, err->message);
    }

    if (!ok(opt_str_is(json_object_get(x, "type"), err->type)
            && opt_str_is(json_object_get(x, "code"), err->code)
            && opt_str_is(json_object_get(x, "param"), err->param)
            && opt_str_is(json_object_get(x, "message"), err->message),
            "%s: type, code, param and message", name))
    {
        tap_diag("got type %s code %s param %s message \"%s\"",
                 err->type ? err->type : "NULL",
                 err->code ? err->code : "NULL",
                 err->param ? err->param : "NULL", err->message);
    }

    v = json_object_get(x, "message_len");

    if (v) {
        is_int(strlen(err->message), json_integer_value(v),
               "%s: message cut before a partial character", name);
    }
}


/* streams: out and rc of a run as expected */

static inline int
same_output(const mg_buf_t *out, int rc, const char *exp, size_t exp_len,
    int exp_rc)
{
    return rc == exp_rc && out->len == exp_len
           && (exp_len == 0 || memcmp(out->data, exp, exp_len) == 0);
}


#endif /* _FIXTURE_H_INCLUDED_ */
