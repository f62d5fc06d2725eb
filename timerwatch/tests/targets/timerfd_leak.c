/* Leaks armed timerfds at an exact rate: timerfd_create + timerfd_settime(1 h), never closed. */
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>

#include "pace.h"

/* The test asserts this name as the callsite's caller: noclone keeps GCC from renaming it,
 * and using the results keeps both calls from becoming tail jumps. */
__attribute__((noinline, noclone)) void leak_timerfd(void)
{
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

	if (fd < 0)
		abort();
	if (timerfd_settime(fd, 0, &its, NULL) != 0)
		abort();
}

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 50;
	struct timespec next;
	struct rlimit r;

	if (rate <= 0)
		return 2;
	/* At 50 fds/s the default soft limit of 1024 would abort us after 20 s. */
	if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}

	/* Absolute deadlines: time spent in the work does not stretch the period. */
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		leak_timerfd();
		PACE_NEXT(next, rate);
	}
}
