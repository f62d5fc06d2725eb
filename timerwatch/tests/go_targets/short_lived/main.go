// Lives a moment with a few timers pending, as a batch job or a health-check probe does, then
// exits: the Go half of the churn test's process storm.
package main

import (
	"os"
	"time"
)

var pending []*time.Timer

func main() {
	for i := 0; i < 10; i++ {
		pending = append(pending, time.AfterFunc(time.Hour, func() {}))
	}
	tick := time.NewTicker(20 * time.Millisecond)
	end := time.After(300 * time.Millisecond)
	for {
		select {
		case <-tick.C:
		case <-end:
			os.Exit(0)
		}
	}
}
