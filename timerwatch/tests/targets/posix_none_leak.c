/* Leaks never-armed SIGEV_NONE POSIX timers at an exact rate: they hold kernel memory without
 * ever reaching an hrtimer start, so only timer_create shows them. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "pace.h"

/* The test asserts this name as the callsite's caller: noclone keeps GCC from renaming it,
 * and using the result keeps timer_create from becoming a tail jump. */
__attribute__((noinline, noclone)) void leak_sigev_none_timer(void)
{
	struct sigevent sev = { .sigev_notify = SIGEV_NONE };
	timer_t id;

	if (timer_create(CLOCK_MONOTONIC, &sev, &id) != 0)
		abort();
}

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 50;
	struct timespec next;
	struct rlimit r;

	if (rate <= 0)
		return 2;
	/* Kernels may charge every POSIX timer's preallocated signal to RLIMIT_SIGPENDING. */
	if (getrlimit(RLIMIT_SIGPENDING, &r) == 0) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_SIGPENDING, &r);
	}

	/* Absolute deadlines: time spent in the work does not stretch the period. */
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		leak_sigev_none_timer();
		PACE_NEXT(next, rate);
	}
}
