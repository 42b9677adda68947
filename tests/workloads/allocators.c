/*
 * The allocator-neutral ground-truth workload (tests/it/allocators): portable C11/POSIX only, so
 * build.rs builds this one file against every allocator alloctrace must find by itself —
 * glibc (shared, static, static stripped), musl (dynamic, static), jemalloc (shared, static),
 * tcmalloc and mimalloc — and the tests also run the glibc build with each of them preloaded.
 * Usage:
 *   allocators          runs at once (launch mode, system-wide mode, after an exec)
 *   allocators wait     says `ready` and waits for one byte on standard input first (--pid)
 * It allocates from named functions (malloc, calloc, a realloc growth chain, realloc(NULL, n),
 * posix_memalign, aligned_alloc), frees some blocks where they were allocated and some
 * elsewhere, leaks some, calls free(NULL), and writes its ground truth (gt.h): nothing else in
 * it allocates, and nothing was allocated before the work, so unknown_frees is 0. Sizes are
 * multiples of 8 no allocator rounds down and aligned_alloc's size is a multiple of its
 * alignment (C11), so every allocator answers every call the same way. About 1,000 calls.
 */
#include "gt.h"

enum {
    SMALL_N = 300, SMALL_SIZE = 24,
    LEAK_N = 40, LEAK_SIZE = 200,
    CALLOC_N = 100, CALLOC_NMEMB = 10, CALLOC_SIZE = 12,
    CHAIN_N = 30, CHAIN_FIRST = 8, CHAIN_STEPS = 6,
    NULL_N = 60, NULL_SIZE = 48,
    PM_N = 40, PM_ALIGN = 256, PM_SIZE = 100,
    AA_N = 40, AA_ALIGN = 64, AA_SIZE = 192,
    OTHER_N = 70, OTHER_SIZE = 40,
};

static struct tally t_small = { .name = "alloc_small" };
static struct tally t_leak = { .name = "alloc_leak" };
static struct tally t_calloc = { .name = "alloc_calloc" };
static struct tally t_chain_start = { .name = "alloc_chain_start" };
static struct tally t_chain = { .name = "alloc_realloc_chain" };
static struct tally t_null = { .name = "alloc_realloc_null" };
static struct tally t_pm = { .name = "alloc_posix_memalign" };
static struct tally t_aa = { .name = "alloc_aligned_alloc" };
static struct tally t_other = { .name = "alloc_for_other" };
static struct tally t_free_else = { .name = "free_elsewhere" };
static struct tally t_free_null = { .name = "free_null" };

static void *leaked[LEAK_N];
static void *chain[CHAIN_N];
static size_t chain_size[CHAIN_N];
static void *other[OTHER_N];

/* malloc and free in the same function. */
NOINLINE static void alloc_small(void)
{
    for (int i = 0; i < SMALL_N; i++) {
        void *p = gt_check(malloc(SMALL_SIZE), "malloc");
        gt_alloc(&t_small, SMALL_SIZE);
        free(p);
        gt_free(&t_small, SMALL_SIZE);
    }
}

/* Never freed: live at the end. */
NOINLINE static void alloc_leak(void)
{
    for (int i = 0; i < LEAK_N; i++) {
        leaked[i] = gt_check(malloc(LEAK_SIZE), "malloc");
        gt_alloc(&t_leak, LEAK_SIZE);
    }
}

/* One allocation of nmemb * size bytes per call; two thirds freed. */
NOINLINE static void alloc_calloc(void)
{
    for (int i = 0; i < CALLOC_N; i++) {
        void *p = gt_check(calloc(CALLOC_NMEMB, CALLOC_SIZE), "calloc");
        gt_alloc(&t_calloc, CALLOC_NMEMB * CALLOC_SIZE);
        if (i % 3 != 0) {
            free(p);
            gt_free(&t_calloc, CALLOC_NMEMB * CALLOC_SIZE);
        }
    }
}

/* The first block of every growth chain. */
NOINLINE static void alloc_chain_start(void)
{
    for (int i = 0; i < CHAIN_N; i++) {
        chain[i] = gt_check(malloc(CHAIN_FIRST), "malloc");
        chain_size[i] = CHAIN_FIRST;
        gt_alloc(&t_chain_start, CHAIN_FIRST);
    }
}

/* Doubles every chain's block CHAIN_STEPS times: each successful realloc is one allocation
 * here and one free of the old block, charged to whoever allocated it (alloc_chain_start for
 * the first step, this function after that), whether or not the block moved. */
NOINLINE static void alloc_realloc_chain(void)
{
    for (int i = 0; i < CHAIN_N; i++) {
        for (int s = 0; s < CHAIN_STEPS; s++) {
            size_t old = chain_size[i], grown = old * 2;
            chain[i] = gt_check(realloc(chain[i], grown), "realloc");
            gt_free(s == 0 ? &t_chain_start : &t_chain, old);
            gt_alloc(&t_chain, grown);
            chain_size[i] = grown;
        }
    }
}

/* realloc(NULL, n) is malloc(n): one allocation, never two. */
NOINLINE static void alloc_realloc_null(void)
{
    for (int i = 0; i < NULL_N; i++) {
        void *p = gt_check(realloc(NULL, NULL_SIZE), "realloc(NULL)");
        gt_alloc(&t_null, NULL_SIZE);
        free(p);
        gt_free(&t_null, NULL_SIZE);
    }
}

NOINLINE static void alloc_posix_memalign(void)
{
    for (int i = 0; i < PM_N; i++) {
        void *p = NULL;
        int err = posix_memalign(&p, PM_ALIGN, PM_SIZE);
        if (err != 0) {
            errno = err;
            gt_die("posix_memalign");
        }
        gt_check(p, "posix_memalign");
        gt_alloc(&t_pm, PM_SIZE);
        free(p);
        gt_free(&t_pm, PM_SIZE);
    }
}

/* Half freed, half live. */
NOINLINE static void alloc_aligned_alloc(void)
{
    for (int i = 0; i < AA_N; i++) {
        void *p = gt_check(aligned_alloc(AA_ALIGN, AA_SIZE), "aligned_alloc");
        gt_alloc(&t_aa, AA_SIZE);
        if (i % 2 == 0) {
            free(p);
            gt_free(&t_aa, AA_SIZE);
        }
    }
}

/* Allocates blocks free_elsewhere frees. */
NOINLINE static void alloc_for_other(void)
{
    for (int i = 0; i < OTHER_N; i++) {
        other[i] = gt_check(malloc(OTHER_SIZE), "malloc");
        gt_alloc(&t_other, OTHER_SIZE);
    }
}

/* Frees alloc_for_other's blocks and the chains' last blocks: those frees are theirs; this
 * function allocates nothing. */
NOINLINE static void free_elsewhere(void)
{
    for (int i = 0; i < OTHER_N; i++) {
        free(other[i]);
        gt_free(&t_other, OTHER_SIZE);
    }
    for (int i = 0; i < CHAIN_N; i++) {
        free(chain[i]);
        gt_free(&t_chain, chain_size[i]);
    }
}

/* free(NULL) counts nothing. */
NOINLINE static void free_null(void)
{
    void *volatile nothing = NULL;
    for (int i = 0; i < 10; i++)
        free(nothing);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    alloc_small();
    alloc_leak();
    alloc_calloc();
    alloc_chain_start();
    alloc_realloc_chain();
    alloc_realloc_null();
    alloc_posix_memalign();
    alloc_aligned_alloc();
    alloc_for_other();
    free_elsewhere();
    free_null();
    static const struct tally *const all[] = {
        &t_small, &t_leak, &t_calloc, &t_chain_start, &t_chain, &t_null,
        &t_pm, &t_aa, &t_other, &t_free_else, &t_free_null,
    };
    gt_write(all, GT_COUNT(all), 0);
    gt_write_all(1, "done\n", 5);
    return 0;
}
