/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The AWS shared credentials file parser: sections, keys, comments,
 * whitespace, and the line of an error.
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_aws_ini.h"


static mg_aws_ini_t  ini;


static mg_aws_ini_rc_e
parse(const char *text, const char *profile)
{
    return mg_aws_ini_parse(text, strlen(text), profile, strlen(profile),
                            &ini);
}


#define is_val(v, exp, name)                                                  \
    is_str((v).data, (v).len, exp, "%s", name)


int
main(void)
{
    char                big[MG_AWS_INI_VALUE_MAX + 64];
    static const char  *cli =
        "[default]\n"
        "aws_access_key_id = AKIDDEFAULT\n"
        "aws_secret_access_key = SECRETDEFAULT\n"
        "\n"
        "[profile gw]\n"
        "region = us-east-1\n"
        "aws_access_key_id=AKIDGW\n"
        "aws_secret_access_key=SECRETGW\n"
        "aws_session_token = TOKENGW\n"
        "[other]\n"
        "aws_access_key_id = AKIDOTHER\n"
        "aws_secret_access_key = SECRETOTHER\n";

    /* sections */

    is_int(parse(cli, "default"), MG_AWS_INI_OK, "default: ok");
    is_val(ini.access_key, "AKIDDEFAULT", "default: access key");
    is_val(ini.secret, "SECRETDEFAULT", "default: secret");
    ok(ini.token.data == NULL, "default: no token");
    is_int(ini.access_key.line, 2, "default: access key on line 2");

    is_int(parse(cli, "gw"), MG_AWS_INI_OK, "[profile gw]: ok");
    is_val(ini.access_key, "AKIDGW", "[profile gw]: access key");
    is_val(ini.secret, "SECRETGW", "[profile gw]: secret");
    is_val(ini.token, "TOKENGW", "[profile gw]: token");
    is_int(ini.token.line, 9, "[profile gw]: token on line 9");

    is_int(parse(cli, "other"), MG_AWS_INI_OK, "other: ok");
    is_val(ini.access_key, "AKIDOTHER", "other: the last section");

    is_int(parse(cli, "nope"), MG_AWS_INI_OK, "a missing profile: ok");
    ok(ini.access_key.data == NULL && ini.secret.data == NULL
       && ini.token.data == NULL, "a missing profile: nothing");

    is_int(parse(cli, "profile gw"), MG_AWS_INI_OK, "\"profile gw\": ok");
    ok(ini.access_key.data == NULL, "\"profile gw\" is not a profile name");

    is_int(parse("[gw]\naws_access_key_id = A\naws_secret_access_key = S\n"
                 "[gw2]\naws_access_key_id = B\n", "gw"), MG_AWS_INI_OK,
           "a longer name: ok");
    is_val(ini.access_key, "A", "a longer name is another profile");

    is_int(parse("[profile ]\naws_access_key_id = A\n"
                 "aws_secret_access_key = S\n", "profile "),
           MG_AWS_INI_OK, "[profile ]: ok");
    is_val(ini.access_key, "A", "[profile ] is the profile \"profile \"");

    is_int(parse("[ gw ]\naws_access_key_id = A\naws_secret_access_key = S\n",
                 "gw"), MG_AWS_INI_OK, "[ gw ]: ok");
    ok(ini.access_key.data == NULL, "[ gw ] is not gw (no trimming inside)");

    is_int(parse("[GW]\naws_access_key_id = A\naws_secret_access_key = S\n",
                 "gw"), MG_AWS_INI_OK, "[GW]: ok");
    ok(ini.access_key.data == NULL, "profile names are case-sensitive");

    /* a header without "]" ends the section */

    is_int(parse("[gw]\naws_access_key_id = A\n[broken\n"
                 "aws_secret_access_key = S\n", "gw"), MG_AWS_INI_OK,
           "[broken: ok");
    ok(ini.access_key.data == NULL && ini.secret.data == NULL,
       "[broken ends gw: the secret is not gw's, so neither is the id");

    /* keys: case, whitespace, CRLF, comments, a repeated key */

    is_int(parse("  [gw]  \r\n"
                 "# aws_access_key_id = COMMENTED\r\n"
                 "; aws_secret_access_key = COMMENTED\r\n"
                 "\t AWS_Access_Key_ID \t=\t AKID \t\r\n"
                 "   \r\n"
                 "aws_secret_access_key = S1\r\n"
                 "aws_secret_access_key = S2\r\n"
                 "no equals sign here\r\n"
                 "aws_session_token = T\r\n", "gw"),
           MG_AWS_INI_OK, "whitespace and comments: ok");
    is_val(ini.access_key, "AKID", "keys are case-insensitive, trimmed");
    is_val(ini.secret, "S2", "a repeated key: the last one");
    is_int(ini.secret.line, 7, "a repeated key: its line");
    is_val(ini.token, "T", "CRLF: no CR in the value");

    is_int(parse("[gw]\naws_session_token = T#x;y\n", "gw"), MG_AWS_INI_OK,
           "# and ; inside a value: ok");
    is_val(ini.token, "T#x;y", "# and ; inside a value are the value's");

    is_int(parse("[gw]\naws_access_key_id = A\naws_secret_access_key = S",
                 "gw"), MG_AWS_INI_OK, "no final newline: ok");
    is_val(ini.secret, "S", "no final newline: the last line counts");

    is_int(parse("", "gw"), MG_AWS_INI_OK, "an empty file: ok");
    ok(ini.access_key.data == NULL, "an empty file: nothing");

    is_int(parse("aws_access_key_id = A\naws_secret_access_key = S\n", "gw"),
           MG_AWS_INI_OK, "keys before any section: ok");
    ok(ini.access_key.data == NULL, "keys before any section: ignored");

    /* half a credential is none */

    is_int(parse("[half]\naws_access_key_id = AKIDHALF\n", "half"),
           MG_AWS_INI_OK, "an id without a secret: ok");
    ok(ini.access_key.data == NULL, "an id without a secret: no id");

    is_int(parse("[half]\naws_secret_access_key = S\n", "half"),
           MG_AWS_INI_OK, "a secret without an id: ok");
    ok(ini.access_key.data == NULL, "a secret without an id: no id");
    is_val(ini.secret, "S", "a secret without an id: the secret is kept");

    /* errors, with their line */

    is_int(parse("[gw]\n\naws_access_key_id =\n", "gw"),
           MG_AWS_INI_BAD_LENGTH, "an empty value: bad length");
    is_int(ini.err_line, 3, "an empty value: line 3");
    is_str(ini.err_key, strlen(ini.err_key), "aws_access_key_id",
           "an empty value: its key");

    is_int(parse("[gw]\naws_access_key_id = A\n"
                 "aws_secret_access_key = two words\n", "gw"),
           MG_AWS_INI_BAD_CHAR, "a space inside a value: bad character");
    is_int(ini.err_line, 3, "a space inside a value: line 3");
    is_str(ini.err_key, strlen(ini.err_key), "aws_secret_access_key",
           "a space inside a value: its key");

    is_int(parse("[gw]\r\naws_session_token = T\x80\r\n", "gw"),
           MG_AWS_INI_BAD_CHAR, "a byte over 0x7e: bad character");
    is_int(ini.err_line, 2, "a byte over 0x7e: line 2");

    is_int(parse("[other]\naws_access_key_id = bad value\n"
                 "[gw]\naws_access_key_id = A\naws_secret_access_key = S\n",
                 "gw"), MG_AWS_INI_OK,
           "a bad value in another profile: not checked");

    is_int(parse("[gw]\naws_access_key_id = \x01\naws_access_key_id = A\n",
                 "gw"), MG_AWS_INI_BAD_CHAR,
           "a bad value stops the parse, even when given again later");

    /* lengths */

    memset(big, 0, sizeof(big));
    strcpy(big, "[gw]\naws_secret_access_key = ");
    memset(big + strlen(big), 'S', 256);
    is_int(parse(big, "gw"), MG_AWS_INI_OK, "a 256-byte secret: ok");
    is_int(ini.secret.len, 256, "a 256-byte secret: all of it");

    strcat(big, "S");
    is_int(parse(big, "gw"), MG_AWS_INI_BAD_LENGTH,
           "a 257-byte secret: too long");

    memset(big, 0, sizeof(big));
    strcpy(big, "[gw]\naws_session_token = ");
    memset(big + strlen(big), 'T', MG_AWS_INI_VALUE_MAX);
    is_int(parse(big, "gw"), MG_AWS_INI_OK, "a 4096-byte token: ok");
    strcat(big, "T");
    is_int(parse(big, "gw"), MG_AWS_INI_BAD_LENGTH,
           "a 4097-byte token: too long");
    is_int(ini.err_line, 2, "a 4097-byte token: line 2");

    return tap_done();
}
