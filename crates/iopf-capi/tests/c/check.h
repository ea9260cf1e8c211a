/* The C tests' checks: a failed one prints where and why, and the test exits 1. */
#ifndef IOPF_CHECK_H
#define IOPF_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iopf.h"

static int check_failures;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__,       \
                    __LINE__, #cond, iopf_last_error());                                  \
            check_failures++;                                                             \
        }                                                                                 \
    } while (0)

/* `expr` returns `want` (an int: 0, a count, or -errno). */
#define CHECK_RC(expr, want)                                                              \
    do {                                                                                  \
        int rc_ = (expr);                                                                 \
        if (rc_ != (want)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d, want %d (last error: %s)\n", __FILE__, \
                    __LINE__, #expr, rc_, (int)(want), iopf_last_error());                \
            check_failures++;                                                             \
        }                                                                                 \
    } while (0)

/* The last error message contains `part`. */
#define CHECK_MSG(part)                                                                   \
    do {                                                                                  \
        if (!strstr(iopf_last_error(), (part))) {                                         \
            fprintf(stderr, "%s:%d: last error \"%s\" does not say \"%s\"\n", __FILE__,   \
                    __LINE__, iopf_last_error(), (part));                                 \
            check_failures++;                                                             \
        }                                                                                 \
    } while (0)

static inline int check_done(const char *name)
{
    if (check_failures) {
        fprintf(stderr, "%s: %d checks failed\n", name, check_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
