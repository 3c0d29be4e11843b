package connwatch

import (
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return server, client
}

// wrapped hides the TCP connection's type, as a listener's wrapper does, and exposes it the
// way connlimit does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// opaque hides the connection entirely: the watcher must fall back to reading.
type opaque struct{ net.Conn }

func TestWatchHangup(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", func(c net.Conn) net.Conn { return c }},
		{"wrapped", func(c net.Conn) net.Conn { return wrapped{c} }},
		{"fallback", func(c net.Conn) net.Conn { return opaque{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w Watcher
			srv, cli := tcpPair(t)
			defer srv.Close()
			gone := make(chan struct{})
			var calls atomic.Int32
			stop := w.Watch(tc.wrap(srv), func() {
				if calls.Add(1) == 1 {
					close(gone)
				}
			})
			// Data from the peer is not a hang-up.
			if _, err := cli.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-gone:
				t.Fatal("hang-up reported while the peer is connected")
			default:
			}
			_ = cli.Close()
			<-gone
			stop()
			if n := calls.Load(); n != 1 {
				t.Fatalf("onHangup called %d times, want 1", n)
			}
		})
	}
}

func TestStopBeforeHangup(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		var w Watcher
		srv, cli := tcpPair(t)
		c := net.Conn(srv)
		if fallback {
			c = opaque{srv}
		}
		var called atomic.Bool
		stop := w.Watch(c, func() { called.Store(true) })
		stop()
		stop() // twice is harmless
		_ = srv.Close()
		_ = cli.Close()
		// The watcher's goroutine ends with the last watch (goleak checks at exit); nothing fires
		// for a stopped watch.
		runtime.Gosched()
		if called.Load() {
			t.Fatalf("fallback=%v: onHangup called after stop", fallback)
		}
	}
}

// TestManyConnections watches many connections at once and hangs up every other one: exactly
// those are reported, and the watcher restarts after it went idle.
func TestManyConnections(t *testing.T) {
	var w Watcher
	for round := range 2 {
		const n = 64
		type pair struct {
			srv, cli net.Conn
			stop     func()
			gone     chan struct{}
		}
		pairs := make([]*pair, n)
		for i := range pairs {
			p := &pair{gone: make(chan struct{})}
			p.srv, p.cli = tcpPair(t)
			p.stop = w.Watch(p.srv, func() { close(p.gone) })
			pairs[i] = p
		}
		for i, p := range pairs {
			if i%2 == 0 {
				_ = p.cli.Close()
			}
		}
		for i, p := range pairs {
			if i%2 == 0 {
				<-p.gone
			}
		}
		// A hang-up reported for a connection still open would have closed its channel by the
		// time the odd ones' peers close and are reported, since one goroutine reports in order
		// of arrival; check the odd ones now, then hang them up too.
		for i, p := range pairs {
			if i%2 == 1 {
				select {
				case <-p.gone:
					t.Fatalf("round %d: connection %d reported gone while open", round, i)
				default:
				}
				_ = p.cli.Close()
				select {
				case <-p.gone:
				case <-time.After(time.Minute):
					t.Fatalf("round %d: connection %d's hang-up not reported", round, i)
				}
			}
		}
		for _, p := range pairs {
			p.stop()
			_ = p.srv.Close()
		}
		w.mu.Lock()
		idle := w.poller == nil
		w.mu.Unlock()
		if !idle {
			t.Fatalf("round %d: poller still running with nothing watched", round)
		}
	}
}

// TestWatchInput: input (left unread) or the peer's hang-up fires the watch, once; a stopped
// watch never fires; a connection without a descriptor cannot be watched.
func TestWatchInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(cli net.Conn)
	}{
		{"input", func(cli net.Conn) { _, _ = cli.Write([]byte("GET / HTTP/1.1\r\n\r\n")) }},
		{"hangup", func(cli net.Conn) { _ = cli.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w Watcher
			srv, cli := tcpPair(t)
			defer srv.Close()
			defer cli.Close()
			fired := make(chan struct{})
			var calls atomic.Int32
			stop, ok := w.WatchInput(wrapped{srv}, func() {
				if calls.Add(1) == 1 {
					close(fired)
				}
			})
			if !ok {
				t.Fatal("WatchInput refused a TCP connection")
			}
			select {
			case <-fired:
				t.Fatal("fired before the peer did anything")
			default:
			}
			tc.act(cli)
			<-fired
			stop()
			if tc.name == "input" { // left for the next reader
				b := make([]byte, 3)
				if _, err := io.ReadFull(srv, b); err != nil || string(b) != "GET" {
					t.Fatalf("read after the watch: %q %v", b, err)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("called %d times, want 1", n)
			}
		})
	}
	t.Run("stopped", func(t *testing.T) {
		var w Watcher
		srv, cli := tcpPair(t)
		defer srv.Close()
		var called atomic.Bool
		stop, ok := w.WatchInput(srv, func() { called.Store(true) })
		if !ok {
			t.Fatal("WatchInput refused a TCP connection")
		}
		stop()
		_, _ = cli.Write([]byte("x"))
		_ = cli.Close()
		runtime.Gosched()
		if called.Load() {
			t.Fatal("called after stop")
		}
	})
	t.Run("opaque", func(t *testing.T) {
		var w Watcher
		srv, cli := tcpPair(t)
		defer srv.Close()
		defer cli.Close()
		if _, ok := w.WatchInput(opaque{srv}, func() {}); ok {
			t.Fatal("WatchInput accepted a connection without a descriptor")
		}
	})
}
