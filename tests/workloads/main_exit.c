/*
 * The main thread ends first (tests/it/threads_signals.rs): main starts THREADS threads and
 * calls pthread_exit; once it is gone (a zombie: /proc/self/task/PID/stat says Z), the
 * threads wait for the test's go (see gt_wait_for_go), then each makes PER_THREAD mallocs from
 * thread_alloc and frees half of them; none ends before all have. The last thread to finish
 * writes the ground truth (gt.h) and says `done`; the process exits when it returns.
 *
 * With the argument `wait` it says `ready` and waits for one byte on standard input first
 * (for --pid). The go: with $GO_FILE set, that file existing; else one more byte on standard
 * input. (The test gives it at once: every allocation comes after main's end, and alloctrace's
 * links keep counting in the thread group, so the counts must be exact.)
 *
 * Nothing here allocates but thread_alloc (and pthread's own thread set-up): /proc is read
 * with open/read, the ground truth written with write(2).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "gt.h"

enum { THREADS = 3, PER_THREAD = 2000 };

static const size_t sizes[THREADS] = { 24, 300, 4000 };
static struct tally tallies[THREADS];
static struct tally t_thread = { .name = "thread_alloc" };
static atomic_int finished;
static pthread_t threads[THREADS];
static pid_t main_pid;
static pthread_barrier_t go_barrier, done_barrier;

static void nap(void)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 1000 * 1000 };
    nanosleep(&ts, NULL);
}

/* Whether the main thread is a zombie (it called pthread_exit). */
static int main_gone(void)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)main_pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

NOINLINE static void thread_alloc(struct tally *t, size_t size)
{
    for (int i = 0; i < PER_THREAD; i++) {
        void *p = gt_check(malloc(size), "malloc");
        gt_alloc(t, size);
        if (i % 2 == 0) {
            free(p);
            gt_free(t, size);
        }
    }
}

static void *thread_main(void *arg)
{
    long i = (long)arg;
    if (i == 0) {
        while (!main_gone())
            nap();
        gt_write_all(1, "main gone\n", 10);
        gt_wait_for_go();
    }
    int r = pthread_barrier_wait(&go_barrier);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD)
        gt_die("pthread_barrier_wait");
    thread_alloc(&tallies[i], sizes[i]);
    /* No thread ends before all have allocated: the counts are exact whatever ends when. */
    r = pthread_barrier_wait(&done_barrier);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD)
        gt_die("pthread_barrier_wait");
    if (atomic_fetch_add(&finished, 1) == THREADS - 1) {
        for (int k = 0; k < THREADS; k++)
            gt_add(&t_thread, &tallies[k]);
        static const struct tally *const all[] = { &t_thread };
        /* Thread set-up and exit allocate and free inside pthread: unknown frees not known. */
        gt_write(all, GT_COUNT(all), -1);
        gt_write_all(1, "done\n", 5);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    main_pid = getpid();
    if (pthread_barrier_init(&go_barrier, NULL, THREADS) != 0 ||
        pthread_barrier_init(&done_barrier, NULL, THREADS) != 0)
        gt_die("pthread_barrier_init");
    for (long i = 0; i < THREADS; i++) {
        tallies[i].name = "thread_alloc";
        int r = pthread_create(&threads[i], NULL, thread_main, (void *)i);
        if (r != 0) {
            errno = r;
            gt_die("pthread_create");
        }
    }
    pthread_exit(NULL);
}
