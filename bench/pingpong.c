/* Context-switch-heavy workload for the cost of sched_switch/sched_waking probes: two processes
 * pinned to one CPU bounce a byte over two pipes, so every round trip is two wake-ups and two
 * context switches and no timer is armed.
 *
 * usage: pingpong SECONDS [CPU]   (CPU -1: no pinning)
 * Prints "ready PID" (the parent), waits for a line or EOF on stdin, then prints
 * "iterations N seconds S rate R cpu_share C" (round trips; cpu_share: CPU time of both
 * processes / wall time, at most 1 when pinned), and exits at the next line or EOF. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	int cpu = argc > 2 ? atoi(argv[2]) : 0;
	int p2c[2], c2p[2];
	char b = 0, line[64];
	unsigned long n = 0;
	double start, end, cpu0, cpu1;
	pid_t child;
	struct rusage ru;

	if (seconds <= 0)
		return 2;
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) != 0)
			perror("sched_setaffinity");
	}
	if (pipe(p2c) || pipe(c2p))
		return 1;
	child = fork();
	if (child < 0)
		return 1;
	if (child == 0) {
		close(p2c[1]);
		close(c2p[0]);
		while (read(p2c[0], &b, 1) == 1)
			if (write(c2p[1], &b, 1) != 1)
				break;
		_exit(0);
	}
	close(p2c[0]);
	close(c2p[1]);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		clearerr(stdin);

	start = now_s(CLOCK_MONOTONIC);
	cpu0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	end = start + seconds;
	for (;;) {
		for (int k = 0; k < 64; k++, n++) {
			if (write(p2c[1], &b, 1) != 1 || read(c2p[0], &b, 1) != 1) {
				perror("pipe");
				kill(child, SIGKILL);
				return 1;
			}
		}
		if (now_s(CLOCK_MONOTONIC) >= end)
			break;
	}
	end = now_s(CLOCK_MONOTONIC);
	cpu1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	close(p2c[1]);
	waitpid(child, NULL, 0);
	/* The child blocked in read() until "go", so all its CPU time is inside the window. */
	if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
		cpu1 += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
			ru.ru_stime.tv_usec / 1e6;
	printf("iterations %lu seconds %.6f rate %.1f cpu_share %.3f\n", n, end - start,
	       n / (end - start), (cpu1 - cpu0) / (end - start));
	fflush(stdout);
	/* Stay until told, like rearm, so a tracer reports on a live process. */
	if (!fgets(line, sizeof(line), stdin))
		return 0;
	return 0;
}
