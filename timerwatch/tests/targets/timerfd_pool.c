/* A healthy pool: 64 timerfds created up front, then re-armed round-robin (1 s expiry) at an
 * exact rate, so each is re-armed long before it could fire and the live count stays 64. */
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>

#include "pace.h"

#define POOL 64

/* Created here but first armed in rearm_pool_timer, which is the callsite the test expects. */
__attribute__((noinline, noclone)) void create_pool(int *fds)
{
	for (int i = 0; i < POOL; i++) {
		fds[i] = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
		if (fds[i] < 0)
			abort();
	}
}

/* The test asserts this name as the callsite's caller: noclone keeps GCC from renaming it,
 * and using the result keeps timerfd_settime from becoming a tail jump. */
__attribute__((noinline, noclone)) void rearm_pool_timer(int fd)
{
	struct itimerspec its = { .it_value = { .tv_sec = 1 } };

	if (timerfd_settime(fd, 0, &its, NULL) != 0)
		abort();
}

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 2000;
	int fds[POOL];
	struct timespec next;
	struct rlimit r;

	if (rate <= 0)
		return 2;
	/* 64 fds fit the default soft limit; raised anyway so a bigger POOL cannot abort here. */
	if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
	create_pool(fds);

	/* Absolute deadlines: time spent in the work does not stretch the period. */
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (unsigned long n = 0;; n++) {
		rearm_pool_timer(fds[n % POOL]);
		PACE_NEXT(next, rate);
	}
}
