/*
 * A target that execs another program (tests/it/reliability.rs). Usage:
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
    gt_write_all(1, "ready\n", 6);
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r == 1)
            break;
        if (r == 0)
            _exit(97);
        if (errno != EINTR)
            gt_die("reading standard input");
    }
    before_exec();
    static const struct tally *const all[] = { &t_before };
    gt_write(all, GT_COUNT(all), 0);
    /* A new environment without allocating (setenv would malloc): GROUND_TRUTH=$AFTER_TRUTH. */
    extern char **environ;
    static char *envp[256];
    static char truth[1024];
    const char *after = getenv("AFTER_TRUTH");
    size_t n = 0;
    for (char **e = environ; *e != NULL && n < GT_COUNT(envp) - 2; e++)
        if (strncmp(*e, "GROUND_TRUTH=", 13) != 0)
            envp[n++] = *e;
    if (after != NULL) {
        if ((size_t)snprintf(truth, sizeof truth, "GROUND_TRUTH=%s", after) >= sizeof truth)
            gt_die("AFTER_TRUTH too long");
        envp[n++] = truth;
    }
    envp[n] = NULL;
    gt_write_all(1, "exec\n", 5);
    execve(argv[1], argv + 1, envp);
    gt_die("execve");
}
