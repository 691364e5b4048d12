/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The shrink/expand fast path of translation must change nothing: for
 * every request and answer fixture of every translator, translating the
 * shrunk body and expanding the result gives the same JSON as translating
 * the body itself (texts keep the client's escaping, so bytes may differ
 * where the client escaped what jansson would not).
 */

#define _GNU_SOURCE  1

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "mg_anthropic.h"
#include "mg_bedrock.h"
#include "mg_gemini.h"
#include "mg_translate.h"


typedef int (*translate_pt)(const char *body, size_t len, mg_buf_t *out,
    mg_xerror_t *err);


static int
anthropic(const char *body, size_t len, mg_buf_t *out, mg_xerror_t *err)
{
    int                  stream, usage;
    mg_anthropic_opts_t  o = { "claude-x", 8, 0, 0, 0 };

    return mg_anthropic_request(body, len, &o, out, &stream, &usage, err);
}


static int
bedrock(const char *body, size_t len, mg_buf_t *out, mg_xerror_t *err)
{
    int                stream, usage;
    mg_bedrock_opts_t  o = { 0 };

    return mg_bedrock_request(body, len, &o, out, &stream, &usage, err);
}


static int
gemini(const char *body, size_t len, mg_buf_t *out, mg_xerror_t *err)
{
    int               stream, usage;
    mg_gemini_opts_t  o = { 0, 0, 0 };

    return mg_gemini_request(body, len, &o, out, &stream, &usage, err);
}


/* answers: the same contract, as ngx_http_model_gateway_translate.c uses it */

static int
anthropic_answer(const char *body, size_t len, mg_buf_t *out,
    mg_xerror_t *err)
{
    return mg_anthropic_response(body, len, "m", 1, 1700000000, out, err);
}


/* Converse answers carry no id: the one made up (a counter) is blanked */

static int
bedrock_answer(const char *body, size_t len, mg_buf_t *out, mg_xerror_t *err)
{
    int    rc;
    char  *p;

    rc = mg_bedrock_response(body, len, "m", 1, 1700000000, out, err);

    if (rc == MG_X_OK) {
        p = memmem(out->data, out->len, "\"chatcmpl-", 10);

        for (p = p ? p + 10 : NULL; p && p < out->data + out->len && *p != '"';
             p++)
        {
            *p = '0';
        }
    }

    return rc;
}


static int
gemini_answer(const char *body, size_t len, mg_buf_t *out, mg_xerror_t *err)
{
    return mg_gemini_response(body, len, "m", 1, 1700000000, out, err);
}


static char *
slurp_file(const char *path, size_t *len)
{
    FILE  *f;
    char  *p;
    long   n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    p = malloc((size_t) n + 1);
    if (p == NULL || fread(p, 1, (size_t) n, f) != (size_t) n) {
        fclose(f);
        free(p);
        return NULL;
    }

    fclose(f);
    p[n] = '\0';
    *len = (size_t) n;

    return p;
}


/* the same JSON value */

static int
same_json(mg_buf_t *a, mg_buf_t *b)
{
    int      eq;
    json_t  *ja, *jb;

    if (a->len == b->len && memcmp(a->data, b->data, a->len) == 0) {
        return 1;
    }

    ja = json_loadb(a->data, a->len, JSON_ALLOW_NUL, NULL);
    jb = json_loadb(b->data, b->len, JSON_ALLOW_NUL, NULL);

    eq = ja && jb && json_equal(ja, jb);

    json_decref(ja);
    json_decref(jb);

    return eq;
}


/* translate(body) == expand(translate(shrink(body))), as JSON */

static void
check(const char *name, translate_pt translate, const char *body,
    size_t len, size_t min)
{
    int            rc1, rc2;
    mg_buf_t       a, b, c;
    mg_xerror_t    e1, e2;
    mg_x_shrink_t  s;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));

    rc1 = translate(body, len, &a, &e1);

    if (mg_x_shrink(body, len, min, &s) != MG_X_OK) {
        ok(0, "%s: shrink", name);
        return;
    }

    if (s.n == 0) {
        rc2 = translate(body, len, &b, &e2);
        ok(rc1 == rc2 && a.len == b.len
           && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0),
           "%s: nothing to shrink", name);

    } else {
        rc2 = translate(s.body.data, s.body.len, &b, &e2);

        if (rc1 != MG_X_OK || rc2 != MG_X_OK) {
            ok(rc1 == rc2, "%s: same outcome (%d, %d)", name, rc1, rc2);

        } else {
            ok(mg_x_expand(&s, body, b.data, b.len, &c) == MG_X_OK
               && same_json(&a, &c),
               "%s: %zu texts shrunk, same JSON", name, s.n);
        }
    }

    mg_x_shrink_free(&s);
    mg_buf_free(&a);
    mg_buf_free(&b);
    mg_buf_free(&c);
}


static void
check_dir(const char *dir, const char *suffix, const char *label,
    translate_pt translate)
{
    DIR            *d;
    char           *body, path[512], name[600];
    size_t          len, n;
    struct dirent  *de;

    d = opendir(dir);
    if (d == NULL) {
        ok(0, "open %s", dir);
        return;
    }

    while ((de = readdir(d)) != NULL) {
        n = strlen(de->d_name);

        if (n < strlen(suffix)
            || strcmp(de->d_name + n - strlen(suffix), suffix) != 0)
        {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        body = slurp_file(path, &len);

        if (body == NULL) {
            ok(0, "read %s", path);
            continue;
        }

        snprintf(name, sizeof(name), "%s %s min 1", label, de->d_name);
        check(name, translate, body, len, 1);
        snprintf(name, sizeof(name), "%s %s min 64", label, de->d_name);
        check(name, translate, body, len, 64);

        free(body);
    }

    closedir(d);
}


int
main(void)
{
    mg_buf_t       big;
    mg_x_shrink_t  s;
    int            i;

    check_dir("t/fixtures/anthropic/request", ".openai.json", "anthropic",
              anthropic);
    check_dir("t/fixtures/bedrock/request", ".openai.json", "bedrock",
              bedrock);
    check_dir("t/fixtures/gemini/request", ".openai.json", "gemini", gemini);

    check_dir("t/fixtures/anthropic/response", ".anthropic.json",
              "anthropic answer", anthropic_answer);
    check_dir("t/fixtures/bedrock/response", ".bedrock.json",
              "bedrock answer", bedrock_answer);
    check_dir("t/fixtures/gemini/response", ".gemini.json", "gemini answer",
              gemini_answer);

    /* a long history with escapes, unicode and a JSON-looking tool text */

    memset(&big, 0, sizeof(big));
    mg_buf_printf(&big, "{\"model\":\"m\",\"messages\":[{\"role\":"
                  "\"system\",\"content\":\"Be \\\"terse\\\" \\u00e9 "
                  "caf\xc3\xa9\"}");

    for (i = 0; i < 40; i++) {
        mg_buf_printf(&big, ",{\"role\":\"%s\",\"content\":\"turn %d: "
                      "line one\\nline two \\t tab, quote \\\" and "
                      "slash \\\\ end\"}", (i % 2) ? "assistant" : "user",
                      i);
    }

    /* backslash runs right before quotes: the string ends are exact */

    mg_buf_printf(&big, ",{\"role\":\"user\",\"content\":\"ends in an "
                  "escaped backslash, which must not escape the quote \\\\\"}"
                  ",{\"role\":\"assistant\",\"content\":\"an escaped "
                  "backslash then an escaped quote \\\\\\\" inside\"}");

    mg_buf_printf(&big, ",{\"role\":\"user\",\"content\":[{\"type\":"
                  "\"text\",\"text\":\"a part with \\ud83d\\ude00 "
                  "emoji and more text to make it long\"}]}]}");

    check("anthropic long history", anthropic, big.data, big.len, 16);
    check("bedrock long history", bedrock, big.data, big.len, 16);
    check("gemini long history", gemini, big.data, big.len, 16);

    /* a body that already holds the placeholder characters is left alone */

    ok(mg_x_shrink("{\"content\":\"\xee\x80\x80" "0\xee\x80\x81 long "
                   "enough text\"}", 40, 1, &s) == MG_X_OK && s.n == 0,
       "placeholder characters in the input: nothing shrunk");

    /* escaped too: a translator would write them back as characters */

    ok(mg_x_shrink("{\"content\":\"a \\ue0000\\ue001\"},{\"content\":"
                   "\"long enough text\"}", 60, 1, &s) == MG_X_OK
       && s.n == 0,
       "escaped placeholder characters in the input: nothing shrunk");
    ok(mg_x_shrink("{\"content\":\"a \\uE001\"},{\"content\":"
                   "\"long enough text\"}", 53, 1, &s) == MG_X_OK
       && s.n == 0, "an escaped closing placeholder (uppercase): nothing "
       "shrunk");
    mg_x_shrink_free(&s);

    mg_buf_free(&big);

    return tap_done();
}
