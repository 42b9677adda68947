/*
 * Allocates a little, writes its ground truth (gt.h) and exits with the status given as its
 * first argument (default 3): launch mode must exit with the command's status.
 */
#include "gt.h"

enum { N = 3 };

static struct tally t_alloc = { .name = "alloc_then_exit" };
static void *blocks[N];

NOINLINE static void alloc_then_exit(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(10), "malloc");
        gt_alloc(&t_alloc, 10);
    }
}

int main(int argc, char **argv)
{
    int status = argc > 1 ? atoi(argv[1]) : 3;
    alloc_then_exit();
    static const struct tally *const all[] = { &t_alloc };
    gt_write(all, GT_COUNT(all), 0);
    exit(status);
}
