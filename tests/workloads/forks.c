/*
 * A target that starts processes (tests/it/forks.rs). Usage:
 *   forks N DELAY_MS
 * It allocates from in_parent (100 blocks of 40 bytes, frees half), then forks N children and
 * waits for them. Child i sleeps DELAY_MS (the tracer attaches its probes meanwhile), allocates
 * 100 * (i + 1) blocks of 48 + i bytes from in_child (frees half), writes its own ground truth
 * to $GROUND_TRUTH.i and exits with _exit (nothing else of it allocates). The parent writes
 * its ground truth to $GROUND_TRUTH once every child has exited.
 *
 * With FORKS_FROM_THREAD=1 in the environment, all of that is done by a thread the program
 * starts first, after it said `ready` and was released (gt_ready_and_wait): a tracer attached
 * with --pid in between must see the forks of a thread that existed before it.
 */
#include <pthread.h>
#include <sys/wait.h>

#include "gt.h"

static struct tally t_parent = { .name = "in_parent" };
static struct tally t_child = { .name = "in_child" };
static void *blocks[1000];

NOINLINE static void in_parent(void)
{
    for (int i = 0; i < 100; i++) {
        blocks[i] = gt_check(malloc(40), "malloc");
        gt_alloc(&t_parent, 40);
    }
    for (int i = 0; i < 50; i++) {
        free(blocks[i]);
        gt_free(&t_parent, 40);
    }
}

NOINLINE static void in_child(int i)
{
    int n = 100 * (i + 1);
    size_t size = 48 + (size_t)i;
    for (int k = 0; k < n; k++) {
        blocks[k] = gt_check(malloc(size), "malloc");
        gt_alloc(&t_child, size);
    }
    for (int k = 0; k < n / 2; k++) {
        free(blocks[k]);
        gt_free(&t_child, size);
    }
}

static void child(int i, long delay_ms)
{
    usleep((useconds_t)(delay_ms * 1000));
    in_child(i);
    const char *base = getenv("GROUND_TRUTH");
    int fd = 2;
    if (base != NULL && *base != '\0') {
        char path[4096];
        snprintf(path, sizeof path, "%s.%d", base, i);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            gt_die("opening $GROUND_TRUTH.i");
    }
    gt_printf(fd, "pid %ld\nunknown_frees 0\n", (long)getpid());
    gt_write_site(fd, &t_child);
    gt_close(fd);
    _exit(0);
}

static int n_children;
static long delay;

static void run(void)
{
    int n = n_children;
    in_parent();
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            gt_die("fork");
        if (pid == 0)
            child(i, delay);
    }
    for (int i = 0; i < n; i++)
        if (wait(NULL) < 0)
            gt_die("wait");
    static const struct tally *const all[] = { &t_parent };
    gt_write(all, GT_COUNT(all), 0);
}

static void *from_thread(void *arg)
{
    (void)arg;
    gt_ready_and_wait();
    run();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        gt_die("usage: forks N DELAY_MS");
    n_children = atoi(argv[1]);
    delay = atol(argv[2]);
    const char *thread = getenv("FORKS_FROM_THREAD");
    if (thread == NULL || strcmp(thread, "1") != 0) {
        run();
        return 0;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, from_thread, NULL) != 0)
        gt_die("pthread_create");
    if (pthread_join(t, NULL) != 0)
        gt_die("pthread_join");
    return 0;
}
