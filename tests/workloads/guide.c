/*
 * The allocation-profiling guide's demonstration patterns, one named function each, run one
 * after the other as the guide's simulation does (about 4 s in all, most of it sleeping):
 *
 *   small_frequent_loop   1,000 x malloc(64) + free, a 1 ms sleep after each (~900/s)
 *   large_infrequent_loop 8 x a 1 MiB buffer, written and freed, 150 ms apart (~6/s: the
 *                         guide's 100 ms sleeps would put it at the 10/s threshold itself)
 *   burst_loop            5 bursts of 100 x malloc(1000), all freed after each burst, 300 ms
 *                         apart (a period that does not divide the 1 s print interval)
 *
 * The tests run it under alloctrace at default options and expect each site's class to be
 * its function's name. Ground truth: gt.h.
 */
#define _GNU_SOURCE
#include <time.h>

#include "gt.h"

enum {
    SMALL_N = 1000,
    SMALL_SIZE = 64,
    SMALL_SLEEP_MS = 1,
    LARGE_N = 8,
    LARGE_SIZE = 1 << 20,
    LARGE_SLEEP_MS = 150,
    BURSTS = 5,
    BURST_N = 100,
    BURST_SIZE = 1000,
    BURST_SLEEP_MS = 300,
};

static struct tally t_small = { .name = "small_frequent_loop" };
static struct tally t_large = { .name = "large_infrequent_loop" };
static struct tally t_burst = { .name = "burst_loop" };

/* Static: the workload allocates nothing but what it counts. */
static void *burst[BURST_N];

static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
        if (errno != EINTR)
            gt_die("nanosleep");
    }
}

NOINLINE static void small_frequent_loop(void)
{
    for (int i = 0; i < SMALL_N; i++) {
        char *p = gt_check(malloc(SMALL_SIZE), "malloc");
        gt_alloc(&t_small, SMALL_SIZE);
        p[0] = (char)i;
        gt_sink = p;
        free(p);
        gt_free(&t_small, SMALL_SIZE);
        sleep_ms(SMALL_SLEEP_MS);
    }
}

NOINLINE static void large_infrequent_loop(void)
{
    for (int i = 0; i < LARGE_N; i++) {
        char *p = gt_check(malloc(LARGE_SIZE), "malloc");
        gt_alloc(&t_large, LARGE_SIZE);
        memset(p, i, LARGE_SIZE);
        gt_sink = p;
        free(p);
        gt_free(&t_large, LARGE_SIZE);
        sleep_ms(LARGE_SLEEP_MS);
    }
}

NOINLINE static void burst_loop(void)
{
    for (int b = 0; b < BURSTS; b++) {
        for (int i = 0; i < BURST_N; i++) {
            burst[i] = gt_check(malloc(BURST_SIZE), "malloc");
            gt_alloc(&t_burst, BURST_SIZE);
            memset(burst[i], b, BURST_SIZE);
        }
        for (int i = 0; i < BURST_N; i++) {
            free(burst[i]);
            gt_free(&t_burst, BURST_SIZE);
        }
        sleep_ms(BURST_SLEEP_MS);
    }
}

int main(void)
{
    small_frequent_loop();
    large_infrequent_loop();
    burst_loop();
    static const struct tally *const all[] = { &t_small, &t_large, &t_burst };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
