// time.After(time.Hour) in a select that another case always wins, 50 times a second. Go ≤1.22
// (and 1.23–1.26 with asynctimerchan=1) keeps every such timer in the heap for its hour; with
// 1.23+ synchronous channel timers it is heaped only while the select waits.
package main

import "time"

//go:noinline
func pollWithTimeout(work <-chan int) int {
	select {
	case v := <-work:
		return v
	case <-time.After(time.Hour):
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
			pollWithTimeout(work)
		}
	}()
	pace(50, func() { work <- 1 })
}
