/* A TCP server on loopback that accepts and closes connections, and its client, 20 times a
 * second: the server closes first, so each connection leaves one TIME_WAIT socket, whose 60 s
 * timer (tw_timer_handler) the kernel arms in this process's context. The population fills to
 * 20/s × 60 s = 1200 and stays there. Runs for at most 10 minutes.
 *
 * The client binds its own ports, in turn from a block outside the ephemeral range: a SYN from a
 * port whose server-side TIME_WAIT is still live kills that socket early (RFC 1122's reuse), and
 * the kernel's ephemeral choice can come back to recent ports in bursts (seen after a test that
 * made thousands of connections), which shortened lives and pulled the plateau below 1200. A
 * port comes back here after CLIENT_PORTS / RATE = 200 s, long after its TIME_WAIT ended. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pace.h"

#define RATE 20
#define CLIENT_PORT_BASE 20000
#define CLIENT_PORTS 4000

static int listener;

static void *serve(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept(listener, NULL, NULL);

		if (c >= 0)
			close(c);
	}
	return NULL;
}

__attribute__((noinline, noclone)) static void connect_once(const struct sockaddr_in *addr)
{
	static unsigned next_port;
	char buf[1];
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in local = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int tries = 0;

	if (s < 0)
		abort();
	/* A port someone else holds is skipped; a whole block held is a broken host. */
	do {
		local.sin_port = htons(CLIENT_PORT_BASE + next_port);
		next_port = (next_port + 1) % CLIENT_PORTS;
		if (++tries > CLIENT_PORTS)
			abort();
	} while (bind(s, (const struct sockaddr *)&local, sizeof(local)) != 0);
	if (connect(s, (const struct sockaddr *)addr, sizeof(*addr)) != 0)
		abort();
	/* Wait for the server's close, so it is the server's side that goes to TIME_WAIT. */
	while (read(s, buf, sizeof(buf)) > 0)
		;
	close(s);
}

int main(void)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	struct timespec next;
	pthread_t server;

	listener = socket(AF_INET, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    listen(listener, 128) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
		abort();
	if (pthread_create(&server, NULL, serve, NULL) != 0)
		abort();
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (int i = 0; i < RATE * 600; i++) {
		connect_once(&addr);
		PACE_NEXT(next, RATE);
	}
	return 0;
}
