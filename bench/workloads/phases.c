/* phases ITERATIONS [OUT]: the allocation-profiling guide's three phases in one run:
 *   small-frequent   ITERATIONS/4 x malloc(64)+free
 *   large-infrequent ITERATIONS/2000 x malloc(1 MiB), touched, free
 *   burst            ITERATIONS/4000 bursts of 1000 malloc(256) held, then all freed
 * Every allocator call is an event (about ITERATIONS in all). */
#include <string.h>

#include "bench.h"

void *volatile sink;

int main(int argc, char **argv)
{
	long n = bench_iterations(argc, argv);
	long long events = 0;
	long long start = bench_now_ns();
	for (long i = 0; i < n / 4; i++) {
		void *p = malloc(64);
		sink = p;
		free(p);
		events += 2;
	}
	for (long i = 0; i < n / 2000; i++) {
		char *p = malloc(1 << 20);
		memset(p, 1, 4096);
		sink = p;
		free(p);
		events += 2;
	}
	static void *held[1000];
	for (long b = 0; b < n / 4000; b++) {
		for (int i = 0; i < 1000; i++)
			held[i] = malloc(256);
		sink = held[999];
		for (int i = 0; i < 1000; i++)
			free(held[i]);
		events += 2000;
	}
	bench_report(argc, argv, bench_now_ns() - start, events);
	return 0;
}
