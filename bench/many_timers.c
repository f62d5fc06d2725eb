/* Daemon memory per live timer: COUNT timerfds armed for one hour (live for the whole
 * measurement, never firing), created after the tracer has attached so that each is tracked.
 *
 * usage: many_timers COUNT
 * One process may hold only RLIMIT_NOFILE's hard limit of descriptors, and raising that needs
 * CAP_SYS_RESOURCE, which root in a container often lacks; so the timers are spread over as
 * many processes (all named many_timers: trace them with --comm) as that limit requires.
 * Prints "ready PID NPROC", then reads commands on stdin:
 *   "warm N": re-arm one timerfd N times, then close it, and print "warmed": passes records
 *             through the tracer's ring buffer so its pages are resident before the baseline;
 *   "go":     create and arm the timers, print "armed COUNT", and hold them until the next line
 *             or EOF.
 * Both go at a bounded rate (CREATE_RATE timers, WARM_RATE re-arms per second; one process at
 * a time), which a tracer's ring buffer is meant to absorb: this measures memory, not loss. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 256
/* Timers created, and re-arms, per second. */
#define CREATE_RATE 100000L
/* Re-arms of a known timer send small records: ten times the rate fills the ring no faster. */
#define WARM_RATE 1000000L

static struct timespec pace_start;

/* Sleeps until operation i is due on an absolute schedule (checked every 100 operations), so a
 * late wake-up on a busy machine is made up for instead of adding up. */
static void pace(long i, long rate)
{
	struct timespec due = pace_start;
	long long ns;

	if (i % 100 != 99)
		return;
	ns = (long long)(i + 1) * 1000000000LL / rate;
	due.tv_sec += ns / 1000000000LL;
	due.tv_nsec += ns % 1000000000LL;
	if (due.tv_nsec >= 1000000000L) {
		due.tv_nsec -= 1000000000L;
		due.tv_sec++;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
		;
}

__attribute__((noinline, noclone)) int arm_long_timer(int fd)
{
	struct itimerspec its = { .it_value = { .tv_sec = 3600 } };

	return timerfd_settime(fd, 0, &its, NULL);
}

static int create_timers(long n)
{
	clock_gettime(CLOCK_MONOTONIC, &pace_start);
	for (long i = 0; i < n; i++) {
		int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

		if (fd < 0 || arm_long_timer(fd) != 0) {
			perror("timerfd");
			return 1;
		}
		pace(i, CREATE_RATE);
	}
	return 0;
}

static int warm(long n)
{
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

	if (fd < 0)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &pace_start);
	for (long i = 0; i < n; i++) {
		if (arm_long_timer(fd) != 0)
			return 1;
		pace(i, WARM_RATE);
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 100000;
	struct rlimit r;
	long per_proc, nproc;
	pid_t kids[MAX_PROCS];
	int go[2], done[2];
	char line[64], b = 0;

	if (count <= 0 || getrlimit(RLIMIT_NOFILE, &r) != 0)
		return 2;
	/* Tries for all of them in one process first (works where the hard limit may be raised). */
	if (r.rlim_max < (rlim_t)count + 64) {
		struct rlimit want = { .rlim_cur = count + 64, .rlim_max = count + 64 };

		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			r = want;
	}
	r.rlim_cur = r.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
		perror("setrlimit(RLIMIT_NOFILE)");
		return 1;
	}
	per_proc = (long)r.rlim_cur - 64;
	nproc = (count + per_proc - 1) / per_proc;
	if (per_proc <= 0 || nproc > MAX_PROCS) {
		fprintf(stderr, "RLIMIT_NOFILE %ld is too low for %ld timers\n", (long)r.rlim_cur,
			count);
		return 1;
	}
	if (pipe(go) || pipe(done))
		return 1;
	for (long k = 1; k < nproc; k++) {
		long share = k == nproc - 1 ? count - per_proc * (nproc - 1) : per_proc;

		kids[k] = fork();
		if (kids[k] < 0)
			return 1;
		if (kids[k] == 0) {
			/* A helper must not outlive the process the bench controls. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (read(go[0], &b, 1) != 1)
				_exit(1);
			b = create_timers(share) ? 'E' : 'K';
			if (write(done[1], &b, 1) != 1)
				_exit(1);
			pause();
			_exit(0);
		}
	}
	printf("ready %d %ld\n", (int)getpid(), nproc);
	fflush(stdout);
	for (;;) {
		if (!fgets(line, sizeof(line), stdin))
			goto out;
		if (strncmp(line, "warm ", 5) != 0)
			break;
		if (warm(atol(line + 5)))
			return 1;
		printf("warmed\n");
		fflush(stdout);
	}
	if (create_timers(nproc > 1 ? per_proc : count))
		return 1;
	/* One helper at a time, so that the pace holds for all of them together. */
	for (long k = 1; k < nproc; k++) {
		if (write(go[1], "g", 1) != 1 || read(done[0], &b, 1) != 1 || b != 'K') {
			fprintf(stderr, "a helper failed to create its timers\n");
			return 1;
		}
	}
	printf("armed %ld\n", count);
	fflush(stdout);
	/* Hold the timers until told (they are closed, so disarmed, at exit). */
	if (!fgets(line, sizeof(line), stdin))
		clearerr(stdin);
out:
	for (long k = 1; k < nproc; k++)
		kill(kids[k], SIGKILL);
	while (wait(NULL) > 0)
		;
	return 0;
}
