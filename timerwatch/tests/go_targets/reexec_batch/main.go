// Arms 100 one-hour AfterFunc timers, then re-executes itself 100 ms later, forever: each exec
// throws the old runtime's timers away, so the process never holds more than 100. A census walk
// that straddles an exec must be dropped, never mix two runtimes' heaps. With an argument N it
// exits after N generations (a stream of short-lived Go processes).
package main

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

var kept []*time.Timer

//go:noinline
func armBatch() {
	for i := 0; i < 100; i++ {
		kept = append(kept, time.AfterFunc(time.Hour, func() {}))
	}
}

func main() {
	armBatch()
	time.Sleep(100 * time.Millisecond)
	args := os.Args
	if len(args) > 1 {
		left, _ := strconv.Atoi(args[1])
		if left <= 1 {
			return
		}
		args = []string{args[0], strconv.Itoa(left - 1)}
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, args, os.Environ())
}
