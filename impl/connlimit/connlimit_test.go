package connlimit

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value is a Gauge and a Counter that tests read.
type value struct{ n atomic.Int64 }

func (v *value) Inc() { v.n.Add(1) }
func (v *value) Dec() { v.n.Add(-1) }

type metrics struct{ open, waited *value }

func newMetrics() metrics { return metrics{open: &value{}, waited: &value{}} }

// eventually polls cond until it holds; the bound only keeps a broken build from hanging.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("never: %s", what)
		}
	}
}

// get sends one keep-alive request on c and reads its response.
func get(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d", res.StatusCode)
	}
}

func TestCapHoldsTheThirdConnectionUntilOneCloses(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	ln := New(inner, 2, m.open, m.waited)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}), ReadHeaderTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}
	c1, r1 := dial()
	get(t, c1, r1)
	c2, r2 := dial()
	get(t, c2, r2)
	if got := m.open.n.Load(); got != 2 {
		t.Fatalf("open = %v, want 2", got)
	}

	c3, r3 := dial()
	if _, err := c3.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the third connection waits", func() bool { return m.waited.n.Load() == 1 })
	// The accept loop now holds c3 without serving it.
	_ = c3.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := r3.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the third connection was answered while two were open: %v", err)
	}
	if got := m.open.n.Load(); got != 2 {
		t.Fatalf("open = %v, want 2", got)
	}
	// Still served in turn on the connections it holds.
	get(t, c2, r2)

	_ = c1.Close()
	_ = c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(r3, nil)
	if err != nil {
		t.Fatalf("the third connection was not served after one closed: %v", err)
	}
	_ = res.Body.Close()
	eventually(t, "two open", func() bool { return m.open.n.Load() == 2 })
	if got := m.waited.n.Load(); got != 1 {
		t.Fatalf("waited = %v, want 1", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c2.Close()
	_ = c3.Close()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	eventually(t, "none open", func() bool { return m.open.n.Load() == 0 })
}

func TestCloseReleasesAWaitingAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	ln := New(inner, 1, m.open, m.waited)
	c1, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			_ = c.Close()
		}
		accepted <- err
	}()
	eventually(t, "the second connection waits", func() bool { return m.waited.n.Load() == 1 })
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	// The held connection was closed, not leaked: its client sees the end of the stream.
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("the held connection is still open")
	}
	// Closing twice frees the slot once.
	_ = s1.Close()
	_ = s1.Close()
	if got := m.open.n.Load(); got != 0 {
		t.Fatalf("open = %v, want 0", got)
	}
}

func TestDefaultMax(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{
		{0, 10000}, {1 << 20, 10000}, {20000, 10000}, {4096, 2048}, {1024, 512}, {100, 64},
	} {
		if got := defaultMax(tt.nofile); got != tt.want {
			t.Errorf("defaultMax(%d) = %d, want %d", tt.nofile, got, tt.want)
		}
	}
	if got := DefaultMax(); got < 64 || got > 10000 {
		t.Errorf("DefaultMax() = %d", got)
	}
}
