package impl

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// TestAppendChunk frames batches of several sizes as chunks and reads them back with
// net/http's chunked reader.
func TestAppendChunk(t *testing.T) {
	var wire []byte
	var want []byte
	for _, n := range []int{1, 15, 16, 255, 256, 4096, 70000} {
		data := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
		b := make([]byte, chunkHeadroom, chunkHeadroom+n)
		b = append(b, data...)
		b, start := appendChunk(b, chunkHeadroom)
		wire = append(wire, b[start:]...)
		want = append(want, data...)
	}
	wire = append(wire, heartbeatChunk...)
	want = append(want, ": keep-alive\n\n"...)
	wire = append(wire, lastChunk...)
	res, err := http.ReadResponse(bufio.NewReader(io.MultiReader(
		strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), bytes.NewReader(wire))), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(want))
	}
}

// TestCloseStreams: a shutdown waits for hijacked streams, closes the connections of those
// still open when its context ends, and keeps new streams on net/http from then on.
func TestCloseStreams(t *testing.T) {
	s := &Server{}
	h := &s.streams
	if !h.add() {
		t.Fatal("add refused before any shutdown")
	}
	ours, theirs := net.Pipe()
	defer theirs.Close()
	h.attach(ours, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.CloseStreams(ctx)
	if _, err := ours.Write([]byte("x")); err == nil {
		t.Fatal("the stream's connection is still open after CloseStreams")
	}
	if h.add() {
		t.Fatal("a new stream may hijack its connection during a shutdown")
	}
	h.remove(ours) // the stream's own close, later
	// With nothing open, CloseStreams returns at once whatever its context.
	s.CloseStreams(context.Background())
}

// TestCloseStreamsWaits: streams that end by themselves before the context ends are waited
// for, not cut.
func TestCloseStreamsWaits(t *testing.T) {
	s := &Server{}
	h := &s.streams
	h.add()
	ours, theirs := net.Pipe()
	defer theirs.Close()
	h.attach(ours, nil)
	done := make(chan struct{})
	go func() { defer close(done); s.CloseStreams(context.Background()) }()
	go func() { _, _ = io.Copy(io.Discard, theirs) }()
	if _, err := ours.Write([]byte("last frame")); err != nil {
		t.Fatalf("the connection was cut before its stream ended: %v", err)
	}
	_ = ours.Close()
	h.remove(ours)
	<-done
}

// TestCloseStreamsDuringGiveBack: a shutdown that finds a connection given back a moment ago
// settles it only once giveBack has set up its wait (no nil timer, no race on it). Each round
// races the two; the race detector and the panic it caused are what the test watches for.
func TestCloseStreamsDuringGiveBack(t *testing.T) {
	for range 20000 {
		s := &Server{}
		returned := make(chan net.Conn, 1)
		s.ReturnConnections(func(c net.Conn) bool { returned <- c; return true }, time.Hour)
		ours, theirs := net.Pipe()
		given := make(chan bool, 1)
		start := make(chan struct{})
		go func() { <-start; given <- s.streams.giveBack(ours, false) }()
		close(start)
		s.CloseStreams(context.Background())
		if !<-given { // refused: the shutdown came first and the caller closes it
			_ = ours.Close()
		}
		select {
		case c := <-returned: // net.Pipe has no descriptor to watch: it goes back at once
			_ = c.Close()
		default:
		}
		_ = theirs.Close()
	}
}

// TestForgetResponse: after a hijack, echo's pooled context no longer reaches net/http's
// response (and through it the connection's buffers), and writing through it says why.
func TestForgetResponse(t *testing.T) {
	rec := httptest.NewRecorder()
	c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
	forgetResponse(c.Response())
	if _, ok := c.Response().Writer.(hijackedResponse); !ok {
		t.Fatalf("echo's response still writes to %T", c.Response().Writer)
	}
	if _, err := c.Response().Writer.Write([]byte("x")); !errors.Is(err, http.ErrHijacked) {
		t.Fatalf("a write after the hijack: %v, want http.ErrHijacked", err)
	}
}
