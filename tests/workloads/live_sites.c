/*
 * The live view's workload (tests/it/top.rs): four sites, each leading the view under one
 * sort key, so a key that sorts shows its own site first:
 *   - top_early: EARLY allocations of 16 B at the start, freed at once (most allocations);
 *   - top_fast:  RATE/s allocations of 64 B, freed at once (the highest rate);
 *   - top_big:   100/s of 1 MiB, freed at once (the most bytes);
 *   - top_keep:  100/s of 256 B, kept (the most live bytes).
 * Paced in 10 ms ticks on an absolute clock, so the rates hold under tracing.
 *
 * Usage: live_sites SECONDS RATE INFO_FILE. Writes `pid <pid>` and `malloc_at 0x...` (the address
 * malloc resolves to, where a uprobe puts its int3) to INFO_FILE before allocating, and
 * nothing on standard output (the view owns the terminal). At the end: its ground truth
 * (gt.h), then exit 0.
 */
#include <dlfcn.h>
#include <time.h>

#include "gt.h"

enum { EARLY = 1000000, TICK_MS = 10, BIG = 1 << 20, KEEP = 256, KEEP_MAX = 1 << 16 };

static struct tally t_early = { .name = "top_early" };
static struct tally t_fast = { .name = "top_fast" };
static struct tally t_big = { .name = "top_big" };
static struct tally t_keep = { .name = "top_keep" };

static void *kept[KEEP_MAX];
static int nkept;

NOINLINE static void top_early(void)
{
    for (int i = 0; i < EARLY; i++) {
        gt_sink = gt_check(malloc(16), "malloc");
        gt_alloc(&t_early, 16);
        free(gt_sink);
        gt_free(&t_early, 16);
    }
}

NOINLINE static void top_fast(long n)
{
    for (long i = 0; i < n; i++) {
        gt_sink = gt_check(malloc(64), "malloc");
        gt_alloc(&t_fast, 64);
        free(gt_sink);
        gt_free(&t_fast, 64);
    }
}

NOINLINE static void top_big(void)
{
    gt_sink = gt_check(malloc(BIG), "malloc");
    gt_alloc(&t_big, BIG);
    free(gt_sink);
    gt_free(&t_big, BIG);
}

NOINLINE static void top_keep(void)
{
    if (nkept == KEEP_MAX)
        return;
    kept[nkept++] = gt_check(malloc(KEEP), "malloc");
    gt_alloc(&t_keep, KEEP);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        gt_write_all(2, "usage: live_sites SECONDS RATE INFO_FILE\n", 41);
        return 2;
    }
    long seconds = atol(argv[1]);
    long rate = atol(argv[2]);
    int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        gt_die("open INFO_FILE");
    gt_printf(fd, "pid %d\nmalloc_at %p\n", (int)getpid(), dlsym(RTLD_DEFAULT, "malloc"));
    close(fd);

    top_early();
    long per_tick = rate * TICK_MS / 1000;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long tick = 0; tick < seconds * 1000 / TICK_MS; tick++) {
        top_fast(per_tick);
        top_big();
        top_keep();
        next.tv_nsec += TICK_MS * 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
    }
    static const struct tally *const all[] = { &t_early, &t_fast, &t_big, &t_keep };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
