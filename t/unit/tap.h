/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * A minimal TAP producer for the C unit tests: the plan is printed at the
 * end ("1..N"), as Test::More's done_testing() does, and tap_done()'s
 * result is the exit status, nonzero if any test failed.
 */

#ifndef _TAP_H_INCLUDED_
#define _TAP_H_INCLUDED_

#include <stdarg.h>
#include <stdio.h>
#include <string.h>


static int  tap_run;
static int  tap_failed;


static inline int __attribute__((format(printf, 4, 5)))
tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
    va_list  args;

    tap_run++;

    printf("%s %d - ", cond ? "ok" : "not ok", tap_run);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");

    if (!cond) {
        tap_failed++;
        fflush(stdout);
        fprintf(stderr, "#   Failed test at %s line %d.\n", file, line);
    }

    fflush(stdout);

    return cond;
}


static inline void __attribute__((format(printf, 1, 2)))
tap_diag(const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "# ");

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fprintf(stderr, "\n");
}


static inline void
tap_diag_str(const char *what, const char *s, size_t len)
{
    size_t  i;

    fprintf(stderr, "#   %8s: ", what);

    if (s == NULL) {
        fprintf(stderr, "NULL\n");
        return;
    }

    fputc('"', stderr);

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            fputc(c, stderr);

        } else {
            fprintf(stderr, "\\x%02x", c);
        }
    }

    fprintf(stderr, "\" (%zu bytes)\n", len);
}


static inline int
tap_is_int(long long got, long long exp, const char *file, int line,
    const char *name)
{
    if (!tap_ok(got == exp, file, line, "%s", name)) {
        tap_diag("       got: %lld", got);
        tap_diag("  expected: %lld", exp);
        return 0;
    }

    return 1;
}


/* exp NULL expects got NULL */

static inline int
tap_is_str(const char *got, size_t got_len, const char *exp,
    const char *file, int line, const char *name)
{
    int  cond;

    if (exp == NULL || got == NULL) {
        cond = (exp == got);

    } else {
        cond = (got_len == strlen(exp) && memcmp(got, exp, got_len) == 0);
    }

    if (!tap_ok(cond, file, line, "%s", name)) {
        tap_diag_str("got", got, got_len);
        tap_diag_str("expected", exp, exp ? strlen(exp) : 0);
        return 0;
    }

    return 1;
}


/* the plan comes last; returns the exit status */

static inline int
tap_done(void)
{
    printf("1..%d\n", tap_run);

    if (tap_failed) {
        tap_diag("Looks like you failed %d test%s of %d.", tap_failed,
                 tap_failed == 1 ? "" : "s", tap_run);
    }

    fflush(stdout);

    return tap_failed ? 1 : 0;
}


#define TAP_NAME_MAX  512

/* ok(cond, "name %d", args...) */
#define ok(cond, ...)                                                         \
    tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* is_int(got, expected, "name %d", args...) */
#define is_int(got, exp, ...)                                                 \
    __extension__ ({                                                          \
        char  tap_name_[TAP_NAME_MAX];                                        \
        snprintf(tap_name_, sizeof(tap_name_), __VA_ARGS__);                  \
        tap_is_int((long long) (got), (long long) (exp), __FILE__, __LINE__,  \
                   tap_name_);                                                \
    })

/* is_str(got, got_len, "expected", "name %d", args...) */
#define is_str(got, got_len, exp, ...)                                        \
    __extension__ ({                                                          \
        char  tap_name_[TAP_NAME_MAX];                                        \
        snprintf(tap_name_, sizeof(tap_name_), __VA_ARGS__);                  \
        tap_is_str((got), (got_len), (exp), __FILE__, __LINE__, tap_name_);   \
    })


#endif /* _TAP_H_INCLUDED_ */
