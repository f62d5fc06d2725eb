/* Leaks armed POSIX timers at an exact rate: timer_create + timer_settime(1 h), never deleted. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "pace.h"

/* Each signal-notifying timer preallocates a queued signal charged to RLIMIT_SIGPENDING. */
static void raise_sigpending_limit(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_SIGPENDING, &r) == 0) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_SIGPENDING, &r);
	}
}

/* The test asserts this name as the callsite's caller: noclone keeps GCC from renaming it
 * (.constprop/.isra), and using the results keeps both calls from becoming tail jumps. */
__attribute__((noinline, noclone)) void leak_posix_timer(void)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN };
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };
	timer_t id;

	if (timer_create(CLOCK_MONOTONIC, &sev, &id) != 0)
		abort();
	if (timer_settime(id, 0, &its, NULL) != 0)
		abort();
}

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 50;
	struct timespec next;
	sigset_t rt;

	if (rate <= 0)
		return 2;
	/* The timers never fire within a test, but an early expiry must not kill us. */
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	sigprocmask(SIG_BLOCK, &rt, NULL);
	raise_sigpending_limit();

	/* Absolute deadlines: time spent in the work does not stretch the period. */
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		leak_posix_timer();
		PACE_NEXT(next, rate);
	}
}
