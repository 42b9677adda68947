/*
 * A library without frame pointers loaded late (tests/it/unwind.rs): nofp_dlopen LIB dlopens
 * LIB (libnofp_lib.so, see lib/nofp_lib.c), waits 300 ms (alloctrace loads a library's unwind
 * table from its mapping record, off the traced process's path: allocations made in between
 * would have cut stacks), then calls nofp_lib_run(N, SIZE) from nofp_call_lib. Built with -O2
 * -fomit-frame-pointer (a nofp_ workload). Ground truth: gt.h, the library's allocations
 * charged to nofp_lib_leaf.
 */
#include <dlfcn.h>

#include "gt.h"

enum { N = 250, SIZE = 56 };

static struct tally t_leaf = { .name = "nofp_lib_leaf" };

typedef long (*run_fn)(long, long);

NOINLINE long nofp_call_lib(run_fn run, long a, long b, long c)
{
    long x = a * 3, y = b * 5, z = c * 7;
    long r = run(N, SIZE);
    return r + x * y + z;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        gt_die("usage: nofp_dlopen LIB");
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (lib == NULL)
        gt_die("dlopen");
    run_fn run = (run_fn)dlsym(lib, "nofp_lib_run");
    if (run == NULL)
        gt_die("dlsym");
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 300 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    gt_sink = (void *)nofp_call_lib(run, argc, 2, 3);
    for (int i = 0; i < N; i++) {
        gt_alloc(&t_leaf, SIZE);
        gt_free(&t_leaf, SIZE);
    }
    static const struct tally *const all[] = { &t_leaf };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
