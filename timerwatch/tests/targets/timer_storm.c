/* Floods the tracer: creates, arms and closes timerfds as fast as it can, so every iteration
 * is a new timer (a first arm with its stack, then a cancel) that re-arm counting cannot fold. */
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };

	for (;;) {
		int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

		if (fd < 0)
			return 1;
		timerfd_settime(fd, 0, &its, NULL);
		close(fd);
	}
}
