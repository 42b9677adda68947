/*
 * Ground truth for alloctrace's integration tests, shared by every workload in this directory.
 *
 * A workload counts what it allocates, per function, the way alloctrace must count it:
 *   - every successful malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc
 *     and pvalloc call is ONE allocation of the bytes REQUESTED (calloc: nmemb * size), charged
 *     to the function that called the allocator;
 *   - every free of a non-NULL pointer is one free, and so is the old block of every
 *     realloc(p != NULL, ...) that succeeds or frees (realloc(p, 0)); a free is charged to the
 *     function that ALLOCATED the block, with the bytes that function requested;
 *   - a failed realloc (NULL returned for a size > 0) and free(NULL) count nothing.
 *
 * It writes the result to the file named by the environment variable GROUND_TRUTH (to standard
 * error when it is unset: the terminal is shared with alloctrace, so tests always set it).
 * Format, one record per line, fields separated by single spaces (parsed by tests/it/support/truth.rs):
 *
 *     pid <pid>
 *     unknown_frees <n>            frees of blocks allocated before tracing could see them
 *                                  (absent when the workload cannot know: see threads.c)
 *     site <function> allocs=<n> bytes=<n> frees=<n> freed_bytes=<n> size_hist=<b>:<n>,...
 *
 * `size_hist` lists the non-empty buckets of the log2 histogram of requested sizes
 * (bucket = number of significant bits of the size: 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ...;
 * alloctrace_common::log2_bucket), `-` when there are none. A site with all counters zero states
 * that alloctrace must attribute no allocation to that function (it frees or fails only).
 *
 * Nothing here allocates: records are formatted with snprintf into a stack buffer and written
 * with write(2), so the process's own totals are exactly the sum of its sites (unless threads or
 * the loader allocate, which the tests that use them account for).
 */
#ifndef ALLOCTRACE_GT_H
#define ALLOCTRACE_GT_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Never inlined, cloned (foo.constprop.0) or otherwise changed in a way that renames or merges
 * the function: each allocating function must show up under its own name on its stacks. */
#define NOINLINE __attribute__((noinline, noipa))

/* Helpers a workload may not use all of. */
#define GT_API static __attribute__((unused))

#define GT_BUCKETS 64

struct tally {
    const char *name;
    unsigned long allocs, bytes, frees, freed_bytes;
    unsigned long hist[GT_BUCKETS];
};

/* Every block's address is published here, so the compiler cannot drop a malloc/free pair. */
static void *volatile gt_sink;

GT_API unsigned gt_bucket(size_t n)
{
    unsigned bits = n == 0 ? 0 : 64 - (unsigned)__builtin_clzl((unsigned long)n);
    return bits >= GT_BUCKETS ? GT_BUCKETS - 1 : bits;
}

GT_API void gt_alloc(struct tally *t, size_t n)
{
    t->allocs++;
    t->bytes += n;
    t->hist[gt_bucket(n)]++;
}

GT_API void gt_free(struct tally *t, size_t n)
{
    t->frees++;
    t->freed_bytes += n;
}

/* Adds `src` into `dst` (for per-thread tallies of one function). */
GT_API void gt_add(struct tally *dst, const struct tally *src)
{
    dst->allocs += src->allocs;
    dst->bytes += src->bytes;
    dst->frees += src->frees;
    dst->freed_bytes += src->freed_bytes;
    for (int i = 0; i < GT_BUCKETS; i++)
        dst->hist[i] += src->hist[i];
}

GT_API void gt_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(98);
        buf += w;
        len -= (size_t)w;
    }
}

GT_API void gt_die(const char *what)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "workload: %s failed (errno %d)\n", what, errno);
    gt_write_all(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    _exit(99);
}

/* `p`, published to gt_sink; dies when the allocation failed. */
GT_API void *gt_check(void *p, const char *what)
{
    if (p == NULL)
        gt_die(what);
    gt_sink = p;
    return p;
}

__attribute__((format(printf, 2, 3))) GT_API void gt_printf(int fd, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        gt_die("formatting the ground truth");
    gt_write_all(fd, buf, (size_t)n);
}

/* Opens the ground-truth file (GROUND_TRUTH), truncated; standard error when unset. */
GT_API int gt_open(void)
{
    const char *path = getenv("GROUND_TRUTH");
    if (path == NULL || *path == '\0')
        return 2;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        gt_die("opening $GROUND_TRUTH");
    return fd;
}

GT_API void gt_close(int fd)
{
    if (fd != 2 && close(fd) != 0)
        gt_die("closing $GROUND_TRUTH");
}

GT_API void gt_write_site(int fd, const struct tally *t)
{
    char hist[1024];
    size_t len = 0;
    hist[0] = '\0';
    for (int i = 0; i < GT_BUCKETS; i++) {
        if (t->hist[i] == 0)
            continue;
        int n = snprintf(hist + len, sizeof hist - len, "%s%d:%lu", len ? "," : "", i, t->hist[i]);
        if (n < 0 || (size_t)n >= sizeof hist - len)
            gt_die("formatting a histogram");
        len += (size_t)n;
    }
    gt_printf(fd, "site %s allocs=%lu bytes=%lu frees=%lu freed_bytes=%lu size_hist=%s\n", t->name,
              t->allocs, t->bytes, t->frees, t->freed_bytes, len ? hist : "-");
}

/* Writes the whole ground truth: the pid, the unknown frees (omitted when negative: not known,
 * as when threads free glibc-internal blocks), then every site. */
GT_API void gt_write(const struct tally *const *sites, size_t n, long unknown_frees)
{
    int fd = gt_open();
    gt_printf(fd, "pid %ld\n", (long)getpid());
    if (unknown_frees >= 0)
        gt_printf(fd, "unknown_frees %ld\n", unknown_frees);
    for (size_t i = 0; i < n; i++)
        gt_write_site(fd, sites[i]);
    gt_close(fd);
}

#define GT_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Blocks until the test sends one byte on standard input. Exits 97 if standard input ends
 * first. */
GT_API void gt_wait_byte(void)
{
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r == 1)
            return;
        if (r == 0)
            _exit(97);
        if (errno != EINTR)
            gt_die("reading standard input");
    }
}

/* Says `ready` on standard output, then blocks until the test sends one byte on standard
 * input (it attached its tracer). Exits 97 if standard input ends first. */
GT_API void gt_ready_and_wait(void)
{
    gt_write_all(1, "ready\n", 6);
    gt_wait_byte();
}

/* The go of a workload a test may also have alloctrace launch (its standard input is then
 * not the test's): the file named by $GO_FILE appearing, looked for every millisecond; without
 * GO_FILE, one byte on standard input. */
GT_API void gt_wait_for_go(void)
{
    const char *file = getenv("GO_FILE");
    if (file == NULL) {
        gt_wait_byte();
        return;
    }
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 1000 * 1000 };
    while (access(file, F_OK) != 0)
        nanosleep(&ts, NULL);
}

/* The environment for a program this one execs to write its own ground truth: this one's,
 * with GROUND_TRUTH set to $AFTER_TRUTH (unset when that is). Built without allocating
 * (setenv would malloc), in static storage. */
GT_API char **gt_env_after_truth(void)
{
    extern char **environ;
    static char *envp[256];
    static char truth[1024];
    const char *after = getenv("AFTER_TRUTH");
    size_t n = 0;
    for (char **e = environ; *e != NULL && n < GT_COUNT(envp) - 2; e++)
        if (strncmp(*e, "GROUND_TRUTH=", 13) != 0)
            envp[n++] = *e;
    if (after != NULL) {
        if ((size_t)snprintf(truth, sizeof truth, "GROUND_TRUTH=%s", after) >= sizeof truth)
            gt_die("AFTER_TRUTH too long");
        envp[n++] = truth;
    }
    envp[n] = NULL;
    return envp;
}

#endif
