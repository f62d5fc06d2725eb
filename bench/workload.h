/* The protocol every bench workload speaks with `cargo xtask bench` (xtask/src/bench/cost.rs):
 * "ready PID", wait for a line (or EOF) on stdin, run, then one line
 * "iterations N seconds S rate R cpu_share C", then wait for another line or EOF. */
#ifndef WORKLOAD_H
#define WORKLOAD_H

#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now_s(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Pin the calling process to `cpu` (-1: leave it alone). */
static void pin_to_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		perror("sched_setaffinity");
}

/* "ready PID", then wait for the bench's "go" (a tracer attaches in between). */
static void ready_and_wait(void)
{
	char line[64];

	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		clearerr(stdin);
}

/* The result line; cpu_share below ~0.9 means something else took the CPU. Then stay until
 * told, so that a tracer can report on a process that still exists. */
static void report_and_wait(unsigned long n, double seconds, double cpu_seconds)
{
	char line[64];

	printf("iterations %lu seconds %.6f rate %.1f cpu_share %.3f\n", n, seconds, n / seconds,
	       cpu_seconds / seconds);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		clearerr(stdin);
}

#endif
