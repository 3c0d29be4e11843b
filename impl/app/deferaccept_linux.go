//go:build linux

package app

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// deferAccept makes the kernel hold a connection back from accept until its client sends
// something, for up to wait (TCP_DEFER_ACCEPT, whole seconds): a connection that a client's
// pool opened and never used costs the daemon nothing (net/http gives each accepted one a
// goroutine and 8 KiB of buffers) until then. After wait the kernel hands it over anyway, and
// server.read_header_timeout applies as before. It reports whether the option was set (ln is
// a TCP listener).
func deferAccept(ln net.Listener, wait time.Duration) bool {
	tl, ok := ln.(*net.TCPListener)
	if !ok || wait <= 0 {
		return false
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return false
	}
	secs := int((wait + time.Second - 1) / time.Second)
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
	}); err != nil {
		return false
	}
	return serr == nil
}
