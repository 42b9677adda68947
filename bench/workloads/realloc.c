/* realloc ITERATIONS [OUT]: realloc chains, the pattern of a growing buffer: malloc(16), then
 * realloc doubling it 8 times (16 B -> 4 KiB), then free; ITERATIONS/10 chains of 10 allocator
 * calls (events) each. */
#include "bench.h"

void *volatile sink;

int main(int argc, char **argv)
{
	long chains = bench_iterations(argc, argv) / 10;
	long long start = bench_now_ns();
	for (long i = 0; i < chains; i++) {
		size_t size = 16;
		char *p = malloc(size);
		for (int k = 0; k < 8; k++) {
			size *= 2;
			p = realloc(p, size);
			p[size - 1] = 1;
		}
		sink = p;
		free(p);
	}
	bench_report(argc, argv, bench_now_ns() - start, 10LL * chains);
	return 0;
}
