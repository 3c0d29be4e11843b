package httpengine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// engineServer is an httptest engine that streams three events per request and counts the
// connections it accepted. closeMode: "" keeps connections; "silent" closes each one once its
// answer is complete, without saying so (llama-server 0.7.0); "header" answers
// "Connection: close".
func engineServer(t *testing.T, closeMode string) (*httptest.Server, *atomic.Int32, *atomic.Int32) {
	t.Helper()
	var accepted, closeAsked atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Close {
			closeAsked.Add(1)
		}
		b, _ := io.ReadAll(r.Body)
		if closeMode == "header" {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			_, _ = fmt.Fprintf(w, "data: %s %d\n\n", b, i)
			w.(http.Flusher).Flush()
		}
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		switch {
		case s == http.StateNew:
			accepted.Add(1)
		case s == http.StateIdle && closeMode == "silent":
			_ = c.Close()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &accepted, &closeAsked
}

// readAll reads a streamed answer's events.
func readAll(t *testing.T, resp *http.Response) []string {
	t.Helper()
	defer resp.Body.Close()
	er := NewEventReader(resp.Body)
	var got []string
	for {
		_, data, err := er.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got = append(got, string(data))
	}
}

func TestConnsKeepAliveAndFallback(t *testing.T) {
	const gens = 4
	tests := []struct {
		name      string
		closeMode string
		wantConns int32
		wantClose int32 // requests sent with "Connection: close"
		wantStats engine.ConnStats
	}{
		{name: "engine keeps connections", wantConns: 1, wantStats: engine.ConnStats{Dialed: 1, Reused: gens - 1, Idle: 1}},
		// The second generation finds its kept connection closed (when taken, or when its
		// request fails: then it is sent again on a new one), and the replica falls back to a
		// connection per generation.
		{name: "engine closes silently", closeMode: "silent", wantConns: gens, wantClose: gens - 1,
			wantStats: engine.ConnStats{Dialed: gens, Fallbacks: 1, OnePerGeneration: true}},
		{name: "engine answers Connection: close", closeMode: "header", wantConns: gens, wantClose: gens - 1,
			wantStats: engine.ConnStats{Dialed: gens, Fallbacks: 1, OnePerGeneration: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, accepted, closeAsked := engineServer(t, tc.closeMode)
			p := NewConns(srv.URL, 4)
			defer p.CloseIdle()
			for i := range gens {
				uri, ok := p.RequestURI(srv.URL + "/gen")
				if !ok || uri != "/gen" {
					t.Fatalf("RequestURI = %q, %v", uri, ok)
				}
				resp, err := p.Post(t.Context(), uri, "", []byte(fmt.Sprint(i)))
				if err != nil {
					t.Fatalf("generation %d: %v", i, err)
				}
				got := readAll(t, resp)
				want := []string{fmt.Sprint(i, " 0"), fmt.Sprint(i, " 1"), fmt.Sprint(i, " 2")}
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Fatalf("generation %d: events %q, want %q", i, got, want)
				}
			}
			if n := accepted.Load(); n != tc.wantConns {
				t.Errorf("%d connections accepted for %d generations, want %d", n, gens, tc.wantConns)
			}
			if n := closeAsked.Load(); n != tc.wantClose {
				t.Errorf("%d requests asked to close, want %d", n, tc.wantClose)
			}
			s := p.Stats()
			if s.Reused != s.Retried && tc.closeMode == "silent" { // found closed by the request
				t.Errorf("stats %+v: a reused connection that was closed was not sent again", s)
			}
			if tc.closeMode == "silent" {
				s.Reused, s.Retried = 0, 0
			}
			if s != tc.wantStats {
				t.Errorf("stats %+v, want %+v", s, tc.wantStats)
			}
		})
	}
}

// After ReprobeAfter generations on their own connections, keep-alive is tried again.
func TestConnsReprobe(t *testing.T) {
	srv, accepted, _ := engineServer(t, "")
	p := NewConns(srv.URL, 4)
	defer p.CloseIdle()
	p.closesConns("test")
	for i := range ReprobeAfter + 3 {
		resp, err := p.Post(t.Context(), "/", "", []byte("x"))
		if err != nil {
			t.Fatalf("generation %d: %v", i, err)
		}
		readAll(t, resp)
	}
	if n, want := accepted.Load(), int32(ReprobeAfter+1); n != want {
		t.Errorf("%d connections, want %d (one each while falling back, then one kept)", n, want)
	}
}

// An answer closed before its end closes the connection (the engine's abort signal); so does
// ctx ending mid-stream, which also unblocks the read.
func TestConnsAbortClosesTheConnection(t *testing.T) {
	release := make(chan struct{})
	var accepted atomic.Int32
	gone := make(chan struct{}, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			gone <- struct{}{}
		case <-release:
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	defer close(release)
	p := NewConns(srv.URL, 4)
	defer p.CloseIdle()

	// Closed early by the reader.
	resp, err := p.Post(t.Context(), "/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, data, err := NewEventReader(resp.Body).Next(); err != nil || string(data) != "first" {
		t.Fatalf("first event %q, %v", data, err)
	}
	_ = resp.Body.Close()
	<-gone

	// Cancelled while the read waits.
	ctx, cancel := context.WithCancel(t.Context())
	resp, err = p.Post(ctx, "/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	er := NewEventReader(resp.Body)
	if _, _, err := er.Next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, _, err := er.Next(); err == nil {
		t.Fatal("read after cancel succeeded")
	}
	_ = resp.Body.Close()
	<-gone
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections for 2 aborted generations, want 2", n)
	}
	if s := p.Stats(); s.Reused != 0 {
		t.Errorf("an aborted connection was reused: %+v", s)
	}
}

// At most maxIdle connections are kept, each for at most the idle timeout (injected clock).
func TestConnsIdleBounds(t *testing.T) {
	srv, accepted, _ := engineServer(t, "")
	p := NewConns(srv.URL, 2)
	defer p.CloseIdle()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	// Three streams at once: three connections, two kept.
	post := func() *http.Response {
		resp, err := p.Post(t.Context(), "/", "", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	r1, r2, r3 := post(), post(), post() //nolint:bodyclose // readAll closes each below
	readAll(t, r1)
	readAll(t, r2)
	readAll(t, r3)
	p.mu.Lock()
	kept := len(p.idle)
	p.mu.Unlock()
	if kept != 2 {
		t.Fatalf("%d connections kept, want 2", kept)
	}
	// Past the idle timeout the kept connections are dropped, not reused.
	mu.Lock()
	now = now.Add(DefaultIdleConnTimeout)
	mu.Unlock()
	resp, err := p.Post(t.Context(), "/", "", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n, s := accepted.Load(), p.Stats(); n != 4 || s.Reused != 0 {
		t.Errorf("%d connections, stats %+v; want 4 and nothing reused", n, s)
	}
}

func TestNewConnsSchemes(t *testing.T) {
	tests := []struct {
		base string
		ok   bool
		addr string
	}{
		{"http://127.0.0.1:8080", true, "127.0.0.1:8080"},
		{"http://engine/prefix/", true, "engine:80"},
		{"https://engine:443", false, ""},
		{"http://user:pw@engine:1", false, ""},
		{"::", false, ""},
	}
	for _, tc := range tests {
		p := NewConns(tc.base, 0)
		if (p != nil) != tc.ok || (p != nil && p.addr != tc.addr) {
			t.Errorf("NewConns(%q) = %+v, want ok %v addr %q", tc.base, p, tc.ok, tc.addr)
		}
	}
	p := NewConns("http://e:1", 0)
	for u, want := range map[string]string{"http://e:1/a?b": "/a?b", "http://e:1": "/", "http://e:10/a": "", "http://f:1/a": ""} {
		got, ok := p.RequestURI(u)
		if got != want || ok != (want != "") {
			t.Errorf("RequestURI(%q) = %q, %v; want %q", u, got, ok, want)
		}
	}
}

// An adapter stops reading at the engine's final event, before the last chunk that ends the
// body: marked Complete, the answer's end is read at Close and the connection kept; not marked
// (an adapter giving up mid-stream), its connection is closed.
func TestConnsKeptAfterTheFinalEvent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const event = "data: last\n\n"
	var accepted atomic.Int32
	read, ended := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					break
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(event), event)
				<-read
				_, _ = io.WriteString(c, "0\r\n\r\n")
				ended <- struct{}{}
			}
			_ = c.Close()
		}
	}()
	p := NewConns("http://"+ln.Addr().String(), 4)
	for i, complete := range []bool{true, true, true, false, true} {
		resp, err := p.Post(t.Context(), "/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(event))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != event {
			t.Fatalf("generation %d: %q, %v", i, buf, err)
		}
		read <- struct{}{}
		<-ended // the end of the body is on its way (a loopback write is in the reader's socket when it returns)
		if complete {
			Complete(resp.Body)
		}
		_ = resp.Body.Close()
	}
	p.CloseIdle()
	_ = ln.Close()
	<-done
	if n, s := accepted.Load(), p.Stats(); n != 2 || s.Reused != 3 {
		t.Errorf("%d connections, stats %+v; want 2 connections, 3 reuses", n, s)
	}
}

// TestConnsReapIdle: kept connections that get no next generation are closed once they outlive
// the idle timeout, without a generation coming to find them expired: an engine that waits for
// its clients' connections to end before it exits (tritonserver) is not held up by a replica
// that serves no more.
func TestConnsReapIdle(t *testing.T) {
	closed := make(chan struct{}, 4)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: x\n\n")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	p := NewConns(srv.URL, 2)
	p.ttl = 10 * time.Millisecond
	resp, err := p.Post(t.Context(), "/", "", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	p.mu.Lock()
	kept := len(p.idle)
	p.mu.Unlock()
	if kept != 1 {
		t.Fatalf("%d connections kept after one generation, want 1", kept)
	}
	select {
	case <-closed: // the reaper closed it; the server saw the end
	case <-time.After(time.Minute):
		t.Fatal("the kept connection was never closed")
	}
	p.mu.Lock()
	kept, reaping := len(p.idle), p.reaping
	p.mu.Unlock()
	if kept != 0 || reaping {
		t.Errorf("after the reap: %d kept, reaping %v; want none and no reap scheduled", kept, reaping)
	}
}

// TestConnsBodyReadsInItsBuffer: an answer's body is a SliceReader, so that the stream
// splitters read their lines in its one buffer (EventReader keeps no bufio.Reader of its own),
// and the engine's events come through it, chunked framing decoded.
func TestConnsBodyReadsInItsBuffer(t *testing.T) {
	srv, _, _ := engineServer(t, "")
	p := NewConns(srv.URL, 4)
	defer p.CloseIdle()
	resp, err := p.Post(t.Context(), "/", "", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	sr, ok := resp.Body.(SliceReader)
	if !ok {
		t.Fatalf("body %T is not a SliceReader", resp.Body)
	}
	if er := NewEventReader(resp.Body); er.br != sr {
		t.Errorf("EventReader reads through %T, not the body", er.br)
	}
	if got := readAll(t, resp); strings.Join(got, "|") != "x 0|x 1|x 2" {
		t.Errorf("events %q", got)
	}
	if s := p.Stats(); s.Dialed != 1 {
		t.Errorf("stats %+v", s)
	}
	if _, err := sr.ReadSlice('\n'); err == nil {
		t.Error("ReadSlice on a closed body succeeded")
	}
}

// TestConnsWaitHoldsNoBuffer: an answer waiting for the engine with nothing buffered (an idle
// open stream) gives its read buffer back, and takes one when the engine's next bytes come.
func TestConnsWaitHoldsNoBuffer(t *testing.T) {
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		// Each answer takes one value of next, between its two frames: an answer that also
		// waited after its second frame could take another's value, and that answer would
		// never send its second frame.
		for k, ev := range []string{"first", "second"} {
			if k > 0 {
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
			}
			_, _ = fmt.Fprintf(w, "data: %s\n\n", ev)
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	p := NewConns(srv.URL, 4)
	defer p.CloseIdle()
	const streams = 3
	before := buffersHeld.Load()
	var readers []*EventReader
	for range streams {
		resp, err := p.Post(t.Context(), "/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		er := NewEventReader(resp.Body)
		if _, data, err := er.Next(); err != nil || string(data) != "first" {
			t.Fatalf("first event %q, %v", data, err)
		}
		readers = append(readers, er)
	}
	if n := buffersHeld.Load() - before; n != streams {
		t.Fatalf("%d buffers held by %d answers with a frame being read, want %d", n, streams, streams)
	}
	got := make(chan string, streams)
	for _, er := range readers {
		go func() {
			_, data, err := er.Next()
			got <- fmt.Sprintf("%s %v", data, err)
		}()
	}
	// The readers reach their wait and give their buffers back (no bound: a reader that kept
	// its buffer fails the test at its deadline).
	for buffersHeld.Load()-before != 0 {
		select {
		case <-t.Context().Done():
			t.Fatalf("%d buffers held by waiting answers", buffersHeld.Load()-before)
		case <-time.After(time.Millisecond):
		}
	}
	for range streams {
		next <- struct{}{}
	}
	for range streams {
		if g := <-got; g != "second <nil>" {
			t.Errorf("second event: %s", g)
		}
	}
	if n := buffersHeld.Load() - before; n != streams {
		t.Errorf("%d buffers held after the engine's next frame, want %d", n, streams)
	}
}

// TestConnsAbort: an Abort ends its request's connection from another goroutine, while the head
// is awaited or the body read, is not retried, and has no hold on a connection kept after its
// body was closed.
func TestConnsAbort(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/slow-head" {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		if r.URL.Path == "/done" {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	p := NewConns(srv.URL, 4)
	defer p.CloseIdle()
	errWhy := errors.New("why")

	// A kept connection: cancelling after Close does not touch it.
	ab := new(Abort)
	resp, err := p.PostAbort(t.Context(), ab, "/done", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); len(got) != 1 {
		t.Fatalf("events %q", got)
	}
	ab.Cancel(errWhy)
	resp, err = p.PostAbort(t.Context(), new(Abort), "/done", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); len(got) != 1 {
		t.Fatalf("events on the kept connection %q", got)
	}
	if s := p.Stats(); s.Reused != 1 || s.Dialed != 1 {
		t.Fatalf("stats %+v, want 1 dial, 1 reuse", s)
	}

	// Cancelled while the body is read: the read fails, the connection is not kept.
	ab = new(Abort)
	resp, err = p.PostAbort(t.Context(), ab, "/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	er := NewEventReader(resp.Body)
	if _, data, err := er.Next(); err != nil || string(data) != "first" {
		t.Fatalf("first event %q, %v", data, err)
	}
	ab.Cancel(errWhy)
	if _, _, err := er.Next(); err == nil {
		t.Fatal("read after Cancel succeeded")
	}
	_ = resp.Body.Close()
	if !errors.Is(ab.Cause(), errWhy) {
		t.Errorf("cause %v", ab.Cause())
	}

	// Cancelled while the head is awaited on a kept connection: the request fails and is not
	// sent again (as it would be if the engine had closed the connection).
	if resp, err = p.Post(t.Context(), "/done", "", nil); err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	reused := p.Stats().Reused
	ab = new(Abort)
	go func() {
		// Cancel once the request is on its connection (attach ran): the engine saw it.
		for {
			ab.mu.Lock()
			sent := ab.b != nil
			ab.mu.Unlock()
			if sent {
				ab.Cancel(errWhy)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if resp, err := p.PostAbort(t.Context(), ab, "/slow-head", "", nil); err == nil {
		_ = resp.Body.Close()
		t.Fatal("cancelled request succeeded")
	}
	if s := p.Stats(); s.Retried != 0 || s.Reused != reused+1 {
		t.Errorf("stats %+v: want the kept connection used, the cancelled request not sent again", s)
	}
}

// TestConnsSlowEnds: an answer whose end does not come within the drain wait has its
// connection closed; only SlowEndsBeforeFallback of them in a row make the replica fall back to
// a connection per generation. One late end is a loaded engine, not one that closes its
// connections. The generation does not wait for a late end: Close returns at once.
func TestConnsSlowEnds(t *testing.T) {
	tests := []struct {
		name         string
		late         []bool // per generation: the engine never ends that answer
		wantConns    int32
		wantClose    int32 // requests sent with "Connection: close"
		wantStats    engine.ConnStats
		wantFallback bool
	}{
		{name: "one late end among prompt ones", late: []bool{false, true, false, false, true, false},
			wantConns: 3, wantStats: engine.ConnStats{Dialed: 3, Reused: 3, LateEnds: 2}},
		{name: "late ends in a row", late: []bool{true, true, true, false, false},
			wantConns: 5, wantClose: 2, wantStats: engine.ConnStats{Dialed: 5, LateEnds: 3, Fallbacks: 1, OnePerGeneration: true}, wantFallback: true},
		{name: "a prompt end resets the count", late: []bool{true, true, false, true, true, false},
			wantConns: 5, wantStats: engine.ConnStats{Dialed: 5, Reused: 1, LateEnds: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var closeAsked, served atomic.Int32
			addr, accepted, stop := serveConns(t, func(c net.Conn, br *bufio.Reader) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return // the client closed the connection
					}
					if req.Close {
						closeAsked.Add(1)
					}
					_, _ = io.Copy(io.Discard, req.Body)
					answer := answerHead + lastEventChunk
					if i := served.Add(1) - 1; int(i) >= len(tc.late) || !tc.late[i] {
						answer += "0\r\n\r\n" // the end, in the same write: there when Close looks
					}
					_, _ = io.WriteString(c, answer)
					if req.Close {
						return
					}
				}
			})
			var logs syncBuffer
			p := NewConns("http://"+addr, 4)
			p.drainWait = 50 * time.Millisecond
			p.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
			for i, late := range tc.late {
				slow := p.Stats().LateEnds
				resp, err := p.Post(t.Context(), "/", "", nil)
				if err != nil {
					t.Fatalf("generation %d: %v", i, err)
				}
				readLastEvent(t, i, resp)
				_ = resp.Body.Close()
				if late { // the wait for its end goes on after Close: let it end first
					waitFor(t, func() bool { return p.Stats().LateEnds == slow+1 })
				}
			}
			p.CloseIdle()
			stop()
			if n := accepted.Load(); n != tc.wantConns {
				t.Errorf("%d connections for %d generations, want %d", n, len(tc.late), tc.wantConns)
			}
			if n := closeAsked.Load(); n != tc.wantClose {
				t.Errorf("%d requests asked to close, want %d", n, tc.wantClose)
			}
			if s := p.Stats(); s != tc.wantStats {
				t.Errorf("stats %+v, want %+v", s, tc.wantStats)
			}
			if got := strings.Contains(logs.String(), "one per generation"); got != tc.wantFallback {
				t.Errorf("fallback logged: %v, want %v; log:\n%s", got, tc.wantFallback, logs.String())
			}
		})
	}
}

// TestConnsCloseDoesNotWaitForALateEnd: Close returns while the engine has not ended its
// answer, and the connection is kept once the end comes within the drain wait.
func TestConnsCloseDoesNotWaitForALateEnd(t *testing.T) {
	release := make(chan struct{})
	addr, accepted, stop := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for first := true; ; first = false {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = io.WriteString(c, answerHead+lastEventChunk)
			if first {
				<-release // the end only once the client's Close returned
			}
			_, _ = io.WriteString(c, "0\r\n\r\n")
		}
	})
	p := NewConns("http://"+addr, 4)
	// Far beyond the test's hang bound below: a Close that waited for the end (or for the
	// drain wait to pass) would never return within it.
	p.drainWait = time.Hour
	for i := range 2 {
		resp, err := p.Post(t.Context(), "/", "", nil) //nolint:bodyclose // closed on a goroutine below, whose return is the test
		if err != nil {
			t.Fatal(err)
		}
		readLastEvent(t, i, resp)
		closed := make(chan struct{})
		go func() { _ = resp.Body.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second): // a bound on a hang, not a timing assertion
			t.Fatalf("generation %d: Close waited for the end of the body", i)
		}
		if i == 0 {
			close(release)
		}
		waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.idle) == 1 })
	}
	p.CloseIdle()
	stop()
	if n, s := accepted.Load(), p.Stats(); n != 1 || s != (engine.ConnStats{Dialed: 1, Reused: 1}) {
		t.Errorf("%d connections, stats %+v; want 1 connection, 1 reuse", n, s)
	}
}

// An engine's streamed answer as the tests' engines (serveConns) write it: its head, and its
// one event (the final one) as a chunk; the end ("0\r\n\r\n") is the test's to write.
const (
	answerHead     = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	lastEvent      = "data: last\n\n"
	lastEventChunk = "c\r\n" + lastEvent + "\r\n" // c: len(lastEvent) in hex
)

// serveConns serves each connection accepted on a loopback listener with serve, on a goroutine
// of its own, and counts the connections. stop closes the listener and waits for every serve
// to return: close the client's connections first.
func serveConns(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (addr string, accepted *atomic.Int32, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), accepted, func() { _ = ln.Close(); wg.Wait() }
}

// readLastEvent reads generation i's one event from resp and marks the answer Complete, as an
// adapter does at the engine's final event.
func readLastEvent(t *testing.T, i int, resp *http.Response) {
	t.Helper()
	buf := make([]byte, len(lastEvent))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != lastEvent {
		t.Fatalf("generation %d: %q, %v", i, buf, err)
	}
	Complete(resp.Body)
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}

// syncBuffer is a strings.Builder safe for a logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
