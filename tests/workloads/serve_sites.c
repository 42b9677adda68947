/*
 * A long-running target for the daemon's tests (tests/it/serve.rs): it allocates only when
 * told, so a test knows exactly what happened in any window. It prints `malloc_at 0x...` (the
 * address malloc resolves to, to look for the uprobe's int3) and `ready`, then reads commands
 * from standard input, one per line, and answers each with `done <n>` (n counts commands):
 *
 *     a N      site_alpha: N blocks of 48 bytes, each freed at once
 *     b N      site_beta: N blocks of 1000 bytes, kept (never freed)
 *     truth    writes the ground truth (gt.h) so far to $GROUND_TRUTH
 *
 * It exits 0 at the end of its input. Commands are read with read(2): stdio would allocate.
 */
#include <dlfcn.h>

#include "gt.h"

enum { ALPHA_SIZE = 48, BETA_SIZE = 1000 };

static struct tally t_alpha = { .name = "site_alpha" };
static struct tally t_beta = { .name = "site_beta" };

NOINLINE static void site_alpha(long n)
{
    for (long i = 0; i < n; i++) {
        void *p = gt_check(malloc(ALPHA_SIZE), "malloc");
        gt_alloc(&t_alpha, ALPHA_SIZE);
        free(p);
        gt_free(&t_alpha, ALPHA_SIZE);
    }
}

NOINLINE static void site_beta(long n)
{
    for (long i = 0; i < n; i++) {
        gt_check(malloc(BETA_SIZE), "malloc");
        gt_alloc(&t_beta, BETA_SIZE);
    }
}

/* One line of standard input without its newline, at most `cap - 1` bytes; 0 at its end. */
static int read_line(char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            gt_die("reading standard input");
        if (r == 0)
            return len > 0;
        if (c == '\n')
            break;
        if (len + 1 < cap)
            buf[len++] = c;
    }
    buf[len] = '\0';
    return 1;
}

int main(void)
{
    gt_printf(1, "malloc_at %p\n", dlsym(RTLD_DEFAULT, "malloc"));
    gt_write_all(1, "ready\n", 6);
    char line[128];
    for (long done = 1; read_line(line, sizeof line); done++) {
        static const struct tally *const all[] = { &t_alpha, &t_beta };
        if (line[0] == 'a' && line[1] == ' ')
            site_alpha(atol(line + 2));
        else if (line[0] == 'b' && line[1] == ' ')
            site_beta(atol(line + 2));
        else if (strcmp(line, "truth") == 0)
            gt_write(all, GT_COUNT(all), 0);
        else
            gt_die("an unknown command");
        gt_printf(1, "done %ld\n", done);
    }
    return 0;
}
