/* The growth-verdict corpus: one program, many live-count shapes, chosen by argv[1].
 * The test runs it under a different name per shape (a symlink), so each shape is its own comm.
 *
 * Leaks (expected verdict: growing within 20 s):
 *   leak_timerfd RATE   timerfds armed for 1 h, never closed
 *   leak_posix RATE     POSIX timers armed for 1 h, never deleted
 *   leak_burst N SECS   N timerfds armed for 1 h every SECS seconds
 * Controls (expected: never growing):
 *   pool                64 timerfds re-armed round-robin 2000 times a second
 *   sawtooth            a wave of 50/s timerfds all expiring together every 6 s
 *   periodic            a 1 ms periodic timerfd read in a loop
 *   short_lived         timerfds armed for 3 s at 50/s: a bounded population of 150
 *   bursty              500 timerfds armed for 5 s every 15 s
 *   forky               20 children a second, each arming 5 timers for 1 h and exiting
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct timespec next_tick;

static void pace_start(void)
{
	clock_gettime(CLOCK_MONOTONIC, &next_tick);
}

/* Absolute deadlines keep the rate exact whatever the loop body costs. */
static void pace(long period_ns)
{
	next_tick.tv_nsec += period_ns;
	while (next_tick.tv_nsec >= 1000000000L) {
		next_tick.tv_nsec -= 1000000000L;
		next_tick.tv_sec++;
	}
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next_tick, NULL);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline, noclone)) int arm_timerfd(long secs, long nsecs, int absolute)
{
	struct itimerspec its = { .it_value = { .tv_sec = secs, .tv_nsec = nsecs } };
	int fd = timerfd_create(CLOCK_MONOTONIC, 0);

	if (fd < 0 || timerfd_settime(fd, absolute ? TFD_TIMER_ABSTIME : 0, &its, NULL) != 0)
		abort();
	return fd;
}

__attribute__((noinline, noclone)) void arm_posix(void)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN };
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };
	timer_t t;

	if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0 || timer_settime(t, 0, &its, NULL) != 0)
		abort();
}

__attribute__((noinline, noclone)) void rearm(int fd)
{
	struct itimerspec its = { .it_value = { .tv_sec = 1 } };

	if (timerfd_settime(fd, 0, &its, NULL) != 0)
		abort();
}

/* Closes the fds of `ring` whose expiry (`until`) has passed. */
struct held {
	int fd;
	double until;
};

static void close_expired(struct held *ring, int n)
{
	double t = now_s();

	for (int i = 0; i < n; i++)
		if (ring[i].fd >= 0 && ring[i].until <= t) {
			close(ring[i].fd);
			ring[i].fd = -1;
		}
}

static int add_held(struct held *ring, int n, int fd, double until)
{
	for (int i = 0; i < n; i++)
		if (ring[i].fd < 0) {
			ring[i].fd = fd;
			ring[i].until = until;
			return 1;
		}
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	long a = argc > 2 ? atol(argv[2]) : 0, b = argc > 3 ? atol(argv[3]) : 0;
	struct rlimit big = { 1 << 20, 1 << 20 };
	static struct held ring[4096];

	setrlimit(RLIMIT_NOFILE, &big);
	setrlimit(RLIMIT_SIGPENDING, &big);
	signal(SIGRTMIN, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	for (int i = 0; i < 4096; i++)
		ring[i].fd = -1;
	pace_start();

	if (!strcmp(mode, "leak_timerfd"))
		for (;;) {
			arm_timerfd(3600, 0, 0);
			pace(1000000000L / a);
		}
	if (!strcmp(mode, "leak_posix"))
		for (;;) {
			arm_posix();
			pace(1000000000L / a);
		}
	if (!strcmp(mode, "leak_burst"))
		for (;;) {
			for (long i = 0; i < a; i++)
				arm_timerfd(3600, 0, 0);
			pace(b * 1000000000L);
		}
	if (!strcmp(mode, "pool")) {
		int fds[64];

		for (int i = 0; i < 64; i++)
			fds[i] = arm_timerfd(1, 0, 0);
		for (unsigned long i = 0;; i++) {
			rearm(fds[i % 64]);
			pace(500000);
		}
	}
	if (!strcmp(mode, "sawtooth"))
		for (;;) {
			/* 4 s of 50/s arms, all due at the wave's 5 s mark; the wave is 6 s long. */
			double start = now_s();
			struct timespec due;

			clock_gettime(CLOCK_MONOTONIC, &due);
			due.tv_sec += 5;
			for (int i = 0; i < 200; i++) {
				int fd = arm_timerfd(due.tv_sec, due.tv_nsec, 1);

				add_held(ring, 4096, fd, start + 5.5);
				pace(20000000L);
			}
			while (now_s() < start + 6.0) {
				close_expired(ring, 4096);
				pace(100000000L);
			}
			close_expired(ring, 4096);
		}
	if (!strcmp(mode, "periodic")) {
		struct itimerspec its = { .it_interval = { 0, 1000000 }, .it_value = { 0, 1000000 } };
		int fd = timerfd_create(CLOCK_MONOTONIC, 0);
		uint64_t n;

		if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) != 0)
			abort();
		for (;;)
			if (read(fd, &n, sizeof(n)) != sizeof(n))
				abort();
	}
	if (!strcmp(mode, "short_lived"))
		for (;;) {
			add_held(ring, 4096, arm_timerfd(3, 0, 0), now_s() + 3.5);
			close_expired(ring, 4096);
			pace(20000000L);
		}
	if (!strcmp(mode, "bursty"))
		for (;;) {
			double start = now_s();

			for (int i = 0; i < 500; i++)
				add_held(ring, 4096, arm_timerfd(5, 0, 0), start + 5.5);
			while (now_s() < start + 15.0) {
				close_expired(ring, 4096);
				pace(100000000L);
			}
		}
	if (!strcmp(mode, "forky"))
		for (;;) {
			pid_t child = fork();

			if (child == 0) {
				for (int i = 0; i < 5; i++)
					arm_timerfd(3600, 0, 0);
				usleep(500000);
				_exit(0);
			}
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			pace(50000000L);
		}
	fprintf(stderr, "unknown mode %s\n", mode);
	return 2;
}
