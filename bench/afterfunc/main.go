// Go worst case for the runtime-timer probes: time.AfterFunc + Stop as fast as possible for a
// fixed wall time. Every iteration creates a new runtime timer (one arm, which is a creation,
// then one stop), the pattern a leak detector must follow timer by timer.
//
// usage: afterfunc SECONDS [CPU [leak]]   (CPU: pin every thread to it; -1 or absent: no pinning)
// leak: instead of the loop, keep one AfterFunc(time.Hour) every 10 ms (the leak the census must
// still name while costing the loop nothing).
// Same protocol as the C targets: prints "ready PID", waits for a line (or EOF) on stdin, runs,
// prints "iterations N seconds S rate R cpu_share C" (cpu_share: the process's CPU time / wall
// time of the loop), then waits for another line or EOF so a tracer can report on it.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// A named, non-inlined callsite: every tracer that takes a user stack sees the same frames.
//
//go:noinline
func armAndStop() {
	t := time.AfterFunc(time.Hour, fire)
	t.Stop()
}

func fire() {}

var kept []*time.Timer

// The leak variant's callsite: the census names AfterFunc timers by their function value, and
// a closure (leakOne.func1) by its enclosing function.
//
//go:noinline
func leakOne(n int) {
	kept = append(kept, time.AfterFunc(time.Hour, func() { _ = n }))
}

// pin puts every thread of the process on one CPU. Threads the runtime starts later inherit
// the mask from the thread that creates them.
func pin(cpu int) error {
	var mask [16]uint64
	mask[cpu/64] |= 1 << (cpu % 64)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid),
			unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask[0])))
		if errno != 0 {
			return errno
		}
	}
	return nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: afterfunc SECONDS [CPU [leak]]")
		os.Exit(2)
	}
	seconds, err := strconv.ParseFloat(os.Args[1], 64)
	if err != nil || seconds <= 0 {
		fmt.Fprintln(os.Stderr, "afterfunc: bad SECONDS")
		os.Exit(2)
	}
	cpu := -1
	if len(os.Args) > 2 {
		if cpu, err = strconv.Atoi(os.Args[2]); err != nil || cpu >= 1024 {
			fmt.Fprintln(os.Stderr, "afterfunc: bad CPU")
			os.Exit(2)
		}
	}
	leak := len(os.Args) > 3 && os.Args[3] == "leak"
	// One P: the runtime's own work (GC, sysmon's rare wake-ups) shares the loop's CPU, so the
	// process CPU time below is the loop's cost, probes included.
	runtime.GOMAXPROCS(1)
	if cpu >= 0 {
		if err := pin(cpu); err != nil {
			fmt.Fprintln(os.Stderr, "afterfunc: sched_setaffinity:", err)
		}
	}
	in := bufio.NewReader(os.Stdin)
	fmt.Printf("ready %d\n", os.Getpid())
	in.ReadString('\n')

	start := time.Now()
	cpu0 := cpuSeconds()
	end := start.Add(time.Duration(seconds * float64(time.Second)))
	n := 0
	for leak && time.Now().Before(end) {
		leakOne(n)
		n++
		time.Sleep(10 * time.Millisecond)
	}
	for !leak {
		// Reading the clock every 256 iterations keeps its cost out of the measurement.
		for k := 0; k < 256; k++ {
			armAndStop()
		}
		n += 256
		if !time.Now().Before(end) {
			break
		}
	}
	wall := time.Since(start).Seconds()
	share := (cpuSeconds() - cpu0) / wall
	fmt.Printf("iterations %d seconds %.6f rate %.1f cpu_share %.3f\n", n, wall, float64(n)/wall, share)
	in.ReadString('\n')
}
