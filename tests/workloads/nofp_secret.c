/*
 * Code without frame pointers whose rbp holds stack data (tests/it/stacks.rs): built with
 * -O2 -fomit-frame-pointer (build.rs: workloads named nofp_*). Each of three functions calls
 * malloc N times with rbp pointing at a chain of fake frame records on its own stack, laid
 * out as a frame-pointer walk follows them: saved "rbp" (the next record, higher up) and a
 * "return address" that is really the secret, 8 bytes at a time, then a value that differs
 * from call to call. A tracer that reads rbp's chain as frames leaks the secret into its
 * output, and splits each function into N sites. Ground truth: gt.h.
 */
#include <stdint.h>

#include "gt.h"

enum { N = 40, SIZE = 48 };

static const char SECRET[] = "S3CRET!!PASSWD=hunter2!!";

static struct tally t_one = { .name = "nofp_site_one" };
static struct tally t_two = { .name = "nofp_site_two" };
static struct tally t_three = { .name = "nofp_site_three" };

/* malloc(size) called with rbp = chain: only asm can put a chosen value in rbp for a call. */
static inline __attribute__((always_inline)) void *malloc_with_rbp(uint64_t *chain, size_t size)
{
    register uint64_t *rbp __asm__("rbp") = chain;
    void *p;
    __asm__ volatile("call malloc@PLT"
                     : "=a"(p), "+D"(size)
                     : "r"(rbp)
                     : "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2",
                       "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
                       "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
    return p;
}

/* The fake records: three pairs whose "return addresses" are the secret, then one whose
 * return address is `junk` and whose saved rbp (0) ends the walk. */
static inline __attribute__((always_inline)) void plant(uint64_t *chain, uint64_t junk)
{
    for (int k = 0; k < 3; k++) {
        chain[2 * k] = (uint64_t)(uintptr_t)&chain[2 * k + 2];
        memcpy(&chain[2 * k + 1], SECRET + 8 * k, 8);
    }
    chain[6] = 0;
    chain[7] = junk;
}

/* One allocating function: the block is freed by a real call, so the function is not a
 * leaf (no red zone below rsp, rsp aligned for the call in the asm). */
#define SITE(fn, tally, base)                                                                  \
    NOINLINE void fn(int i);                                                                   \
    NOINLINE void fn(int i)                                                                    \
    {                                                                                          \
        uint64_t chain[8];                                                                     \
        plant(chain, (base) + (uint64_t)i);                                                    \
        void *p = gt_check(malloc_with_rbp(chain, SIZE), "malloc");                           \
        gt_alloc(&tally, SIZE);                                                                \
        gt_sink = p;                                                                           \
        free(p);                                                                               \
        gt_free(&tally, SIZE);                                                                 \
    }

SITE(nofp_site_one, t_one, 0x1000)
SITE(nofp_site_two, t_two, 0x2000)
SITE(nofp_site_three, t_three, 0x3000)

int main(void)
{
    for (int i = 0; i < N; i++) {
        nofp_site_one(i);
        nofp_site_two(i);
        nofp_site_three(i);
    }
    static const struct tally *const all[] = { &t_one, &t_two, &t_three };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
