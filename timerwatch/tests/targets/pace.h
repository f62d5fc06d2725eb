/* Absolute-deadline pacing for the test targets: `rate` iterations a second, and time spent in
 * the work does not stretch the period. A macro, not a function, so the pacing sleep stays in
 * the caller's frame (the tests and the README name the sleep's callsite `main`). */
#ifndef PACE_H
#define PACE_H

#include <errno.h>
#include <time.h>

/* Sleep until `next` (a struct timespec, CLOCK_MONOTONIC) advanced by 1/rate s. */
#define PACE_NEXT(next, rate)                                                                  \
	do {                                                                                   \
		(next).tv_nsec += 1000000000L / (rate);                                        \
		while ((next).tv_nsec >= 1000000000L) {                                        \
			(next).tv_nsec -= 1000000000L;                                         \
			(next).tv_sec++;                                                       \
		}                                                                              \
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &(next), NULL) == EINTR) \
			;                                                                      \
	} while (0)

#endif
