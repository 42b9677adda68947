/*
 * A sub-second leaker (issue 21's case) for the leak analysis, and a phase with a sleep for
 * `--older`.
 *
 * `leaks` (no argument): 90 rounds, one every 10 ms (~0.9 s untraced); each round
 *   - leak_records: 400 x 512 B, never freed;
 *   - leak_strings: 400 x 96 B, never freed;
 *   - leak_pages: 128 x 16 KiB, never freed
 *     (together 83,520 blocks, 200.9 MiB, allocated throughout the run, none freed);
 *   - ring_push: 200 x 256 B into a ring of 256 slots, each push freeing the block it
 *     replaces (18,000 allocations, 17,744 frees: the ring's 256 blocks live at the end, the
 *     youngest ~1.3 rounds old): a steady working set, no leak;
 *   - short_lived_scratch: 50 x 1 KiB, each freed at once: nothing live.
 * Traced: ~22k frees at ~14 us each (FIELD-NOTES.md) and ~106k mallocs at ~1 us: ~0.5 s more.
 *
 * `leaks older`: leak_before_sleep leaks 600 x 128 B, the program sleeps 2 s, then
 * leak_after_sleep leaks 400 x 128 B and the program exits: at the end, the first 600 blocks
 * are over 2 s old, the last 400 a few ms (plus the trace's end).
 *
 * Ground truth: gt.h (blocks and bytes never freed per function: allocs - frees, bytes -
 * freed_bytes). Nothing else allocates.
 */
#define _GNU_SOURCE
#include <time.h>

#include "gt.h"

enum {
    ROUNDS = 90,
    ROUND_NS = 10 * 1000 * 1000,
    RECORDS_PER_ROUND = 400,
    RECORD_SIZE = 512,
    STRINGS_PER_ROUND = 400,
    STRING_SIZE = 96,
    PAGES_PER_ROUND = 128,
    PAGE_SIZE_ = 16 * 1024,
    RING = 256,
    RING_PER_ROUND = 200,
    RING_SIZE = 256,
    SCRATCH_PER_ROUND = 50,
    SCRATCH_SIZE = 1024,
    BEFORE_SLEEP = 600,
    AFTER_SLEEP = 400,
    PHASED_SIZE = 128,
    SLEEP_S = 2,
};

static struct tally t_records = { .name = "leak_records" };
static struct tally t_strings = { .name = "leak_strings" };
static struct tally t_pages = { .name = "leak_pages" };
static struct tally t_ring = { .name = "ring_push" };
static struct tally t_scratch = { .name = "short_lived_scratch" };
static struct tally t_before = { .name = "leak_before_sleep" };
static struct tally t_after = { .name = "leak_after_sleep" };

/* Static: the workload allocates nothing but what it counts. */
static void *ring[RING];
static int ring_next;

/* `n` blocks of `size`, dropped: never freed. A macro, not a function: the allocator's
 * caller (a site's first frame) must be each NOINLINE function below. */
#define LEAK(t, n, size)                                                                       \
    do {                                                                                       \
        for (int i_ = 0; i_ < (n); i_++) {                                                     \
            gt_check(malloc(size), "malloc");                                                  \
            gt_alloc((t), (size));                                                             \
        }                                                                                      \
    } while (0)

NOINLINE static void leak_records(void)
{
    LEAK(&t_records, RECORDS_PER_ROUND, RECORD_SIZE);
}

NOINLINE static void leak_strings(void)
{
    LEAK(&t_strings, STRINGS_PER_ROUND, STRING_SIZE);
}

NOINLINE static void leak_pages(void)
{
    LEAK(&t_pages, PAGES_PER_ROUND, PAGE_SIZE_);
}

NOINLINE static void leak_before_sleep(void)
{
    LEAK(&t_before, BEFORE_SLEEP, PHASED_SIZE);
}

NOINLINE static void leak_after_sleep(void)
{
    LEAK(&t_after, AFTER_SLEEP, PHASED_SIZE);
}

/* `n` pushes into the ring, each freeing the block it replaces. */
NOINLINE static void ring_push(int n)
{
    for (int i = 0; i < n; i++) {
        if (ring[ring_next] != NULL) {
            free(ring[ring_next]);
            gt_free(&t_ring, RING_SIZE);
        }
        ring[ring_next] = gt_check(malloc(RING_SIZE), "malloc");
        gt_alloc(&t_ring, RING_SIZE);
        ring_next = (ring_next + 1) % RING;
    }
}

/* `n` scratch blocks, each freed at once. */
NOINLINE static void short_lived_scratch(int n)
{
    for (int i = 0; i < n; i++) {
        char *p = gt_check(malloc(SCRATCH_SIZE), "malloc");
        gt_alloc(&t_scratch, SCRATCH_SIZE);
        p[0] = (char)i;
        gt_sink = p;
        free(p);
        gt_free(&t_scratch, SCRATCH_SIZE);
    }
}

static void sleep_ns(long long ns)
{
    struct timespec t = { .tv_sec = (time_t)(ns / 1000000000LL), .tv_nsec = (long)(ns % 1000000000LL) };
    while (nanosleep(&t, &t) != 0) {
        if (errno != EINTR)
            gt_die("nanosleep");
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "older") == 0) {
        leak_before_sleep();
        sleep_ns((long long)SLEEP_S * 1000000000LL);
        leak_after_sleep();
        const struct tally *sites[] = { &t_before, &t_after };
        gt_write(sites, GT_COUNT(sites), 0);
        return 0;
    }
    if (argc != 1) {
        static const char usage[] = "usage: leaks [older]\n";
        gt_write_all(2, usage, sizeof usage - 1);
        return 2;
    }
    for (int r = 0; r < ROUNDS; r++) {
        leak_records();
        leak_strings();
        leak_pages();
        ring_push(RING_PER_ROUND);
        short_lived_scratch(SCRATCH_PER_ROUND);
        sleep_ns(ROUND_NS);
    }
    const struct tally *sites[] = { &t_records, &t_strings, &t_pages, &t_ring, &t_scratch };
    gt_write(sites, GT_COUNT(sites), 0);
    return 0;
}
