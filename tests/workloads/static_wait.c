/*
 * Linked with -static (build.rs links every static_*.c workload statically): it maps no libc,
 * so alloctrace must refuse it, by launch or by --pid, with a message that says it is static.
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
