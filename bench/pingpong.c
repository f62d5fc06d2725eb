/* Context-switch-heavy workload for the cost of sched_switch/sched_waking probes: two processes
 * pinned to one CPU bounce a byte over two pipes, so every round trip is two wake-ups and two
 * context switches and no timer is armed.
 *
 * usage: pingpong SECONDS [CPU]   (CPU -1: no pinning)
 * Prints "ready PID" (the parent), waits for a line or EOF on stdin, then prints
 * "iterations N seconds S rate R cpu_share C" (round trips; cpu_share: CPU time of both
 * processes / wall time, at most 1 when pinned), and exits at the next line or EOF. */
#include "workload.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	int cpu = argc > 2 ? atoi(argv[2]) : 0;
	int p2c[2], c2p[2];
	char b = 0;
	unsigned long n = 0;
	double start, end, cpu0, cpu1;
	pid_t child;
	struct rusage ru;

	if (seconds <= 0)
		return 2;
	pin_to_cpu(cpu);
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
	ready_and_wait();

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
	report_and_wait(n, end - start, cpu1 - cpu0);
	return 0;
}
