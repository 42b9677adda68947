/*
 * A process whose main thread has exited while another thread lives (tests/it/errors.rs): main
 * starts a thread and calls pthread_exit. The thread waits until the main thread is a zombie
 * (/proc/self/task/<pid>/stat says Z), then says `ready` and waits for one byte on standard
 * input (gt_ready_and_wait), allocates N blocks of SIZE bytes from thread_alloc, frees half of
 * them, writes its ground truth (gt.h), says `done` and exits 0 (exit() from the last thread).
 */
#include <pthread.h>
#include <time.h>

#include "gt.h"

enum { N = 300, SIZE = 88 };

static struct tally t_thread = { .name = "thread_alloc" };
static void *blocks[N];
static pid_t main_pid;

NOINLINE static void thread_alloc(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = gt_check(malloc(SIZE), "malloc");
        gt_alloc(&t_thread, SIZE);
    }
    for (int i = 0; i < N / 2; i++) {
        free(blocks[i]);
        gt_free(&t_thread, SIZE);
    }
}

/* Whether the main thread has exited (its task is a zombie). Reads into a stack buffer: no
 * allocation. */
static int main_exited(void)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)main_pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    return close_paren != NULL && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

static void *thread_main(void *arg)
{
    (void)arg;
    while (!main_exited()) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    gt_ready_and_wait();
    thread_alloc();
    static const struct tally *const all[] = { &t_thread };
    gt_write(all, GT_COUNT(all), 0);
    gt_write_all(1, "done\n", 5);
    exit(0);
}

int main(void)
{
    main_pid = getpid();
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0)
        gt_die("pthread_create");
    pthread_exit(NULL);
}
