/*
 * A target that execs another program (tests/it/reliability/exec_target.rs). Usage:
 *   execer PROGRAM ARGS...
 * It says `ready` and waits for one byte on standard input (for --pid tests), then allocates
 * from before_exec (N blocks of 72 bytes, frees half of them), writes its ground truth (gt.h)
 * to $GROUND_TRUTH, and execs PROGRAM ARGS (same pid) with GROUND_TRUTH=$AFTER_TRUTH in its
 * environment (built without allocating).
 */
#include "gt.h"

enum { N = 200, SIZE = 72 };

static struct tally t_before = { .name = "before_exec" };
static void *blocks[N];

NOINLINE static void before_exec(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_before, SIZE);
    }
    for (int i = 0; i < N / 2; i++) {
        free(blocks[i]);
        gt_free(&t_before, SIZE);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2)
        gt_die("usage: execer PROGRAM ARGS...");
    gt_ready_and_wait();
    before_exec();
    static const struct tally *const all[] = { &t_before };
    gt_write(all, GT_COUNT(all), 0);
    char **envp = gt_env_after_truth();
    gt_write_all(1, "exec\n", 5);
    execve(argv[1], argv + 1, envp);
    gt_die("execve");
}
