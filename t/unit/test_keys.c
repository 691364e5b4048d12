/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway keys: the key file line, every field and its bounds, the errors,
 * the hash, and the policy checks.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_keys.h"


#define HASH_ABC                                                              \
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define HASH_EMPTY                                                            \
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#define LINE_HEAD  "k1 acme sha256:" HASH_ABC


static mg_key_t  key, key2;
static char      err[MG_KEY_ERR_LEN];
static char      buf[MG_KEY_LINE_MAX * 2];


static int
line(const char *s)
{
    err[0] = '\0';
    return mg_key_parse_line(&key, s, strlen(s), err);
}


/* LINE_HEAD followed by " " and opts */

static int
opts(const char *o)
{
    snprintf(buf, sizeof(buf), "%s %s", LINE_HEAD, o);
    return line(buf);
}


static int
set(mg_key_t *k, const char *name, const char *value)
{
    err[0] = '\0';
    return mg_key_set(k, name, strlen(name), value, strlen(value), err);
}


static int64_t
exp_of(const char *s)
{
    return mg_key_parse_expires(s, strlen(s));
}


static int
model(const char *m)
{
    return mg_key_model_allowed(&key, m, strlen(m));
}


/* a line failed with a message containing what */

#define fails(rc, what, ...)                                                  \
    do {                                                                      \
        int  rc_ = (rc);                                                      \
        if (!ok(rc_ == MG_KEY_ERROR && strstr(err, what) != NULL,             \
                __VA_ARGS__))                                                 \
        {                                                                     \
            tap_diag("rc %d, err \"%s\", want \"%s\"", rc_, err, what);       \
        }                                                                     \
    } while (0)


/* n comma-separated patterns "mNNN" (plus suffix) into buf */

static void
patterns(char *out, size_t n)
{
    size_t  i;

    out[0] = '\0';

    for (i = 0; i < n; i++) {
        sprintf(out + strlen(out), "%sm%03zu", i ? "," : "", i);
    }
}


static void
test_hash(void)
{
    u_char  h[MG_KEY_HASH_LEN], h2[MG_KEY_HASH_LEN];
    char    hex[2 * MG_KEY_HASH_LEN + 1];
    size_t  i;

    is_int(mg_key_hash("abc", 3, h), 0, "hash: abc");

    for (i = 0; i < MG_KEY_HASH_LEN; i++) {
        sprintf(hex + 2 * i, "%02x", h[i]);
    }

    is_str(hex, strlen(hex), HASH_ABC, "hash: SHA-256(abc)");

    is_int(mg_key_hash("", 0, h2), 0, "hash: empty");

    for (i = 0; i < MG_KEY_HASH_LEN; i++) {
        sprintf(hex + 2 * i, "%02x", h2[i]);
    }

    is_str(hex, strlen(hex), HASH_EMPTY, "hash: SHA-256 of nothing");

    /* the hash of a line is the hash of the key it stands for */
    is_int(line(LINE_HEAD), MG_KEY_OK, "hash: a line with the hash of abc");
    ok(mg_key_hash_eq(key.hash, h), "hash: the line's hash equals it");
    ok(!mg_key_hash_eq(key.hash, h2), "hash: another hash differs");

    memcpy(h2, h, sizeof(h));
    h2[0] ^= 1;
    ok(!mg_key_hash_eq(h, h2), "hash_eq: first byte differs");
    h2[0] ^= 1;
    h2[MG_KEY_HASH_LEN - 1] ^= 0x80;
    ok(!mg_key_hash_eq(h, h2), "hash_eq: last byte differs");
    h2[MG_KEY_HASH_LEN - 1] ^= 0x80;
    ok(mg_key_hash_eq(h, h2), "hash_eq: equal");
}


static void
test_presented(void)
{
    char  k[MG_KEY_PRESENTED_MAX + 2];

    memset(k, 'a', sizeof(k));

    ok(mg_key_presented_ok(k, MG_KEY_PRESENTED_MIN), "presented: min");
    ok(!mg_key_presented_ok(k, MG_KEY_PRESENTED_MIN - 1),
       "presented: below min");
    ok(mg_key_presented_ok(k, MG_KEY_PRESENTED_MAX), "presented: max");
    ok(!mg_key_presented_ok(k, MG_KEY_PRESENTED_MAX + 1),
       "presented: above max");
    ok(!mg_key_presented_ok(k, 0), "presented: empty");

    ok(mg_key_presented_ok("mgk_Ab-_0123456789abcdefghijklmnopqrstuvwxyzABC",
                           47), "presented: an mg-key key");
    ok(mg_key_presented_ok("sk-!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", 35),
       "presented: any printable ASCII");

    k[5] = ' ';
    ok(!mg_key_presented_ok(k, 20), "presented: a space");
    k[5] = '\t';
    ok(!mg_key_presented_ok(k, 20), "presented: a tab");
    k[5] = '\0';
    ok(!mg_key_presented_ok(k, 20), "presented: a NUL");
    k[5] = 0x7f;
    ok(!mg_key_presented_ok(k, 20), "presented: DEL");
    k[5] = (char) 0xc3;
    ok(!mg_key_presented_ok(k, 20), "presented: not ASCII");
    k[5] = '\n';
    ok(!mg_key_presented_ok(k, 20), "presented: a newline");
}


static void
test_line(void)
{
    /* every field */

    is_int(opts("expires=2027-01-31T00:00:00Z models=gpt-4o,claude-* "
                "endpoints=chat,models max_tokens=4096 rpm=60 tpm=100000 "
                "tpd=2000000 budget=50000000"), MG_KEY_OK, "line: all fields");
    is_str(key.id, key.id_len, "k1", "line: id");
    is_str(key.tenant, key.tenant_len, "acme", "line: tenant");
    ok(key.id[key.id_len] == '\0' && key.tenant[key.tenant_len] == '\0',
       "line: id and tenant are NUL-terminated");
    is_int(key.expires, 1801353600, "line: expires");
    is_int(key.nmodels, 2, "line: two models");
    is_int(key.endpoints, MG_KEY_EP_CHAT | MG_KEY_EP_MODELS,
           "line: endpoints");
    is_int(key.max_tokens, 4096, "line: max_tokens");
    is_int(key.rpm, 60, "line: rpm");
    is_int(key.tpm, 100000, "line: tpm");
    is_int(key.tpd, 2000000, "line: tpd");
    is_int(key.budget, 50000000, "line: budget");
    is_int(key.set, 0x7ff, "line: every field set");

    /* only the required ones: no policy, no limits */

    is_int(line(LINE_HEAD), MG_KEY_OK, "line: required fields only");
    is_int(key.set, MG_KEY_F_ID | MG_KEY_F_TENANT | MG_KEY_F_HASH,
           "line: only id, tenant and hash set");
    ok(key.expires == 0 && key.nmodels == 0 && key.endpoints == 0
       && key.max_tokens == 0 && key.rpm == 0 && key.tpm == 0
       && key.tpd == 0 && key.budget == 0, "line: the rest is unset");

    /* blanks, separators, line ends */

    is_int(line("\t k1\t\tacme  sha256:" HASH_ABC "\t rpm=5 \t"), MG_KEY_OK,
           "line: tabs and runs of spaces");
    is_int(key.rpm, 5, "line: tabs: rpm");
    is_int(line(LINE_HEAD " rpm=7\r\n"), MG_KEY_OK, "line: CRLF");
    is_int(key.rpm, 7, "line: CRLF is not part of the value");
    is_int(line(LINE_HEAD " rpm=8\n"), MG_KEY_OK, "line: LF");
    is_int(key.rpm, 8, "line: LF is not part of the value");
    fails(line(LINE_HEAD " rpm=9\r"), "rpm:",
          "line: a lone CR stays in the value");

    is_int(line(""), MG_KEY_SKIP, "line: empty");
    is_int(line("\n"), MG_KEY_SKIP, "line: LF only");
    is_int(line("\r\n"), MG_KEY_SKIP, "line: CRLF only");
    is_int(line("  \t "), MG_KEY_SKIP, "line: blanks");
    is_int(line("# k1 acme sha256:" HASH_ABC), MG_KEY_SKIP, "line: comment");
    is_int(line("   # indented"), MG_KEY_SKIP, "line: indented comment");
    fails(line(LINE_HEAD " # note"), "expected name=value",
          "line: no comment after fields");

    /* the positional fields */

    fails(line("k1"), "expected \"ID TENANT sha256:HEX",
          "line: only an id");
    fails(line("k1 acme"), "expected \"ID TENANT sha256:HEX",
          "line: no hash");
    fails(line("k/1 acme sha256:" HASH_ABC), "id: expected 1-64",
          "line: a '/' in the id");
    fails(line("k1 ac:me sha256:" HASH_ABC), "tenant: expected 1-64",
          "line: a ':' in the tenant");
    fails(line("k1 acme " HASH_ABC), "hash: expected sha256:",
          "line: a hash without sha256:");
    fails(line("k1 acme SHA256:" HASH_ABC), "hash: expected sha256:",
          "line: SHA256: is not sha256:");
    fails(line("k1 acme sha256:" HASH_ABC "0"), "hash: expected sha256:",
          "line: 65 hex digits");
    fails(line("k1 acme sha256:ba7816bf8f01cfea414140de5dae2223b00361a3961"
               "77a9cb410ff61f20015a"), "hash: expected sha256:",
          "line: 63 hex digits");
    fails(line("k1 acme sha256:ga7816bf8f01cfea414140de5dae2223b00361a3961"
               "77a9cb410ff61f20015ad"), "hash: expected sha256:",
          "line: a non-hex digit");
    ok(strstr(err, "ga7816") == NULL, "line: a bad hash is not repeated");

    is_int(line("k1 acme sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A3961"
                "77A9CB410FF61F20015AD"), MG_KEY_OK, "line: uppercase hex");
    memcpy(key2.hash, key.hash, MG_KEY_HASH_LEN);
    is_int(line(LINE_HEAD), MG_KEY_OK, "line: lowercase hex");
    ok(mg_key_hash_eq(key.hash, key2.hash), "line: either case, one hash");

    /* name=value */

    fails(opts("rpm"), "expected name=value, not \"rpm\"", "line: no '='");
    fails(opts("=5"), "expected name=value", "line: no name");
    fails(opts("color=blue"), "unknown field \"color\"",
          "line: unknown field");
    fails(opts("RPM=5"), "unknown field \"RPM\"",
          "line: field names are lowercase");
    fails(opts("r\x01pm=5"), "unknown field \"r?pm\"",
          "line: a control byte is not echoed");
    fails(opts("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1"),
          "unknown field \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\"",
          "line: a long name is cut in the message");
    ok(strlen(err) < MG_KEY_ERR_LEN, "line: the message fits");
    fails(opts("rpm=5 rpm=5"), "field \"rpm\" given twice",
          "line: duplicate field, same value");
    fails(opts("models=a models=b"), "field \"models\" given twice",
          "line: duplicate field, other value");
    fails(opts("id=k2"), "field \"id\" given twice",
          "line: id as an option too");
    fails(opts("tenant=other"), "field \"tenant\" given twice",
          "line: tenant as an option too");
    fails(opts("hash=sha256:" HASH_EMPTY), "field \"hash\" given twice",
          "line: hash as an option too");
    fails(opts("rpm="), "field \"rpm\" is empty", "line: empty value");
    fails(opts("rpm=5=6"), "rpm: expected an integer",
          "line: '=' in a number");

    /* the line's length */

    memset(buf, ' ', MG_KEY_LINE_MAX + 1);
    memcpy(buf, LINE_HEAD, strlen(LINE_HEAD));
    is_int(mg_key_parse_line(&key, buf, MG_KEY_LINE_MAX, err), MG_KEY_OK,
           "line: %d bytes", MG_KEY_LINE_MAX);
    buf[MG_KEY_LINE_MAX] = '\n';
    is_int(mg_key_parse_line(&key, buf, MG_KEY_LINE_MAX + 1, err), MG_KEY_OK,
           "line: %d bytes and LF", MG_KEY_LINE_MAX);
    buf[MG_KEY_LINE_MAX] = ' ';
    fails(mg_key_parse_line(&key, buf, MG_KEY_LINE_MAX + 1, err),
          "line longer than 8192 bytes", "line: one byte too long");
}


static void
test_names(void)
{
    char  id[MG_KEY_ID_MAX + 2];

    is_int(line("A.b_c-9 T.e_n-0 sha256:" HASH_ABC), MG_KEY_OK,
           "names: every allowed kind of byte");
    is_str(key.id, key.id_len, "A.b_c-9", "names: id kept as written");

    memset(id, 'i', sizeof(id));
    id[MG_KEY_ID_MAX] = '\0';

    snprintf(buf, sizeof(buf), "%s %s sha256:%s", id, id, HASH_ABC);
    is_int(line(buf), MG_KEY_OK, "names: %d bytes", MG_KEY_ID_MAX);
    is_int(key.id_len, MG_KEY_ID_MAX, "names: id length");
    is_int(key.tenant_len, MG_KEY_ID_MAX, "names: tenant length");

    id[MG_KEY_ID_MAX] = 'i';
    id[MG_KEY_ID_MAX + 1] = '\0';

    snprintf(buf, sizeof(buf), "%s acme sha256:%s", id, HASH_ABC);
    fails(line(buf), "id: expected 1-64", "names: id of 65 bytes");
    snprintf(buf, sizeof(buf), "k1 %s sha256:%s", id, HASH_ABC);
    fails(line(buf), "tenant: expected 1-64", "names: tenant of 65 bytes");

    mg_key_init(&key);
    fails(set(&key, "id", ""), "field \"id\" is empty", "names: empty id");
    fails(set(&key, "tenant", "a b"), "tenant: expected",
          "names: a space in a tenant");
    fails(set(&key, "id", "k\xc3\xa9"), "id: expected",
          "names: not ASCII");
}


static void
test_expires(void)
{
    is_int(exp_of("2027-01-31T00:00:00Z"), 1801353600, "expires: RFC 3339");
    is_int(exp_of("2000-02-29T12:34:56Z"), 951827696,
           "expires: Feb 29 of a year divisible by 400");
    is_int(exp_of("2024-12-31T23:59:59Z"), 1735689599,
           "expires: the last second of a leap year");
    is_int(exp_of("1970-01-01T00:00:01Z"), 1, "expires: the first second");
    is_int(exp_of("9999-12-31T23:59:59Z"), MG_KEY_EXPIRES_MAX,
           "expires: the last RFC 3339 second");
    is_int(exp_of("1800000000"), 1800000000, "expires: unix seconds");
    is_int(exp_of("1"), 1, "expires: unix 1");
    is_int(exp_of("253402300799"), MG_KEY_EXPIRES_MAX,
           "expires: unix max");
    is_int(exp_of("000000000001"), 1, "expires: leading zeros");

    is_int(exp_of("1970-01-01T00:00:00Z"), -1, "expires: the epoch");
    is_int(exp_of("1969-12-31T23:59:59Z"), -1, "expires: before 1970");
    is_int(exp_of("2023-02-29T00:00:00Z"), -1, "expires: Feb 29, 2023");
    is_int(exp_of("2100-02-29T00:00:00Z"), -1, "expires: Feb 29, 2100");
    is_int(exp_of("2024-04-31T00:00:00Z"), -1, "expires: April 31");
    is_int(exp_of("2024-13-01T00:00:00Z"), -1, "expires: month 13");
    is_int(exp_of("2024-00-01T00:00:00Z"), -1, "expires: month 0");
    is_int(exp_of("2024-01-00T00:00:00Z"), -1, "expires: day 0");
    is_int(exp_of("2024-01-32T00:00:00Z"), -1, "expires: day 32");
    is_int(exp_of("2024-01-01T24:00:00Z"), -1, "expires: hour 24");
    is_int(exp_of("2024-01-01T00:60:00Z"), -1, "expires: minute 60");
    is_int(exp_of("2024-01-01T00:00:60Z"), -1, "expires: second 60");
    is_int(exp_of("2024-01-01T00:00:00z"), -1, "expires: lowercase z");
    is_int(exp_of("2024-01-01t00:00:00Z"), -1, "expires: lowercase t");
    is_int(exp_of("2024-01-01 00:00:00Z"), -1, "expires: a space for T");
    is_int(exp_of("2024-01-01T00:00:00+00:00"), -1,
           "expires: an offset, not Z");
    is_int(exp_of("2024-01-01T00:00:00.5Z"), -1, "expires: fractions");
    is_int(exp_of("2024-01-01"), -1, "expires: a date only");
    is_int(exp_of("2024-1a-01T00:00:00Z"), -1, "expires: a letter");
    is_int(exp_of("0"), -1, "expires: unix 0");
    is_int(exp_of("253402300800"), -1, "expires: unix past max");
    is_int(exp_of("1000000000000"), -1, "expires: 13 digits");
    is_int(exp_of("-1"), -1, "expires: negative");
    is_int(exp_of("+5"), -1, "expires: a sign");
    is_int(exp_of("12a"), -1, "expires: a letter in seconds");
    is_int(exp_of(""), -1, "expires: empty");

    fails(opts("expires=2024-01-01"), "expires: expected YYYY-MM-DD",
          "expires: the line's message");
    is_int(opts("expires=1800000000"), MG_KEY_OK, "expires: unix in a line");
    is_int(key.expires, 1800000000, "expires: unix in a line: value");

    /* now >= expires is expired */

    is_int(opts("expires=100"), MG_KEY_OK, "expired: a key of 100");
    ok(!mg_key_expired(&key, 99), "expired: not at 99");
    ok(mg_key_expired(&key, 100), "expired: at 100");
    ok(mg_key_expired(&key, 101), "expired: after");
    is_int(line(LINE_HEAD), MG_KEY_OK, "expired: a key without expiry");
    ok(!mg_key_expired(&key, MG_KEY_EXPIRES_MAX + 1), "expired: never");
}


static void
test_models(void)
{
    char  p[MG_KEY_MODEL_MAX + 2];
    char  list[MG_KEY_MODELS_TEXT_MAX * 2];

    is_int(opts("models=gpt-4o,claude-*,us.anthropic.claude:0"), MG_KEY_OK,
           "models: three patterns");
    is_int(key.nmodels, 3, "models: count");
    ok(model("gpt-4o"), "models: exact");
    ok(!model("gpt-4o-mini"), "models: an exact name is not a prefix");
    ok(!model("gpt-4"), "models: nor is its prefix allowed");
    ok(!model("GPT-4o"), "models: case matters");
    ok(model("claude-3-5-sonnet"), "models: prefix");
    ok(model("claude-"), "models: the prefix itself");
    ok(!model("claude"), "models: shorter than the prefix");
    ok(!model("xclaude-3"), "models: a prefix is anchored at the start");
    ok(model("us.anthropic.claude:0"), "models: ':' and '.' in a name");
    ok(!model(""), "models: no model");

    is_int(line(LINE_HEAD), MG_KEY_OK, "models: none listed");
    ok(model("anything"), "models: none listed allows every model");
    ok(model(""), "models: none listed allows even no model");

    is_int(opts("models=*"), MG_KEY_OK, "models: '*'");
    ok(model("anything") && model(""), "models: '*' allows every model");

    fails(opts("models=a*b"), "models: '*' only ends a pattern",
          "models: '*' inside");
    fails(opts("models=*b"), "models: '*' only ends a pattern",
          "models: '*' first");
    fails(opts("models=a**"), "models: '*' only ends a pattern",
          "models: '**'");
    fails(opts("models=a,,b"), "models: an empty pattern",
          "models: ',,'");
    fails(opts("models=a,"), "models: an empty pattern",
          "models: a trailing ','");
    fails(opts("models=,a"), "models: an empty pattern",
          "models: a leading ','");
    fails(opts("models=a\x01"), "models: not printable ASCII at byte 2",
          "models: a control byte");
    fails(opts("models=\xc3\xa9"), "models: not printable ASCII",
          "models: not ASCII");

    /* bounds */

    patterns(list, MG_KEY_MODELS_MAX);
    snprintf(buf, sizeof(buf), "%s models=%s", LINE_HEAD, list);
    is_int(line(buf), MG_KEY_OK, "models: %d patterns", MG_KEY_MODELS_MAX);
    is_int(key.nmodels, MG_KEY_MODELS_MAX, "models: all kept");
    ok(model("m000") && model("m063") && !model("m064"),
       "models: the first and the last match");

    patterns(list, MG_KEY_MODELS_MAX + 1);
    snprintf(buf, sizeof(buf), "%s models=%s", LINE_HEAD, list);
    fails(line(buf), "models: more than 64 patterns",
          "models: %d patterns", MG_KEY_MODELS_MAX + 1);

    memset(p, 'm', sizeof(p));
    p[MG_KEY_MODEL_MAX] = '\0';
    snprintf(buf, sizeof(buf), "%s models=%s", LINE_HEAD, p);
    is_int(line(buf), MG_KEY_OK, "models: a pattern of %d bytes",
           MG_KEY_MODEL_MAX);
    ok(model(p), "models: it matches");

    p[MG_KEY_MODEL_MAX - 1] = '*';
    snprintf(buf, sizeof(buf), "%s models=%s", LINE_HEAD, p);
    is_int(line(buf), MG_KEY_OK, "models: a prefix of %d bytes with '*'",
           MG_KEY_MODEL_MAX);

    p[MG_KEY_MODEL_MAX - 1] = 'm';
    p[MG_KEY_MODEL_MAX] = 'm';
    p[MG_KEY_MODEL_MAX + 1] = '\0';
    snprintf(buf, sizeof(buf), "%s models=a,%s", LINE_HEAD, p);
    fails(line(buf), "models: a pattern longer than 256 bytes",
          "models: a pattern of %d bytes", MG_KEY_MODEL_MAX + 1);

    /* 16 patterns of 256 bytes and their commas pass the text bound */
    p[MG_KEY_MODEL_MAX] = '\0';
    list[0] = '\0';

    while (strlen(list) + MG_KEY_MODEL_MAX + 1 <= MG_KEY_MODELS_TEXT_MAX) {
        sprintf(list + strlen(list), "%s%s", list[0] ? "," : "", p);
    }

    mg_key_init(&key);
    is_int(set(&key, "models", list), MG_KEY_OK, "models: %zu bytes",
           strlen(list));
    sprintf(list + strlen(list), ",%s", p);
    mg_key_init(&key);
    fails(set(&key, "models", list), "models: longer than 4096 bytes",
          "models: %zu bytes", strlen(list));

    /* a refused value leaves the record as it was */
    is_int(key.nmodels, 0, "models: nothing kept of a refused value");
    is_int(key.set, 0, "models: not marked as set");
    is_int(set(&key, "models", "a"), MG_KEY_OK,
           "models: may be set after a refusal");
    ok(model("a") && !model("b"), "models: the later value holds");
}


static void
test_endpoints(void)
{
    is_int(opts("endpoints=chat,models"), MG_KEY_OK, "endpoints: two");
    ok(mg_key_endpoint_allowed(&key, MG_KEY_EP_CHAT), "endpoints: chat");
    ok(mg_key_endpoint_allowed(&key, MG_KEY_EP_MODELS), "endpoints: models");
    ok(!mg_key_endpoint_allowed(&key, MG_KEY_EP_EMBEDDINGS),
       "endpoints: not embeddings");
    ok(!mg_key_endpoint_allowed(&key, MG_KEY_EP_RESPONSES),
       "endpoints: not responses");
    ok(!mg_key_endpoint_allowed(&key, MG_KEY_EP_CONVERSATIONS),
       "endpoints: not conversations");
    ok(!mg_key_endpoint_allowed(&key, 0),
       "endpoints: an unclassified endpoint is not listed");

    is_int(opts("endpoints=chat,embeddings,responses,conversations,models"),
           MG_KEY_OK, "endpoints: all five");
    is_int(key.endpoints, MG_KEY_EP_ALL, "endpoints: all five bits");
    is_int(opts("endpoints=chat,chat"), MG_KEY_OK,
           "endpoints: a repeat is harmless");
    is_int(key.endpoints, MG_KEY_EP_CHAT, "endpoints: one bit");

    is_int(line(LINE_HEAD), MG_KEY_OK, "endpoints: none listed");
    ok(mg_key_endpoint_allowed(&key, MG_KEY_EP_EMBEDDINGS)
       && mg_key_endpoint_allowed(&key, MG_KEY_EP_CONVERSATIONS)
       && mg_key_endpoint_allowed(&key, 0),
       "endpoints: none listed allows every one");

    fails(opts("endpoints=chat,completions"),
          "endpoints: unknown endpoint \"completions\"",
          "endpoints: unknown");
    fails(opts("endpoints=Chat"), "unknown endpoint \"Chat\"",
          "endpoints: names are lowercase");
    fails(opts("endpoints=chat,"), "unknown endpoint \"\"",
          "endpoints: a trailing ','");
    fails(opts("endpoints=chat,,models"), "unknown endpoint \"\"",
          "endpoints: ',,'");

    is_int(mg_key_endpoint_bit("responses", 9), MG_KEY_EP_RESPONSES,
           "endpoint_bit: responses");
    is_int(mg_key_endpoint_bit("respons", 7), 0, "endpoint_bit: a prefix");

    is_int(mg_key_endpoint_of(MG_EP_CHAT), MG_KEY_EP_CHAT, "endpoint_of: chat");
    is_int(mg_key_endpoint_of(MG_EP_EMBEDDINGS), MG_KEY_EP_EMBEDDINGS,
           "endpoint_of: embeddings");
    is_int(mg_key_endpoint_of(MG_EP_MODELS), MG_KEY_EP_MODELS,
           "endpoint_of: models");
    is_int(mg_key_endpoint_of(MG_EP_MODEL), MG_KEY_EP_MODELS,
           "endpoint_of: models/{id}");
    is_int(mg_key_endpoint_of(MG_EP_RESPONSES), MG_KEY_EP_RESPONSES,
           "endpoint_of: responses");
    is_int(mg_key_endpoint_of(MG_EP_RESPONSE), MG_KEY_EP_RESPONSES,
           "endpoint_of: responses/{id}");
    is_int(mg_key_endpoint_of(MG_EP_CONVERSATIONS), MG_KEY_EP_CONVERSATIONS,
           "endpoint_of: conversations");
    is_int(mg_key_endpoint_of(MG_EP_CONVERSATION), MG_KEY_EP_CONVERSATIONS,
           "endpoint_of: conversations/{id}");
    is_int(mg_key_endpoint_of(MG_EP_UNKNOWN), 0, "endpoint_of: unknown");
}


static void
test_numbers(void)
{
    is_int(opts("max_tokens=1000"), MG_KEY_OK, "max_tokens: 1000");
    is_int(mg_key_tokens_over(&key, 1000), 0, "tokens: at the cap");
    is_int(mg_key_tokens_over(&key, 0), 0, "tokens: none requested");
    is_int(mg_key_tokens_over(&key, 1001), 1000, "tokens: over names the cap");
    is_int(mg_key_tokens_over(&key, UINT64_MAX), 1000, "tokens: far over");

    is_int(line(LINE_HEAD), MG_KEY_OK, "tokens: no cap");
    is_int(mg_key_tokens_over(&key, UINT64_MAX), 0, "tokens: never over");

    is_int(opts("max_tokens=2147483647"), MG_KEY_OK, "max_tokens: max");
    is_int(key.max_tokens, 2147483647, "max_tokens: max kept");
    fails(opts("max_tokens=2147483648"), "max_tokens: expected an integer "
          "1..2147483647", "max_tokens: past max");
    fails(opts("max_tokens=0"), "max_tokens: expected",
          "max_tokens: 0 is refused");
    fails(opts("max_tokens=-1"), "max_tokens: expected",
          "max_tokens: negative");
    fails(opts("max_tokens=+1"), "max_tokens: expected",
          "max_tokens: a sign");
    fails(opts("max_tokens=1e3"), "max_tokens: expected",
          "max_tokens: an exponent");
    fails(opts("max_tokens=99999999999999999999999999999"),
          "max_tokens: expected", "max_tokens: far past max");

    is_int(opts("rpm=1000000000000000 tpm=1000000000000000 "
                "tpd=1000000000000000 budget=1000000000000000"), MG_KEY_OK,
           "limits: max");
    ok(key.rpm == MG_KEY_LIMIT_MAX && key.tpm == MG_KEY_LIMIT_MAX
       && key.tpd == MG_KEY_LIMIT_MAX && key.budget == MG_KEY_LIMIT_MAX,
       "limits: max kept");
    fails(opts("rpm=1000000000000001"), "rpm: expected an integer "
          "1..1000000000000000", "rpm: past max");
    fails(opts("tpm=1000000000000001"), "tpm: expected", "tpm: past max");
    fails(opts("tpd=1000000000000001"), "tpd: expected", "tpd: past max");
    fails(opts("budget=1000000000000001"), "budget: expected",
          "budget: past max");
    fails(opts("rpm=0"), "rpm: expected", "rpm: 0 is refused");
    fails(opts("tpm=1.5"), "tpm: expected", "tpm: a fraction");
    fails(opts("tpd=ten"), "tpd: expected", "tpd: a word");
    fails(opts("budget=18446744073709551617"), "budget: expected",
          "budget: past 2^64");

    mg_key_init(&key);
    fails(set(&key, "rpm", "x"), "rpm: expected", "numbers: refused");
    ok(key.rpm == 0 && key.set == 0, "numbers: nothing kept of a refusal");
}


/* a Redis hash gives the fields one by one, in any order */

static void
test_fields(void)
{
    is_int(opts("expires=2027-01-31T00:00:00Z models=gpt-4o,claude-* "
                "endpoints=chat,models max_tokens=4096 rpm=60 tpm=100000 "
                "tpd=2000000 budget=50000000"), MG_KEY_OK, "fields: a line");

    mg_key_init(&key2);
    ok(set(&key2, "budget", "50000000") == MG_KEY_OK
       && set(&key2, "models", "gpt-4o,claude-*") == MG_KEY_OK
       && set(&key2, "tpd", "2000000") == MG_KEY_OK
       && set(&key2, "hash", "sha256:" HASH_ABC) == MG_KEY_OK
       && set(&key2, "endpoints", "chat,models") == MG_KEY_OK
       && set(&key2, "rpm", "60") == MG_KEY_OK
       && set(&key2, "tenant", "acme") == MG_KEY_OK
       && set(&key2, "expires", "2027-01-31T00:00:00Z") == MG_KEY_OK
       && set(&key2, "tpm", "100000") == MG_KEY_OK
       && set(&key2, "max_tokens", "4096") == MG_KEY_OK
       && set(&key2, "id", "k1") == MG_KEY_OK, "fields: one by one");
    is_int(mg_key_complete(&key2, err), MG_KEY_OK, "fields: complete");
    ok(memcmp(&key, &key2, sizeof(mg_key_t)) == 0,
       "fields: the same record as the line's, byte for byte");

    mg_key_init(&key2);
    fails(mg_key_complete(&key2, err), "no id", "complete: no id");
    set(&key2, "id", "k1");
    fails(mg_key_complete(&key2, err), "no tenant", "complete: no tenant");
    set(&key2, "tenant", "t");
    fails(mg_key_complete(&key2, err), "no hash", "complete: no hash");
    set(&key2, "hash", "sha256:" HASH_ABC);
    is_int(mg_key_complete(&key2, err), MG_KEY_OK, "complete: all three");

    fails(set(&key2, "tenant", "u"), "field \"tenant\" given twice",
          "fields: a repeated field");
    is_str(key2.tenant, key2.tenant_len, "t",
           "fields: the first value stays");
    fails(mg_key_set(&key2, "", 0, "x", 1, err), "unknown field \"\"",
          "fields: an empty name");
    is_int(mg_key_set(&key2, "rpmx", 3, "5x", 1, err), MG_KEY_OK,
           "fields: the lengths given are used");
    is_int(key2.rpm, 5, "fields: rpm by length");
}


int
main(void)
{
    ok(sizeof(mg_key_t) <= MG_KEY_SIZE_MAX, "a record is %zu bytes, "
       "within %d", sizeof(mg_key_t), MG_KEY_SIZE_MAX);

    test_hash();
    test_presented();
    test_line();
    test_names();
    test_expires();
    test_models();
    test_endpoints();
    test_numbers();
    test_fields();

    return tap_done();
}
