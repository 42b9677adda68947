/*
 * A shared library built without frame pointers (tests/build.rs: the variant
 * libnofp_lib.so, -shared -fPIC -O2 -fomit-frame-pointer), dlopen'ed by nofp_dlopen.c:
 * nofp_lib_run(n, size) reaches nofp_lib_leaf through nofp_lib_mid, which keeps six values
 * live across its call, and allocates and frees `size` bytes there n times. The caller keeps
 * the ground truth.
 */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline, noipa))

void *volatile nofp_lib_sink;

NOINLINE long nofp_lib_leaf(long a, long b, long size)
{
    char *p = malloc(size);
    if (p == NULL)
        abort();
    p[0] = (char)(a ^ b);
    long r = p[0];
    nofp_lib_sink = p;
    free(p);
    return r;
}

NOINLINE long nofp_lib_mid(long a, long b, long c, long d, long e, long size)
{
    long x = a * 3 + b, y = c * 5 + d, z = e * 7 + a;
    long u = a ^ e, v = b ^ d, w = c ^ a;
    long r = nofp_lib_leaf(x, y, size);
    return r + x * y + z * u + v * w + (x ^ z);
}

long nofp_lib_run(long n, long size)
{
    long r = 0;
    for (long i = 0; i < n; i++)
        r += nofp_lib_mid(i, i * 3, i * 5, i * 7, i * 11, size);
    return r;
}
