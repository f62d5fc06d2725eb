/* The clients of the node-agent bench's servers: one keep-alive connection each to an HTTP
 * server (nginx), redis and memcached, one request a round, RATE rounds a second, so that the
 * servers' event loops and their timeouts run as they do under traffic.
 *
 * usage: node_client RATE HTTP_PORT REDIS_PORT MEMCACHED_PORT
 * Prints "ready PID" once connected, then runs until stdin closes; a server that closes its
 * connection or answers nonsense ends it with a message and exit status 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "stop_on_stdin.h"

static int connect_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		fprintf(stderr, "node_client: cannot connect to port %d: %s\n", port, strerror(errno));
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Sends `req` and reads until the answer ends with `end`. */
static void ask(int fd, const char *req, const char *end, const char *who)
{
	char buf[4096];
	size_t got = 0, n_end = strlen(end);

	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		fprintf(stderr, "node_client: %s: write failed: %s\n", who, strerror(errno));
		exit(1);
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);

		if (n <= 0) {
			fprintf(stderr, "node_client: %s closed the connection\n", who);
			exit(1);
		}
		got += n;
		if (got >= n_end && memcmp(buf + got - n_end, end, n_end) == 0)
			return;
		if (got == sizeof(buf) - 1) {
			fprintf(stderr, "node_client: %s answered more than expected\n", who);
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	long rate = argc > 4 ? atol(argv[1]) : 0;
	struct timespec due;
	int http, redis, mc;
	long i;

	if (rate <= 0 || rate > 100000) {
		fprintf(stderr,
			"usage: node_client RATE HTTP_PORT REDIS_PORT MEMCACHED_PORT (RATE 1-100000)\n");
		return 2;
	}
	http = connect_to(atoi(argv[2]));
	redis = connect_to(atoi(argv[3]));
	mc = connect_to(atoi(argv[4]));
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	clock_gettime(CLOCK_MONOTONIC, &due);
	for (i = 0;; i++) {
		ask(http, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n", "ok\n", "the HTTP server");
		ask(redis, "PING\r\n", "+PONG\r\n", "redis");
		ask(mc, "get bench\r\n", "END\r\n", "memcached");
		if (i % 16 == 0 && told_to_stop())
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
