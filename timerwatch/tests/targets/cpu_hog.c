/* Spins forever at normal priority: keeps a CPU busy so woken tasks must wait for it. */
int main(void)
{
	volatile unsigned long n = 0;

	for (;;)
		n++;
}
