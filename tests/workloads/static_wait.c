/*
 * Linked with -static (build.rs links every static_*.c workload statically): it maps no libc,
 * its allocator is glibc's, linked in. build.rs also builds it stripped of every symbol
 * (static_wait_stripped): there alloctrace can find no allocator, and must say so.
 * It allocates, says `ready` on standard output, and waits for one byte (or end of file) on
 * standard input before exiting 0.
 */
#include "gt.h"

static void *block;

NOINLINE static void static_alloc(void)
{
    block = gt_check(malloc(128), "malloc");
}

int main(void)
{
    static_alloc();
    gt_write_all(1, "ready\n", 6);
    char c;
    while (read(0, &c, 1) < 0 && errno == EINTR)
        ;
    return 0;
}
