/*
 * Many allocations from many threads (tests/it/reliability/load.rs): THREADS threads (argv[1]) start
 * together and each makes N (argv[2]) malloc(40)+free pairs from churn_alloc. Ground truth:
 * gt.h; thread creation and exit allocate internally, outside the named function.
 */
#include <pthread.h>

#include "gt.h"

enum { MAX_THREADS = 16, SIZE = 40 };

struct worker {
    pthread_t thread;
    long n;
    struct tally tally;
};

static struct worker workers[MAX_THREADS];
static pthread_barrier_t start;

NOINLINE static void churn_alloc(struct worker *w)
{
    for (long i = 0; i < w->n; i++) {
        void *p = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&w->tally, SIZE);
        free(p);
        gt_free(&w->tally, SIZE);
    }
}

static void *thread_main(void *arg)
{
    int r = pthread_barrier_wait(&start);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD) {
        errno = r;
        gt_die("pthread_barrier_wait");
    }
    churn_alloc(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long n = argc > 2 ? atol(argv[2]) : 1000;
    if (threads < 1 || threads > MAX_THREADS)
        gt_die("thread count");
    int r = pthread_barrier_init(&start, NULL, (unsigned)threads);
    if (r != 0) {
        errno = r;
        gt_die("pthread_barrier_init");
    }
    for (int i = 0; i < threads; i++) {
        workers[i].n = n;
        r = pthread_create(&workers[i].thread, NULL, thread_main, &workers[i]);
        if (r != 0) {
            errno = r;
            gt_die("pthread_create");
        }
    }
    struct tally t = { .name = "churn_alloc" };
    for (int i = 0; i < threads; i++) {
        r = pthread_join(workers[i].thread, NULL);
        if (r != 0) {
            errno = r;
            gt_die("pthread_join");
        }
        gt_add(&t, &workers[i].tally);
    }
    const struct tally *const all[] = { &t };
    gt_write(all, GT_COUNT(all), -1);
    return 0;
}
