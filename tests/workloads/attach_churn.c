/*
 * A target that is already allocating as fast as it can while the tracer attaches
 * (tests/it/reliability/instances.rs): a thread makes malloc(SIZE), realloc to twice that, free, from
 * churn_pairs, from before `ready` until the test releases the workload (one byte on stdin).
 * glibc hands the same blocks back every time, so a free or realloc the tracer missed while
 * its probes went in one by one would leave that address behind as a phantom live block,
 * again and again. Then hold_blocks allocates HELD blocks of HELD_SIZE and keeps them; the
 * workload prints `held` and exits at end of file on stdin. After attach the process's only
 * live blocks are hold_blocks'.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "gt.h"

enum { SIZE = 48, HELD = 5, HELD_SIZE = 1000 };

static atomic_int stop;

NOINLINE static void churn_pairs(void)
{
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        void *p = gt_check(malloc(SIZE), "malloc");
        p = gt_check(realloc(p, 2 * SIZE), "realloc");
        gt_sink = p;
        free(p);
    }
}

static void *churn_main(void *arg)
{
    (void)arg;
    churn_pairs();
    return NULL;
}

NOINLINE static void hold_blocks(void **held)
{
    for (int i = 0; i < HELD; i++)
        held[i] = gt_check(malloc(HELD_SIZE), "malloc");
}

int main(void)
{
    pthread_t t;
    int r = pthread_create(&t, NULL, churn_main, NULL);
    if (r != 0) {
        errno = r;
        gt_die("pthread_create");
    }
    gt_ready_and_wait();
    atomic_store(&stop, 1);
    r = pthread_join(t, NULL);
    if (r != 0) {
        errno = r;
        gt_die("pthread_join");
    }
    void *held[HELD];
    hold_blocks(held);
    gt_sink = held;
    gt_write_all(1, "held\n", 5);
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
