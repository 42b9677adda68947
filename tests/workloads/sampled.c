/*
 * Sampling by bytes (--sample-bytes): many allocations from three sites of different sizes,
 * so the estimates have enough samples to be checked statistically. No frees are needed: the
 * sampled mode is alloc-only. Blocks are freed anyway (untraced) to keep memory flat.
 *
 *   small_site   400000 x 48 B
 *   medium_site   40000 x 3000 B
 *   large_site      200 x 1 MiB   (almost always sampled at a 512 KiB mean)
 */
#include "gt.h"

static struct tally t_small = { .name = "small_site" };
static struct tally t_medium = { .name = "medium_site" };
static struct tally t_large = { .name = "large_site" };

/* A macro, not a function: malloc's caller must be the site function itself. */
#define MANY(t, n, size)                                          \
    for (int i = 0; i < (n); i++) {                               \
        void *p = gt_check(malloc(size), "malloc");               \
        gt_alloc((t), (size));                                    \
        free(p);                                                  \
        gt_free((t), (size));                                     \
    }

NOINLINE static void small_site(void) { MANY(&t_small, 400000, 48) }
NOINLINE static void medium_site(void) { MANY(&t_medium, 40000, 3000) }
NOINLINE static void large_site(void) { MANY(&t_large, 200, 1 << 20) }

int main(void)
{
    small_site();
    medium_site();
    large_site();
    static const struct tally *const all[] = { &t_small, &t_medium, &t_large };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
