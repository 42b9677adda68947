/*
 * THREADS pthreads start together (a barrier) and each makes PER_THREAD mallocs of its own size
 * from thread_alloc, then frees them all from thread_free; main allocates a little from
 * main_alloc. Sizes fall in distinct log2 buckets, so the site's size histogram shows every
 * thread's count. Ground truth: gt.h (thread_alloc summed over the threads).
 *
 * pthread_create/exit allocate and free internally (thread-local storage): those sites are not
 * in the ground truth, and the tests only check the named functions.
 *
 * 8,000 frees: ~110 ms traced.
 */
#include <pthread.h>

#include "gt.h"

enum { THREADS = 4, PER_THREAD = 2000, MAIN_N = 10 };

static const size_t sizes[THREADS] = { 16, 100, 1000, 5000 };

struct worker {
    pthread_t thread;
    size_t size;
    struct tally tally;
    void *blocks[PER_THREAD];
};

static struct worker workers[THREADS];
static pthread_barrier_t start;
static struct tally t_main = { .name = "main_alloc" };
static void *main_blocks[MAIN_N];

NOINLINE static void thread_alloc(struct worker *w)
{
    for (int i = 0; i < PER_THREAD; i++) {
        w->blocks[i] = gt_check(malloc(w->size), "malloc");
        gt_alloc(&w->tally, w->size);
    }
}

/* The frees belong to thread_alloc. */
NOINLINE static void thread_free(struct worker *w)
{
    for (int i = 0; i < PER_THREAD; i++) {
        free(w->blocks[i]);
        gt_free(&w->tally, w->size);
    }
}

static void *thread_main(void *arg)
{
    struct worker *w = arg;
    int r = pthread_barrier_wait(&start);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD) {
        errno = r;
        gt_die("pthread_barrier_wait");
    }
    thread_alloc(w);
    thread_free(w);
    return NULL;
}

NOINLINE static void main_alloc(void)
{
    for (int i = 0; i < MAIN_N; i++) {
        main_blocks[i] = gt_check(malloc(32), "malloc");
        gt_alloc(&t_main, 32);
    }
}

int main(void)
{
    int r = pthread_barrier_init(&start, NULL, THREADS);
    if (r != 0) {
        errno = r;
        gt_die("pthread_barrier_init");
    }
    for (int i = 0; i < THREADS; i++) {
        workers[i].size = sizes[i];
        r = pthread_create(&workers[i].thread, NULL, thread_main, &workers[i]);
        if (r != 0) {
            errno = r;
            gt_die("pthread_create");
        }
    }
    main_alloc();
    struct tally t_thread = { .name = "thread_alloc" };
    struct tally t_free = { .name = "thread_free" };
    for (int i = 0; i < THREADS; i++) {
        r = pthread_join(workers[i].thread, NULL);
        if (r != 0) {
            errno = r;
            gt_die("pthread_join");
        }
        gt_add(&t_thread, &workers[i].tally);
    }
    const struct tally *const all[] = { &t_thread, &t_free, &t_main };
    /* Each thread's exit frees its tcache, which glibc allocated without calling malloc. */
    gt_write(all, GT_COUNT(all), -1);
    return 0;
}
