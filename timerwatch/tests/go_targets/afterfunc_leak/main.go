// Leaks one-hour AfterFunc timers at 50/s: the runtime keeps each in its timer heap until it
// fires, so the live count grows at the rate on every Go version.
package main

import "time"

var leaked []*time.Timer

//go:noinline
func leakAfterFunc() *time.Timer {
	return time.AfterFunc(time.Hour, func() {})
}

// pace runs f rate times a second against absolute deadlines, so the count over a window is
// exact whatever f costs.
func pace(rate int, f func()) {
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := 1; ; i++ {
		f()
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
	}
}

func main() {
	pace(50, func() { leaked = append(leaked, leakAfterFunc()) })
}
