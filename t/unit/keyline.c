/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A helper of t/005-keycli.t (not a TAP test): reads key records with
 * src/mg_keys.c and prints each in one canonical form, so the test checks
 * what bin/mg-key writes with the rules the gateway reads it with.
 *
 *   keyline       stdin: key file lines; prints one line for each
 *   keyline -f    stdin: "name value" lines, the fields of one record
 *                 (a Redis hash); prints one line
 *
 * A line printed is "ok ID TENANT HEX expires=N models=TEXT endpoints=N
 * max_tokens=N rpm=N tpm=N tpd=N budget=N", "skip", or "error: MESSAGE".
 * The exit status is 0 whatever the records said.
 */

#include <stdio.h>
#include <string.h>

#include "mg_keys.h"


static void
print_key(const mg_key_t *k)
{
    size_t  i;

    printf("ok %s %s ", k->id, k->tenant);

    for (i = 0; i < MG_KEY_HASH_LEN; i++) {
        printf("%02x", k->hash[i]);
    }

    printf(" expires=%lld models=%.*s endpoints=%u max_tokens=%llu rpm=%llu"
           " tpm=%llu tpd=%llu budget=%llu\n",
           (long long) k->expires, (int) k->models_len, k->models_text,
           (unsigned) k->endpoints, (unsigned long long) k->max_tokens,
           (unsigned long long) k->rpm, (unsigned long long) k->tpm,
           (unsigned long long) k->tpd, (unsigned long long) k->budget);
}


int
main(int argc, char **argv)
{
    int              rc, fields;
    char            *sp;
    size_t           len;
    static char      line[MG_KEY_LINE_MAX + 2];
    static char      err[MG_KEY_ERR_LEN];
    static mg_key_t  key;

    fields = (argc > 1 && strcmp(argv[1], "-f") == 0);

    mg_key_init(&key);
    rc = MG_KEY_OK;

    while (fgets(line, sizeof(line), stdin) != NULL) {
        len = strlen(line);

        if (!fields) {
            rc = mg_key_parse_line(&key, line, len, err);

            if (rc == MG_KEY_OK) {
                print_key(&key);

            } else if (rc == MG_KEY_SKIP) {
                printf("skip\n");

            } else {
                printf("error: %s\n", err);
            }

            continue;
        }

        if (rc != MG_KEY_OK) {
            continue;
        }

        if (len && line[len - 1] == '\n') {
            len--;
        }

        sp = memchr(line, ' ', len);

        if (sp == NULL) {
            snprintf(err, sizeof(err), "expected \"name value\"");
            rc = MG_KEY_ERROR;
            continue;
        }

        rc = mg_key_set(&key, line, sp - line, sp + 1, len - (sp + 1 - line),
                        err);
    }

    if (fields) {
        if (rc == MG_KEY_OK) {
            rc = mg_key_complete(&key, err);
        }

        if (rc == MG_KEY_OK) {
            print_key(&key);

        } else {
            printf("error: %s\n", err);
        }
    }

    return 0;
}
