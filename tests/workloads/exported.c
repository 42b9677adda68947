/*
 * For the stripped-binary test (tests/it/reliability/binaries.rs): exported_alloc is a global function
 * (in the dynamic symbol table when linked with -rdynamic), hidden_alloc a static one (in no
 * symbol table once stripped). Each makes N malloc(24) and frees them. Ground truth: gt.h.
 */
#include "gt.h"

enum { N = 300, SIZE = 24 };

static struct tally t_exported = { .name = "exported_alloc" };
static struct tally t_hidden = { .name = "hidden_alloc" };
static void *blocks[N];

NOINLINE void exported_alloc(void);
NOINLINE void exported_alloc(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_exported, SIZE);
    }
    for (int i = 0; i < N; i++) {
        free(blocks[i]);
        gt_free(&t_exported, SIZE);
    }
}

NOINLINE static void hidden_alloc(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_hidden, SIZE);
    }
    for (int i = 0; i < N; i++) {
        free(blocks[i]);
        gt_free(&t_hidden, SIZE);
    }
}

int main(void)
{
    exported_alloc();
    hidden_alloc();
    static const struct tally *const all[] = { &t_exported, &t_hidden };
    gt_write(all, GT_COUNT(all), 0);
    return 0;
}
