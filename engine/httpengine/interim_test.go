package httpengine

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// interimEngine answers one request with heads, then the final answer (an event stream of one
// "data: x" event).
func interimEngine(t *testing.T, heads ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if !readRequest(bufio.NewReader(c)) {
			return
		}
		_, _ = io.WriteString(c, strings.Join(heads, "")+
			"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9\r\n\r\ndata: x\n\n")
		_, _ = io.Copy(io.Discard, c)
	}()
	return "http://" + ln.Addr().String()
}

// TestInterimResponsesAreSkipped: an HTTP/1.1 client must read the 1xx interim answers an
// engine (or a proxy before it) sends before the final one, expected or not (RFC 9110 15.2), as
// net/http's Transport does: the answer is the final one, not "engine answered 103". A server
// that never stops sending them is refused, as net/http refuses more than 5.
func TestInterimResponsesAreSkipped(t *testing.T) {
	for _, tt := range []struct {
		name  string
		heads []string
		ok    bool
	}{
		{"none", nil, true},
		{"100 Continue", []string{"HTTP/1.1 100 Continue\r\n\r\n"}, true},
		{"103 Early Hints, then 100", []string{"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", "HTTP/1.1 100 Continue\r\n\r\n"}, true},
		{"too many", []string{strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6)}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := NewConns(interimEngine(t, tt.heads...), 1)
			defer p.CloseIdle()
			resp, err := p.Post(t.Context(), "/", "", []byte("{}"))
			if !tt.ok {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("answer %d, want an error", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("answer %d %q, want the final 200 event stream", resp.StatusCode, resp.Header)
			}
			_, data, err := NewEventReader(resp.Body).Next()
			if err != nil || string(data) != "x" {
				t.Fatalf("event %q, %v; want x", data, err)
			}
			if _, _, err := NewEventReader(resp.Body).Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the event: %v, want io.EOF", err)
			}
		})
	}
}
