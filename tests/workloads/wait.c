/*
 * A workload for `alloctrace --pid`: it allocates a few blocks, says `ready` on standard output,
 * then blocks until it reads one byte from standard input (the test sends it once alloctrace
 * says `alloctrace: tracing `). Only then does it do its counted work, free the blocks it
 * allocated before tracing (alloctrace must count those as unknown frees, not frees), write its
 * ground truth (gt.h), say `done` on standard output and exit with the status given as its
 * first argument (default 0). With a second argument `hold`, it stays alive after `done` until
 * its standard input reaches end of file (for tests that stop alloctrace themselves).
 *
 * If standard input reaches end of file instead of delivering the byte, it exits with status 97
 * without allocating.
 */
#include "gt.h"

enum { BEFORE_N = 25, AFTER_N = 400, FREED_AFTER_N = 150 };

static struct tally t_before = { .name = "alloc_before_attach" };
static struct tally t_after = { .name = "alloc_after_attach" };
static struct tally t_free_some = { .name = "free_some" };
static struct tally t_free_pre = { .name = "free_preexisting" };

static void *before[BEFORE_N];
static void *after[AFTER_N];

/* Not traced (runs before alloctrace attaches): alloctrace must show no site for it. */
NOINLINE static void alloc_before_attach(void)
{
    for (int i = 0; i < BEFORE_N; i++)
        before[i] = gt_check(malloc(56), "malloc");
}

NOINLINE static void alloc_after_attach(void)
{
    for (int i = 0; i < AFTER_N; i++) {
        after[i] = gt_check(malloc(80), "malloc");
        gt_alloc(&t_after, 80);
    }
}

/* Frees some of alloc_after_attach's blocks: the frees belong to alloc_after_attach. */
NOINLINE static void free_some(void)
{
    for (int i = 0; i < FREED_AFTER_N; i++) {
        free(after[i]);
        gt_free(&t_after, 80);
    }
}

/* Frees the blocks allocated before tracing: unknown frees, charged to no site. */
NOINLINE static void free_preexisting(void)
{
    for (int i = 0; i < BEFORE_N; i++)
        free(before[i]);
}

/* Blocks until standard input reaches end of file. */
static void wait_for_eof(void)
{
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r == 0)
            return;
        if (r < 0 && errno != EINTR)
            gt_die("reading standard input");
    }
}

int main(int argc, char **argv)
{
    int status = argc > 1 ? atoi(argv[1]) : 0;
    int hold = argc > 2 && strcmp(argv[2], "hold") == 0;
    alloc_before_attach();
    gt_ready_and_wait();

    alloc_after_attach();
    free_some();
    free_preexisting();

    static const struct tally *const all[] = { &t_before, &t_after, &t_free_some, &t_free_pre };
    gt_write(all, GT_COUNT(all), BEFORE_N);
    gt_write_all(1, "done\n", 5);
    if (hold)
        wait_for_eof();
    return status;
}
