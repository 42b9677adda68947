/*
 * Processes that share the traced process's address space (tests/it/threads_signals.rs):
 * a clone(CLONE_VM | SIGCHLD) child (a process of its own, not a thread) and a vfork child,
 * each allocating before it exits. alloctrace's uprobe_multi links run in the traced thread
 * group only: neither child may be counted, under its pid or the parent's, unless followed.
 *
 * With the argument `wait` it says `ready` and waits for one byte on standard input first
 * (for --pid). Then parent_alloc makes PARENT_N blocks, the clone child CLONE_N from
 * clone_child_alloc (its ground truth to $CHILD_TRUTH), the vfork child VFORK_N from
 * vfork_child_alloc (to $VFORK_TRUTH), and the parent PARENT_N more; the parent writes its own
 * ground truth last (gt.h). The parent waits for each child before going on: the children
 * share its thread pointer, so its malloc's per-thread cache too, and must not run malloc at
 * the same time as it. Each child stays alive for a moment after allocating, so alloctrace
 * reads its mappings (a process of its own, to symbolize) before it is gone.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "gt.h"

enum { PARENT_N = 300, CLONE_N = 400, VFORK_N = 150 };

static struct tally t_parent = { .name = "parent_alloc" };
static struct tally t_clone = { .name = "clone_child_alloc" };
static struct tally t_vfork = { .name = "vfork_child_alloc" };
/* What the parent's ground truth says of the children's functions: nothing is the parent's. */
static struct tally t_clone_none = { .name = "clone_child_alloc" };
static struct tally t_vfork_none = { .name = "vfork_child_alloc" };
static void *parent_blocks[2 * PARENT_N];
static char child_stack[256 * 1024] __attribute__((aligned(16)));

NOINLINE static void parent_alloc(int from)
{
    for (int i = from; i < from + PARENT_N; i++) {
        parent_blocks[i] = gt_check(malloc(48), "malloc");
        gt_alloc(&t_parent, 48);
    }
}

/* Allocates n blocks of `size` into `t` and frees half of them: a macro, so that each
 * child's own function calls malloc (the sites' innermost frame). */
#define CHILD_WORK(t, n, size)                                                                    \
    for (int i = 0; i < (n); i++) {                                                               \
        void *p = gt_check(malloc(size), "malloc");                                               \
        gt_alloc(t, size);                                                                        \
        if (i % 2 == 0) {                                                                         \
            free(p);                                                                              \
            gt_free(t, size);                                                                     \
        }                                                                                         \
    }

NOINLINE static void clone_child_alloc(void) { CHILD_WORK(&t_clone, CLONE_N, 200); }
NOINLINE static void vfork_child_alloc(void) { CHILD_WORK(&t_vfork, VFORK_N, 3000); }

static void linger(void)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 400 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

/* Writes one child's ground truth to the file named by $var. */
static void child_truth(const char *var, const struct tally *t)
{
    const char *path = getenv(var);
    if (path == NULL)
        gt_die(var);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        gt_die("opening a child's ground truth");
    gt_printf(fd, "pid %ld\nunknown_frees 0\n", (long)getpid());
    gt_write_site(fd, t);
    close(fd);
}

static int clone_child(void *arg)
{
    (void)arg;
    clone_child_alloc();
    child_truth("CHILD_TRUTH", &t_clone);
    linger();
    return 0;
}

static void reap(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, __WALL) != pid)
        gt_die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        gt_die("a child failed");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    parent_alloc(0);
    pid_t c = clone(clone_child, child_stack + sizeof child_stack, CLONE_VM | SIGCHLD, NULL);
    if (c < 0)
        gt_die("clone");
    reap(c);
    pid_t v = vfork();
    if (v < 0)
        gt_die("vfork");
    if (v == 0) {
        vfork_child_alloc();
        child_truth("VFORK_TRUTH", &t_vfork);
        linger();
        _exit(0);
    }
    reap(v);
    parent_alloc(PARENT_N);
    static const struct tally *const all[] = { &t_parent, &t_clone_none, &t_vfork_none };
    gt_write(all, GT_COUNT(all), 0);
    gt_write_all(1, "done\n", 5);
    return 0;
}
