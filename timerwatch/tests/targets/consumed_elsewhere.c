/* A 1 ms periodic timer created and armed by one named function and consumed by another: a
 * timerfd read by main (the kernel re-arms it inside each read) or a POSIX interval timer whose
 * signal main takes with sigwaitinfo (the kernel re-arms it at each dequeue). Waits for a byte
 * on stdin first, so a tracer can attach before the timer exists.
 * Usage: consumed_elsewhere timerfd|posix */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static const struct itimerspec every_ms = {
	.it_interval = { .tv_sec = 0, .tv_nsec = 1000000 },
	.it_value = { .tv_sec = 0, .tv_nsec = 1000000 },
};

__attribute__((noinline, noclone)) int start_poll_clock(void)
{
	int fd = timerfd_create(CLOCK_MONOTONIC, 0);

	if (fd < 0 || timerfd_settime(fd, 0, &every_ms, NULL) != 0)
		abort();
	return fd;
}

__attribute__((noinline, noclone)) timer_t start_signal_clock(void)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN };
	timer_t t;

	if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0 || timer_settime(t, 0, &every_ms, NULL) != 0)
		abort();
	return t;
}

int main(int argc, char **argv)
{
	char go;

	if (argc < 2 || read(0, &go, 1) != 1)
		return 2;
	if (!strcmp(argv[1], "timerfd")) {
		int fd = start_poll_clock();
		uint64_t n;

		for (;;)
			if (read(fd, &n, sizeof(n)) != sizeof(n))
				abort();
	}
	if (!strcmp(argv[1], "posix")) {
		sigset_t set;
		siginfo_t info;

		sigemptyset(&set);
		sigaddset(&set, SIGRTMIN);
		sigprocmask(SIG_BLOCK, &set, NULL);
		start_signal_clock();
		for (;;)
			if (sigwaitinfo(&set, &info) < 0)
				abort();
	}
	return 2;
}
