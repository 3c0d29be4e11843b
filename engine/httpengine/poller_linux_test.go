package httpengine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestPollerReadEndedBeforeItsCount: a poller's loop can end a read that add has registered
// with the kernel but not counted yet. The loop must not then wait with nothing registered:
// it did, and goleak found it after a -race run of the package under load.
//
// The test plays the interleaving on a poller of its own. Its loop is in the round in which
// its last read ended (running, nothing counted). add registers the answer's connection; the
// engine then sends the rest of the answer and its end, and the loop's round, played by the
// test before add counts the registration, reads it to its end.
func TestPollerReadEndedBeforeItsCount(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.file.Close() })

	release, written := make(chan struct{}), make(chan struct{})
	url := oneAnswerEngine(t, "data: a\n\n", "data: b\n\n", release, written)
	conns := NewConns(url, 1)
	defer conns.CloseIdle()
	resp, err := conns.Post(t.Context(), "/", "", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := resp.Body.(*connBody)
	fd := -1
	if err := b.rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		t.Fatal(err)
	}

	p.mu.Lock()
	p.running = true // the loop's round in which its last read ended
	p.mu.Unlock()
	roundOver := false // the loop's round ended the loop
	p.afterAdd = func() {
		close(release)
		<-written // the rest of the answer and its end are in the socket
		roundOver = p.poll(uintptr(p.epfd))
	}

	var lines []string
	var long []byte
	pushed := false
	err = b.eachLine(4096, errTestTooLong, &long, func(line []byte) (bool, error) {
		lines = append(lines, string(line))
		return false, nil
	}, func() bool { pushed = b.pushLinesOn(p, fd); return pushed })
	if !pushed || !errors.Is(err, io.EOF) || !slices.Equal(lines, []string{"data: a", "", "data: b", ""}) {
		t.Fatalf("pushed %v, lines %q, end %v; want pushed, the four lines, io.EOF", pushed, lines, err)
	}

	p.mu.Lock()
	n := p.n
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections counted after the only read ended", n)
	}
	if !roundOver {
		t.Fatal("the poller's loop waits with nothing registered")
	}
	// add started a loop for what was registered by then (nothing): it ends.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		running := p.running
		p.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop add started still runs with nothing registered")
		}
	}
}

// oneAnswerEngine answers one request with a chunked text/event-stream: the head and first
// first, then, once release is closed, second and the body's end in one write, after which it
// closes written. It keeps the connection open until the test ends.
func oneAnswerEngine(t *testing.T, first, second string, release <-chan struct{}, written chan<- struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, done := t.Context(), make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if !readRequest(bufio.NewReader(c)) {
			return
		}
		chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"+
			"Transfer-Encoding: chunked\r\n\r\n"+chunk(first)); err != nil {
			return
		}
		select {
		case <-release:
		case <-ctx.Done(): // the test failed before it released the rest
			return
		}
		if _, err := io.WriteString(c, chunk(second)+"0\r\n\r\n"); err != nil {
			return
		}
		close(written)
		_, _ = io.Copy(io.Discard, c) // until the client closes
	}()
	return "http://" + ln.Addr().String()
}
