/*
 * One named function per allocation pattern alloctrace must count exactly; each function is
 * called once, from main (or, for leaf_caller, from mid <- top <- main), and calls its allocator
 * from one place, so each is exactly one allocation site. Ground truth: see gt.h.
 *
 * Patterns: plain malloc/free, a leak, calloc, a realloc growth chain whose first block comes
 * from another function, realloc(NULL, n), the aligned family (posix_memalign, aligned_alloc
 * with an alignment glibc serves by calling malloc internally, memalign, valloc, pvalloc),
 * blocks freed by a function other than the one that allocated them, failed reallocs (the
 * old blocks stay alive), realloc(p, 0), free(NULL), malloc(0), many sizes from one site, and
 * a three-deep call chain for caller attribution.
 *
 * About 3,400 frees: ~50 ms traced (FIELD-NOTES.md: ~14 us per traced free).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>

#include "gt.h"

enum {
    SMALL_N = 2000,
    LEAK_N = 500,
    CALLOC_N = 300,
    CHAINS = 20,
    NULL_N = 100,
    ALIGNED_N = 100,
    MEMALIGN_N = 50,
    VALLOC_N = 20,
    OTHER_N = 200,
    FAILED_N = 5,
    ZERO_REALLOC_N = 7,
    FREE_NULL_N = 10,
    ZERO_SIZE_N = 10,
    VARIED_N = 256,
    LEAF_N = 3,
};

static struct tally t_small = { .name = "alloc_small" };
static struct tally t_leak = { .name = "alloc_leak" };
static struct tally t_calloc = { .name = "alloc_calloc" };
static struct tally t_chain_start = { .name = "alloc_chain_start" };
static struct tally t_chain = { .name = "alloc_realloc_chain" };
static struct tally t_realloc_null = { .name = "alloc_realloc_null" };
static struct tally t_posix_memalign = { .name = "alloc_posix_memalign" };
static struct tally t_aligned_alloc = { .name = "alloc_aligned_alloc" };
static struct tally t_memalign = { .name = "alloc_memalign" };
static struct tally t_valloc = { .name = "alloc_valloc" };
static struct tally t_pvalloc = { .name = "alloc_pvalloc" };
static struct tally t_for_other = { .name = "alloc_for_other" };
static struct tally t_free_elsewhere = { .name = "free_elsewhere" };
static struct tally t_for_failed = { .name = "alloc_for_failed_realloc" };
static struct tally t_failed = { .name = "failed_realloc" };
static struct tally t_for_zero = { .name = "alloc_for_zero_realloc" };
static struct tally t_to_zero = { .name = "realloc_to_zero" };
static struct tally t_free_null = { .name = "free_null" };
static struct tally t_zero_size = { .name = "alloc_zero_size" };
static struct tally t_varied = { .name = "alloc_varied_sizes" };
static struct tally t_leaf = { .name = "leaf_caller" };

/* Pointer arrays are static: the workload allocates nothing but what it counts. */
static void *small[SMALL_N];
static void *leaked[LEAK_N];
static void *chains[CHAINS];
static void *others[OTHER_N];
static void *kept[FAILED_N];
static void *zeroed[ZERO_REALLOC_N];

/* Sizes no allocator can satisfy, hidden from the compiler's -Walloc-size-larger-than: above
 * PTRDIFF_MAX (glibc refuses at once), and 120 TiB, which glibc tries and the kernel cannot
 * give (ENOMEM): no hole in a 128 TiB address space with a program in it is that large,
 * whatever the overcommit policy. tests/it/sites/ knows both. */
static volatile size_t huge = SIZE_MAX / 2 + 1;
static volatile size_t big = (size_t)120 << 40;

NOINLINE static void alloc_small(void)
{
    for (int i = 0; i < SMALL_N; i++) {
        small[i] = gt_check(malloc(64), "malloc");
        gt_alloc(&t_small, 64);
    }
    for (int i = 0; i < SMALL_N; i++) {
        free(small[i]);
        gt_free(&t_small, 64);
    }
}

NOINLINE static void alloc_leak(void)
{
    for (int i = 0; i < LEAK_N; i++) {
        leaked[i] = gt_check(malloc(100), "malloc");
        gt_alloc(&t_leak, 100);
    }
}

NOINLINE static void alloc_calloc(void)
{
    for (int i = 0; i < CALLOC_N; i++) {
        void *p = gt_check(calloc(10, 24), "calloc");
        gt_alloc(&t_calloc, 10 * 24);
        free(p);
        gt_free(&t_calloc, 10 * 24);
    }
}

/* The first block of every chain: freed by the chain's first realloc, in another function. */
NOINLINE static void alloc_chain_start(void)
{
    for (int i = 0; i < CHAINS; i++) {
        chains[i] = gt_check(malloc(16), "malloc");
        gt_alloc(&t_chain_start, 16);
    }
}

/* Grows each chain 32, 64, ..., 4096 bytes, shrinks it to 100 (in place: same address), frees. */
NOINLINE static void alloc_realloc_chain(void)
{
    static const size_t steps[] = { 32, 64, 128, 256, 512, 1024, 2048, 4096, 100 };
    for (int i = 0; i < CHAINS; i++) {
        struct tally *owner = &t_chain_start;
        size_t size = 16;
        for (size_t s = 0; s < GT_COUNT(steps); s++) {
            chains[i] = gt_check(realloc(chains[i], steps[s]), "realloc");
            gt_free(owner, size);
            gt_alloc(&t_chain, steps[s]);
            owner = &t_chain;
            size = steps[s];
        }
        free(chains[i]);
        gt_free(owner, size);
    }
}

/* realloc(NULL, n) is malloc(n) (glibc implements it by calling malloc): ONE allocation. */
NOINLINE static void alloc_realloc_null(void)
{
    for (int i = 0; i < NULL_N; i++) {
        void *p = gt_check(realloc(NULL, 72), "realloc(NULL)");
        gt_alloc(&t_realloc_null, 72);
        free(p);
        gt_free(&t_realloc_null, 72);
    }
}

NOINLINE static void alloc_posix_memalign(void)
{
    for (int i = 0; i < ALIGNED_N; i++) {
        void *p = NULL;
        int err = posix_memalign(&p, 64, 100);
        if (err != 0) {
            errno = err;
            gt_die("posix_memalign");
        }
        gt_check(p, "posix_memalign");
        gt_alloc(&t_posix_memalign, 100);
        free(p);
        gt_free(&t_posix_memalign, 100);
    }
}

/* Alignment 16 <= MALLOC_ALIGNMENT: glibc's aligned_alloc calls malloc itself (nesting). */
NOINLINE static void alloc_aligned_alloc(void)
{
    for (int i = 0; i < ALIGNED_N; i++) {
        void *p = gt_check(aligned_alloc(16, 48), "aligned_alloc");
        gt_alloc(&t_aligned_alloc, 48);
        free(p);
        gt_free(&t_aligned_alloc, 48);
    }
}

NOINLINE static void alloc_memalign(void)
{
    for (int i = 0; i < MEMALIGN_N; i++) {
        void *p = gt_check(memalign(128, 200), "memalign");
        gt_alloc(&t_memalign, 200);
        free(p);
        gt_free(&t_memalign, 200);
    }
}

/* valloc and pvalloc round up to pages inside glibc; the requested size is what counts. */
NOINLINE static void alloc_valloc(void)
{
    for (int i = 0; i < VALLOC_N; i++) {
        void *p = gt_check(valloc(300), "valloc");
        gt_alloc(&t_valloc, 300);
        free(p);
        gt_free(&t_valloc, 300);
    }
}

NOINLINE static void alloc_pvalloc(void)
{
    for (int i = 0; i < VALLOC_N; i++) {
        void *p = gt_check(pvalloc(500), "pvalloc");
        gt_alloc(&t_pvalloc, 500);
        free(p);
        gt_free(&t_pvalloc, 500);
    }
}

NOINLINE static void alloc_for_other(void)
{
    for (int i = 0; i < OTHER_N; i++) {
        others[i] = gt_check(malloc(48), "malloc");
        gt_alloc(&t_for_other, 48);
    }
}

/* Frees what alloc_for_other allocated: the frees belong to alloc_for_other's site. */
NOINLINE static void free_elsewhere(void)
{
    for (int i = 0; i < OTHER_N; i++) {
        free(others[i]);
        gt_free(&t_for_other, 48);
    }
}

NOINLINE static void alloc_for_failed_realloc(void)
{
    for (int i = 0; i < FAILED_N; i++) {
        kept[i] = gt_check(malloc(200), "malloc");
        gt_alloc(&t_for_failed, 200);
    }
}

/* realloc to an impossible size returns NULL and leaves the old block alive (never freed);
 * malloc, calloc and posix_memalign of one fail and allocate nothing. So do a calloc and a
 * reallocarray whose nmemb * size overflows: the product wraps to 0 in 64 bits, and a
 * tracer that took it for 0 bytes would count an allocation, or a realloc to 0 (a free). */
NOINLINE static void failed_realloc(void)
{
    for (int i = 0; i < FAILED_N; i++) {
        void *q = realloc(kept[i], i % 2 ? huge : big);
        if (q != NULL)
            gt_die("a realloc that should fail succeeded");
        gt_sink = kept[i];
        if (malloc(big) != NULL || calloc(1, big) != NULL)
            gt_die("an allocation that should fail succeeded");
        void *p = NULL;
        if (posix_memalign(&p, 64, big) == 0)
            gt_die("a posix_memalign that should fail succeeded");
        if (calloc(2, huge) != NULL || reallocarray(kept[i], 2, huge) != NULL)
            gt_die("an allocation whose size overflows succeeded");
    }
}

NOINLINE static void alloc_for_zero_realloc(void)
{
    for (int i = 0; i < ZERO_REALLOC_N; i++) {
        zeroed[i] = gt_check(malloc(300), "malloc");
        gt_alloc(&t_for_zero, 300);
    }
}

/* glibc's realloc(p, 0) frees p and returns NULL: a free of alloc_for_zero_realloc's block. */
NOINLINE static void realloc_to_zero(void)
{
    for (int i = 0; i < ZERO_REALLOC_N; i++) {
        void *q = realloc(zeroed[i], 0);
        if (q != NULL)
            gt_die("realloc(p, 0) returned a block");
        gt_free(&t_for_zero, 300);
    }
}

/* free(NULL) is no free. */
NOINLINE static void free_null(void)
{
    for (int i = 0; i < FREE_NULL_N; i++) {
        void *volatile p = NULL;
        free(p);
    }
}

/* malloc(0) returns a unique block: one allocation of 0 bytes. */
NOINLINE static void alloc_zero_size(void)
{
    for (int i = 0; i < ZERO_SIZE_N; i++) {
        void *p = gt_check(malloc(0), "malloc(0)");
        gt_alloc(&t_zero_size, 0);
        free(p);
        gt_free(&t_zero_size, 0);
    }
}

/* One site, sizes 1, 14, 27, ..., 3316: bytes and the size histogram must add up exactly. */
NOINLINE static void alloc_varied_sizes(void)
{
    for (int i = 0; i < VARIED_N; i++) {
        size_t n = 1 + 13 * (size_t)i;
        void *p = gt_check(malloc(n), "malloc");
        gt_alloc(&t_varied, n);
        free(p);
        gt_free(&t_varied, n);
    }
}

/* Caller attribution: malloc's immediate caller is leaf_caller, called by mid, called by top. */
NOINLINE static void leaf_caller(void)
{
    for (int i = 0; i < LEAF_N; i++) {
        void *p = gt_check(malloc(24), "malloc");
        gt_alloc(&t_leaf, 24);
        free(p);
        gt_free(&t_leaf, 24);
    }
}

NOINLINE static void mid(void)
{
    leaf_caller();
}

NOINLINE static void top(void)
{
    mid();
}

int main(void)
{
    alloc_small();
    alloc_leak();
    alloc_calloc();
    alloc_chain_start();
    alloc_realloc_chain();
    alloc_realloc_null();
    alloc_posix_memalign();
    alloc_aligned_alloc();
    alloc_memalign();
    alloc_valloc();
    alloc_pvalloc();
    alloc_for_other();
    free_elsewhere();
    alloc_for_failed_realloc();
    failed_realloc();
    alloc_for_zero_realloc();
    realloc_to_zero();
    free_null();
    alloc_zero_size();
    alloc_varied_sizes();
    top();

    static const struct tally *const all[] = {
        &t_small, &t_leak, &t_calloc, &t_chain_start, &t_chain, &t_realloc_null,
        &t_posix_memalign, &t_aligned_alloc, &t_memalign, &t_valloc, &t_pvalloc,
        &t_for_other, &t_free_elsewhere, &t_for_failed, &t_failed, &t_for_zero, &t_to_zero,
        &t_free_null, &t_zero_size, &t_varied, &t_leaf,
    };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
