/*
 * Allocations in a signal handler that interrupts malloc (tests/it/threads_signals.rs): one
 * thread makes N allocations from loop_alloc (malloc(40) and realloc(NULL, 56) in turn, each
 * freed at once) while a second thread sends it SIGUSR1 with pthread_kill every few
 * microseconds until it is done; the handler allocates and frees one block of 200 bytes from
 * handler_alloc. Ground truth: gt.h (both functions; the handler counts its own).
 *
 * A probe's trap returns to user space with the pending signal delivered right there: many
 * handlers run while loop_alloc's malloc or realloc has been entered. glibc's malloc is not
 * async-signal-safe in general; here both sizes are served from the thread's cache (warmed
 * first, different bins, never full), so neither call takes a lock the other holds.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "gt.h"

enum { N = 20000, LOOP_SIZE = 40, REALLOC_SIZE = 56, HANDLER_SIZE = 200 };

static struct tally t_loop = { .name = "loop_alloc" };
static struct tally t_handler = { .name = "handler_alloc" };
static atomic_int done;
static void *volatile handler_sink;

NOINLINE static void handler_alloc(void)
{
    void *p = malloc(HANDLER_SIZE);
    if (p == NULL)
        _exit(99);
    handler_sink = p;
    gt_alloc(&t_handler, HANDLER_SIZE);
    free(p);
    gt_free(&t_handler, HANDLER_SIZE);
}

static void on_usr1(int sig)
{
    (void)sig;
    int saved = errno;
    handler_alloc();
    errno = saved;
}

NOINLINE static void loop_alloc(void)
{
    for (int i = 0; i < N; i++) {
        size_t n = i % 2 ? REALLOC_SIZE : LOOP_SIZE;
        void *p = gt_check(i % 2 ? realloc(NULL, n) : malloc(n), "malloc");
        gt_alloc(&t_loop, n);
        free(p);
        gt_free(&t_loop, n);
    }
}

static void *sender(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 5000 };
    while (!atomic_load(&done)) {
        pthread_kill(target, SIGUSR1);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    /* Warm the cache bins (not counted: before the truth's sites, freed at once; the test
     * checks the two functions only). */
    free(gt_check(malloc(HANDLER_SIZE), "malloc"));
    free(gt_check(malloc(LOOP_SIZE), "malloc"));
    free(gt_check(malloc(REALLOC_SIZE), "malloc"));
    struct sigaction sa = { 0 };
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        gt_die("sigaction");
    pthread_t self = pthread_self(), s;
    int r = pthread_create(&s, NULL, sender, &self);
    if (r != 0) {
        errno = r;
        gt_die("pthread_create");
    }
    loop_alloc();
    atomic_store(&done, 1);
    pthread_join(s, NULL);
    /* No handler runs from here on: the sender has stopped, pending signals handled. */
    signal(SIGUSR1, SIG_IGN);
    static const struct tally *const all[] = { &t_loop, &t_handler };
    gt_write(all, GT_COUNT(all), -1);
    gt_write_all(1, "done\n", 5);
    return 0;
}
