/*
 * Takes the CPU away from a woken task in bursts: `cpu_hog PID` moves PID and itself onto
 * one CPU and, as a SCHED_FIFO task, spins 20 ms out of every 40. A woken task at normal priority
 * must wait for the burst to end, whatever the fair scheduler's wake-up preemption would grant
 * it (EEVDF lets a task that sleeps most of the time preempt plain spinning hogs at once, which
 * made the contention test flaky).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sched_param rt = { .sched_priority = 1 };
	struct timespec rest = { .tv_sec = 0, .tv_nsec = 20000000 };
	cpu_set_t one;

	if (argc != 2) {
		fprintf(stderr, "usage: cpu_hog PID\n");
		return 2;
	}
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_setaffinity(atoi(argv[1]), sizeof(one), &one) ||
	    sched_setaffinity(0, sizeof(one), &one) ||
	    sched_setscheduler(0, SCHED_FIFO, &rt)) {
		perror("cpu_hog");
		return 1;
	}
	for (;;) {
		long long until = now_ns() + 20000000;

		while (now_ns() < until)
			;
		nanosleep(&rest, NULL);
	}
}
