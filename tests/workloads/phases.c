/*
 * The allocation-profiling guide's three phases, one after the other, each from its own named
 * function, plus a leak that grows over the whole run: what alloctrace's pattern analyzer,
 * lifetime report, advice and `compare` are checked against (tests/it/analysis.rs).
 *
 * main runs a schedule of TICKS ticks of TICK_NS each (3.6 s), on absolute deadlines so that
 * slow (traced) ticks are caught up. Every allocating function is called by main only, so each
 * is exactly one allocation site:
 *   - ticks [0, 120), 1.2 s: small_frequent_phase: 24 mallocs of 64 B per tick (2,400/s), each
 *     freed at once (short-lived: a pool candidate);
 *   - ticks [120, 240), 1.2 s: large_infrequent_phase: one 1 MiB buffer every 30 ticks (4 in
 *     all, ~3.3/s), written, then freed;
 *   - ticks [240, 360), 1.2 s: burst_phase: a burst of 2,000 mallocs of 256 B (a few ms), all
 *     freed, every 40 ticks from tick 250 (3 bursts), quiet in between (~400 ms);
 *   - every tick: leaky_growth: one 4 KiB block, never freed (360 blocks, 1.4 MiB: growing).
 *
 * `phases half` halves every allocation count (24 -> 12 per tick, 4 -> 2 buffers, 2,000 ->
 * 1,000 per burst, a leak block every other tick) over the same schedule: `compare` must see
 * exactly 2.0x fewer allocations and bytes, in total and per site.
 *
 * 8,884 frees (half: 4,442): ~125 ms traced (FIELD-NOTES.md: ~14 us per traced free).
 * Ground truth: gt.h.
 */
#define _GNU_SOURCE
#include <time.h>

#include "gt.h"

enum {
    TICKS = 360,
    PHASE_TICKS = 120,
    SMALL_PER_TICK = 24,
    SMALL_SIZE = 64,
    LARGE_EVERY = 30,
    LARGE_SIZE = 1 << 20,
    BURST_EVERY = 40,
    BURST_N = 2000,
    BURST_SIZE = 256,
    LEAK_SIZE = 4096,
    LEAK_MAX = TICKS,
};

static const long TICK_NS = 10 * 1000 * 1000;

static struct tally t_small = { .name = "small_frequent_phase" };
static struct tally t_large = { .name = "large_infrequent_phase" };
static struct tally t_burst = { .name = "burst_phase" };
static struct tally t_leak = { .name = "leaky_growth" };

/* Static: the workload allocates nothing but what it counts. */
static void *burst[BURST_N];
static void *leaked[LEAK_MAX];
static int leaked_n;

/* `n` mallocs of 64 B, each freed at once. */
NOINLINE static void small_frequent_phase(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = gt_check(malloc(SMALL_SIZE), "malloc");
        gt_alloc(&t_small, SMALL_SIZE);
        free(p);
        gt_free(&t_small, SMALL_SIZE);
    }
}

/* One 1 MiB buffer, written (as a real buffer would be), then freed. */
NOINLINE static void large_infrequent_phase(void)
{
    char *p = gt_check(malloc(LARGE_SIZE), "malloc");
    gt_alloc(&t_large, LARGE_SIZE);
    memset(p, 0x5a, LARGE_SIZE);
    gt_sink = p;
    free(p);
    gt_free(&t_large, LARGE_SIZE);
}

/* `n` mallocs of 256 B in a row, then all freed. */
NOINLINE static void burst_phase(int n)
{
    for (int i = 0; i < n; i++) {
        burst[i] = gt_check(malloc(BURST_SIZE), "malloc");
        gt_alloc(&t_burst, BURST_SIZE);
    }
    for (int i = 0; i < n; i++) {
        free(burst[i]);
        gt_free(&t_burst, BURST_SIZE);
    }
}

/* One 4 KiB block, kept until exit (never freed). */
NOINLINE static void leaky_growth(void)
{
    if (leaked_n >= LEAK_MAX)
        gt_die("leaky_growth called too often");
    leaked[leaked_n++] = gt_check(malloc(LEAK_SIZE), "malloc");
    gt_alloc(&t_leak, LEAK_SIZE);
}

/* Sleeps until `start` + `ticks` ticks (returns at once when that is past). */
static void sleep_until_tick(const struct timespec *start, int ticks)
{
    long long ns = (long long)start->tv_nsec + (long long)ticks * TICK_NS;
    struct timespec t = {
        .tv_sec = start->tv_sec + (time_t)(ns / 1000000000LL),
        .tv_nsec = (long)(ns % 1000000000LL),
    };
    int r;
    while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL)) == EINTR)
        ;
    if (r != 0) {
        errno = r;
        gt_die("clock_nanosleep");
    }
}

int main(int argc, char **argv)
{
    int half = 0;
    if (argc == 2 && strcmp(argv[1], "half") == 0) {
        half = 1;
    } else if (argc != 1) {
        static const char usage[] = "usage: phases [half]\n";
        gt_write_all(2, usage, sizeof usage - 1);
        return 2;
    }
    struct timespec start;
    if (clock_gettime(CLOCK_MONOTONIC, &start) != 0)
        gt_die("clock_gettime");
    for (int tick = 0; tick < TICKS; tick++) {
        sleep_until_tick(&start, tick);
        int k = tick % PHASE_TICKS;
        switch (tick / PHASE_TICKS) {
        case 0:
            small_frequent_phase(half ? SMALL_PER_TICK / 2 : SMALL_PER_TICK);
            break;
        case 1:
            if (k % (half ? 2 * LARGE_EVERY : LARGE_EVERY) == 0)
                large_infrequent_phase();
            break;
        default:
            /* Half a 200 ms drain interval off the tick grid: a burst (a few ms) that
             * started with a drain would be split across two intervals at every burst (the
             * drains and the bursts keep their phase), and each interval would hold half a
             * burst: no quiet interval left to see. */
            if (k % BURST_EVERY == BURST_EVERY / 4)
                burst_phase(half ? BURST_N / 2 : BURST_N);
            break;
        }
        if (!half || tick % 2 == 0)
            leaky_growth();
    }
    sleep_until_tick(&start, TICKS);

    static const struct tally *const all[] = { &t_small, &t_large, &t_burst, &t_leak };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
