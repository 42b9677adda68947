/* stacks DEPTH [IDLE]: one malloc(16)+free from each of 2^(DEPTH+1) distinct stacks (a binary
 * tree of calls through two functions with two call sites each), for the bench's measurement of
 * the drain and symbolization of many distinct stacks; then, if IDLE is given, it says so
 * ("stacks N") and sleeps IDLE seconds, for the cost of draining that many sites that do not
 * change. It prints the time its calls took. Built with frame pointers and without sibling-call optimization, so every path is its
 * own stack. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noipa))

void *volatile sink;
volatile int after;

NOINLINE static void leaf(void)
{
	void *p = malloc(16);
	sink = p;
	free(p);
}

NOINLINE static void b(int d);

NOINLINE static void a(int d)
{
	if (d == 0) {
		leaf();
		return;
	}
	a(d - 1);
	b(d - 1);
	after = d;
}

NOINLINE static void b(int d)
{
	if (d == 0) {
		leaf();
		return;
	}
	a(d - 1);
	b(d - 1);
	after = d;
}

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	int depth = argc > 1 ? atoi(argv[1]) : 16;
	long start = now_ns();
	a(depth);
	b(depth);
	/* The time of the calls: traced, less untraced, over the stacks, is what a call on a new
	 * stack costs (each allocation's stack is new). */
	printf("stacks %ld in %ld ns\n", 2L << depth, now_ns() - start);
	if (argc > 2) {
		fflush(stdout);
		sleep(atoi(argv[2]));
	}
	return 0;
}
