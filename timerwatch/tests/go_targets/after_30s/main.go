// time.After(30 * time.Second) in a select that another case always wins, 100 times a second.
// Go ≤1.22 keeps every such timer in the heap until it fires: the population fills up to
// 100/s × 30 s = 3000 and stays there (a plateau, not a leak).
package main

import "time"

//go:noinline
func waitOrGiveUp(work <-chan int) int {
	select {
	case v := <-work:
		return v
	case <-time.After(30 * time.Second):
		return -1
	}
}

func pace(rate int, f func()) {
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := 1; ; i++ {
		f()
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
	}
}

func main() {
	work := make(chan int)
	go func() {
		for {
			waitOrGiveUp(work)
		}
	}()
	pace(100, func() { work <- 1 })
}
