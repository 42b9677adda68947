/*
 * Allocations made before main: a constructor allocates, main frees some of those blocks and
 * allocates a little itself. In launch mode (`alloctrace -- CMD`) the probes are attached before
 * the command runs, so alloctrace must see every one of them. Ground truth: gt.h.
 */
#include "gt.h"

enum { PRE_N = 37, PRE_FREED_N = 12, MAIN_N = 5 };

static struct tally t_pre = { .name = "alloc_before_main" };
static struct tally t_free = { .name = "free_in_main" };
static struct tally t_main = { .name = "alloc_in_main" };

static void *pre[PRE_N];
static void *in_main[MAIN_N];

__attribute__((constructor)) NOINLINE static void alloc_before_main(void)
{
    for (int i = 0; i < PRE_N; i++) {
        pre[i] = gt_check(malloc(40), "malloc");
        gt_alloc(&t_pre, 40);
    }
}

/* Frees blocks alloc_before_main allocated: the frees are alloc_before_main's. */
NOINLINE static void free_in_main(void)
{
    for (int i = 0; i < PRE_FREED_N; i++) {
        free(pre[i]);
        gt_free(&t_pre, 40);
    }
}

NOINLINE static void alloc_in_main(void)
{
    for (int i = 0; i < MAIN_N; i++) {
        in_main[i] = gt_check(malloc(1000), "malloc");
        gt_alloc(&t_main, 1000);
    }
}

int main(void)
{
    free_in_main();
    alloc_in_main();
    static const struct tally *const all[] = { &t_pre, &t_free, &t_main };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
