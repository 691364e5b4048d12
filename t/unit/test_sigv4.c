/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * SigV4: the official AWS test-suite vectors of protocols.md 6.3, the
 * canonicalization rules one by one, the limits, and Bedrock requests
 * signed by the AWS SDK's own signer (@smithy/signature-v4), read from
 * t/fixtures/sigv4/bedrock.json (made by gen.mjs there; node is not run
 * here).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "mg_sigv4.h"


#define S(s)  s, sizeof(s) - 1
#define H(n, v)  { S(n), S(v) }

#define OUT_CAP  8192

#define AKID     "AKIDEXAMPLE"
#define SECRET   "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define DATE     "20150830T123600Z"
#define HOST     "example.amazonaws.com"
#define EMPTY_SHA \
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define CRED \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/" \
    "aws4_request, "

#define STS_TOKEN \
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLW" \
    "sKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGd" \
    "eehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd" \
    "8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm" \
    "8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="


static u_char  key_service[MG_SIGV4_KEY_LEN];


static void
hex(const u_char *in, size_t len, char *out)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        sprintf(out + 2 * i, "%02x", in[i]);
    }

    out[2 * len] = '\0';
}


/* a request of the AWS test suite: example.amazonaws.com, service */

static void
suite_request(mg_sigv4_request_t *r, const char *method, const char *path,
    const char *query, const mg_sigv4_header_t *h, size_t nh,
    const char *payload_hash)
{
    memset(r, 0, sizeof(mg_sigv4_request_t));

    r->method = method;
    r->method_len = strlen(method);
    r->path = path;
    r->path_len = strlen(path);
    r->query = query;
    r->query_len = query ? strlen(query) : 0;
    r->headers = h;
    r->nheaders = nh;
    r->payload_hash = payload_hash;
    r->payload_hash_len = strlen(payload_hash);
    r->access_key_id = AKID;
    r->access_key_id_len = sizeof(AKID) - 1;
    r->key = key_service;
    r->amz_date = DATE;
    r->region = "us-east-1";
    r->region_len = 9;
    r->service = "service";
    r->service_len = 7;
}


/* signs and compares the Authorization value and, if given, the CR */

static void
check_sign(const char *name, const mg_sigv4_request_t *r, const char *auth,
    const char *creq)
{
    char     out[OUT_CAP];
    ssize_t  n;

    if (creq) {
        n = mg_sigv4_canonical_request(r, out, sizeof(out));
        ok(n > 0 && n < OUT_CAP, "%s: canonical request fits", name);
        is_str(out, n > 0 ? (size_t) n : 0, creq, "%s: canonical request",
               name);
    }

    n = mg_sigv4_sign(r, out, sizeof(out));
    ok(n > 0 && n < OUT_CAP, "%s: signed", name);
    is_str(out, n > 0 ? (size_t) n : 0, auth, "%s: authorization", name);
}


/* the SHA-256 of the canonical request, as in the string to sign */

static void
check_creq_hash(const char *name, const mg_sigv4_request_t *r,
    const char *exp)
{
    char     out[OUT_CAP], h[65];
    ssize_t  n;

    n = mg_sigv4_canonical_request(r, out, sizeof(out));
    ok(n > 0 && mg_sha256_hex(out, n, h) == 0, "%s: hashed", name);
    is_str(h, 64, exp, "%s: canonical request hash", name);
}


static void
test_helpers(void)
{
    char    out[65], buf[256];
    size_t  n;

    ok(mg_sha256_hex("", 0, out) == 0, "sha256 of nothing");
    is_str(out, strlen(out), EMPTY_SHA, "sha256 of nothing: value");

    ok(mg_sha256_hex(NULL, 0, out) == 0, "sha256 of NULL, 0");
    is_str(out, strlen(out), EMPTY_SHA, "sha256 of NULL, 0: value");

    ok(mg_sha256_hex("abc", 3, out) == 0, "sha256 of abc");
    is_str(out, strlen(out),
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "sha256 of abc: value");

    ok(mg_sha256_hex("Param1=value1", 13, out) == 0, "sha256 of a form");
    is_str(out, strlen(out),
           "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
           "sha256 of a form: value");

    n = mg_sigv4_uri_encode(S("anthropic.claude-3-5-sonnet-20240620-v1:0"),
                            buf, sizeof(buf), 1);
    is_str(buf, n, "anthropic.claude-3-5-sonnet-20240620-v1%3A0",
           "uri_encode: base model id");

    n = mg_sigv4_uri_encode(
        S("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
          "us.meta.llama3-2-1b-instruct-v1:0"), buf, sizeof(buf), 1);
    is_str(buf, n,
           "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
           "inference-profile%2Fus.meta.llama3-2-1b-instruct-v1%3A0",
           "uri_encode: ARN, '/' encoded");

    n = mg_sigv4_uri_encode(S("/a b/c~d_e.f-g%h+i*j\xe1\x88\xb4"), buf,
                            sizeof(buf), 0);
    is_str(buf, n, "/a%20b/c~d_e.f-g%25h%2Bi%2Aj%E1%88%B4",
           "uri_encode: '/' kept, the rest encoded, uppercase hex");

    n = mg_sigv4_uri_encode(S("AZaz09-._~!$&'()*+,;=:@"), buf, sizeof(buf),
                            1);
    is_str(buf, n, "AZaz09-._~%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40",
           "uri_encode: only the unreserved set kept");

    n = mg_sigv4_uri_encode("", 0, NULL, 0, 1);
    is_int(n, 0, "uri_encode: nothing");

    memset(buf, '#', sizeof(buf));
    n = mg_sigv4_uri_encode(S("a:b"), buf, 2, 1);
    is_int(n, 5, "uri_encode: needed length when cut");
    is_str(buf, 3, "a%#", "uri_encode: at most cap bytes written");

    memset(buf, '#', sizeof(buf));
    n = mg_sigv4_uri_encode(S("a:b"), buf, 0, 1);
    is_int(n, 5, "uri_encode: cap 0 counts");
    ok(buf[0] == '#', "uri_encode: cap 0 writes nothing");
}


static void
test_derive(void)
{
    int     rc;
    char    h[65];
    u_char  k[MG_SIGV4_KEY_LEN];
    char    big[MG_SIGV4_MAX_SECRET + 1];

    rc = mg_sigv4_derive_key(S(SECRET), "20150830", S("us-east-1"),
                             S("service"), key_service);
    is_int(rc, MG_SIGV4_OK, "derive: 20150830/us-east-1/service");
    hex(key_service, MG_SIGV4_KEY_LEN, h);
    is_str(h, 64,
           "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75",
           "derive: 20150830/us-east-1/service key");

    /* an amz date does as well: only the first eight bytes are read */

    rc = mg_sigv4_derive_key(S(SECRET), "20120215T000000Z", S("us-east-1"),
                             S("iam"), k);
    is_int(rc, MG_SIGV4_OK, "derive: 20120215/us-east-1/iam");
    hex(k, MG_SIGV4_KEY_LEN, h);
    is_str(h, 64,
           "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d",
           "derive: 20120215/us-east-1/iam key (AWS docs)");

    memset(big, 'x', sizeof(big));
    rc = mg_sigv4_derive_key(big, sizeof(big), "20150830", S("us-east-1"),
                             S("service"), k);
    is_int(rc, MG_SIGV4_ELIMIT, "derive: an oversized secret refused");

    rc = mg_sigv4_derive_key(big, MG_SIGV4_MAX_SECRET, "20150830",
                             S("us-east-1"), S("service"), k);
    is_int(rc, MG_SIGV4_OK, "derive: a secret of the maximum size");

    rc = mg_sigv4_derive_key(S(SECRET), "20150830", big,
                             MG_SIGV4_MAX_SCOPE + 1, S("service"), k);
    is_int(rc, MG_SIGV4_ELIMIT, "derive: an oversized region refused");
}


/* protocols.md 6.3: the official vectors, every one */

static void
test_suite(void)
{
    mg_sigv4_request_t  r;

    static const mg_sigv4_header_t  vanilla[] = {
        H("Host", HOST),
        H("X-Amz-Date", DATE),
    };

    static const mg_sigv4_header_t  trim[] = {
        H("Host", HOST),
        H("My-Header1", " value1"),
        H("My-Header2", " \"a   b   c\""),
        H("X-Amz-Date", DATE),
    };

    static const mg_sigv4_header_t  form[] = {
        H("Content-Type", "application/x-www-form-urlencoded"),
        H("Host", HOST),
        H("X-Amz-Date", DATE),
    };

    static const mg_sigv4_header_t  sts[] = {
        H("Host", HOST),
        H("X-Amz-Date", DATE),
        H("X-Amz-Security-Token", STS_TOKEN),
    };

    static const mg_sigv4_header_t  iam[] = {
        H("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        H("Host", "iam.amazonaws.com"),
        H("X-Amz-Date", DATE),
    };

    static u_char  key_iam[MG_SIGV4_KEY_LEN];

    suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
    check_sign("get-vanilla", &r,
               CRED "SignedHeaders=host;x-amz-date, Signature="
               "5fa00fa31553b73ebf1942676e86291e"
               "8372ff2a2260956d9b8aae1d763fbf31",
               "GET\n/\n\nhost:example.amazonaws.com\n"
               "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY_SHA);
    check_creq_hash("get-vanilla", &r,
                    "bb579772317eb040ac9ed261061d46c1"
                    "f17a8133879d6129b6e1c25292927e63");

    suite_request(&r, "POST", "/", NULL, vanilla, 2, EMPTY_SHA);
    check_sign("post-vanilla", &r,
               CRED "SignedHeaders=host;x-amz-date, Signature="
               "5da7c1a2acd57cee7505fc6676e4e544"
               "621c30862966e37dddb68e92efbe5d6b",
               NULL);

    suite_request(&r, "GET", "/", "Param2=value2&Param1=value1", vanilla, 2,
                  EMPTY_SHA);
    check_sign("get-vanilla-query-order-key-case", &r,
               CRED "SignedHeaders=host;x-amz-date, Signature="
               "b97d918cfa904a5beff61c982a1b6f45"
               "8b799221646efd99d3219ec94cdf2500",
               "GET\n/\nParam1=value1&Param2=value2\n"
               "host:example.amazonaws.com\n"
               "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY_SHA);

    suite_request(&r, "GET", "/\xe1\x88\xb4", NULL, vanilla, 2, EMPTY_SHA);
    check_sign("get-utf8", &r,
               CRED "SignedHeaders=host;x-amz-date, Signature="
               "8318018e0b0f223aa2bbf98705b62bb7"
               "87dc9c0e678f255a891fd03141be5d85",
               "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\n"
               "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY_SHA);

    suite_request(&r, "GET", "/", NULL, trim, 4, EMPTY_SHA);
    check_sign("get-header-value-trim", &r,
               CRED "SignedHeaders=host;my-header1;my-header2;x-amz-date, "
               "Signature="
               "acc3ed3afb60bb290fc8d2dd0098b991"
               "1fcaa05412b367055dee359757a9c736",
               "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\n"
               "my-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\n"
               "host;my-header1;my-header2;x-amz-date\n" EMPTY_SHA);

    suite_request(&r, "POST", "/", NULL, form, 3,
                  "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7"
                  "b24d0b6e");
    check_sign("post-x-www-form-urlencoded", &r,
               CRED "SignedHeaders=content-type;host;x-amz-date, Signature="
               "ff11897932ad3f4e8b18135d722051e5"
               "ac45fc38421b1da7b9d196a0fe09473a",
               NULL);

    suite_request(&r, "POST", "/", NULL, sts, 3, EMPTY_SHA);
    check_sign("post-sts-header-before", &r,
               CRED "SignedHeaders=host;x-amz-date;x-amz-security-token, "
               "Signature="
               "85d96828115b5dc0cfc3bd16ad9e210d"
               "d772bbebba041836c64533a82be05ead",
               NULL);
    check_creq_hash("post-sts-header-before", &r,
                    "c237e1b440d4c63c32ca95b5b9948108"
                    "1cb7b13c7e40434868e71567c1a882f6");

    /* the AWS docs IAM example */

    ok(mg_sigv4_derive_key(S(SECRET), DATE, S("us-east-1"), S("iam"), key_iam)
       == MG_SIGV4_OK, "iam: key derived");

    suite_request(&r, "GET", "/", "Action=ListUsers&Version=2010-05-08", iam,
                  3, EMPTY_SHA);
    r.service = "iam";
    r.service_len = 3;
    r.key = key_iam;
    check_creq_hash("iam ListUsers", &r,
                    "f536975d06c0309214f805bb90ccff08"
                    "9219ecd68b2577efef23edd43b7e1a59");
    check_sign("iam ListUsers", &r,
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/"
               "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
               "Signature="
               "5d672d79c15b13162d9279b0855cfba6"
               "789a8edb4c82c400e06b5924a6f2b5d7",
               NULL);
}


/* protocols.md 6.3: the Bedrock regression vector, wire path built here */

static void
test_bedrock_vector(void)
{
    char                out[OUT_CAP], path[512], sha[65];
    size_t              n;
    u_char              key[MG_SIGV4_KEY_LEN];
    mg_sigv4_request_t  r;

    static const char  model[] =
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0";
    static const char  body[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"Hello\"}]"
        "}],\"inferenceConfig\":{\"maxTokens\":256}}";

    static const mg_sigv4_header_t  h[] = {
        H("Content-Type", "application/json"),
        H("Host", "bedrock-runtime.us-east-1.amazonaws.com"),
        H("X-Amz-Date", DATE),
    };

    n = 0;
    memcpy(path, "/model/", 7);
    n += 7;
    n += mg_sigv4_uri_encode(S(model), path + n, sizeof(path) - n, 1);
    memcpy(path + n, "/converse", 10);
    n += 9;

    is_str(path, n,
           "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
           "inference-profile%2Fus.anthropic.claude-3-5-sonnet-20241022-v2%3A0"
           "/converse", "bedrock vector: wire path");

    ok(mg_sha256_hex(S(body), sha) == 0, "bedrock vector: body hashed");
    is_str(sha, 64,
           "d8695502972bd4d482308b656a524b7a7efcebba591a06801fadba6b39700dd1",
           "bedrock vector: payload hash");

    ok(mg_sigv4_derive_key(S(SECRET), DATE, S("us-east-1"), S("bedrock"), key)
       == MG_SIGV4_OK, "bedrock vector: key derived");

    suite_request(&r, "POST", path, NULL, h, 3, sha);
    r.key = key;
    r.service = "bedrock";
    r.service_len = 7;

    n = mg_sigv4_canonical_request(&r, out, sizeof(out));
    ok(n > 0 && n < OUT_CAP, "bedrock vector: canonical request");
    out[n] = '\0';
    ok(strstr(out, "\n/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A"
                   "123456789012%253Ainference-profile%252Fus.anthropic."
                   "claude-3-5-sonnet-20241022-v2%253A0/converse\n") != NULL,
       "bedrock vector: canonical URI double-encoded");

    check_creq_hash("bedrock vector", &r,
                    "d9061a78488164c83614801b1af24b50"
                    "d84ce16a6289ce1323a40210956ea94b");
    check_sign("bedrock vector", &r,
               "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
               "bedrock/aws4_request, SignedHeaders=content-type;host;"
               "x-amz-date, Signature="
               "f9bb0277bb01a4be6eb72c642db0eb03"
               "438d4c956773a051fbd7e9352c2aa7d5",
               NULL);
}


/* one canonicalization rule at a time, through the canonical request */

static void
check_creq(const char *name, const mg_sigv4_request_t *r, const char *exp)
{
    char     out[OUT_CAP];
    ssize_t  n;

    n = mg_sigv4_canonical_request(r, out, sizeof(out));
    is_str(out, n > 0 ? (size_t) n : 0, exp, "%s", name);
}


#define CR_TAIL \
    "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n" \
    "host;x-amz-date\n" EMPTY_SHA

static void
test_rules(void)
{
    mg_sigv4_request_t  r;

    static const mg_sigv4_header_t  vanilla[] = {
        H("Host", HOST),
        H("X-Amz-Date", DATE),
    };

    static const mg_sigv4_header_t  messy[] = {
        H("x-amz-date", DATE),
        H("X-Multi", "b"),
        H("zz-empty", ""),
        H("X-Amz-Meta-Tabs", "\t a \t\t b\r\n c  "),
        H("HOST", HOST),
        H("x-multi", "  a  "),
        H("X-MULTI", "c d"),
        H("x-amz-date-", "x"),
        H("Blank", "   "),
    };

    /* paths, as the SDKs normalize them for services other than S3 */

    suite_request(&r, "GET", "", NULL, vanilla, 2, EMPTY_SHA);
    check_creq("empty path is /", &r, "GET\n/\n\n" CR_TAIL);

    suite_request(&r, "GET", "", NULL, vanilla, 2, "");
    r.path = NULL;
    r.payload_hash = NULL;
    check_creq("NULL path and payload hash", &r, "GET\n/\n\n"
               "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
               "host;x-amz-date\n");

    suite_request(&r, "GET", "/a/./b/../c//d/", NULL, vanilla, 2, EMPTY_SHA);
    check_creq("dot segments and // removed, trailing / kept", &r,
               "GET\n/a/c/d/\n\n" CR_TAIL);

    suite_request(&r, "GET", "//example//", NULL, vanilla, 2, EMPTY_SHA);
    check_creq("get-slashes", &r, "GET\n/example/\n\n" CR_TAIL);

    suite_request(&r, "GET", "/example/..", NULL, vanilla, 2, EMPTY_SHA);
    check_creq("get-relative", &r, "GET\n/\n\n" CR_TAIL);

    suite_request(&r, "GET", "/../../x/./", NULL, vanilla, 2, EMPTY_SHA);
    check_creq(".. above the root", &r, "GET\n/x/\n\n" CR_TAIL);

    suite_request(&r, "GET", "/example space/%7e..%2F/", NULL, vanilla, 2,
                  EMPTY_SHA);
    check_creq("path encoded once more, '%' too", &r,
               "GET\n/example%20space/%257e..%252F/\n\n" CR_TAIL);

    suite_request(&r, "GET", "/a//b/%3A/./c", NULL, vanilla, 2, EMPTY_SHA);
    r.raw_path = 1;
    check_creq("raw path (S3) signed as sent", &r,
               "GET\n/a//b/%3A/./c\n\n" CR_TAIL);

    suite_request(&r, "GET", "", NULL, vanilla, 2, EMPTY_SHA);
    r.raw_path = 1;
    check_creq("raw empty path is /", &r, "GET\n/\n\n" CR_TAIL);

    /* queries */

    suite_request(&r, "GET", "/", "b=2&a=1&a=0&c=x%20y&d&&e=%7e%3a+&=v&f=",
                  vanilla, 2, EMPTY_SHA);
    check_creq("query: sorted by name then value, re-encoded", &r,
               "GET\n/\n=v&a=0&a=1&b=2&c=x%20y&d=&e=~%3A%2B&f=\n" CR_TAIL);

    suite_request(&r, "GET", "/", "a%zz=%4&B=%41%2d&_=1&~=2&%5F=0", vanilla,
                  2, EMPTY_SHA);
    check_creq("query: bad escapes kept, order of encoded bytes", &r,
               "GET\n/\nB=A-&_=0&_=1&a%25zz=%254&~=2\n" CR_TAIL);

    suite_request(&r, "GET", "/", "", vanilla, 2, EMPTY_SHA);
    check_creq("query: empty", &r, "GET\n/\n\n" CR_TAIL);

    suite_request(&r, "GET", "/", "&", vanilla, 2, EMPTY_SHA);
    check_creq("query: only a separator", &r, "GET\n/\n\n" CR_TAIL);

    /* headers */

    suite_request(&r, "PUT", "/", NULL, messy,
                  sizeof(messy) / sizeof(messy[0]), "UNSIGNED-PAYLOAD");
    check_creq("headers: lowercase, sorted, trimmed, repeats joined", &r,
               "PUT\n/\n\nblank:\nhost:example.amazonaws.com\n"
               "x-amz-date:20150830T123600Z\nx-amz-date-:x\n"
               "x-amz-meta-tabs:a b c\nx-multi:b,a,c d\nzz-empty:\n\n"
               "blank;host;x-amz-date;x-amz-date-;x-amz-meta-tabs;x-multi;"
               "zz-empty\nUNSIGNED-PAYLOAD");

    suite_request(&r, "GET", "/", NULL, NULL, 0, EMPTY_SHA);
    check_creq("headers: none", &r, "GET\n/\n\n\n\n" EMPTY_SHA);
}


static void
test_errors(void)
{
    char                out[OUT_CAP], full[OUT_CAP];
    ssize_t             n, m;
    mg_sigv4_request_t  r;
    mg_sigv4_header_t   many[MG_SIGV4_MAX_HEADERS + 1];
    char                path[4 * MG_SIGV4_MAX_SEGMENTS + 8];
    char                query[8 * MG_SIGV4_MAX_PARAMS + 8];
    size_t              i;

    static const mg_sigv4_header_t  vanilla[] = {
        H("Host", HOST),
        H("X-Amz-Date", DATE),
    };

    static const mg_sigv4_header_t  noname[] = {
        H("Host", HOST),
        H("", "x"),
    };

    static const char  *bad_dates[] = {
        "20150830 123600Z", "20150830T123600z", "2015083OT123600Z",
        "20150830T12360:Z",
    };

    for (i = 0; i < sizeof(bad_dates) / sizeof(bad_dates[0]); i++) {
        suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
        r.amz_date = bad_dates[i];
        is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_EINVAL,
               "bad amz date %s", bad_dates[i]);
    }

    suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
    r.amz_date = NULL;
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_EINVAL,
           "no amz date");

    suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
    r.key = NULL;
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_EINVAL, "no key");

    suite_request(&r, "GET", "/", NULL, noname, 2, EMPTY_SHA);
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_EINVAL,
           "empty header name");

    suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
    r.region_len = 0;
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_EINVAL,
           "empty region");

    suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
    r.service = "s-------------------------------------------------------------"
                "----";
    r.service_len = strlen(r.service);
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_ELIMIT,
           "service name too long");

    for (i = 0; i < MG_SIGV4_MAX_HEADERS + 1; i++) {
        many[i].name = "x-h";
        many[i].name_len = 3;
        many[i].value = "v";
        many[i].value_len = 1;
    }

    suite_request(&r, "GET", "/", NULL, many, MG_SIGV4_MAX_HEADERS + 1,
                  EMPTY_SHA);
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_ELIMIT,
           "too many headers");

    r.nheaders = MG_SIGV4_MAX_HEADERS;
    ok(mg_sigv4_sign(&r, out, sizeof(out)) > 0, "the most headers");

    for (i = 0; i <= MG_SIGV4_MAX_SEGMENTS; i++) {
        memcpy(path + 2 * i, "/a", 2);
    }

    path[2 * i] = '\0';

    suite_request(&r, "GET", path, NULL, vanilla, 2, EMPTY_SHA);
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_ELIMIT,
           "too many path segments");

    r.raw_path = 1;
    ok(mg_sigv4_sign(&r, out, sizeof(out)) > 0,
       "raw path: no segment limit");

    path[2 * MG_SIGV4_MAX_SEGMENTS] = '\0';
    suite_request(&r, "GET", path, NULL, vanilla, 2, EMPTY_SHA);
    ok(mg_sigv4_sign(&r, out, sizeof(out)) > 0, "the most path segments");

    for (i = 0; i <= MG_SIGV4_MAX_PARAMS; i++) {
        memcpy(query + 4 * i, "a=1&", 4);
    }

    query[4 * i - 1] = '\0';

    suite_request(&r, "GET", "/", query, vanilla, 2, EMPTY_SHA);
    is_int(mg_sigv4_sign(&r, out, sizeof(out)), MG_SIGV4_ELIMIT,
           "too many query parameters");

    query[4 * MG_SIGV4_MAX_PARAMS - 1] = '\0';
    suite_request(&r, "GET", "/", query, vanilla, 2, EMPTY_SHA);
    ok(mg_sigv4_sign(&r, out, sizeof(out)) > 0, "the most query parameters");

    /* snprintf-like: the needed length, at most cap bytes written */

    suite_request(&r, "GET", "/", NULL, vanilla, 2, EMPTY_SHA);
    n = mg_sigv4_sign(&r, full, sizeof(full));
    ok(n > 0, "sign into a large buffer");

    memset(out, '#', sizeof(out));
    m = mg_sigv4_sign(&r, out, 40);
    is_int(m, n, "sign into 40 bytes: the needed length");
    ok(memcmp(out, full, 40) == 0 && out[40] == '#',
       "sign into 40 bytes: a prefix, nothing beyond");

    memset(out, '#', sizeof(out));
    m = mg_sigv4_sign(&r, out, 0);
    is_int(m, n, "sign into 0 bytes: the needed length");
    ok(out[0] == '#', "sign into 0 bytes: nothing written");

    m = mg_sigv4_sign(&r, NULL, 0);
    is_int(m, n, "sign into NULL: the needed length");

    n = mg_sigv4_canonical_request(&r, full, sizeof(full));
    m = mg_sigv4_canonical_request(&r, out, 10);
    ok(n > 0 && m == n && memcmp(out, full, 10) == 0,
       "canonical request into 10 bytes");

    /* a long canonical request goes through the digest in pieces */

    for (i = 0; i < MG_SIGV4_MAX_HEADERS; i++) {
        many[i].value = full;
        many[i].value_len = 1000 + i;
    }

    memset(full, 'v', sizeof(full));
    suite_request(&r, "GET", "/", NULL, many, MG_SIGV4_MAX_HEADERS,
                  EMPTY_SHA);
    n = mg_sigv4_canonical_request(&r, NULL, 0);
    ok(n > 32000, "a long canonical request (%zd bytes)", n);
    ok(mg_sigv4_sign(&r, out, sizeof(out)) > 0, "a long request signed");
}


/* the fixtures made by @smithy/signature-v4 */

static const char *
jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}


static size_t
jlen(json_t *o, const char *k)
{
    return json_string_length(json_object_get(o, k));
}


static void
test_smithy_case(json_t *c)
{
    char                 path[1024], sha[65], key_hex[65], out[OUT_CAP];
    size_t               n, i, nh, nwire;
    json_t              *exp, *hs, *wire, *pair;
    ssize_t              m;
    u_char               key[MG_SIGV4_KEY_LEN];
    const char          *name, *body, *token, *model, *op, *csha;
    mg_sigv4_request_t   r;
    mg_sigv4_header_t    h[MG_SIGV4_MAX_HEADERS];

    name = jstr(c, "name");
    exp = json_object_get(c, "expected");
    body = jstr(c, "body");
    token = jstr(c, "session_token");
    model = jstr(c, "model_id");
    op = jstr(c, "operation");
    csha = jstr(exp, "x_amz_content_sha256");

    /* the wire path, built the way the gateway builds it */

    if (model) {
        n = 0;
        memcpy(path, "/model/", 7);
        n += 7;
        n += mg_sigv4_uri_encode(model, strlen(model), path + n,
                                 sizeof(path) - n, 1);
        n += snprintf(path + n, sizeof(path) - n, "/%s", op);

    } else {
        n = snprintf(path, sizeof(path), "%s", jstr(c, "wire_path"));
    }

    is_str(path, n, jstr(c, "wire_path"), "%s: wire path", name);

    ok(mg_sha256_hex(body ? body : "", body ? strlen(body) : 0, sha) == 0,
       "%s: body hashed", name);
    is_str(sha, 64, jstr(exp, "payload_sha256"), "%s: payload hash", name);

    if (csha) {
        is_str(sha, 64, csha, "%s: x-amz-content-sha256 is the body hash",
               name);
    }

    ok(mg_sigv4_derive_key(jstr(c, "secret_access_key"),
                           jlen(c, "secret_access_key"), jstr(c, "amz_date"),
                           jstr(c, "region"), jlen(c, "region"),
                           jstr(c, "service"), jlen(c, "service"), key)
       == MG_SIGV4_OK, "%s: key derived", name);
    hex(key, MG_SIGV4_KEY_LEN, key_hex);
    is_str(key_hex, 64, jstr(exp, "signing_key"), "%s: signing key", name);

    /*
     * The headers as the glue adds them: x-amz-date, the token and the
     * content hash go first, in another order than smithy's, since the
     * order must not matter.
     */

    nh = 0;

    h[nh].name = "X-Amz-Date";
    h[nh].value = jstr(c, "amz_date");
    nh++;

    if (token) {
        h[nh].name = "X-Amz-Security-Token";
        h[nh].value = token;
        nh++;
    }

    if (json_is_true(json_object_get(c, "apply_checksum"))) {
        h[nh].name = "X-Amz-Content-Sha256";
        h[nh].value = sha;
        nh++;
    }

    hs = json_object_get(c, "input_headers");

    for (i = 0; i < json_array_size(hs) && nh < MG_SIGV4_MAX_HEADERS; i++) {
        pair = json_array_get(hs, i);
        h[nh].name = json_string_value(json_array_get(pair, 0));
        h[nh].value = json_string_value(json_array_get(pair, 1));
        nh++;
    }

    for (i = 0; i < nh; i++) {
        h[i].name_len = strlen(h[i].name);
        h[i].value_len = strlen(h[i].value);
    }

    wire = json_object_get(c, "wire_headers");
    nwire = json_array_size(wire);
    is_int(nh, nwire, "%s: the headers smithy put on the wire, %zu", name,
           nwire);

    memset(&r, 0, sizeof(r));
    r.method = jstr(c, "method");
    r.method_len = jlen(c, "method");
    r.path = path;
    r.path_len = n;
    r.query = jstr(c, "wire_query");
    r.query_len = jlen(c, "wire_query");
    r.headers = h;
    r.nheaders = nh;
    r.payload_hash = sha;
    r.payload_hash_len = 64;
    r.access_key_id = jstr(c, "access_key_id");
    r.access_key_id_len = jlen(c, "access_key_id");
    r.key = key;
    r.amz_date = jstr(c, "amz_date");
    r.region = jstr(c, "region");
    r.region_len = jlen(c, "region");
    r.service = jstr(c, "service");
    r.service_len = jlen(c, "service");

    m = mg_sigv4_canonical_request(&r, out, sizeof(out));
    is_str(out, m > 0 ? (size_t) m : 0, jstr(exp, "canonical_request"),
           "%s: canonical request", name);

    m = mg_sigv4_sign(&r, out, sizeof(out));
    is_str(out, m > 0 ? (size_t) m : 0, jstr(exp, "authorization"),
           "%s: authorization", name);
}


static void
test_smithy(void)
{
    char          file[1024];
    size_t        i, n;
    json_t       *doc, *cases;
    const char   *env, *slash;
    json_error_t  err;

    env = getenv("MG_SIGV4_FIXTURE");

    if (env) {
        snprintf(file, sizeof(file), "%s", env);

    } else {
        /* the Makefile compiles this file by its absolute path */
        slash = strrchr(__FILE__, '/');
        n = slash ? (size_t) (slash - __FILE__) : 1;
        snprintf(file, sizeof(file), "%.*s/../fixtures/sigv4/bedrock.json",
                 (int) n, slash ? __FILE__ : ".");
    }

    doc = json_load_file(file, 0, &err);

    if (!ok(doc != NULL, "fixture %s loaded", file)) {
        tap_diag("%s line %d: %s", file, err.line, err.text);
        return;
    }

    cases = json_object_get(doc, "cases");
    ok(json_array_size(cases) >= 8, "fixture: %zu cases",
       json_array_size(cases));

    for (i = 0; i < json_array_size(cases); i++) {
        test_smithy_case(json_array_get(cases, i));
    }

    json_decref(doc);
}


int
main(void)
{
    test_helpers();
    test_derive();
    test_suite();
    test_bedrock_vector();
    test_rules();
    test_errors();
    test_smithy();

    return tap_done();
}
