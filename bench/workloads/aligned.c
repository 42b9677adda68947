/* aligned ITERATIONS [OUT]: posix_memalign(64, 64) then free, ITERATIONS times. glibc's
 * posix_memalign starts with a single-stepped `cmpb`, free with a single-stepped `test`: the
 * loop placement helps twice. Two allocator calls (events) per iteration. */
#include "bench.h"

void *volatile sink;

int main(int argc, char **argv)
{
	long n = bench_iterations(argc, argv);
	long long start = bench_now_ns();
	for (long i = 0; i < n; i++) {
		void *p;
		if (posix_memalign(&p, 64, 64) != 0)
			return 1;
		sink = p;
		free(p);
	}
	bench_report(argc, argv, bench_now_ns() - start, 2LL * n);
	return 0;
}
