// Leaks one-hour tickers at 20/s, never stopped, each with a goroutine blocked on its channel:
// a waited-on channel timer stays in the runtime's heap on every Go version.
package main

import "time"

//go:noinline
func leakTicker() *time.Ticker {
	t := time.NewTicker(time.Hour)
	go func() {
		for range t.C {
		}
	}()
	return t
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
	pace(20, func() { leakTicker() })
}
