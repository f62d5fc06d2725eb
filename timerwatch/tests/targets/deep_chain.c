/* Leaks armed timerfds through a three-deep call chain, main -> chain_top -> chain_mid ->
 * chain_leaf -> timerfd_settime. Built -O2 without frame pointers by the unwind test: only the
 * binary's .eh_frame CFI can name the frames above chain_leaf. noipa keeps each function a real
 * out-of-line call under its own name; using each result keeps the calls from being tail jumps
 * (a tail jump leaves no frame to name). */
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>

#include "pace.h"

static volatile int sink;

__attribute__((noipa)) int chain_leaf(int depth)
{
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

	if (fd < 0)
		abort();
	if (timerfd_settime(fd, 0, &its, NULL) != 0)
		abort();
	return fd + depth;
}

__attribute__((noipa)) int chain_mid(int depth)
{
	int r = chain_leaf(depth + 1);

	sink = r;
	return r + 1;
}

__attribute__((noipa)) int chain_top(int depth)
{
	int r = chain_mid(depth + 1);

	sink = r;
	return r + 1;
}

int main(void)
{
	struct timespec next;

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		sink = chain_top(0);
		PACE_NEXT(next, 20);
	}
}
