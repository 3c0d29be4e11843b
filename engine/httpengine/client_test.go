package httpengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

func newClient(t *testing.T, idle time.Duration, eof string) *Client {
	t.Helper()
	hc := DefaultHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return &Client{Name: "x", Unit: "frame", EOF: eof, HTTP: hc, Idle: idle, Auth: Bearer("k"),
		OnStatus: func(_ context.Context, resp *http.Response) error {
			b, _ := io.ReadAll(resp.Body)
			return engine.Errorf(engine.KindEngineFailure, "x: answered %d: %s", resp.StatusCode, b)
		}}
}

func TestBearer(t *testing.T) {
	if got := Bearer(""); got != "" {
		t.Errorf("Bearer(\"\") = %q", got)
	}
	if got := Bearer("k"); got != "Bearer k" {
		t.Errorf("Bearer(k) = %q", got)
	}
}

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no auth", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, "body")
		default:
			http.Error(w, "missing", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c := newClient(t, time.Minute, "")
	b, err := c.Get(t.Context(), srv.URL+"/ok", "")
	if err != nil || string(b) != "body" {
		t.Fatalf("Get /ok = %q, %v", b, err)
	}
	_, err = c.Get(t.Context(), srv.URL+"/gone", "")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound || engine.KindOf(err) != engine.KindEngineFailure ||
		!strings.Contains(err.Error(), "answered 404") {
		t.Fatalf("Get /gone = %v", err)
	}
}

func TestGetUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = newClient(t, time.Minute, "").Get(t.Context(), "http://"+addr+"/p", "/named")
	if engine.KindOf(err) != engine.KindPoolUnavailable || !strings.Contains(err.Error(), ": x: GET /named: ") {
		t.Fatalf("err = %v (%s)", err, engine.KindOf(err))
	}
	var se *StatusError
	if errors.As(err, &se) {
		t.Fatalf("an unreachable server is not a status error: %v", err)
	}
}

func TestStreamError(t *testing.T) {
	for _, tt := range []struct {
		name, eof string
		err       error
		kind      engine.Kind
		msg       string
	}{
		{"too long", "", ErrEventTooLong, engine.KindProtocol, "x: stream event longer than 8 MiB"},
		{"eof with a message", "stream ended early", io.EOF, engine.KindWorkerReset, "x: stream ended early"},
		{"eof without one", "", io.EOF, engine.KindWorkerReset, "x: stream broken: EOF"},
		{"cut", "stream ended early", io.ErrUnexpectedEOF, engine.KindWorkerReset, "x: stream broken: unexpected EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := newClient(t, time.Minute, tt.eof).Begin(t.Context())
			defer q.End()
			err := q.StreamError(tt.err)
			if engine.KindOf(err) != tt.kind || !strings.HasSuffix(err.Error(), ": "+tt.msg) {
				t.Fatalf("StreamError(%v) = %v (%s), want %q (%s)", tt.err, err, engine.KindOf(err), tt.msg, tt.kind)
			}
		})
	}
}

func TestCallEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	q := newClient(t, time.Minute, "").Begin(ctx)
	defer q.End()
	cancel()
	if err := q.StreamError(io.EOF); !errors.Is(err, context.Canceled) {
		t.Fatalf("StreamError after the caller's cancel = %v", err)
	}
	if err := q.TransportError("send /p", io.EOF); !errors.Is(err, context.Canceled) {
		t.Fatalf("TransportError after the caller's cancel = %v", err)
	}
	if q.TimedOut() {
		t.Fatal("a cancelled call is not timed out")
	}
}

// TestIdle: a server that answers the head and then nothing ends the stream read with a decode
// timeout once the idle timer fires.
func TestIdle(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c := newClient(t, 50*time.Millisecond, "")
	q := c.Begin(t.Context())
	defer q.End()
	resp, err := q.PostStream(srv.URL+"/s", "/s", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	q.Rearm()
	_, _, err = NewEventReader(resp.Body).Next()
	q.Pause()
	if !q.TimedOut() {
		t.Fatalf("read ended by %v before the idle timer", err)
	}
	err = q.StreamError(err)
	if engine.KindOf(err) != engine.KindDecodeTimeout || !strings.HasSuffix(err.Error(), ": x: no stream frame within 50ms") {
		t.Fatalf("err = %v (%s)", err, engine.KindOf(err))
	}
}

func TestPostStreamStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Accept") != "text/event-stream" ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "bad request "+r.Method, http.StatusBadRequest)
			return
		}
		http.Error(w, "busy", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	q := newClient(t, time.Minute, "").Begin(t.Context())
	defer q.End()
	resp, err := q.PostStream(srv.URL+"/s", "/s", []byte(`{}`))
	if resp != nil {
		resp.Body.Close()
	}
	if resp != nil || err == nil || !strings.HasSuffix(err.Error(), ": x: answered 429: busy\n") {
		t.Fatalf("PostStream = %v, %v", resp, err)
	}
}

func TestHealth(t *testing.T) {
	answered := &StatusError{Code: http.StatusServiceUnavailable, Err: errors.New("x: engine answered 503: loading")}
	for _, tt := range []struct {
		name string
		err  error
		want engine.Health
	}{
		{"ok", nil, engine.Health{Live: true, Ready: true}},
		{"answered", answered, engine.Health{Live: true, Detail: answered.Error()}},
		{"wrapped answer", fmt.Errorf("w: %w", answered), engine.Health{Live: true, Detail: "w: " + answered.Error()}},
		{"unreachable", errors.New("dial"), engine.Health{Detail: "dial"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Health(t.Context(), tt.err)
			if err != nil || got != tt.want {
				t.Fatalf("Health(%v) = %+v, %v; want %+v", tt.err, got, err, tt.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Health(ctx, answered); !errors.Is(err, context.Canceled) {
		t.Fatalf("Health after cancel: %v", err)
	}
}
