/* Sleeps in a loop with relative nanosleep (the sleep is the pacing, ~100/s by default). On
 * SIGTERM it prints how many sleeps it made and over how long, so the test can compare the
 * traced count with the loop's real rate (overhead and timer slack keep it under nominal). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

/* The test asserts this name as the callsite's caller: noclone keeps GCC from renaming it,
 * and checking the result keeps nanosleep from becoming a tail jump. */
__attribute__((noinline, noclone)) void sleep_tick(long ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L };

	if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
		abort();
}

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 100;
	/* No SA_RESTART: SIGTERM must cut the current sleep short. */
	struct sigaction sa = { .sa_handler = on_term };
	struct timespec start, end;
	unsigned long n = 0;

	if (rate <= 0)
		return 2;
	sigaction(SIGTERM, &sa, NULL);
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (!stop) {
		sleep_tick(1000000000L / rate);
		n++;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("iterations %lu seconds %.6f\n", n,
	       (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9);
	return 0;
}
