/* churn ITERATIONS [OUT]: the tightest allocator loop, malloc(32) then free, ITERATIONS times.
 * Two allocator calls (events) per iteration; every one of them hits a probe. */
#include "bench.h"

/* The block escapes through this volatile, so the compiler cannot drop the pair. */
void *volatile sink;

int main(int argc, char **argv)
{
	long n = bench_iterations(argc, argv);
	long long start = bench_now_ns();
	for (long i = 0; i < n; i++) {
		void *p = malloc(32);
		sink = p;
		free(p);
	}
	bench_report(argc, argv, bench_now_ns() - start, 2LL * n);
	return 0;
}
