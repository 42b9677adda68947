/*
 * A long-running target for the reliability tests (tests/it/reliability/): ROUNDS rounds, each
 * allocating BLOCKS blocks from tick_alloc, filling every one with a round-dependent pattern,
 * checking the pattern and freeing them, then printing `tick <i>` and sleeping SLEEP_MS.
 * A tracer that harmed the process (a probe left behind, a corrupted block) makes it fail: it
 * exits 3 when a pattern does not read back.
 *
 * Usage: ticker ROUNDS SLEEP_MS [wait]. With `wait` it first prints `ready` and blocks until it
 * reads one byte from standard input (for --pid tests). It prints `malloc_at 0x...`, the
 * address malloc resolves to in this process, before `ready`, so a test can look at the
 * instruction there (an int3 while a uprobe is installed). At the end: its ground truth (gt.h),
 * `done`, exit 0.
 */
#include <dlfcn.h>
#include <time.h>

#include "gt.h"

enum { BLOCKS = 8, SIZE = 64 };

static struct tally t_tick = { .name = "tick_alloc" };

NOINLINE static int tick_alloc(int round)
{
    unsigned char *blocks[BLOCKS];
    int ok = 1;
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_tick, SIZE);
        memset(blocks[i], (round * BLOCKS + i) & 0xff, SIZE);
    }
    for (int i = 0; i < BLOCKS; i++) {
        for (int j = 0; j < SIZE; j++)
            if (blocks[i][j] != ((round * BLOCKS + i) & 0xff))
                ok = 0;
        free(blocks[i]);
        gt_free(&t_tick, SIZE);
    }
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    long sleep = argc > 2 ? atol(argv[2]) : 50;
    int wait = argc > 3 && strcmp(argv[3], "wait") == 0;
    gt_printf(1, "malloc_at %p\n", dlsym(RTLD_DEFAULT, "malloc"));
    if (wait) {
        gt_ready_and_wait();
    }
    for (int i = 0; i < rounds; i++) {
        if (!tick_alloc(i)) {
            gt_write_all(1, "corrupted\n", 10);
            return 3;
        }
        gt_printf(1, "tick %d\n", i);
        sleep_ms(sleep);
    }
    static const struct tally *const all[] = { &t_tick };
    gt_write(all, GT_COUNT(all), 0);
    gt_write_all(1, "done\n", 5);
    return 0;
}
