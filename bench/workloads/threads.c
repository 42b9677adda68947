/* threads ITERATIONS [OUT]: four threads each doing ITERATIONS/4 malloc(48)+free pairs at once
 * (multi-threaded churn: per-thread call state and shared maps under contention). The time is
 * the wall time from the first thread's start to the last one's end. */
#include <pthread.h>

#include "bench.h"

enum { THREADS = 4 };

static long per_thread;

static void *churn(void *arg)
{
	void *volatile sink;
	(void)arg;
	for (long i = 0; i < per_thread; i++) {
		void *p = malloc(48);
		sink = p;
		free(p);
	}
	(void)sink;
	return NULL;
}

int main(int argc, char **argv)
{
	long n = bench_iterations(argc, argv);
	per_thread = n / THREADS;
	pthread_t t[THREADS];
	long long start = bench_now_ns();
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, churn, NULL) != 0) {
			perror("pthread_create");
			return 2;
		}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	bench_report(argc, argv, bench_now_ns() - start, 2LL * per_thread * THREADS);
	return 0;
}
