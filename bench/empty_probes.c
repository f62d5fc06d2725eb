/* A floor below bpftrace's: the emptiest possible BPF program, `r0 = 0; exit`, attached to each
 * tracepoint given (CATEGORY:NAME), the way aya attaches timerwatch's (perf_event_open on the
 * tracepoint, PERF_EVENT_IOC_SET_BPF). bpftrace's `{}` compiles to `r0 = 1; exit`, and a
 * non-zero return also hands the event to perf; timerwatch's programs return 0.
 * `uprobe:PID:OFFSET:PATH` puts one on a uprobe instead (file offset OFFSET of PATH, process PID
 * only), as aya attaches timerwatch's Go probes: the floor at exactly their instructions.
 * `raw:NAME` attaches it as a raw tracepoint (BPF_RAW_TRACEPOINT_OPEN), which is how the kernel
 * runs timerwatch's BTF-enabled (tp_btf) programs too: no perf trace record is filled, so this is
 * the floor of that attach path.
 *
 * usage: empty_probes [TRACEFS] CATEGORY:NAME|raw:NAME|uprobe:PID:OFFSET:PATH...
 * Prints "up" once every program is attached, then waits for SIGINT/SIGTERM or EOF on stdin;
 * closing the descriptors on exit detaches and unloads everything. */
#include <errno.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* Named after its tracepoint (cut to 15 bytes, as the kernel keeps them) so per-program
 * statistics line up with other tools' programs on the same tracepoint. */
static int load_empty(const char *name, enum bpf_prog_type type)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = type;
	attr.insns = (unsigned long)insns;
	attr.insn_cnt = 2;
	attr.license = (unsigned long)"GPL";
	strncpy(attr.prog_name, name, sizeof(attr.prog_name) - 1);
	return syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
}

static int enable(int fd, int prog, const char *spec)
{
	if (fd < 0 || ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog) || ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)) {
		fprintf(stderr, "empty_probes: attaching to %s: %s\n", spec, strerror(errno));
		return -1;
	}
	return fd;
}

/* Load an empty program named `name` and attach it to the perf event `pe` describes. */
static int attach_empty(const char *spec, const char *name, enum bpf_prog_type type,
			struct perf_event_attr *pe, int pid, int cpu)
{
	int prog = load_empty(name, type);

	if (prog < 0) {
		fprintf(stderr, "empty_probes: BPF_PROG_LOAD: %s\n", strerror(errno));
		return -1;
	}
	pe->size = sizeof(*pe);
	pe->sample_period = 1;
	pe->wakeup_events = 1;
	return enable(syscall(SYS_perf_event_open, pe, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC), prog,
		      spec);
}

/* The uprobe PMU, as aya uses it: config1 the path, config2 the file offset. */
static int attach_uprobe(const char *spec)
{
	struct perf_event_attr pe;
	char *end;
	const char *path;
	long pid;
	unsigned long long offset;
	int type;
	FILE *f = fopen("/sys/bus/event_source/devices/uprobe/type", "r");

	if (!f || fscanf(f, "%d", &type) != 1) {
		fprintf(stderr, "empty_probes: no uprobe PMU\n");
		return -1;
	}
	fclose(f);
	pid = strtol(spec + strlen("uprobe:"), &end, 10);
	if (*end != ':')
		goto bad;
	offset = strtoull(end + 1, &end, 0);
	if (*end != ':' || end[1] != '/')
		goto bad;
	path = end + 1;
	memset(&pe, 0, sizeof(pe));
	pe.type = type;
	pe.config1 = (unsigned long)path;
	pe.config2 = offset;
	return attach_empty(spec, "uprobe_empty", BPF_PROG_TYPE_KPROBE, &pe, (int)pid, -1);
bad:
	fprintf(stderr, "empty_probes: bad uprobe spec %s (uprobe:PID:OFFSET:/PATH)\n", spec);
	return -1;
}

static int attach_raw(const char *spec)
{
	const char *name = spec + strlen("raw:");
	int prog = load_empty(name, BPF_PROG_TYPE_RAW_TRACEPOINT);
	union bpf_attr attr;
	int fd;

	if (prog < 0) {
		fprintf(stderr, "empty_probes: BPF_PROG_LOAD: %s\n", strerror(errno));
		return -1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.raw_tracepoint.name = (unsigned long)name;
	attr.raw_tracepoint.prog_fd = prog;
	fd = syscall(SYS_bpf, BPF_RAW_TRACEPOINT_OPEN, &attr, sizeof(attr));
	if (fd < 0)
		fprintf(stderr, "empty_probes: attaching to %s: %s\n", spec, strerror(errno));
	return fd;
}

static int attach(const char *tracefs, const char *spec)
{
	char path[512], name[256];
	const char *colon = strchr(spec, ':');
	struct perf_event_attr pe;
	FILE *f;
	int id;

	if (strncmp(spec, "uprobe:", 7) == 0)
		return attach_uprobe(spec);
	if (strncmp(spec, "raw:", 4) == 0)
		return attach_raw(spec);
	if (!colon || (size_t)(colon - spec) >= sizeof(name))
		return -1;
	memcpy(name, spec, colon - spec);
	name[colon - spec] = 0;
	snprintf(path, sizeof(path), "%s/events/%s/%s/id", tracefs, name, colon + 1);
	f = fopen(path, "r");
	if (!f || fscanf(f, "%d", &id) != 1) {
		fprintf(stderr, "empty_probes: no tracepoint %s (%s)\n", spec, path);
		return -1;
	}
	fclose(f);
	memset(&pe, 0, sizeof(pe));
	pe.type = PERF_TYPE_TRACEPOINT;
	pe.config = id;
	return attach_empty(spec, colon + 1, BPF_PROG_TYPE_TRACEPOINT, &pe, -1, 0);
}

int main(int argc, char **argv)
{
	const char *tracefs = "/sys/kernel/tracing";
	struct sigaction sa = { .sa_handler = on_signal };
	int first = 1;

	if (argc > 1 && argv[1][0] == '/')
		tracefs = argv[first++];
	if (first >= argc) {
		fprintf(stderr, "usage: empty_probes [TRACEFS] CATEGORY:NAME|raw:NAME|uprobe:PID:OFFSET:PATH...\n");
		return 2;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (int i = first; i < argc; i++)
		if (attach(tracefs, argv[i]) < 0)
			return 1;
	printf("up\n");
	fflush(stdout);
	/* A bounded poll, so a signal that lands before it cannot be missed for long. */
	while (!stop) {
		struct pollfd p = { .fd = 0, .events = POLLIN };
		char buf[64];

		if (poll(&p, 1, 100) > 0 && read(0, buf, sizeof(buf)) <= 0)
			break;
	}
	return 0;
}
