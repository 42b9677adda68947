/*
 * tree DEPTH: one malloc(16)+free from each of 2^(DEPTH+1) distinct stacks that share a few
 * frames (a binary tree of calls through two functions with two call sites each, as
 * bench/special/stacks.c makes them), for the size of the JSON report: every frame written
 * once, each site a bounded number of bytes (tests/it/sites/outputs.rs).
 *
 * Ground truth: gt.h. Nothing else allocates.
 */
#include "gt.h"

enum { SIZE = 16 };

static struct tally t_leaf = { .name = "leaf" };

/* Keeps each call from being the function's last act, so every call site stays on the stack. */
static volatile int after;

NOINLINE static void leaf(void)
{
    void *p = gt_check(malloc(SIZE), "malloc");
    gt_alloc(&t_leaf, SIZE);
    free(p);
    gt_free(&t_leaf, SIZE);
}

NOINLINE static void b(int d);

NOINLINE static void a(int d)
{
    if (d == 0) {
        leaf();
        return;
    }
    a(d - 1);
    b(d - 1);
    after = d;
}

NOINLINE static void b(int d)
{
    if (d == 0) {
        leaf();
        return;
    }
    a(d - 1);
    b(d - 1);
    after = d;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        gt_die("usage: tree DEPTH");
    int depth = atoi(argv[1]);
    a(depth);
    b(depth);
    static const struct tally *const all[] = { &t_leaf };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
