/*
 * The demo workload behind the README's first command (`cargo xtask demo`): one named,
 * non-inlined function per allocation pattern of the allocation-profiling guide, so each
 * pattern shows up as its own site in alloctrace's report and flame graph.
 *
 * It prints its own ground truth to stderr at the end, one line per function:
 *     demo: <function> allocs=<n> bytes=<n> frees=<n>
 * counted the way alloctrace counts: every malloc, calloc, realloc and posix_memalign call is
 * one allocation of the bytes requested (calloc: nmemb * size); every free of a non-NULL
 * pointer is one free, and so is the old block of every realloc(p != NULL, n > 0).
 *
 * About 1.9 s untraced, nearly all of it sleeping. Traced, each free costs ~14 us and each
 * malloc ~1 us (FIELD-NOTES.md), so it keeps its frees to ~36,000.
 *
 * Build: gcc -O1 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls -o demo demo.c
 * (frame pointers for the stack walk; no sibling calls so every function stays on its stacks).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tally {
    const char *name;
    unsigned long allocs, bytes, frees;
};

/* Every block's address is published here, so the compiler cannot drop a malloc/free pair. */
static void *volatile sink;

static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void *check(void *p, const char *who)
{
    if (p == NULL) {
        fprintf(stderr, "demo: %s: out of memory\n", who);
        exit(1);
    }
    sink = p;
    return p;
}

static void counted_alloc(struct tally *t, size_t bytes)
{
    t->allocs++;
    t->bytes += bytes;
}

/* Pattern 1: many small short-lived blocks at a steady rate (20,000 x 64 B over ~0.5 s). */
#define SMALL_BATCHES 100
#define SMALL_PER_BATCH 200
#define SMALL_SIZE 64
__attribute__((noinline)) static void small_frequent_allocs(struct tally *t)
{
    void *batch[SMALL_PER_BATCH];
    for (int b = 0; b < SMALL_BATCHES; b++) {
        for (int i = 0; i < SMALL_PER_BATCH; i++) {
            batch[i] = check(malloc(SMALL_SIZE), t->name);
            counted_alloc(t, SMALL_SIZE);
            memset(batch[i], i, SMALL_SIZE);
            free(batch[i]);
            t->frees++;
        }
        sleep_ms(5);
    }
}

/* Pattern 2: a few large buffers, infrequently (6 x 1 MiB, one every 150 ms: ~6/s, under the
 * guide's 10/s for "infrequent"; one every 60 ms was ~16/s, which only a drain interval of 1 s
 * that diluted it over the idle rest of the second made look infrequent). */
#define LARGE_COUNT 6
#define LARGE_SIZE (1024 * 1024)
__attribute__((noinline)) static void large_infrequent_allocs(struct tally *t)
{
    for (int i = 0; i < LARGE_COUNT; i++) {
        char *buf = check(malloc(LARGE_SIZE), t->name);
        counted_alloc(t, LARGE_SIZE);
        memset(buf, 0xab, LARGE_SIZE);
        sleep_ms(150);
        free(buf);
        t->frees++;
    }
}

/* Pattern 3: bursts separated by quiet periods (3 bursts of 5,000 x 256 B, 150 ms apart). */
#define BURSTS 3
#define BURST_COUNT 5000
#define BURST_SIZE 256
__attribute__((noinline)) static void burst_allocs(struct tally *t)
{
    static void *blocks[BURST_COUNT];
    for (int b = 0; b < BURSTS; b++) {
        for (int i = 0; i < BURST_COUNT; i++) {
            blocks[i] = check(malloc(BURST_SIZE), t->name);
            counted_alloc(t, BURST_SIZE);
            memset(blocks[i], b, BURST_SIZE);
        }
        for (int i = 0; i < BURST_COUNT; i++) {
            free(blocks[i]);
            t->frees++;
        }
        sleep_ms(150);
    }
}

/* A leak: a cache that only ever grows (500 x 128 B, never freed). */
#define LEAK_COUNT 500
#define LEAK_SIZE 128
struct cache_entry {
    struct cache_entry *next;
    char key[LEAK_SIZE - sizeof(struct cache_entry *)];
};
static struct cache_entry *cache;

__attribute__((noinline)) static void leaky_cache_insert(struct tally *t)
{
    for (int i = 0; i < LEAK_COUNT; i++) {
        struct cache_entry *e = check(malloc(sizeof *e), t->name);
        counted_alloc(t, sizeof *e);
        snprintf(e->key, sizeof e->key, "key-%d", i);
        e->next = cache;
        cache = e;
    }
}

/* A realloc growth chain: 16 B doubled up to 64 KiB (1 malloc + 12 reallocs), 20 times. */
#define GROW_ROUNDS 20
#define GROW_START 16
#define GROW_END (64 * 1024)
__attribute__((noinline)) static void grow_buffer(struct tally *t)
{
    for (int r = 0; r < GROW_ROUNDS; r++) {
        size_t size = GROW_START;
        char *buf = check(malloc(size), t->name);
        counted_alloc(t, size);
        memset(buf, r, size);
        while (size < GROW_END) {
            size_t bigger = size * 2;
            buf = check(realloc(buf, bigger), t->name);
            counted_alloc(t, bigger);
            t->frees++; /* the old block */
            memset(buf + size, r, bigger - size);
            size = bigger;
        }
        free(buf);
        t->frees++;
    }
}

/* calloc: zeroed tables (100 x 1,024 x 8 B). */
#define TABLES 100
#define TABLE_ROWS 1024
__attribute__((noinline)) static void make_zeroed_table(struct tally *t)
{
    for (int i = 0; i < TABLES; i++) {
        long *table = check(calloc(TABLE_ROWS, sizeof *table), t->name);
        counted_alloc(t, TABLE_ROWS * sizeof *table);
        table[i] = i;
        free(table);
        t->frees++;
    }
}

/* posix_memalign: cache-line-aligned blocks (1,000 x 512 B). An alignment above malloc's own
 * (16) keeps glibc from relaying to malloc internally. */
#define ALIGNED_COUNT 1000
#define ALIGNED_SIZE 512
#define ALIGNMENT 64
__attribute__((noinline)) static void aligned_blocks(struct tally *t)
{
    for (int i = 0; i < ALIGNED_COUNT; i++) {
        void *p = NULL;
        if (posix_memalign(&p, ALIGNMENT, ALIGNED_SIZE) != 0)
            p = NULL;
        check(p, t->name);
        counted_alloc(t, ALIGNED_SIZE);
        memset(p, i, ALIGNED_SIZE);
        free(p);
        t->frees++;
    }
}

int main(void)
{
    struct tally small = { "small_frequent_allocs", 0, 0, 0 };
    struct tally large = { "large_infrequent_allocs", 0, 0, 0 };
    struct tally burst = { "burst_allocs", 0, 0, 0 };
    struct tally leaky = { "leaky_cache_insert", 0, 0, 0 };
    struct tally grow = { "grow_buffer", 0, 0, 0 };
    struct tally zeroed = { "make_zeroed_table", 0, 0, 0 };
    struct tally aligned = { "aligned_blocks", 0, 0, 0 };

    small_frequent_allocs(&small);
    large_infrequent_allocs(&large);
    burst_allocs(&burst);
    leaky_cache_insert(&leaky);
    grow_buffer(&grow);
    make_zeroed_table(&zeroed);
    aligned_blocks(&aligned);

    const struct tally *all[] = { &small, &large, &burst, &leaky, &grow, &zeroed, &aligned };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fprintf(stderr, "demo: %s allocs=%lu bytes=%lu frees=%lu\n", all[i]->name,
                all[i]->allocs, all[i]->bytes, all[i]->frees);
    return 0;
}
