/* One service of the node-agent bench's load: the timer traffic of a busy daemon, steady and
 * spread over many callsites, paced on an absolute schedule.
 *
 * usage: node_load RATE
 * Prints "ready PID", then runs until stdin closes (or the bench dies). RATE times a second it
 * takes the next of CALLSITES code paths, each with its own timerfd and its own caller (so its
 * own callsite in a tracer's report): even ones re-arm a timeout of one hour that never fires
 * (a cancel and a start, like a connection's idle timeout pushed back by traffic), odd ones arm
 * one of 1 ms that fires (a start and an expiry, like a retry timer). The pacing sleep is one
 * more timer that starts and expires. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "stop_on_stdin.h"

#define CALLSITES 16

static int fds[CALLSITES];

static void arm(int i)
{
	struct itimerspec its = { 0 };

	if (i % 2 == 0)
		its.it_value.tv_sec = 3600;
	else
		its.it_value.tv_nsec = 1000000;
	if (timerfd_settime(fds[i], 0, &its, NULL) != 0)
		perror("timerfd_settime");
}

/* One function per callsite, kept out of line so that each is its own caller frame. */
#define SITE(n) \
	static __attribute__((noinline)) void site_##n(void) { arm(n); __asm__ volatile(""); }
SITE(0) SITE(1) SITE(2) SITE(3) SITE(4) SITE(5) SITE(6) SITE(7)
SITE(8) SITE(9) SITE(10) SITE(11) SITE(12) SITE(13) SITE(14) SITE(15)

static void (*const sites[CALLSITES])(void) = {
	site_0, site_1, site_2, site_3, site_4, site_5, site_6, site_7,
	site_8, site_9, site_10, site_11, site_12, site_13, site_14, site_15,
};

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 0;
	struct timespec due;
	long i;

	if (rate <= 0 || rate > 100000) {
		fprintf(stderr, "usage: node_load RATE (1-100000 operations per second)\n");
		return 2;
	}
	for (i = 0; i < CALLSITES; i++) {
		fds[i] = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (fds[i] < 0) {
			perror("timerfd_create");
			return 1;
		}
	}
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	clock_gettime(CLOCK_MONOTONIC, &due);
	for (i = 0;; i++) {
		sites[i % CALLSITES]();
		if (i % 64 == 0 && told_to_stop())
			return 0;
		due.tv_nsec += 1000000000L / rate;
		while (due.tv_nsec >= 1000000000L) {
			due.tv_nsec -= 1000000000L;
			due.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
			;
	}
}
