/* How the bench's long-running load programs learn to stop: the bench closes their stdin (or
 * writes a line), and dies with them otherwise. Shared by node_load.c and node_client.c. */
#ifndef STOP_ON_STDIN_H
#define STOP_ON_STDIN_H

#include <poll.h>

/* True once stdin is closed or has a line: the bench wants us gone. */
static inline int told_to_stop(void)
{
	struct pollfd p = { .fd = 0, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

#endif
