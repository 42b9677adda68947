/* paced RATE SECONDS: RATE malloc(64)+free pairs per second, spread over 1 ms slots, for
 * SECONDS; prints `ready` first. The bench attaches alloctrace with --pid and measures
 * alloctrace's own CPU time and memory while this runs. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void *volatile sink;

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 200000;
	long seconds = argc > 2 ? atol(argv[2]) : 12;
	long per_slot = rate / 1000;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	printf("ready\n");
	fflush(stdout);
	for (long slot = 0; slot < seconds * 1000; slot++) {
		for (long i = 0; i < per_slot; i++) {
			void *p = malloc(64);
			sink = p;
			free(p);
		}
		next.tv_nsec += 1000000;
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	return 0;
}
