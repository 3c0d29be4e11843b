package sdk

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// idleDaemon counts the connections of one task's stream and the Last-Event-ID of each.
type idleDaemon struct {
	conns   atomic.Int32
	mu      sync.Mutex
	resumed []string // Last-Event-ID of each connection
}

func frameOf(id int, event, data string) string {
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", id, event, data)
}

func send(w http.ResponseWriter, s string) {
	_, _ = w.Write([]byte(s))
	w.(http.Flusher).Flush()
}

// collect iterates a stream to its end and returns the events' kinds and the error, if any.
func collect(t *testing.T, c *Client, each func(Event)) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var kinds []string
	for ev, err := range c.Stream(ctx, uuid.New(), KeepTask()) {
		if err != nil {
			return kinds, err
		}
		kinds = append(kinds, fmt.Sprintf("%T", ev))
		if each != nil {
			each(ev)
		}
	}
	return kinds, nil
}

// TestStreamIdleTimeout: a stream that goes silent without closing (a peer gone without FIN
// or RST) is cut after StreamIdleTimeout and resumed with Last-Event-ID; heartbeats keep a
// quiet stream open, and the caller's own time with an event does not count as silence.
func TestStreamIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	start := frameOf(0, "started", `{"queue_position":0,"predicted_start_ms":0}`)
	token := frameOf(1, "token", `{"t":"a","i":0}`)
	end := frameOf(2, "end", `{"tokens_out":1,"decode_ms":1}`)
	tests := []struct {
		name        string
		script      func(n int32, w http.ResponseWriter, r *http.Request) // what the n-th connection (from 1) writes
		slow        time.Duration                                         // the caller's time with each event
		wantConns   int32
		wantResumed []string
	}{
		{
			name: "silent connection is cut and resumed",
			script: func(n int32, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					send(w, start+token)
					<-r.Context().Done() // holds the connection, says nothing
					return
				}
				send(w, end)
			},
			wantConns: 2, wantResumed: []string{"", "1"},
		},
		{
			name: "heartbeats keep it open",
			script: func(_ int32, w http.ResponseWriter, _ *http.Request) {
				send(w, start+token)
				for range 3 * idle / (10 * time.Millisecond) { // three idle timeouts of heartbeats
					time.Sleep(10 * time.Millisecond)
					send(w, ": keep-alive\n\n")
				}
				send(w, end)
			},
			wantConns: 1, wantResumed: []string{""},
		},
		{
			name: "a slow caller is no idle stream",
			script: func(_ int32, w http.ResponseWriter, _ *http.Request) {
				send(w, start+token)
				time.Sleep(idle / 6) // the end comes while the caller is busy with the first events
				send(w, end)
			},
			slow: 2 * idle, wantConns: 1, wantResumed: []string{""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &idleDaemon{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := d.conns.Add(1)
				d.mu.Lock()
				d.resumed = append(d.resumed, r.Header.Get("Last-Event-ID"))
				d.mu.Unlock()
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				tc.script(n, w, r)
			}))
			t.Cleanup(srv.Close)
			c, err := New(srv.URL, Options{StreamIdleTimeout: idle, Sleep: func(context.Context, time.Duration) error { return nil }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			kinds, err := collect(t, c, func(Event) { time.Sleep(tc.slow) })
			if err != nil {
				t.Fatalf("stream: %v after %v", err, kinds)
			}
			if want := []string{"*sdk.Started", "*sdk.Token", "*sdk.End"}; fmt.Sprint(kinds) != fmt.Sprint(want) {
				t.Fatalf("events %v, want %v", kinds, want)
			}
			d.mu.Lock()
			resumed := fmt.Sprint(d.resumed)
			d.mu.Unlock()
			if d.conns.Load() != tc.wantConns || resumed != fmt.Sprint(tc.wantResumed) {
				t.Fatalf("%d connections with Last-Event-ID %s, want %d with %v", d.conns.Load(), resumed, tc.wantConns, tc.wantResumed)
			}
		})
	}
}
