package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// The handlers below simulate llama-server's /completion stream with frames captured from
// the real server (llama.cpp-tools 0.7.0); e2e_test.go runs the same paths against it.

func frameJSON(content string, n int) string {
	c, _ := json.Marshal(content)
	return fmt.Sprintf(`{"index":0,"content":%s,"tokens":[%d],"stop":false,"id_slot":-1,"tokens_predicted":%d,"tokens_evaluated":6}`, c, 400+n, n)
}

func finalJSON(stopType string, predicted, evaluated, cacheN int) string {
	return fmt.Sprintf(`{"index":0,"content":"","tokens":[],"id_slot":0,"stop":true,"model":"tiny.gguf","tokens_predicted":%d,"tokens_evaluated":%d,`+
		`"generation_settings":{"n_predict":12,"stop":[]},"prompt":"<s> Hello","has_new_line":false,"truncated":false,"stop_type":%q,"stopping_word":"",`+
		`"tokens_cached":%d,"timings":{"cache_n":%d,"prompt_n":%d,"prompt_ms":0.65,"predicted_n":%d,"predicted_ms":1.6}}`,
		predicted, evaluated, stopType, evaluated+predicted-1, cacheN, evaluated-cacheN, predicted)
}

// stream writes the SSE headers and then each event line ("data: ..." or "error: ..."),
// flushing after each.
func stream(w http.ResponseWriter, lines ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	for _, l := range lines {
		fmt.Fprintf(w, "%s\n\n", l)
		w.(http.Flusher).Flush()
	}
}

func data(s string) string { return "data: " + s }

// waitGone reads the request body (as llama-server does before it starts the task; Go's
// server notices a dropped connection only after that) and waits until the client goes away.
func waitGone(r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// newReplica returns a Replica for srv with the default client, closing its idle
// connections at the end of the test.
func newReplica(t *testing.T, url string, idle time.Duration) *Replica {
	t.Helper()
	r := New(Options{BaseURL: url + "/", IdleTimeout: idle})
	t.Cleanup(r.client.CloseIdleConnections)
	t.Cleanup(r.conns.CloseIdle)
	return r
}

type collected struct {
	texts []string
}

func (c *collected) emit(tok engine.Token) error {
	if tok.Index != len(c.texts) {
		return fmt.Errorf("token index %d, want %d", tok.Index, len(c.texts))
	}
	c.texts = append(c.texts, string(tok.Text))
	return nil
}

func TestGenerate(t *testing.T) {
	words := []string{" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", " The", " quick"}
	limitFrames := func() []string {
		var l []string
		for i, w := range words {
			l = append(l, data(frameJSON(w, i+1)))
		}
		return append(l, data(finalJSON("limit", 12, 6, 0)))
	}
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		wantTexts []string
		want      engine.Result
	}{
		{
			name:      "limit",
			handler:   func(w http.ResponseWriter, r *http.Request) { stream(w, limitFrames()...) },
			wantTexts: words,
			want:      engine.Result{TokensOut: 12, TokensIn: 6, Stop: engine.StopLimit},
		},
		{
			name: "eos",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)), data(frameJSON(" quick", 2)), data(finalJSON("eos", 3, 6, 5)))
			},
			wantTexts: []string{" The", " quick"},
			want:      engine.Result{TokensOut: 3, TokensIn: 6, TokensCached: 5, Stop: engine.StopEOS},
		},
		{
			// A stop-word candidate is held back (empty content), then released with the next
			// token's text; a UTF-8 sequence split over three tokens sends one frame.
			name: "held text and joined utf-8",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w,
					data(frameJSON(" the", 1)),
					data(frameJSON("", 2)),
					data(frameJSON(" lazy dog", 3)),
					data(frameJSON("€", 6)),
					data(finalJSON("word", 7, 6, 0)))
			},
			wantTexts: []string{" the", "", " lazy dog", "€"},
			want:      engine.Result{TokensOut: 7, TokensIn: 6, Stop: engine.StopWord},
		},
		{
			name: "frames without content or tokens are not tokens",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, ": ping", "event: completion", data(`{"content":"","stop":false}`), data(frameJSON(" The", 1)), "data: [DONE]", data(finalJSON("limit", 1, 6, 0)))
			},
			wantTexts: []string{" The"},
			want:      engine.Result{TokensOut: 1, TokensIn: 6, Stop: engine.StopLimit},
		},
		{
			name: "text in the final frame",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)), data(`{"content":" end","stop":true,"stop_type":"limit","tokens_predicted":2,"tokens_evaluated":3}`))
			},
			wantTexts: []string{" The", " end"},
			want:      engine.Result{TokensOut: 2, TokensIn: 3, Stop: engine.StopLimit},
		},
		{
			name: "final frame without counts",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)), data(frameJSON(" quick", 2)), data(`{"content":"","stop":true,"stop_type":"limit"}`))
			},
			wantTexts: []string{" The", " quick"},
			want:      engine.Result{TokensOut: 2, Stop: engine.StopLimit},
		},
		{
			name: "final frame longer than the read buffer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				long := strings.Repeat("prompt ", 3000)
				stream(w, data(frameJSON(" The", 1)), data(`{"content":"","stop":true,"stop_type":"limit","prompt":"`+long+`","tokens_predicted":1,"tokens_evaluated":6000}`))
			},
			wantTexts: []string{" The"},
			want:      engine.Result{TokensOut: 1, TokensIn: 6000, Stop: engine.StopLimit},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			r := newReplica(t, srv.URL, 0)
			var c collected
			res, err := r.Generate(t.Context(), engine.Request{TaskID: "t1", Prompt: "Hello", MaxTokens: 12}, c.emit)
			if err != nil {
				t.Fatal(err)
			}
			if res != tt.want {
				t.Errorf("result = %+v, want %+v", res, tt.want)
			}
			if strings.Join(c.texts, "|") != strings.Join(tt.wantTexts, "|") {
				t.Errorf("tokens = %q, want %q", c.texts, tt.wantTexts)
			}
		})
	}
}

func TestGenerateRequestBody(t *testing.T) {
	seed := int64(42)
	tests := []struct {
		name string
		req  engine.Request
		want map[string]any
	}{
		{
			name: "sampling left to the engine",
			req:  engine.Request{Prompt: "Hi", MaxTokens: 7, Ctx: 100},
			want: map[string]any{"prompt": "Hi", "n_predict": 7.0, "stream": true, "cache_prompt": true},
		},
		{
			name: "seed",
			req:  engine.Request{Prompt: "Hi", MaxTokens: 7, Seed: &seed},
			want: map[string]any{"prompt": "Hi", "n_predict": 7.0, "stream": true, "cache_prompt": true, "seed": 42.0},
		},
		{
			name: "deterministic",
			req:  engine.Request{Prompt: "Hi", MaxTokens: 1, Deterministic: true, Seed: &seed},
			want: map[string]any{"prompt": "Hi", "n_predict": 1.0, "stream": true, "cache_prompt": true, "seed": 42.0, "temperature": 0.0, "top_k": 1.0, "top_p": 1.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]any
			var method, path, ctype string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				method, path, ctype = r.Method, r.URL.Path, r.Header.Get("Content-Type")
				if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				stream(w, data(finalJSON("limit", 0, 2, 0)))
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, 0)
			if _, err := r.Generate(t.Context(), tt.req, func(engine.Token) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if method != http.MethodPost || path != "/completion" || ctype != "application/json" {
				t.Errorf("request %s %s (%s)", method, path, ctype)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("body = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGenerateErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		idle    time.Duration
		kind    engine.Kind
		msg     string // part of the error text
		tokens  int    // tokens emitted before the error (-1: not checked, it depends on timing)
	}{
		{
			name: "503 loading",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"error":{"message":"Loading model","type":"unavailable_error","code":503}}`)
			},
			kind: engine.KindPoolUnavailable, msg: "Loading model",
		},
		{
			name: "400 with the engine's message",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"error":{"code":400,"message":"request (1002 tokens) exceeds the available context size (256 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":1002,"n_ctx":256}}`)
			},
			kind: engine.KindInvalidRequest, msg: "exceeds the available context size",
		},
		{
			name: "429 busy",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, `{"error":{"code":429,"message":"busy","type":"rate_limit_error"}}`)
			},
			kind: engine.KindOverload, msg: "busy",
		},
		{
			name: "401 wrong key",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}`)
			},
			kind: engine.KindPoolUnavailable, msg: "Invalid API Key",
		},
		{
			name:    "404 plain text",
			handler: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "File Not Found", http.StatusNotFound) },
			kind:    engine.KindInvalidRequest, msg: "File Not Found",
		},
		{
			name: "500",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, `{"error":{"code":500,"message":"boom","type":"server_error"}}`)
			},
			kind: engine.KindEngineFailure, msg: "boom",
		},
		{
			name: "not a stream",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"content":"x","stop":true}`)
			},
			kind: engine.KindProtocol, msg: "text/event-stream",
		},
		{
			name: "connection dropped mid-stream",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)), data(frameJSON(" quick", 2)))
				panic(http.ErrAbortHandler) // the server closes the connection, as a killed engine would
			},
			kind: engine.KindWorkerReset, tokens: 2,
		},
		{
			name:    "stream ends before the final frame",
			handler: func(w http.ResponseWriter, r *http.Request) { stream(w, data(frameJSON(" The", 1))) },
			kind:    engine.KindWorkerReset, msg: "ended before the final frame", tokens: 1,
		},
		{
			name: "no frame within the idle timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)))
				waitGone(r)
			},
			idle: 20 * time.Millisecond,
			kind: engine.KindDecodeTimeout, tokens: -1,
		},
		{
			name:    "no answer within the idle timeout",
			handler: func(w http.ResponseWriter, r *http.Request) { waitGone(r) },
			idle:    20 * time.Millisecond,
			kind:    engine.KindDecodeTimeout,
		},
		{
			name: "malformed frame",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)), data(`{"content":" quick",`))
			},
			kind: engine.KindProtocol, msg: "malformed stream frame", tokens: 1,
		},
		{
			name: "error event",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(frameJSON(" The", 1)), `error: {"code":500,"message":"decode failed","type":"server_error"}`)
			},
			kind: engine.KindEngineFailure, msg: "decode failed", tokens: 1,
		},
		{
			name: "error frame",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(`{"error":{"code":400,"message":"bad grammar","type":"invalid_request_error"}}`))
			},
			kind: engine.KindInvalidRequest, msg: "bad grammar",
		},
		{
			name: "error frame unavailable",
			handler: func(w http.ResponseWriter, r *http.Request) {
				stream(w, data(`{"error":{"message":"no slot","type":"unavailable_error"}}`))
			},
			kind: engine.KindPoolUnavailable, msg: "no slot",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			r := newReplica(t, srv.URL, tt.idle)
			var c collected
			res, err := r.Generate(t.Context(), engine.Request{Prompt: "Hello", MaxTokens: 12}, c.emit)
			var e *engine.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *engine.Error", err, err)
			}
			if e.Kind != tt.kind {
				t.Errorf("kind = %v, want %v (%v)", e.Kind, tt.kind, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
			if tt.tokens >= 0 && (len(c.texts) != tt.tokens || res.TokensOut != tt.tokens) {
				t.Errorf("emitted %d tokens, TokensOut %d, want %d", len(c.texts), res.TokensOut, tt.tokens)
			}
		})
	}
}

func TestGenerateConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := newReplica(t, "http://"+addr, 0)
	_, err = r.Generate(t.Context(), engine.Request{Prompt: "x", MaxTokens: 1}, func(engine.Token) error { return nil })
	if k := engine.KindOf(err); k != engine.KindPoolUnavailable {
		t.Errorf("kind = %v (%v), want POOL_UNAVAILABLE", k, err)
	}
}

func TestGenerateRejectsBadRequestLocally(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	r := newReplica(t, srv.URL, 0)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		req  engine.Request
		is   func(error) bool
	}{
		{"zero max tokens", t.Context(), engine.Request{Prompt: "x"}, func(err error) bool { return engine.KindOf(err) == engine.KindInvalidRequest }},
		{"context already done", cancelled, engine.Request{Prompt: "x", MaxTokens: 1}, func(err error) bool { return errors.Is(err, context.Canceled) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Generate(tt.ctx, tt.req, func(engine.Token) error { return nil })
			if !tt.is(err) {
				t.Errorf("err = %v", err)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("engine called %d times", n)
	}
}

// TestGenerateStopsEngineRequest checks that cancelling ctx or failing emit mid-stream
// aborts the HTTP request at once: the engine's request context ends (for llama-server: the
// connection drops and the slot is freed).
func TestGenerateStopsEngineRequest(t *testing.T) {
	errStop := errors.New("client went away")
	tests := []struct {
		name    string
		emit    func(cancel context.CancelFunc) engine.EmitFunc
		wantErr error
	}{
		{
			name: "ctx cancelled",
			emit: func(cancel context.CancelFunc) engine.EmitFunc {
				return func(tok engine.Token) error {
					if tok.Index == 1 {
						cancel()
					}
					return nil
				}
			},
			wantErr: context.Canceled,
		},
		{
			name: "emit fails",
			emit: func(context.CancelFunc) engine.EmitFunc {
				return func(tok engine.Token) error {
					if tok.Index == 1 {
						return errStop
					}
					return nil
				}
			},
			wantErr: errStop,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// Five frames in one write: the client has them all buffered when it stops
				// after the second.
				var frames []string
				for i, w := range []string{" The", " quick", " brown", " fox", " jumps"} {
					frames = append(frames, data(frameJSON(w, i+1))+"\n")
				}
				stream(w, strings.Join(frames, "\n"))
				waitGone(r) // a long generation: ends only when the client goes away
				close(gone)
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, time.Hour)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			res, err := r.Generate(ctx, engine.Request{Prompt: "x", MaxTokens: 4000}, tt.emit(cancel))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if errors.Is(tt.wantErr, context.Canceled) && !errors.Is(err, context.Canceled) {
				t.Errorf("err = %#v, want ctx.Err() itself", err)
			}
			if res.TokensOut != 2 && errors.Is(tt.wantErr, context.Canceled) || res.TokensOut != 1 && errors.Is(tt.wantErr, errStop) {
				t.Errorf("TokensOut = %d: tokens emitted after the stop", res.TokensOut)
			}
			select {
			case <-gone:
			case <-time.After(10 * time.Second): // a bound on a hang, not a timing assertion
				t.Fatal("the engine's request context was not cancelled")
			}
		})
	}
}

// TestGenerateConnections checks the connections generations use: one kept connection with a
// server that keeps them; with a server that closes the connection after each stream without
// saying so (llama-server 0.7.0: a naively pooled connection failed the next request with
// "Post .../completion": EOF), every generation still succeeds, each on a connection of its
// own once the close is detected (asking "Connection: close" from then on).
func TestGenerateConnections(t *testing.T) {
	tests := []struct {
		name      string
		closes    bool
		wantConns int32
		wantClose int32
	}{
		{name: "server keeps connections", wantConns: 1},
		{name: "server closes streamed connections", closes: true, wantConns: 4, wantClose: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var conns, closeAsked atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Close {
					closeAsked.Add(1)
				}
				stream(w, data(frameJSON(" The", 1)), data(finalJSON("limit", 1, 6, 0)))
			}))
			srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
				switch {
				case s == http.StateNew:
					conns.Add(1)
				case s == http.StateIdle && tc.closes:
					_ = c.Close()
				}
			}
			srv.Start()
			defer srv.Close()
			var logs bytes.Buffer // written by the generations' goroutine (this one) only
			r := New(Options{BaseURL: srv.URL + "/", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			t.Cleanup(r.client.CloseIdleConnections)
			t.Cleanup(r.conns.CloseIdle)
			for i := range 4 {
				var c collected
				if _, err := r.Generate(t.Context(), engine.Request{Prompt: "x", MaxTokens: 1}, c.emit); err != nil {
					t.Fatalf("generation %d: %v", i, err)
				}
				if got := strings.Join(c.texts, ""); got != " The" {
					t.Fatalf("generation %d: text %q", i, got)
				}
			}
			if n, m := conns.Load(), closeAsked.Load(); n != tc.wantConns || m != tc.wantClose {
				t.Errorf("%d connections for 4 generations, %d asked to close; want %d, %d", n, m, tc.wantConns, tc.wantClose)
			}
			// The replica's logger hears of the fallback to a connection per generation.
			if got := strings.Contains(logs.String(), "engine connections: one per generation"); got != tc.closes {
				t.Errorf("fallback logged: %v, want %v; log:\n%s", got, tc.closes, logs.String())
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    engine.Health
	}{
		{
			name: "ok",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"status":"ok"}`)
			},
			want: engine.Health{Live: true, Ready: true},
		},
		{
			name: "loading",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"error":{"message":"Loading model","type":"unavailable_error","code":503}}`)
			},
			want: engine.Health{Live: true, Detail: "Loading model"},
		},
		{
			name: "other status",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, `{"error":{"message":"broken","code":500}}`)
			},
			want: engine.Health{Live: true, Detail: "health answered 500: broken"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var path string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path = r.URL.Path
				tt.handler(w, r)
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, 0)
			h, err := r.Health(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.want {
				t.Errorf("health = %+v, want %+v", h, tt.want)
			}
			if path != "/health" {
				t.Errorf("path = %q", path)
			}
		})
	}
}

func TestHealthUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := newReplica(t, "http://"+addr, 0)
	h, err := r.Health(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if h.Live || h.Ready || h.Detail == "" {
		t.Errorf("health = %+v, want not live with a detail", h)
	}

	t.Run("no answer", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { waitGone(r) }))
		defer srv.Close()
		r := newReplica(t, srv.URL, 20*time.Millisecond)
		h, err := r.Health(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if h.Live {
			t.Errorf("health = %+v, want not live", h)
		}
	})
	t.Run("ctx done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := r.Health(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestProps(t *testing.T) {
	// Trimmed from llama-server 0.7.0's /props with -np 4 -c 4096.
	const body = `{"default_generation_settings":{"params":{"seed":4294967295,"n_predict":-1},"n_ctx":1024},"total_slots":4,"model_alias":"tiny.gguf","model_path":"/m/tiny.gguf","build_info":"b11669-Debian","is_sleeping":false}`
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    Props
		kind    engine.Kind
		wantErr bool
	}{
		{
			name:    "ok",
			handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) },
			want:    Props{TotalSlots: 4, NCtx: 1024, BuildInfo: "b11669-Debian", ModelPath: "/m/tiny.gguf"},
		},
		{
			name: "loading",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":{"message":"Loading model","code":503}}`, http.StatusServiceUnavailable)
			},
			kind: engine.KindPoolUnavailable, wantErr: true,
		},
		{
			name:    "malformed",
			handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"total_slots":`) },
			kind:    engine.KindProtocol, wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/props" {
					http.NotFound(w, r)
					return
				}
				tt.handler(w, r)
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, 0)
			p, err := r.Props(t.Context())
			if tt.wantErr {
				if k := engine.KindOf(err); err == nil || k != tt.kind {
					t.Fatalf("err = %v (kind %v), want kind %v", err, k, tt.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p != tt.want {
				t.Errorf("props = %+v, want %+v", p, tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	r := New(Options{BaseURL: "http://127.0.0.1:1///"})
	if r.base != "http://127.0.0.1:1" || r.idle != DefaultIdleTimeout || r.client == nil || r.log == nil {
		t.Errorf("defaults: base=%q idle=%v client=%v log=%v", r.base, r.idle, r.client, r.log)
	}
	tr, ok := r.client.Transport.(*http.Transport)
	if !ok || tr.MaxIdleConnsPerHost < 256 || r.client.Timeout != 0 || tr.Proxy != nil {
		t.Errorf("default transport: %+v, client timeout %v", tr, r.client.Timeout)
	}
}

// BenchmarkGenerate measures the adapter's per-token cost over loopback HTTP against a
// simulated engine that writes 200 frames as fast as it can.
func BenchmarkGenerate(b *testing.B) {
	var payload strings.Builder
	for i := range 200 {
		fmt.Fprintf(&payload, "data: %s\n\n", frameJSON(" quick", i+1))
	}
	fmt.Fprintf(&payload, "data: %s\n\n", finalJSON("limit", 200, 6, 0))
	body := payload.String()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, body)
	}))
	defer srv.Close()
	r := New(Options{BaseURL: srv.URL})
	defer r.client.CloseIdleConnections()
	emit := func(engine.Token) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Generate(b.Context(), engine.Request{Prompt: "x", MaxTokens: 200}, emit); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*200), "ns/token")
}

// A relayed token costs the adapter no allocation: the token's text is handed to emit as a
// view into the stream's read buffer (or the decoder's scratch, for escaped text), not copied
// into a string. The allocations of a generation (request, connection, response head) do not
// grow with its length: 200 more frames, escaped and plain, cost none.
func TestGenerateAllocatesNothingPerToken(t *testing.T) {
	bodies := map[int]string{}
	for _, n := range []int{10, 210} {
		var b strings.Builder
		for i := range n {
			text := " plain"
			if i%2 == 1 {
				text = " \"quoted\"\n" // unescaped in the decoder's scratch
			}
			fmt.Fprintf(&b, "data: %s\n\n", frameJSON(text, i+1))
		}
		fmt.Fprintf(&b, "data: %s\n\n", finalJSON("limit", n, 6, 0))
		bodies[n] = b.String()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			NPredict int `json:"n_predict"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body := bodies[req.NPredict]
		w.Header().Set("Content-Type", "text/event-stream")
		// Not chunked: the server's chunk headers (fmt) would allocate per chunk.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, 5*time.Second)
	var got int
	emit := func(tok engine.Token) error {
		got += len(tok.Text)
		return nil
	}
	allocs := func(n int) float64 {
		return testing.AllocsPerRun(20, func() {
			if _, err := r.Generate(context.Background(), engine.Request{Prompt: "x", MaxTokens: n}, emit); err != nil {
				t.Fatal(err)
			}
		})
	}
	short, long := allocs(10), allocs(210)
	if got == 0 {
		t.Fatal("no token text reached emit")
	}
	// A string per token would add 200; a few allocations of slack for the server's side.
	if perToken := (long - short) / 200; perToken > 0.02 {
		t.Errorf("%.0f allocations for 10 tokens, %.0f for 210: %.2f per token, want 0", short, long, perToken)
	}
}
