/*
 * Allocations whose stacks the DWARF walk first meets while another thread holds the
 * process's mapping lock (tests/it/unwind_contended.rs). A thread flips the protection of
 * 2 MiB of touched memory in a loop (each mprotect holds the lock for writing while it
 * rewrites 512 page-table entries: the lock glibc's arenas take as they grow),
 * while the main thread calls FUNCS functions, each alone in its own 64 KiB of code (a granule
 * of the kernel's code-mapping cache, so each is new to it), each CALLS times allocating SIZE
 * bytes and freeing them. Built as nofp_* (-O2 -fomit-frame-pointer). With the argument `wait`,
 * says ready and waits for the go (--pid tests). It sleeps 300 ms after starting the flipping
 * thread (which is flipping by then; a tracer that launched it has seen its mappings).
 * Ground truth: gt.h, one site per function (nofp_granule_K).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

#include "gt.h"

enum { FUNCS = 16, CALLS = 50, SIZE = 48, REGION = 2 << 20 };

static struct tally tallies[FUNCS];
static atomic_int stop;
static volatile long sink;

static void *flipper(void *arg)
{
    char *page = arg;
    long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int prot = (n++ & 1) ? PROT_READ : PROT_READ | PROT_WRITE;
        if (mprotect(page, REGION, prot) != 0)
            gt_die("mprotect");
    }
    return NULL;
}

#define GRANULE_FN(k)                                                   \
    __attribute__((aligned(65536))) NOINLINE long nofp_granule_##k(long a) \
    {                                                                   \
        char *p = gt_check(malloc(SIZE), "malloc");                     \
        gt_alloc(&tallies[k], SIZE);                                    \
        p[0] = (char)a;                                                 \
        long r = p[0];                                                  \
        free(p);                                                        \
        gt_free(&tallies[k], SIZE);                                     \
        return r + a;                                                   \
    }

GRANULE_FN(0) GRANULE_FN(1) GRANULE_FN(2) GRANULE_FN(3)
GRANULE_FN(4) GRANULE_FN(5) GRANULE_FN(6) GRANULE_FN(7)
GRANULE_FN(8) GRANULE_FN(9) GRANULE_FN(10) GRANULE_FN(11)
GRANULE_FN(12) GRANULE_FN(13) GRANULE_FN(14) GRANULE_FN(15)

static long (*const funcs[FUNCS])(long) = {
    nofp_granule_0,  nofp_granule_1,  nofp_granule_2,  nofp_granule_3,
    nofp_granule_4,  nofp_granule_5,  nofp_granule_6,  nofp_granule_7,
    nofp_granule_8,  nofp_granule_9,  nofp_granule_10, nofp_granule_11,
    nofp_granule_12, nofp_granule_13, nofp_granule_14, nofp_granule_15,
};
static const char *const names[FUNCS] = {
    "nofp_granule_0",  "nofp_granule_1",  "nofp_granule_2",  "nofp_granule_3",
    "nofp_granule_4",  "nofp_granule_5",  "nofp_granule_6",  "nofp_granule_7",
    "nofp_granule_8",  "nofp_granule_9",  "nofp_granule_10", "nofp_granule_11",
    "nofp_granule_12", "nofp_granule_13", "nofp_granule_14", "nofp_granule_15",
};

int main(int argc, char **argv)
{
    for (int k = 0; k < FUNCS; k++)
        tallies[k].name = names[k];
    char *page = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        gt_die("mmap");
    memset(page, 1, REGION);
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    pthread_t t;
    if (pthread_create(&t, NULL, flipper, page) != 0)
        gt_die("pthread_create");
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 300 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    for (long i = 0; i < CALLS; i++)
        for (int k = 0; k < FUNCS; k++)
            sink += funcs[k](i);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    const struct tally *all[FUNCS];
    for (int k = 0; k < FUNCS; k++)
        all[k] = &tallies[k];
    gt_write(all, FUNCS, 0);
    return 0;
}
