package impl

import (
	"errors"
	"io"
	"net"
	"testing"
)

// TestReturnListener: a connection given back is accepted like a new one; after Close nothing
// is taken back, and what was given back and not accepted is closed.
func TestReturnListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewReturnListener(inner)
	a, b := net.Pipe()
	defer b.Close()
	if !l.Return(a) {
		t.Fatal("Return refused before Close")
	}
	got, err := l.Accept()
	if err != nil || got != a {
		t.Fatalf("Accept: %v, %v; want the connection given back", got, err)
	}
	// A dialled connection still comes through.
	dialed, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	fresh, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = fresh.Close()
	// Given back and never accepted: closed by Close.
	c, d := net.Pipe()
	if !l.Return(c) {
		t.Fatal("Return refused")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("a connection given back before Close is still open: %v", err)
	}
	e, f := net.Pipe()
	defer f.Close()
	defer e.Close()
	if l.Return(e) {
		t.Fatal("Return took a connection after Close")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestPrefixConn reads the bytes read before first, then the connection.
func TestPrefixConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() { _, _ = b.Write([]byte("world")); _ = b.Close() }()
	got, err := io.ReadAll(&prefixConn{Conn: a, pre: []byte("hello ")})
	if err != nil || string(got) != "hello world" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestReturnListenerBurst: a burst of connections given back while nothing accepts is taken
// whole (closing one would reset the request its client may have sent on it already), and
// handed out oldest first, before new connections; Close closes those never accepted.
func TestReturnListenerBurst(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewReturnListener(inner)
	const n = 1000 // more than any fixed backlog a burst of ending streams could overflow
	var peers []net.Conn
	var given []net.Conn
	for range n {
		a, b := net.Pipe()
		peers = append(peers, b)
		given = append(given, a)
		if !l.Return(a) {
			t.Fatalf("Return refused the %dth connection before Close", len(given))
		}
	}
	defer func() {
		for _, p := range peers {
			_ = p.Close()
		}
	}()
	dialed, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	for i := range n / 2 {
		got, err := l.Accept()
		if err != nil || got != given[i] {
			t.Fatalf("Accept %d: %v, %v; want the connection given back %dth", i, got, err, i)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := n / 2; i < n; i++ {
		if _, err := peers[i].Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("connection %d given back and never accepted is still open after Close: %v", i, err)
		}
	}
}
