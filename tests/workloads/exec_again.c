/*
 * A target that execs itself without address randomization, so the new image's heap hands
 * out the very addresses of blocks the old image never freed (tests/it/reliability/exec_target.rs).
 * Usage: exec_again
 * It first turns randomization off for itself and execs itself again (before any tracing),
 * then says `ready` and waits for one byte on standard input (for --pid tests). It allocates
 * N blocks of SIZE bytes from before_exec and keeps them, writes its ground truth (gt.h) to
 * $GROUND_TRUTH and execs itself once more (same pid) with GROUND_TRUTH=$AFTER_TRUTH. The
 * new image allocates N blocks of SIZE bytes from after_exec, frees them all, writes its
 * ground truth, prints `same addresses K of N` (K: how many of its blocks got an address of
 * one of the old image's blocks) and `done`, and exits 0.
 *
 * Nothing else allocates: the phase travels in argv and the addresses in a static table
 * filled from argv, so both images reach their N mallocs with the same heap.
 */
#include <sys/personality.h>

#include "gt.h"

enum { N = 64, SIZE = 200 };

static struct tally t_before = { .name = "before_exec" };
static struct tally t_after = { .name = "after_exec" };
static void *blocks[N];

NOINLINE static void before_exec(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_before, SIZE);
    }
}

NOINLINE static void after_exec(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_after, SIZE);
    }
    for (int i = 0; i < N; i++) {
        free(blocks[i]);
        gt_free(&t_after, SIZE);
    }
}

/* Execs /proc/self/exe with `phase` and the old image's block addresses (hex) as arguments,
 * GROUND_TRUTH replaced by $AFTER_TRUTH when `swap_truth`. Built without allocating. */
static void exec_self(const char *phase, int swap_truth)
{
    extern char **environ;
    static char addrs[N][24];
    static char *argv[N + 3];
    char **envp = swap_truth ? gt_env_after_truth() : environ;
    argv[0] = "exec_again";
    argv[1] = (char *)phase;
    for (int i = 0; i < N; i++) {
        snprintf(addrs[i], sizeof addrs[i], "%lx", (unsigned long)blocks[i]);
        argv[i + 2] = addrs[i];
    }
    argv[N + 2] = NULL;
    execve("/proc/self/exe", argv, envp);
    gt_die("execve");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        int persona = personality(0xffffffff);
        if (persona == -1 || personality(persona | ADDR_NO_RANDOMIZE) == -1)
            gt_die("personality");
        exec_self("first", 0);
    }
    if (strcmp(argv[1], "first") == 0) {
        gt_ready_and_wait();
        before_exec();
        static const struct tally *const all[] = { &t_before };
        gt_write(all, GT_COUNT(all), 0);
        gt_write_all(1, "exec\n", 5);
        exec_self("second", 1);
    }
    if (strcmp(argv[1], "second") != 0 || argc != N + 2)
        gt_die("usage: exec_again");
    after_exec();
    int same = 0;
    for (int i = 0; i < N; i++)
        for (int j = 2; j < argc; j++)
            if (strtoul(argv[j], NULL, 16) == (unsigned long)blocks[i]) {
                same++;
                break;
            }
    static const struct tally *const all[] = { &t_after };
    gt_write(all, GT_COUNT(all), 0);
    char line[64];
    int len = snprintf(line, sizeof line, "same addresses %d of %d\ndone\n", same, N);
    gt_write_all(1, line, (size_t)len);
    return 0;
}
