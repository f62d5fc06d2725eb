/* A 1 ms periodic timerfd read in a loop: ~1000 timer wake-ups per second. The timer is armed
 * before tracing starts; each read re-arms it (timerfd_read forwards the hrtimer), so the
 * callsite the tracer sees is the read in wait_tick. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <unistd.h>

__attribute__((noinline, noclone)) int arm_periodic(long period_ns)
{
	struct itimerspec its = {
		.it_interval = { .tv_sec = 0, .tv_nsec = period_ns },
		.it_value = { .tv_sec = 0, .tv_nsec = period_ns },
	};
	int fd = timerfd_create(CLOCK_MONOTONIC, 0);

	if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) != 0)
		abort();
	return fd;
}

/* noclone keeps the name; using read's result keeps it from becoming a tail jump. */
__attribute__((noinline, noclone)) uint64_t wait_tick(int fd)
{
	uint64_t expirations;

	if (read(fd, &expirations, sizeof(expirations)) != sizeof(expirations))
		abort();
	return expirations;
}

int main(int argc, char **argv)
{
	long period_ns = argc > 1 ? atol(argv[1]) : 1000000;
	int fd = arm_periodic(period_ns);

	for (;;)
		wait_tick(fd);
}
