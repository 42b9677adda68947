/*
 * Stacks at the depth limit (tests/it/stacks_depth.rs): built with -O2 -fomit-frame-pointer
 * (build.rs: workloads named nofp_*), nofp_descend recurses `depth` times, keeping values live
 * across each call (rbp an ordinary register), then calls a leaf that allocates once and
 * frees. A leaf's stack is itself, `depth` nofp_descend frames, main, __libc_start_call_main,
 * __libc_start_main_impl and _start: depth + 5 frames. nofp_whole_leaf is reached at depth
 * argv[1] (WHOLE_CALLS times, SIZE_WHOLE bytes), nofp_cut_leaf at depth argv[2] (CUT_CALLS
 * times, SIZE_CUT bytes); the test picks the depths around the limit and keeps these counts
 * in step. Ground truth: gt.h.
 */
#include "gt.h"

enum { WHOLE_CALLS = 50, CUT_CALLS = 20, SIZE_WHOLE = 48, SIZE_CUT = 80 };

static struct tally t_whole = { .name = "nofp_whole_leaf" };
static struct tally t_cut = { .name = "nofp_cut_leaf" };

NOINLINE long nofp_whole_leaf(long a)
{
    char *p = gt_check(malloc(SIZE_WHOLE), "malloc");
    gt_alloc(&t_whole, SIZE_WHOLE);
    p[0] = (char)a;
    long r = p[0];
    free(p);
    gt_free(&t_whole, SIZE_WHOLE);
    return r;
}

NOINLINE long nofp_cut_leaf(long a)
{
    char *p = gt_check(malloc(SIZE_CUT), "malloc");
    gt_alloc(&t_cut, SIZE_CUT);
    p[0] = (char)a;
    long r = p[0];
    free(p);
    gt_free(&t_cut, SIZE_CUT);
    return r;
}

/* Six values live across the call, and the result combined after it (not an accumulator gcc
 * could turn into a loop). */
NOINLINE long nofp_descend(long depth, long cut, long a, long b, long c, long d)
{
    long x = a * 3 + b, y = c * 5 + d, z = a ^ d, u = b ^ c, v = a + c, w = b * 7;
    long r = depth > 1 ? nofp_descend(depth - 1, cut, x, y, z, u)
                       : cut ? nofp_cut_leaf(x) : nofp_whole_leaf(x);
    return (r ^ x) + y * z + (u ^ v) * w;
}

static volatile long sink;

int main(int argc, char **argv)
{
    if (argc < 3)
        gt_die("usage: nofp_deep WHOLE_DEPTH CUT_DEPTH");
    long whole = atol(argv[1]), cut = atol(argv[2]);
    for (long i = 0; i < WHOLE_CALLS; i++)
        sink += nofp_descend(whole, 0, i, 2, 3, 4);
    for (long i = 0; i < CUT_CALLS; i++)
        sink += nofp_descend(cut, 1, i, 2, 3, 4);
    static const struct tally *const all[] = { &t_whole, &t_cut };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
