package impl

import (
	"errors"
	"net"
	"sync"
)

// ReturnListener is a listener that also hands out connections given back to it: a hijacked
// event stream that ended cleanly returns its connection (Return), and http.Server, which
// accepts it as a new connection, serves the client's next request on it. The stream thereby
// keeps HTTP/1.1 keep-alive although net/http let go of its connection.
//
// One goroutine accepts from the wrapped listener (so that a connection given back does not
// wait behind an Accept blocked there, connlimit's wait for a free slot included).
//
// Return never refuses before Close: a connection comes back when its client may already have
// sent its next request on it (the stream's response promised keep-alive), and closing it then
// would reset that request. The connections waiting to be accepted are bounded by the
// connection limit, whose slots they keep.
type ReturnListener struct {
	net.Listener

	accepted chan accepted
	ready    chan struct{} // holds a token while back may be non-empty
	done     chan struct{}
	start    sync.Once

	mu     sync.Mutex // orders Return and Close: nothing is given back after Close
	closed bool
	back   []net.Conn // under mu: given back, not yet accepted, oldest first
}

type accepted struct {
	c   net.Conn
	err error
}

// NewReturnListener wraps inner.
func NewReturnListener(inner net.Listener) *ReturnListener {
	return &ReturnListener{Listener: inner, accepted: make(chan accepted), ready: make(chan struct{}, 1),
		done: make(chan struct{})}
}

// Accept returns a connection given back (those first: their clients may be waiting on a
// request sent already), or the next one the wrapped listener accepts. A new connection waits
// at most for the connections given back before it: they come at the rate streams end, and
// each is handed out at once.
func (l *ReturnListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.pump() })
	for {
		if c := l.takeBack(); c != nil {
			return c, nil
		}
		select {
		case <-l.ready:
		case a := <-l.accepted:
			return a.c, a.err
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

// takeBack pops the oldest connection given back (nil: none), leaving the token for the rest.
func (l *ReturnListener) takeBack() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.back) == 0 || l.closed {
		return nil
	}
	c := l.back[0]
	l.back[0] = nil
	l.back = l.back[1:]
	if len(l.back) > 0 {
		l.signal()
	}
	return c
}

func (l *ReturnListener) signal() {
	select {
	case l.ready <- struct{}{}:
	default: // a token is there already
	}
}

// pump accepts from the wrapped listener until it fails for good or the listener is closed.
func (l *ReturnListener) pump() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.accepted <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		var ne net.Error
		if err != nil && (!errors.As(err, &ne) || !ne.Timeout()) {
			return
		}
	}
}

// Return gives conn back to be served again, and reports whether it was taken: false once the
// listener is closed (the caller closes conn).
func (l *ReturnListener) Return(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.back = append(l.back, conn)
	l.signal()
	return true
}

// Close closes the wrapped listener and the connections given back and not yet accepted.
func (l *ReturnListener) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	back := l.back
	l.back = nil
	l.mu.Unlock()
	err := l.Listener.Close()
	for _, c := range back {
		_ = c.Close()
	}
	return err
}

// prefixConn is a connection whose first reads return bytes read from it before (what the
// client sent after its request, buffered by net/http when the stream took the connection).
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the wrapped connection (connwatch looks through it for the socket).
func (c *prefixConn) NetConn() net.Conn { return c.Conn }

// WriteConn returns the wrapped connection, which writes go to unchanged.
func (c *prefixConn) WriteConn() net.Conn { return c.Conn }
