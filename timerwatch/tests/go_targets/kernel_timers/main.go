// Kernel timers from Go code: a TCP client that connects and closes (the kernel's connection
// timers, TIME_WAIT on the closing side) and a time.Sleep loop (the scheduler's timed waits).
package main

import (
	"net"
	"time"
)

//go:noinline
func dialAndClose(addr string) {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
}

func dialer(addr string) {
	for {
		dialAndClose(addr)
		time.Sleep(5 * time.Millisecond)
	}
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 1)
		c.Read(buf)
		c.Close()
	}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go serve(ln)
	go dialer(ln.Addr().String())
	for {
		time.Sleep(2 * time.Millisecond)
	}
}
