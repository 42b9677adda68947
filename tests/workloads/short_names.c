/*
 * C functions whose names happen to be Itanium type codes (tests/it/stacks.rs): `a` is
 * `signed char` and `h` `unsigned char` to a demangler that is handed them; names that are
 * not mangled must be shown as they are. Each is exported, never inlined, and makes N
 * malloc(SIZE) and frees them. Ground truth: gt.h.
 */
#include "gt.h"

enum { N = 30, SIZE = 40 };

static struct tally t_a = { .name = "a" };
static struct tally t_h = { .name = "h" };
static void *blocks[N];

#define ALLOCATOR(fn, tally)                                                                   \
    NOINLINE void fn(void);                                                                    \
    NOINLINE void fn(void)                                                                     \
    {                                                                                          \
        for (int i = 0; i < N; i++) {                                                          \
            blocks[i] = gt_check(malloc(SIZE), "malloc");                                     \
            gt_alloc(&tally, SIZE);                                                            \
        }                                                                                      \
        for (int i = 0; i < N; i++) {                                                          \
            free(blocks[i]);                                                                   \
            gt_free(&tally, SIZE);                                                             \
        }                                                                                      \
    }

ALLOCATOR(a, t_a)
ALLOCATOR(h, t_h)

int main(void)
{
    a();
    h();
    static const struct tally *const all[] = { &t_a, &t_h };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
