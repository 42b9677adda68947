/*
 * Prints the user ids it runs with, `euid <n> ruid <n>`, and exits 0. tests/it/security/privileges.rs
 * installs a copy setuid root: run by nobody on its own it says `euid 0`; launched by an
 * unprivileged alloctrace it must say nobody's id (no elevation under the tracer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
    /* Allocates, so the run has something to count. */
    char *volatile p = malloc(64);
    free(p);
    printf("euid %u ruid %u\n", (unsigned)geteuid(), (unsigned)getuid());
    return 0;
}
