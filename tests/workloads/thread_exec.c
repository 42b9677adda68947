/*
 * A thread other than main execs (tests/it/threads_signals.rs). Usage:
 *   thread_exec [wait]           the program: before_exec, then a thread execs the program
 *                                itself as `thread_exec after`
 *   thread_exec after            the program after the exec: waits for the go, after_exec
 *
 * With `wait` it says `ready` and waits for one byte on standard input first (for --pid).
 * main allocates from before_exec (N blocks of 72 bytes, frees half), writes its ground truth
 * (gt.h), starts a thread that execs /proc/self/exe (the same pid: the exec'ing thread takes
 * over the main thread's pid, the main thread is ended), and waits.
 * After the exec it says `exec done`, waits for the go ($GO_FILE existing when set, else one
 * byte on standard input: the test gives it once alloctrace has moved its probes), allocates
 * from after_exec (M blocks of 1500 bytes, frees a third), writes its ground truth to
 * $GROUND_TRUTH (set to $AFTER_TRUTH by the exec), says `done` and exits.
 */
#include <pthread.h>
#include <time.h>

#include "gt.h"

enum { N = 200, SIZE = 72, M = 600, AFTER_SIZE = 1500 };

static struct tally t_before = { .name = "before_exec" };
static struct tally t_after = { .name = "after_exec" };
static void *blocks[M];

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

NOINLINE static void after_exec(void)
{
    for (int i = 0; i < M; i++) {
        blocks[i] = gt_check(malloc(AFTER_SIZE), "malloc");
        gt_alloc(&t_after, AFTER_SIZE);
    }
    for (int i = 0; i < M / 3; i++) {
        free(blocks[i]);
        gt_free(&t_after, AFTER_SIZE);
    }
}

static void *exec_thread(void *arg)
{
    (void)arg;
    static char *args[] = { "thread_exec", "after", NULL };
    execve("/proc/self/exe", args, gt_env_after_truth());
    gt_die("execve");
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "after") == 0) {
        gt_write_all(1, "exec done\n", 10);
        gt_wait_for_go();
        after_exec();
        static const struct tally *const all[] = { &t_after };
        /* Start-up allocations before the probes' move are not seen: frees unknown. */
        gt_write(all, GT_COUNT(all), -1);
        gt_write_all(1, "done\n", 5);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    before_exec();
    static const struct tally *const all[] = { &t_before };
    gt_write(all, GT_COUNT(all), 0);
    /* Lets alloctrace read this image's mappings before the exec replaces them (for its
     * frames' names; not what the test is about). */
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 300 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    pthread_t t;
    int r = pthread_create(&t, NULL, exec_thread, NULL);
    if (r != 0) {
        errno = r;
        gt_die("pthread_create");
    }
    for (;;)
        pause();
}
