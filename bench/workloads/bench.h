/* Shared by the bench workloads: time the loop with CLOCK_MONOTONIC and write
 * "elapsed_ns N\nevents M\n" to the file named by argv[2] (or stdout), so the bench measures
 * the workload's own loop, not the tracer's start-up and detach. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long bench_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void bench_report(int argc, char **argv, long long elapsed_ns, long long events)
{
	FILE *out = stdout;
	if (argc > 2 && !(out = fopen(argv[2], "w"))) {
		perror(argv[2]);
		exit(2);
	}
	fprintf(out, "elapsed_ns %lld\nevents %lld\n", elapsed_ns, events);
	if (out != stdout)
		fclose(out);
}

static long bench_iterations(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	if (n <= 0) {
		fprintf(stderr, "usage: %s ITERATIONS [OUT]\n", argv[0]);
		exit(2);
	}
	/* BENCH_WAIT: a tracer that attaches to a running pid (BCC memleak) is given the pid
	 * on "ready" and lets the loop start with one byte on stdin. */
	if (getenv("BENCH_WAIT")) {
		char c;
		printf("ready\n");
		fflush(stdout);
		if (read(0, &c, 1) != 1)
			exit(2);
	}
	return n;
}
