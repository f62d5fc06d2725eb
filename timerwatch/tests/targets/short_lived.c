/* Leaks armed POSIX timers like posix_leak for one second, then exits. It waits for a byte (or
 * EOF) on stdin first, so the test can let the tracer attach to its PID before the second
 * starts instead of racing the tracer's start-up. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "pace.h"

/* Using the results keeps both calls from becoming tail jumps, like in posix_leak. */
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
	char go;

	if (rate <= 0)
		return 2;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	sigprocmask(SIG_BLOCK, &rt, NULL);
	if (read(STDIN_FILENO, &go, 1) < 0)
		return 3;

	/* Absolute deadlines: exactly `rate` timers over one second. */
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (long i = 0; i < rate; i++) {
		leak_posix_timer();
		PACE_NEXT(next, rate);
	}
	return 0;
}
