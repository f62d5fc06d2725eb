// The control: 50 one-hour AfterFunc timers a second, but only the newest few are kept; older
// ones are stopped, and the kept ones are reset. The live count stays at most `keep`.
package main

import "time"

const keep = 4

var ring [keep]*time.Timer

//go:noinline
func boundedTimers(i int) {
	slot := i % keep
	if old := ring[slot]; old != nil {
		old.Stop()
	}
	ring[slot] = time.AfterFunc(time.Hour, func() {})
	ring[(slot+1)%keep].Reset(time.Hour)
}

func pace(rate int, f func(int)) {
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := 1; ; i++ {
		f(i)
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
	}
}

func main() {
	for i := range ring {
		ring[i] = time.AfterFunc(time.Hour, func() {})
	}
	pace(50, boundedTimers)
}
