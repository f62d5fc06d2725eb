/* A 1 ms periodic timer created and armed by one named function and consumed by another: a
 * timerfd read by main (the kernel re-arms it inside each read), or a POSIX interval timer or
 * setitimer timer whose signal main takes with sigwaitinfo (the kernel re-arms them at each
 * dequeue). Waits for a byte on stdin first, so a tracer can attach before the timer exists.
 * Usage: consumed_elsewhere timerfd|posix|itimer */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
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

__attribute__((noinline, noclone)) void start_alarm_clock(void)
{
	struct itimerval every_ms_tv = {
		.it_interval = { .tv_sec = 0, .tv_usec = 1000 },
		.it_value = { .tv_sec = 0, .tv_usec = 1000 },
	};

	if (setitimer(ITIMER_REAL, &every_ms_tv, NULL) != 0)
		abort();
}

/* Takes `signo` forever, after `start` armed the timer that sends it. */
static void take_signals(int signo, void (*start)(void))
{
	sigset_t set;
	siginfo_t info;

	sigemptyset(&set);
	sigaddset(&set, signo);
	sigprocmask(SIG_BLOCK, &set, NULL);
	start();
	for (;;)
		if (sigwaitinfo(&set, &info) < 0)
			abort();
}

static void start_signal_clock_void(void)
{
	start_signal_clock();
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
	if (!strcmp(argv[1], "posix"))
		take_signals(SIGRTMIN, start_signal_clock_void);
	if (!strcmp(argv[1], "itimer"))
		take_signals(SIGALRM, start_alarm_clock);
	return 2;
}
