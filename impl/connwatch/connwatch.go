// Package connwatch tells when the peer of a connection nobody reads goes away.
//
// A hijacked event stream writes to its client and never reads from it, so nothing would notice
// the client leaving before the next write fails (a keep-alive comment, up to an interval
// later). net/http notices by keeping a goroutine blocked in a read on every connection. A
// Watcher instead watches all such connections from one goroutine: on Linux it registers each
// socket for peer hang-up (EPOLLRDHUP) in its own epoll set; elsewhere, or for a connection
// without a file descriptor, it falls back to a goroutine per connection that reads and
// discards until the read fails.
//
// WatchInput is the same watch for input: a connection waiting for its client's next request
// (a stream's, given back to net/http once the client sends) needs no goroutine either.
//
// The watcher's goroutine runs only while it watches something: it starts with the first
// connection and ends with the last, so an idle program (or a test's leak check) sees none.
package connwatch

import (
	"net"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past: it makes a blocked read return at once.
var aLongTimeAgo = time.Unix(1, 0)

// Watcher watches connections for their peer going away. The zero value is ready to use.
type Watcher struct {
	mu     sync.Mutex
	poller *poller             // nil while nothing is watched (or where epoll is missing)
	next   uint32              // the last id given out
	fns    map[uint32]func()   // hang-up callbacks by id
	fds    map[uint32]struct{} // the ids registered in the poller
}

// Watch calls onHangup once, on a goroutine of its own choosing, when conn's peer closes or
// resets the connection. It must be quick (it runs on the watcher's goroutine): set a flag,
// signal a channel. stop ends the watch; call it before closing conn. After stop returns,
// onHangup is not called (it may be running, once, while stop is called).
//
// Whatever the peer sends meanwhile is left unread (epoll) or discarded (fallback).
func (w *Watcher) Watch(conn net.Conn, onHangup func()) (stop func()) {
	if stop, ok := w.watchFD(conn, onHangup); ok {
		return stop
	}
	return watchByRead(conn, onHangup)
}

// WatchInput calls fn once, on the watcher's goroutine, when conn has something to read or
// its peer went away, without reading it: an idle connection waits for its next request with
// no goroutine and no buffer of its own. fn must be quick, as for Watch, and it may call stop.
// ok is false where this cannot be watched (no epoll, no file descriptor): nothing was
// registered.
func (w *Watcher) WatchInput(conn net.Conn, fn func()) (stop func(), ok bool) {
	return w.watchInput(conn, fn)
}

// watchByRead is the fallback: a goroutine reads and discards until the read fails. stop sets
// a read deadline in the past to end it, and waits for it.
func watchByRead(conn net.Conn, onHangup func()) (stop func()) {
	done := make(chan struct{})
	var mu sync.Mutex
	stopped := false
	go func() {
		defer close(done)
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				mu.Lock()
				s := stopped
				mu.Unlock()
				if !s {
					onHangup()
				}
				return
			}
		}
	}()
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		_ = conn.SetReadDeadline(aLongTimeAgo)
		<-done
	}
}
