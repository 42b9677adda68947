/*
 * Full stacks without frame pointers (tests/it/unwind.rs): built with -O2
 * -fomit-frame-pointer (build.rs: workloads named nofp_*), its functions keep enough values
 * live across their calls that gcc uses rbp as an ordinary register. Two call paths reach one
 * leaf, main -> nofp_route_a -> nofp_mid -> nofp_leaf (A_CALLS times on the main thread and
 * T_CALLS times on a thread of its own, whose stack starts in start_thread) and main ->
 * nofp_route_b -> nofp_mid -> nofp_leaf (B_CALLS times). Each leaf call allocates SIZE
 * bytes once and frees them. The test knows the three counts (keep them in step). With the
 * argument `wait`, says ready and waits for the go first (--pid tests). Ground truth: gt.h.
 */
#include <pthread.h>

#include "gt.h"

enum { A_CALLS = 300, B_CALLS = 200, T_CALLS = 100, SIZE = 40 };

static struct tally t_leaf = { .name = "nofp_leaf" };
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

NOINLINE long nofp_leaf(long a, long b)
{
    char *p = gt_check(malloc(SIZE), "malloc");
    pthread_mutex_lock(&lock);
    gt_alloc(&t_leaf, SIZE);
    pthread_mutex_unlock(&lock);
    p[0] = (char)(a ^ b);
    long r = p[0];
    free(p);
    pthread_mutex_lock(&lock);
    gt_free(&t_leaf, SIZE);
    pthread_mutex_unlock(&lock);
    return r;
}

/* Six values live across the call: gcc needs rbx, rbp and r12-r15 to keep them. */
NOINLINE long nofp_mid(long a, long b, long c, long d, long e, long f)
{
    long x = a * 3 + b, y = c * 5 + d, z = e * 7 + f;
    long u = a ^ f, v = b ^ e, w = c ^ d;
    long r = nofp_leaf(x, y);
    return r + x * y + z * u + v * w + (x ^ z);
}

NOINLINE long nofp_route_a(long i)
{
    long k = i * 11, m = i * 13, n = i * 17;
    long r = nofp_mid(i, k, m, n, i + 1, i + 2);
    return r + k * m + n;
}

NOINLINE long nofp_route_b(long i)
{
    long k = i * 19, m = i * 23, n = i * 29;
    long r = nofp_mid(k, i, n, m, i + 3, i + 4);
    return r + k * n + m;
}

static volatile long sink;

static void *thread_main(void *arg)
{
    (void)arg;
    for (long i = 0; i < T_CALLS; i++)
        sink += nofp_route_a(i);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0)
        gt_die("pthread_create");
    for (long i = 0; i < A_CALLS; i++)
        sink += nofp_route_a(i);
    for (long i = 0; i < B_CALLS; i++)
        sink += nofp_route_b(i);
    pthread_join(t, NULL);
    static const struct tally *const all[] = { &t_leaf };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
