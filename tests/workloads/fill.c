/*
 * Fills alloctrace's kernel maps on purpose (tests/it/reliability/):
 *
 *   fill stacks D K   for each depth d = 0..D-1, in order: K times malloc(32) from
 *                     recurse_alloc at recursion depth d (then free it), so D distinct stacks
 *                     (they differ in length), the first ones seen first;
 *   fill live H       H blocks of 48 bytes allocated by hold_alloc and all held, then all freed
 *                     by release_all;
 *   fill leak H       H blocks of 48 bytes allocated by hold_alloc and never freed (the process
 *                     exits with them).
 *
 * Ground truth: gt.h. Nothing else allocates.
 */
#include <sys/mman.h>

#include "gt.h"

enum { STACK_SIZE = 32, LIVE_SIZE = 48 };

static struct tally t_recurse = { .name = "recurse_alloc" };
static struct tally t_hold = { .name = "hold_alloc" };
static struct tally t_release = { .name = "release_all" };

/* Recurses `depth` times, then allocates and frees one block: each depth is its own stack. */
NOINLINE static int recurse_alloc(int depth)
{
    if (depth > 0)
        return recurse_alloc(depth - 1) + 1;
    void *p = gt_check(malloc(STACK_SIZE), "malloc");
    gt_alloc(&t_recurse, STACK_SIZE);
    free(p);
    gt_free(&t_recurse, STACK_SIZE);
    return 0;
}

static void **held;

NOINLINE static void hold_alloc(long n)
{
    for (long i = 0; i < n; i++) {
        held[i] = gt_check(malloc(LIVE_SIZE), "malloc");
        gt_alloc(&t_hold, LIVE_SIZE);
    }
}

/* The frees belong to hold_alloc. */
NOINLINE static void release_all(long n)
{
    for (long i = 0; i < n; i++) {
        free(held[i]);
        gt_free(&t_hold, LIVE_SIZE);
    }
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "stacks") == 0) {
        int depths = atoi(argv[2]), k = atoi(argv[3]);
        for (int d = 0; d < depths; d++)
            for (int i = 0; i < k; i++)
                if (recurse_alloc(d) != d)
                    gt_die("recursion");
    } else if (argc == 3 && (strcmp(argv[1], "live") == 0 || strcmp(argv[1], "leak") == 0)) {
        long n = atol(argv[2]);
        /* The array itself comes from mmap: not an allocation of the ground truth. */
        held = mmap(NULL, (size_t)n * sizeof *held, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (held == MAP_FAILED)
            gt_die("mmap");
        hold_alloc(n);
        if (strcmp(argv[1], "live") == 0)
            release_all(n);
    } else {
        gt_die("usage: fill stacks D K | fill live H | fill leak H");
    }
    static const struct tally *const all[] = { &t_recurse, &t_hold, &t_release };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
