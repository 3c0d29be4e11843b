// Package connlimit caps the number of client connections a server holds open at once, so that
// a flood of connections (or many slow clients) cannot take every file descriptor.
//
// The Listener waits rather than refuses: at the cap, Accept holds the one connection it has
// just taken and returns it only when another closes; everything behind it stays in the
// kernel's listen backlog, costing the daemon no descriptor and no goroutine, and once that
// backlog is full the kernel stops completing handshakes, which is TCP's own back-pressure.
// A burst is served late instead of failing, and clients are served in arrival order. Closing
// excess connections instead would turn a burst into resets that a client cannot tell from a
// crash, and would keep the accept loop spinning through a flood.
package connlimit

import (
	"net"
	"sync"
)

// Gauge is the open-connections metric (a prometheus.Gauge satisfies it).
type Gauge interface {
	Inc()
	Dec()
}

// Counter counts connections that had to wait for a free slot (a prometheus.Counter
// satisfies it).
type Counter interface{ Inc() }

// Listener is a net.Listener that keeps at most Max connections open. Create it with New.
type Listener struct {
	net.Listener
	slots  chan struct{}
	open   Gauge
	waited Counter

	closeOnce sync.Once
	done      chan struct{}
}

// New wraps inner so that at most n connections (at least 1) are open at once. open follows
// the number of open connections; waited counts the connections that found every slot taken.
func New(inner net.Listener, n int, open Gauge, waited Counter) *Listener {
	return &Listener{
		Listener: inner, slots: make(chan struct{}, max(n, 1)), open: open, waited: waited,
		done: make(chan struct{}),
	}
}

// Accept returns the next connection once fewer than the maximum are open. It returns
// net.ErrClosed when the listener is closed while it waits.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.slots <- struct{}{}:
	default:
		l.waited.Inc()
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			_ = c.Close()
			return nil, net.ErrClosed
		}
	}
	l.open.Inc()
	return &conn{Conn: c, l: l}, nil
}

// Close closes the listener and releases an Accept that waits for a slot.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// conn frees its slot on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

// NetConn returns the connection it wraps (as crypto/tls's Conn does), for code that needs its
// file descriptor: connwatch watches a hijacked stream's socket for the client hanging up.
// Close the wrapper, not what NetConn returns, to free the slot.
func (c *conn) NetConn() net.Conn { return c.Conn }

// WriteConn returns the connection that writes go to unchanged (unlike crypto/tls's NetConn):
// a hijacked stream may write to its socket without waiting.
func (c *conn) WriteConn() net.Conn { return c.Conn }

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Dec()
		<-c.l.slots
	})
	return err
}
