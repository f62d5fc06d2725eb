/* Floods the tracer from many threads: each creates, arms and closes timerfds as fast as it
 * can, so every iteration is a new timer (a first arm with its stack, then a cancel) that
 * re-arm counting cannot fold. Runs until killed. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static void *storm(void *arg)
{
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };

	(void)arg;
	for (;;) {
		int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

		if (fd < 0)
			abort();
		timerfd_settime(fd, 0, &its, NULL);
		close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 8;
	pthread_t t;

	for (int i = 1; i < threads; i++)
		if (pthread_create(&t, NULL, storm, NULL) != 0)
			return 1;
	storm(NULL);
	return 0;
}
