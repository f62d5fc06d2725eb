/* Kernel-timer worst case: re-arm timerfds (1 s expiry, so they never fire) as fast as possible
 * for a fixed wall time. With one fd every call re-arms an armed timer: on 6.18 the kernel emits
 * hrtimer_setup, hrtimer_cancel and hrtimer_start per iteration (the bench counts them).
 *
 * usage: rearm SECONDS [NFDS] [CPU]   (CPU: pin to it; -1 or absent: no pinning)
 * Prints "ready PID", then waits for a line (or EOF) on stdin so a tracer can attach first and
 * the timerfds are created, and first armed, while it is attached. Ends with one line:
 * "iterations N seconds S rate R cpu_share C" (cpu_share: CPU time / wall time of the loop,
 * below ~0.9 means something else took the CPU), and keeps its timers until the next line or EOF
 * so that a tracer can report on a process that still exists. */
#include "workload.h"

#include <stdlib.h>
#include <sys/timerfd.h>

/* A named, non-inlined callsite: tracers that take a user stack see the same frames for
 * every re-arm. */
__attribute__((noinline, noclone)) int rearm_timer(int fd)
{
	struct itimerspec its = { .it_value = { .tv_sec = 1 } };

	return timerfd_settime(fd, 0, &its, NULL);
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	int nfds = argc > 2 ? atoi(argv[2]) : 1;
	int cpu = argc > 3 ? atoi(argv[3]) : -1;
	int *fds;
	unsigned long n = 0;
	double start, end, cpu0, cpu1;

	if (seconds <= 0 || nfds <= 0)
		return 2;
	fds = calloc(nfds, sizeof(*fds));
	if (!fds)
		return 1;
	pin_to_cpu(cpu);
	ready_and_wait();

	for (int i = 0; i < nfds; i++) {
		fds[i] = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
		if (fds[i] < 0) {
			perror("timerfd_create");
			return 1;
		}
	}
	start = now_s(CLOCK_MONOTONIC);
	cpu0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	end = start + seconds;
	for (;;) {
		/* Reading the clock every 256 calls keeps its cost out of the measurement. */
		for (int k = 0; k < 256; k++, n++) {
			if (rearm_timer(fds[n % nfds]) != 0) {
				perror("timerfd_settime");
				return 1;
			}
		}
		if (now_s(CLOCK_MONOTONIC) >= end)
			break;
	}
	end = now_s(CLOCK_MONOTONIC);
	cpu1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	report_and_wait(n, end - start, cpu1 - cpu0);
	return 0;
}
