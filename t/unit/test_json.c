/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The JSON scanner: a valid and an invalid corpus, error offsets, nesting
 * limits, member lookup, (un)escaping, and a differential run against
 * jansson over mutated documents.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "tap.h"
#include "mg_json.h"


#define S(s)  s, sizeof(s) - 1


typedef struct {
    const char  *text;
    size_t       len;
} doc_t;


/* a test name must stay on one line */

static const char *
printable(const char *s, size_t len)
{
    size_t       i, n;
    static char  out[200];

    n = 0;

    for (i = 0; i < len && n < sizeof(out) - 8; i++) {
        unsigned char c = (unsigned char) s[i];

        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[n++] = (char) c;

        } else {
            n += snprintf(out + n, 8, "\\x%02x", c);
        }
    }

    out[n] = '\0';

    return out;
}


static int
scan(const char *s, size_t len, size_t depth)
{
    mg_json_error_t  err;

    return mg_json_scan(s, len, NULL, 0, depth, &err);
}


static const doc_t  valid[] = {
    { S("{}") },
    { S("[]") },
    { S("0") },
    { S("-0") },
    { S("123") },
    { S("-123.456e+78") },
    { S("1E5") },
    { S("1e-5") },
    { S("0.0") },
    { S("-0.5E0") },
    { S("1.5e10") },
    { S("1e400") },
    { S("\"\"") },
    { S("\"a\"") },
    { S("true") },
    { S("false") },
    { S("null") },
    { S(" \t\r\n{ \"a\" : [ 1 , 2 , { \"b\" : null } ] } \t\r\n") },
    { S("[[],[[]],{},{\"\":{}}]") },
    { S("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"") },
    { S("\"\\u0000\\u001f\\u00e9\\u20AC\\uFFFF\"") },
    { S("\"\\ud83d\\ude00\"") },
    { S("\"\\uDBFF\\uDFFF\"") },
    { S("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"") },
    { S("\"\xc2\x80\xdf\xbf\"") },
    { S("\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"") },
    { S("\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"") },
    { S("\"\x7f\"") },
    { S("{\"a\":1,\"a\":2}") },
    { S("[1,-1,0.5,\"x\",true,false,null,{},[]]") },
    { S("{\"k\":\"\\u0041\\u0042\"}") },
    { S("\"0123456789abcdef0123456789abcdef\\\"tail\"") },
};


typedef struct {
    const char  *text;
    size_t       len;
    int          rc;
    long         offset;        /* -1: not checked */
} bad_t;


static const bad_t  invalid[] = {
    { S(""), MG_JSON_EINVAL, 0 },
    { S("   "), MG_JSON_EINVAL, 3 },
    { S("{"), MG_JSON_EINVAL, 1 },
    { S("}"), MG_JSON_EINVAL, 0 },
    { S("["), MG_JSON_EINVAL, 1 },
    { S("]"), MG_JSON_EINVAL, 0 },
    { S("[1,]"), MG_JSON_EINVAL, 3 },
    { S("[,1]"), MG_JSON_EINVAL, 1 },
    { S("[1 2]"), MG_JSON_EINVAL, 3 },
    { S("{\"a\":1,}"), MG_JSON_EINVAL, 7 },
    { S("{\"a\"}"), MG_JSON_EINVAL, 4 },
    { S("{\"a\" 1}"), MG_JSON_EINVAL, 5 },
    { S("{\"a\":}"), MG_JSON_EINVAL, 5 },
    { S("{a:1}"), MG_JSON_EINVAL, 1 },
    { S("{1:1}"), MG_JSON_EINVAL, 1 },
    { S("{\"a\":1 \"b\":2}"), MG_JSON_EINVAL, 7 },
    { S("[1}"), MG_JSON_EINVAL, 2 },
    { S("{\"a\":1]"), MG_JSON_EINVAL, 6 },
    { S("'a'"), MG_JSON_EINVAL, 0 },
    { S("01"), MG_JSON_EINVAL, 1 },
    { S("-01"), MG_JSON_EINVAL, 2 },
    { S("{\"a\":01}"), MG_JSON_EINVAL, 6 },
    { S("00"), MG_JSON_EINVAL, 1 },
    { S("1."), MG_JSON_EINVAL, 2 },
    { S("1.e5"), MG_JSON_EINVAL, 2 },
    { S("-"), MG_JSON_EINVAL, 1 },
    { S("-a"), MG_JSON_EINVAL, 1 },
    { S(".5"), MG_JSON_EINVAL, 0 },
    { S("+1"), MG_JSON_EINVAL, 0 },
    { S("1e"), MG_JSON_EINVAL, 2 },
    { S("1e+"), MG_JSON_EINVAL, 3 },
    { S("1E-x"), MG_JSON_EINVAL, 3 },
    { S("0x10"), MG_JSON_EINVAL, 1 },
    { S("1 2"), MG_JSON_EINVAL, 2 },
    { S("NaN"), MG_JSON_EINVAL, 0 },
    { S("Infinity"), MG_JSON_EINVAL, 0 },
    { S("-Infinity"), MG_JSON_EINVAL, 1 },
    { S("tru"), MG_JSON_EINVAL, 0 },
    { S("nul"), MG_JSON_EINVAL, 0 },
    { S("fals"), MG_JSON_EINVAL, 0 },
    { S("True"), MG_JSON_EINVAL, 0 },
    { S("truex"), MG_JSON_EINVAL, 4 },
    { S("nulll"), MG_JSON_EINVAL, 4 },
    { S("{} x"), MG_JSON_EINVAL, 3 },
    { S("{}{}"), MG_JSON_EINVAL, 2 },
    { S("[]]"), MG_JSON_EINVAL, 2 },
    { S("\"abc"), MG_JSON_EINVAL, 0 },
    { S("\"abc\\"), MG_JSON_EINVAL, 0 },
    { S("[\"abc"), MG_JSON_EINVAL, 1 },
    { S("\"\\x\""), MG_JSON_EINVAL, 1 },
    { S("\"\\U0041\""), MG_JSON_EINVAL, 1 },
    { S("\"\\'\""), MG_JSON_EINVAL, 1 },
    { S("\"\\u12\""), MG_JSON_EINVAL, 1 },
    { S("\"\\u12G4\""), MG_JSON_EINVAL, 1 },
    { S("\"\\u"), MG_JSON_EINVAL, 1 },
    { S("\"\\ud800\""), MG_JSON_EINVAL, 1 },
    { S("\"\\udbff\""), MG_JSON_EINVAL, 1 },
    { S("\"\\udc00\""), MG_JSON_EINVAL, 1 },
    { S("\"\\udfff\\ud800\""), MG_JSON_EINVAL, 1 },
    { S("\"ab\\ud800\\u0041\""), MG_JSON_EINVAL, 3 },
    { S("\"\\ud800\\ud800\""), MG_JSON_EINVAL, 1 },
    { S("\"\\ud800x\""), MG_JSON_EINVAL, 1 },
    { S("\"\\ud800\\n\""), MG_JSON_EINVAL, 1 },
    { S("\"ab\x01\""), MG_JSON_EINVAL, 3 },
    { S("\"\x1f\""), MG_JSON_EINVAL, 1 },
    { S("\"a\tb\""), MG_JSON_EINVAL, 2 },
    { S("\"a\nb\""), MG_JSON_EINVAL, 2 },
    { S("\"a\0b\""), MG_JSON_EINVAL, 2 },
    { S("[\"\x80\"]"), MG_JSON_EINVAL, 2 },
    { S("\"\xbf\""), MG_JSON_EINVAL, 1 },
    { S("[\"\xc0\xaf\"]"), MG_JSON_EINVAL, 2 },
    { S("\"\xc1\xbf\""), MG_JSON_EINVAL, 1 },
    { S("\"\xc2\""), MG_JSON_EINVAL, 1 },
    { S("\"\xc2\x41\""), MG_JSON_EINVAL, 1 },
    { S("\"\xe0\x80\xaf\""), MG_JSON_EINVAL, 1 },
    { S("\"\xe0\x9f\xbf\""), MG_JSON_EINVAL, 1 },
    { S("\"\xed\xa0\x80\""), MG_JSON_EINVAL, 1 },
    { S("\"\xed\xbf\xbf\""), MG_JSON_EINVAL, 1 },
    { S("\"\xe2\x82\""), MG_JSON_EINVAL, 1 },
    { S("\"\xe2\x82"), MG_JSON_EINVAL, 1 },
    { S("\"\xf0\x80\x80\xaf\""), MG_JSON_EINVAL, 1 },
    { S("\"\xf0\x8f\xbf\xbf\""), MG_JSON_EINVAL, 1 },
    { S("\"\xf4\x90\x80\x80\""), MG_JSON_EINVAL, 1 },
    { S("\"\xf5\x80\x80\x80\""), MG_JSON_EINVAL, 1 },
    { S("\"\xf0\x9f\x98\""), MG_JSON_EINVAL, 1 },
    { S("\"\xff\""), MG_JSON_EINVAL, 1 },
    { S("\"\xfe\""), MG_JSON_EINVAL, 1 },
    { S("\"0123456789\x80 long enough for the wide loop\""),
      MG_JSON_EINVAL, 11 },
    { S("\"0123456789abcdef\x02...\""), MG_JSON_EINVAL, 17 },
    { S("\xef\xbb\xbf{}"), MG_JSON_EINVAL, 0 },
    { S("\xc3\xa9"), MG_JSON_EINVAL, 0 },
    { S("[1,\x0b" "2]"), MG_JSON_EINVAL, 3 },
    { S("[1,\f2]"), MG_JSON_EINVAL, 3 },
    { S("/* c */ 1"), MG_JSON_EINVAL, 0 },
};


static void
test_corpus(void)
{
    int              rc;
    size_t           i;
    mg_json_error_t  err;

    for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        err.message = NULL;
        rc = mg_json_scan(valid[i].text, valid[i].len, NULL, 0, 64, &err);
        if (!is_int(rc, MG_JSON_OK, "valid #%zu: %s", i,
                    printable(valid[i].text, valid[i].len)))
        {
            tap_diag("error: %s at %zu", err.message, err.offset);
        }
    }

    for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        err.message = NULL;
        err.offset = (size_t) -1;
        rc = mg_json_scan(invalid[i].text, invalid[i].len, NULL, 0, 64,
                          &err);
        is_int(rc, invalid[i].rc, "invalid #%zu rejected: %s", i,
               printable(invalid[i].text, invalid[i].len));

        if (invalid[i].offset >= 0) {
            if (!is_int(err.offset, invalid[i].offset,
                        "invalid #%zu offset (%s)", i,
                        err.message ? err.message : "no message"))
            {
                tap_diag("text: %s",
                         printable(invalid[i].text, invalid[i].len));
            }
        }

        ok(err.message != NULL && err.message[0] != '\0',
           "invalid #%zu has a message", i);
    }

    /* the whole value must be inside len, not up to a NUL */
    is_int(scan("[1,2]", 4, 64), MG_JSON_EINVAL, "length is respected");
    is_int(scan("\"abc\"", 4, 64), MG_JSON_EINVAL,
           "string cut by length");
    is_int(scan("truex", 4, 64), MG_JSON_OK, "literal cut by length");
    is_int(scan("12345", 3, 64), MG_JSON_OK, "number cut by length");

    /* a NULL err is allowed */
    is_int(mg_json_scan("[", 1, NULL, 0, 8, NULL), MG_JSON_EINVAL,
           "NULL err");
}


static void
test_depth(void)
{
    int              rc;
    char            *s;
    size_t           i, n;
    mg_json_error_t  err;

    n = 64;
    s = malloc(2 * n + 16);

    for (i = 0; i < n; i++) {
        s[i] = '[';
        s[2 * n - 1 - i] = ']';
    }

    is_int(scan(s, 2 * n, n), MG_JSON_OK, "arrays nested %zu deep, max %zu",
           n, n);
    rc = mg_json_scan(s, 2 * n, NULL, 0, n - 1, &err);
    is_int(rc, MG_JSON_EDEPTH, "arrays nested %zu deep, max %zu", n, n - 1);
    is_int(err.offset, n - 1, "EDEPTH offset is the container too deep");
    is_int(scan(s, 2 * n, 1000), MG_JSON_OK, "max above the nesting");

    is_int(scan("1", 1, 0), MG_JSON_OK, "scalar with max_depth 0");
    is_int(scan("[]", 2, 0), MG_JSON_EDEPTH, "array with max_depth 0");
    is_int(scan("{}", 2, 1), MG_JSON_OK, "object with max_depth 1");
    is_int(scan(S("{\"a\":{}}"), 1), MG_JSON_EDEPTH,
           "nested object with max_depth 1");
    is_int(scan(S("{\"a\":[1],\"b\":{\"c\":[]}}"), 3), MG_JSON_OK,
           "mixed nesting 3, max 3");
    is_int(scan(S("{\"a\":[1],\"b\":{\"c\":[[]]}}"), 3), MG_JSON_EDEPTH,
           "mixed nesting 4, max 3");

    free(s);

    /* objects and arrays alternating, across 64-bit words of the stack */

    n = 300;
    s = malloc(n * 8 + 16);
    i = 0;

    {
        size_t  k, o = 0;

        for (k = 0; k < n; k++) {
            if (k % 2) {
                memcpy(s + o, "[", 1);
                o += 1;

            } else {
                memcpy(s + o, "{\"k\":", 5);
                o += 5;
            }
        }

        s[o++] = '0';

        for (k = n; k-- > 0; ) {
            s[o++] = (k % 2) ? ']' : '}';
        }

        is_int(scan(s, o, n), MG_JSON_OK, "object/array alternating %zu",
               n);
        is_int(scan(s, o, n - 1), MG_JSON_EDEPTH,
               "object/array alternating %zu, max %zu", n, n - 1);

        /* a wrong closer deep inside is found */
        s[o - 150] = (s[o - 150] == ']') ? '}' : ']';
        is_int(scan(s, o, n), MG_JSON_EINVAL,
               "mismatched closer at depth 150");
    }

    free(s);

    /* no stack overflow, whatever the input or max_depth */

    n = 1000000;
    s = malloc(n);
    memset(s, '[', n);

    rc = mg_json_scan(s, n, NULL, 0, (size_t) -1, &err);
    is_int(rc, MG_JSON_EDEPTH, "a million '[' with unlimited max_depth");
    ok(err.offset <= 4096, "stopped at the built-in limit (%zu)",
       err.offset);

    rc = mg_json_scan(s, n, NULL, 0, 100, &err);
    is_int(rc, MG_JSON_EDEPTH, "a million '[' with max_depth 100");
    is_int(err.offset, 100, "stopped at depth 100");

    for (i = 0; i < n; i++) {
        s[i] = (i % 5 == 4) ? ':' : "{\"a\""[i % 5];
    }

    rc = mg_json_scan(s, n - n % 5, NULL, 0, 10, &err);
    is_int(rc, MG_JSON_EDEPTH, "deep objects with max_depth 10");

    free(s);
}


static void
test_fields(void)
{
    int              rc;
    size_t           i;
    const char      *body;
    mg_json_error_t  err;
    mg_json_field_t  f[9];

    static const char  *names[] = {
        "model", "stream", "messages", "max_tokens", "temperature", "n",
        "x", "o", "absent"
    };

    body = "{ \"model\" : \"gpt-4o\",\"stream\":true,"
           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\","
           "\"model\":\"nested\"}],\"max_tokens\": 100 ,"
           "\"temperature\":-0.5e1,\"n\":null,\"x\":false,"
           "\"o\":{\"a\":1,\"model\":2} }";

    for (i = 0; i < 9; i++) {
        f[i].name = names[i];
        f[i].name_len = strlen(names[i]);
        f[i].type = MG_JSON_STRING;
        f[i].start = 12345;
    }

    rc = mg_json_scan(body, strlen(body), f, 9, 8, &err);
    is_int(rc, MG_JSON_OK, "chat body scans");

    is_int(f[0].type, MG_JSON_STRING, "model is a string");
    is_str(body + f[0].start, f[0].len, "\"gpt-4o\"",
           "model token, quotes included");
    is_int(f[0].start, 12, "model offset");

    is_int(f[1].type, MG_JSON_TRUE, "stream is true");
    is_str(body + f[1].start, f[1].len, "true", "stream token");

    is_int(f[2].type, MG_JSON_ARRAY, "messages is an array");
    is_str(body + f[2].start, f[2].len,
           "[{\"role\":\"user\",\"content\":\"hi\",\"model\":\"nested\"}]",
           "messages token is the whole array");

    is_int(f[3].type, MG_JSON_NUMBER, "max_tokens is a number");
    is_str(body + f[3].start, f[3].len, "100",
           "max_tokens token has no whitespace");

    is_int(f[4].type, MG_JSON_NUMBER, "temperature is a number");
    is_str(body + f[4].start, f[4].len, "-0.5e1", "temperature token");

    is_int(f[5].type, MG_JSON_NULL, "n is null");
    is_str(body + f[5].start, f[5].len, "null", "n token");

    is_int(f[6].type, MG_JSON_FALSE, "x is false");
    is_str(body + f[6].start, f[6].len, "false", "x token");

    is_int(f[7].type, MG_JSON_OBJECT, "o is an object");
    is_str(body + f[7].start, f[7].len, "{\"a\":1,\"model\":2}",
           "o token");

    is_int(f[8].type, MG_JSON_NONE, "absent member is NONE");
    is_int(f[8].start, 0, "absent member start is 0");
    is_int(f[8].len, 0, "absent member len is 0");

    /* duplicates: the last wins, whatever its type */

    body = "{\"model\":\"a\",\"model\":\"bb\"}";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(rc, MG_JSON_OK, "duplicate keys are valid");
    is_str(body + f[0].start, f[0].len, "\"bb\"", "last duplicate wins");

    body = "{\"model\":\"a\",\"x\":1,\"model\":[1,2]}";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].type, MG_JSON_ARRAY, "last duplicate's type");
    is_str(body + f[0].start, f[0].len, "[1,2]", "last duplicate's token");
    is_int(f[0].dup, 1, "a duplicate is flagged");

    body = "{\"model\":\"a\",\"x\":{\"model\":1}}";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].dup, 0, "a nested member of the same name is no duplicate");

    body = "{\"model\":\"a\"}";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].dup, 0, "the flag is reset by the next scan");

    /* escaped member names are compared unescaped */

    body = "{\"mo\\u0064el\":\"x\"}";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].type, MG_JSON_STRING, "\"mo\\u0064el\" is model");
    is_str(body + f[0].start, f[0].len, "\"x\"", "escaped name's value");

    body = "{\"\\u006d\\u006F\\u0064\\u0065\\u006c\":1}";
    mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].type, MG_JSON_NUMBER, "all-escaped name is model");

    body = "{\"model\\u0000\":1,\"mod\\\"el\":2,\"model \":3,\"mode\":4,"
           "\"models\":5,\"Model\":6,\"\\u006dodelx\":7}";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(rc, MG_JSON_OK, "near-miss names scan");
    is_int(f[0].type, MG_JSON_NONE, "no near-miss name matches model");

    /* a name with an escaped slash and a multi-byte character */

    {
        mg_json_field_t  g[2];

        g[0].name = "a/b";
        g[0].name_len = 3;
        g[1].name = "caf\xc3\xa9";
        g[1].name_len = 5;

        body = "{\"a\\/b\":1,\"caf\\u00e9\":2}";
        rc = mg_json_scan(body, strlen(body), g, 2, 8, &err);
        is_int(g[0].type, MG_JSON_NUMBER, "\"a\\/b\" matches a/b");
        is_str(body + g[1].start, g[1].len, "2",
               "\"caf\\u00e9\" matches UTF-8 name");

        /* two fields with the same name both get the value */
        g[0].name = "k";
        g[0].name_len = 1;
        g[1].name = "k";
        g[1].name_len = 1;
        body = "{\"k\":\"v\"}";
        mg_json_scan(body, strlen(body), g, 2, 8, &err);
        ok(g[0].type == MG_JSON_STRING && g[1].type == MG_JSON_STRING
           && g[0].start == g[1].start, "repeated field names both filled");
    }

    /* only top-level members of an object */

    body = "[{\"model\":\"x\"}]";
    rc = mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(rc, MG_JSON_OK, "array scans");
    is_int(f[0].type, MG_JSON_NONE, "members of an array's object: NONE");

    body = "\"model\"";
    mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].type, MG_JSON_NONE, "string top-level: NONE");

    body = "{\"a\":{\"model\":1},\"b\":[{\"model\":2}]}";
    mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].type, MG_JSON_NONE, "nested members do not match");

    body = "{\"a\":{},\"model\":{}}";
    mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_str(body + f[0].start, f[0].len, "{}", "empty object value");

    body = "{\"model\":\"\"}";
    mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_str(body + f[0].start, f[0].len, "\"\"", "empty string value");

    /* fields are cleared when the document is invalid */

    body = "{\"model\":\"x\",\"stream\":tru}";
    rc = mg_json_scan(body, strlen(body), f, 2, 8, &err);
    is_int(rc, MG_JSON_EINVAL, "invalid after a match");
    ok(f[0].type == MG_JSON_NONE && f[1].type == MG_JSON_NONE,
       "fields are NONE after an error");

    body = "{\"model\":\"x\"} 1";
    mg_json_scan(body, strlen(body), f, 1, 8, &err);
    is_int(f[0].type, MG_JSON_NONE, "fields NONE after trailing garbage");
}


static void
test_unescape(void)
{
    ssize_t  n;
    char     out[64];

    n = mg_json_unescape(S("\"abc\""), out, sizeof(out));
    is_str(out, n < 0 ? 0 : (size_t) n, "abc", "plain");

    n = mg_json_unescape(S("\"\""), out, sizeof(out));
    is_int(n, 0, "empty string");

    n = mg_json_unescape(S("\"a\\nb\\t\\\"\\\\\\/\\b\\f\\r\""), out,
                         sizeof(out));
    is_str(out, n < 0 ? 0 : (size_t) n, "a\nb\t\"\\/\b\f\r",
           "simple escapes");

    n = mg_json_unescape(S("\"\\u00e9\\u20ac\\u0041\""), out, sizeof(out));
    is_str(out, n < 0 ? 0 : (size_t) n, "\xc3\xa9\xe2\x82\xac" "A",
           "\\u escapes become UTF-8");

    n = mg_json_unescape(S("\"\\ud83d\\ude00!\""), out, sizeof(out));
    is_str(out, n < 0 ? 0 : (size_t) n, "\xf0\x9f\x98\x80!",
           "surrogate pair becomes one 4-byte character");

    n = mg_json_unescape(S("\"x\\u0000y\""), out, sizeof(out));
    ok(n == 3 && memcmp(out, "x\0y", 3) == 0, "\\u0000 gives a NUL byte");

    n = mg_json_unescape(S("\"caf\xc3\xa9\""), out, sizeof(out));
    is_str(out, n < 0 ? 0 : (size_t) n, "caf\xc3\xa9",
           "UTF-8 is copied");

    n = mg_json_unescape(S("\"abcdef\""), out, 6);
    is_int(n, 6, "exactly fits");
    n = mg_json_unescape(S("\"abcdef\""), out, 5);
    is_int(n, -1, "does not fit");
    n = mg_json_unescape(S("\"ab\\u00e9\""), out, 3);
    is_int(n, -1, "escape does not fit");
    n = mg_json_unescape(S("\"ab\\u00e9\""), out, 4);
    is_int(n, 4, "escape fits");
    n = mg_json_unescape(S("\"\""), NULL, 0);
    is_int(n, 0, "empty into nothing");

    is_int(mg_json_unescape(S("abc"), out, sizeof(out)), -1, "no quotes");
    is_int(mg_json_unescape(S("\""), out, sizeof(out)), -1, "lone quote");
    is_int(mg_json_unescape(S("\"abc"), out, sizeof(out)), -1,
           "unterminated");
    is_int(mg_json_unescape(S("\"a\\\""), out, sizeof(out)), -1,
           "escaped closing quote");
    is_int(mg_json_unescape(S("\"a\"b\""), out, sizeof(out)), -1,
           "quote inside");
    is_int(mg_json_unescape(S("\"\\x\""), out, sizeof(out)), -1,
           "bad escape");
    is_int(mg_json_unescape(S("\"\\ud800\""), out, sizeof(out)), -1,
           "lone high surrogate");
    is_int(mg_json_unescape(S("\"\\udc00\""), out, sizeof(out)), -1,
           "lone low surrogate");
    is_int(mg_json_unescape(S("\"\\u12\""), out, sizeof(out)), -1,
           "short \\u");
    is_int(mg_json_unescape(S("\"a\nb\""), out, sizeof(out)), -1,
           "raw control");
    is_int(mg_json_unescape(S("\"\xc0\xaf\""), out, sizeof(out)), -1,
           "overlong UTF-8");
}


static void
test_escape(void)
{
    int     c;
    char    out[128], in[128], back[128];
    size_t  n, i;
    ssize_t m;

    n = mg_json_escape(out, sizeof(out), S("plain text"));
    is_str(out, n, "plain text", "plain text unchanged");

    n = mg_json_escape(out, sizeof(out),
                       S("a\"b\\c\nd\re\tf\bg\fh\x01i\x1fj\x7fk/"
                         "\xc3\xa9\xff"));
    is_str(out, n,
           "a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u001fj\x7fk/"
           "\xc3\xa9\xff", "specials escaped, other bytes as they are");

    n = mg_json_escape(out, sizeof(out), "a\0b", 3);
    is_str(out, n, "a\\u0000b", "NUL byte");

    n = mg_json_escape(NULL, 0, S("a\"b\x01"));
    is_int(n, 10, "NULL out with cap 0 gives the length");

    /* truncation writes a prefix of the whole, like snprintf */

    for (i = 0; i <= 10; i++) {
        memset(out, '#', sizeof(out));
        n = mg_json_escape(out, i, S("a\"b\x01"));

        if (!is_int(n, 10, "cap %zu: full length returned", i)) {
            continue;
        }

        ok(memcmp(out, "a\\\"b\\u0001", i) == 0 && out[i] == '#',
           "cap %zu: prefix written, nothing past cap", i);
    }

    /* every ASCII byte survives a round trip and the result is valid */

    for (c = 0; c < 128; c++) {
        in[c] = (char) c;
    }

    {
        char  big[1024];

        big[0] = '"';
        n = mg_json_escape(big + 1, sizeof(big) - 2, in, 128);
        big[n + 1] = '"';

        is_int(scan(big, n + 2, 1), MG_JSON_OK, "escaped ASCII is valid");

        m = mg_json_unescape(big, n + 2, back, sizeof(back));
        ok(m == 128 && memcmp(back, in, 128) == 0,
           "escaped ASCII unescapes to itself");
    }
}


static void
test_member(void)
{
    int               rc;
    size_t            s, l;
    const char       *body, *o;
    mg_json_type_t    t;
    mg_json_field_t   f;
    mg_json_error_t   err;

    body = "{\"metadata\":{\"user\":\"u1\",\"tags\":[\"a\"],"
           "\"inner\":{\"user\":\"deep\"},\"n\":-1.5,\"u\\u0073er2\":null},"
           "\"user\":\"top\"}";

    f.name = "metadata";
    f.name_len = 8;
    rc = mg_json_scan(body, strlen(body), &f, 1, 8, &err);
    is_int(rc, MG_JSON_OK, "body with metadata scans");
    is_int(f.type, MG_JSON_OBJECT, "metadata is an object");

    o = body + f.start;

    t = mg_json_member(o, f.len, S("user"), &s, &l);
    is_int(t, MG_JSON_STRING, "metadata.user is a string");
    is_str(o + s, l, "\"u1\"", "metadata.user, not the deeper or outer one");

    t = mg_json_member(o, f.len, S("tags"), &s, &l);
    is_int(t, MG_JSON_ARRAY, "metadata.tags is an array");
    is_str(o + s, l, "[\"a\"]", "metadata.tags token");

    t = mg_json_member(o, f.len, S("inner"), &s, &l);
    is_int(t, MG_JSON_OBJECT, "metadata.inner is an object");
    is_int(mg_json_member(o + s, l, S("user"), &s, &l), MG_JSON_STRING,
           "metadata.inner.user");

    t = mg_json_member(o, f.len, S("n"), &s, &l);
    is_int(t, MG_JSON_NUMBER, "metadata.n is a number");
    is_str(o + s, l, "-1.5", "metadata.n token");

    is_int(mg_json_member(o, f.len, S("user2"), &s, &l), MG_JSON_NULL,
           "escaped name found");
    is_int(mg_json_member(o, f.len, S("missing"), &s, &l), MG_JSON_NONE,
           "missing member");
    is_int(mg_json_member(S("[1,2]"), S("a"), &s, &l), MG_JSON_NONE,
           "not an object");
    is_int(mg_json_member(S("{\"a\":1}"), S("a"), NULL, NULL),
           MG_JSON_NUMBER, "NULL start and vlen are allowed");
}


/* differential run against jansson */

static uint64_t  rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t) (rng_state >> 11);
}


static const char  *seeds[] = {
    "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":"
    "\"system\",\"content\":\"You are helpful.\"},{\"role\":\"user\","
    "\"content\":\"Caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \xf0\x9f\x98\x80 \\n\"}"
    "],\"temperature\":0.7,\"max_tokens\":-12,\"stop\":null,\"n\":1e3,"
    "\"x\":[true,false,{}],\"mo\\u0064el\":\"override\"}",
    "[1,-0.5e+3,\"\\\"\\\\\\/\\b\\f\\n\\r\\t\",[],{\"\":\"\"}]",
    "{\"a\":{\"b\":{\"c\":[1,[2,[3]]]}},\"d\":\"\xe2\x82\xac\xed\x9f\xbf\"}",
    "\"\\uD834\\uDD1E \xf4\x8f\xbf\xbf \xe0\xa0\x80\"",
    "  {  \"k\"  :  [ 0 , 1.0 , -2E-2 ]  }  ",
};

static const unsigned char  interesting[] = {
    '{', '}', '[', ']', ',', ':', '"', '\\', 'u', 'd', '0', '1', '9', '-',
    '+', '.', 'e', 'E', 't', 'f', 'n', ' ', '\n', '\t', 0x00, 0x1f, 0x7f,
    0x80, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
    0xa0, 0x9f, 0x8f, 0x90
};


static void
check_fields_against(const char *doc, size_t len, json_t *root,
    unsigned long *mismatch)
{
    size_t            k, i;
    ssize_t           n;
    char              out[2048];
    const char       *key;
    json_t           *v;
    mg_json_type_t    want;
    mg_json_field_t   f[16];
    mg_json_error_t   err;

    k = 0;

    json_object_foreach(root, key, v) {
        if (k == 16) {
            break;
        }

        f[k].name = key;
        f[k].name_len = strlen(key);
        k++;
    }

    if (mg_json_scan(doc, len, f, k, 64, &err) != MG_JSON_OK) {
        (*mismatch)++;
        return;
    }

    for (i = 0; i < k; i++) {
        v = json_object_get(root, f[i].name);

        switch (json_typeof(v)) {
        case JSON_OBJECT: want = MG_JSON_OBJECT; break;
        case JSON_ARRAY: want = MG_JSON_ARRAY; break;
        case JSON_STRING: want = MG_JSON_STRING; break;
        case JSON_INTEGER:
        case JSON_REAL: want = MG_JSON_NUMBER; break;
        case JSON_TRUE: want = MG_JSON_TRUE; break;
        case JSON_FALSE: want = MG_JSON_FALSE; break;
        default: want = MG_JSON_NULL; break;
        }

        if (f[i].type != want) {
            (*mismatch)++;
            if (*mismatch < 5) {
                tap_diag("field %s: type %d, jansson %d", f[i].name,
                         (int) f[i].type, (int) want);
            }
            continue;
        }

        if (want == MG_JSON_STRING) {
            n = mg_json_unescape(doc + f[i].start, f[i].len, out,
                                 sizeof(out));

            if (n < 0 || (size_t) n != json_string_length(v)
                || memcmp(out, json_string_value(v), n) != 0)
            {
                (*mismatch)++;
                if (*mismatch < 5) {
                    tap_diag("field %s: unescaped value differs",
                             f[i].name);
                }
            }
        }
    }
}


static void
test_differential(void)
{
    int                 mine, theirs;
    char                buf[4096], tmp[8];
    size_t              len, pos, i, ops, k, n, m, seedlen;
    json_t             *root;
    json_error_t        jerr;
    unsigned long       cases, valid_cases, mismatch, fmismatch, skipped,
                        nul_cases, nul_accepted;

    cases = 0;
    valid_cases = 0;
    mismatch = 0;
    fmismatch = 0;
    skipped = 0;
    nul_cases = 0;
    nul_accepted = 0;

    for (i = 0; i < 200000; i++) {
        const char  *seed = seeds[i % (sizeof(seeds) / sizeof(seeds[0]))];

        seedlen = strlen(seed);
        memcpy(buf, seed, seedlen);
        len = seedlen;

        ops = (i < 5) ? 0 : 1 + rnd() % 3;

        for (k = 0; k < ops; k++) {
            pos = len ? rnd() % len : 0;

            switch (rnd() % 8) {
            case 0:     /* replace */
                if (len) {
                    buf[pos] = interesting[rnd() % sizeof(interesting)];
                }
                break;
            case 1:     /* insert */
                if (len < sizeof(buf) - 1) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = interesting[rnd() % sizeof(interesting)];
                    len++;
                }
                break;
            case 2:     /* delete */
                if (len) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 3:     /* truncate */
                len = pos;
                break;
            case 4:     /* duplicate a piece */
                n = rnd() % 16;
                if (pos + n <= len && len + n < sizeof(buf)) {
                    memmove(buf + pos + n, buf + pos, len - pos);
                    len += n;
                }
                break;
            case 5:     /* a multi-byte sequence, right or wrong */
                n = 1 + rnd() % 4;
                if (len + n < sizeof(buf)) {
                    memmove(buf + pos + n, buf + pos, len - pos);
                    buf[pos] = (char) (0xc0 + rnd() % 0x38);
                    for (m = 1; m < n; m++) {
                        buf[pos + m] = (char) ((rnd() % 8) ? 0x80 + rnd() % 0x40
                                                            : rnd());
                    }
                    len += n;
                }
                break;
            case 6:     /* a \u escape, often a surrogate */
                if (len + 6 < sizeof(buf)) {
                    memmove(buf + pos + 6, buf + pos, len - pos);
                    snprintf(tmp, sizeof(tmp), "\\u%04x",
                             (rnd() % 2) ? 0xd800 + rnd() % 0x800
                                         : rnd() % 0x10000);
                    memcpy(buf + pos, tmp, 6);
                    len += 6;
                }
                break;
            default:    /* random byte */
                if (len) {
                    buf[pos] = (char) rnd();
                }
                break;
            }
        }

        mine = (scan(buf, len, 64) == MG_JSON_OK);

        if (memchr(buf, '\0', len) != NULL) {
            /*
             * jansson takes "0\0" for "0"; a raw NUL is never valid JSON,
             * so only our answer is checked
             */
            nul_cases++;
            nul_accepted += mine;
            continue;
        }

        root = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        theirs = (root != NULL);

        if (!theirs && (strstr(jerr.text, "overflow") != NULL
                        || strstr(jerr.text, "too big") != NULL))
        {
            /* jansson refuses numbers it cannot store; JSON does not */
            skipped++;
            continue;
        }

        cases++;

        if (mine != theirs) {
            mismatch++;

            if (mismatch < 5) {
                tap_diag("mismatch: mine %d jansson %d (%s) on %zu bytes:",
                         mine, theirs, theirs ? "" : jerr.text, len);
                tap_diag_str("doc", buf, len);
            }
        }

        if (root != NULL) {
            valid_cases++;

            if (json_is_object(root)) {
                check_fields_against(buf, len, root, &fmismatch);
            }

            json_decref(root);
        }
    }

    ok(mismatch == 0, "validity agrees with jansson on %lu mutated "
       "documents (%lu valid, %lu skipped)", cases, valid_cases, skipped);
    ok(valid_cases > 1000 && cases - valid_cases > 1000,
       "the mutations give both valid and invalid documents");
    ok(nul_cases > 100 && nul_accepted == 0,
       "none of %lu documents with a raw NUL byte is accepted", nul_cases);
    ok(fmismatch == 0, "member types and unescaped strings agree with "
       "jansson");
}


int
main(void)
{
    test_corpus();
    test_depth();
    test_fields();
    test_unescape();
    test_escape();
    test_member();
    test_differential();

    return tap_done();
}
