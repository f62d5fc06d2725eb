/* clock_nanosleep for 10 ms in a loop: ~100 timer wake-ups per second. */
#include <stdlib.h>
#include <time.h>

__attribute__((noinline, noclone)) void sleep_10ms(void)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = 10000000 };

	if (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) != 0)
		abort();
}

int main(void)
{
	for (;;)
		sleep_10ms();
}
