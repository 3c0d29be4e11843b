package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newSim(t *testing.T, opts sim.Options) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(sim.NewHandler(opts))
	t.Cleanup(ts.Close)
	return ts
}

func TestRunAgainstEngineSim(t *testing.T) {
	tests := []struct {
		name   string
		target Target
		noStr  bool
		rate   float64
	}{
		{"llamacpp stream closed", TargetLlamaCppStream, false, 0},
		{"openai stream closed", TargetOpenAIStream, false, 0},
		{"llamacpp plain", TargetLlamaCppStream, true, 0},
		{"openai plain", TargetOpenAIStream, true, 0},
		{"llamacpp stream open", TargetLlamaCppStream, false, 5000},
		{"openai stream open", TargetOpenAIStream, false, 5000},
	}
	const requests, tokens = 12, 4
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newSim(t, sim.Options{})
			res, err := Run(t.Context(), Options{
				URL: ts.URL, Target: tt.target, NoStream: tt.noStr, Rate: tt.rate,
				Concurrency: requests, Requests: requests, Duration: time.Minute, Tokens: tokens,
				Logger: testLogger(t), Label: "test",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != requests || res.Succeeded != requests || res.Failed != 0 || len(res.Errors) != 0 {
				t.Fatalf("counts: %+v", res)
			}
			if res.StoppedBy != "requests" || res.Label != "test" || res.Schema != SchemaVersion {
				t.Fatalf("header: %+v", res)
			}
			if res.TokensReceived != requests*tokens || res.StampedTokens != requests*tokens || res.UnstampedTokens != 0 {
				t.Fatalf("tokens: received %d stamped %d unstamped %d", res.TokensReceived, res.StampedTokens, res.UnstampedTokens)
			}
			if res.LatencyMs.Count != requests || res.LatencyMs.Max <= 0 || res.ThroughputRPS <= 0 || res.WallS <= 0 {
				t.Fatalf("latency: %+v, rps %v", res.LatencyMs, res.ThroughputRPS)
			}
			if tt.noStr {
				if res.Stream || res.TTFTMs != nil || res.TokenLatencyMs != nil {
					t.Fatalf("non-stream run has stream figures: %+v", res)
				}
				return
			}
			if !res.Stream || res.TTFTMs == nil || res.TTFTMs.Count != requests || res.TTFTMs.Max <= 0 {
				t.Fatalf("ttft: %+v", res.TTFTMs)
			}
			if res.TokenLatencyMs == nil || res.TokenLatencyMs.Count != requests*tokens || res.TokensPerS <= 0 {
				t.Fatalf("token latency: %+v, tokens/s %v", res.TokenLatencyMs, res.TokensPerS)
			}
			if res.TTFTMs.P50 > res.LatencyMs.Max {
				t.Fatalf("ttft %v beyond the longest stream %v", res.TTFTMs.P50, res.LatencyMs.Max)
			}
		})
	}
}

func TestRunSendsAuthAndBody(t *testing.T) {
	tests := []struct {
		target   Target
		path     string
		wantBody map[string]any
	}{
		{TargetLlamaCppStream, "/completion", map[string]any{"prompt": "p", "n_predict": 3.0, "stream": true, "cache_prompt": false}},
		{TargetOpenAIStream, "/v1/completions", map[string]any{"model": "m", "prompt": "p", "max_tokens": 3.0, "stream": true}},
	}
	for _, tt := range tests {
		t.Run(string(tt.target), func(t *testing.T) {
			simH := sim.NewHandler(sim.Options{})
			var seen atomic.Int64
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				var got map[string]any
				if err := json.Unmarshal(b, &got); err != nil || fmt.Sprint(got) != fmt.Sprint(tt.wantBody) {
					t.Errorf("body %s, want %v", b, tt.wantBody)
				}
				if r.URL.Path != tt.path || r.Header.Get("Authorization") != "Bearer sk-x" ||
					r.Header.Get("Accept") != "text/event-stream" {
					t.Errorf("path %s headers %v", r.URL.Path, r.Header)
				}
				seen.Add(1)
				r.Body = io.NopCloser(bytes.NewReader(b))
				simH.ServeHTTP(w, r)
			}))
			defer ts.Close()
			res, err := Run(t.Context(), Options{URL: ts.URL + "/", Target: tt.target, Requests: 2, Concurrency: 1,
				Tokens: 3, Model: "m", Prompt: "p", APIKey: "sk-x", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Succeeded != 2 || seen.Load() != 2 {
				t.Fatalf("succeeded %d, seen %d", res.Succeeded, seen.Load())
			}
		})
	}
}

// fakeOrchd is a minimal orchestratord data plane: it validates TaskRequests and serves
// scripted SSE streams.
type fakeOrchd struct {
	t *testing.T
	// admitStatus returns the status for the n-th admission (from 0).
	admitStatus func(n int64) int
	// stream writes the stream of the n-th admitted task; nil for a 404.
	stream func(w http.ResponseWriter, flush func())
	// holdOpen keeps each stream open after stream returned, until the client goes.
	holdOpen bool

	admits atomic.Int64
	mu     sync.Mutex
	known  map[string]bool
}

func newFakeOrchd(t *testing.T, f *fakeOrchd) *httptest.Server {
	f.t = t
	f.known = map[string]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tasks", f.postTask)
	mux.HandleFunc("GET /v1/tasks/{id}/stream", f.getStream)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func (f *fakeOrchd) postTask(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-API-Key") != "k" {
		http.Error(w, `{"code":"UNAUTHORIZED"}`, http.StatusUnauthorized)
		return
	}
	var req struct {
		TaskID     string `json:"task_id"`
		SessionID  string `json:"session_id"`
		Workload   string `json:"workload"`
		ModelRef   string `json:"model_ref"`
		Engine     string `json:"engine"`
		Ctx        int    `json:"ctx"`
		Priority   string `json:"priority"`
		Prompt     string `json:"prompt"`
		MaxTokens  int    `json:"max_tokens"`
		DeadlineMs int64  `json:"deadline_ms"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		f.t.Errorf("task body: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	_, e1 := uuid.Parse(req.TaskID)
	_, e2 := uuid.Parse(req.SessionID)
	if e1 != nil || e2 != nil || req.Workload != "completion" || req.ModelRef != "tiny" || req.Engine != "llamacpp" ||
		req.Ctx != DefaultCtx || req.Priority != "interactive" || req.Prompt == "" || req.MaxTokens < 1 || req.DeadlineMs != DefaultDeadlineMs {
		f.t.Errorf("task request %+v", req)
	}
	status := f.admitStatus(f.admits.Add(1) - 1)
	if status != http.StatusAccepted {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"code":"ADMISSION_REJECT","message":"full","retriable":true}`)
		return
	}
	f.mu.Lock()
	f.known[req.TaskID] = true
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"task_id": req.TaskID, "queue_position": 0, "predicted_start_ms": 0, "backoff_ms": 0,
		"streams": map[string]string{
			"sse":         "/v1/tasks/" + req.TaskID + "/stream",
			"sse_verbose": "/v1/tasks/" + req.TaskID + "/stream?verbose=true",
		},
	})
}

func (f *fakeOrchd) getStream(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	known := f.known[r.PathValue("id")]
	f.mu.Unlock()
	if !known || f.stream == nil || r.Header.Get("X-API-Key") != "k" {
		http.Error(w, `{"code":"NOT_FOUND"}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	f.stream(w, w.(http.Flusher).Flush)
	if f.holdOpen {
		<-r.Context().Done()
	}
}

// sseFrames writes orchd frames; "token" frames get a fresh simulator stamp.
func sseFrames(frames ...string) func(w http.ResponseWriter, flush func()) {
	return func(w http.ResponseWriter, flush func()) {
		for i, fr := range frames {
			ev, data, _ := strings.Cut(fr, " ")
			if ev == ":" {
				fmt.Fprintf(w, ": %s\n\n", data)
			} else {
				if ev == "token" && data == "" {
					data = `{"t":"` + string(sim.AppendStamp(nil, time.Now())) + `","i":0}`
				}
				fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", i, ev, data)
			}
			flush()
		}
	}
}

func TestRunOrchdStream(t *testing.T) {
	started := `started {"queue_position":0,"predicted_start_ms":0}`
	end := `end {"tokens_out":3,"decode_ms":1,"decode_time_ms":1}`
	tests := []struct {
		name       string
		stream     func(http.ResponseWriter, func())
		holdOpen   bool
		admit      int
		wantClass  string
		wantTokens int64
	}{
		{"ok", sseFrames(started, ": keep-alive", "token", "token", `metrics {"queue_depth":0,"on_time_probability":1,"kv_warmth":true}`, "token", end), false, http.StatusAccepted, "", 3},
		{"held open after end", sseFrames(started, "token", end), true, http.StatusAccepted, "", 1},
		{"unstamped text", sseFrames(started, `token {"t":" The","i":0}`, `token {"t":"\"q\"","i":1}`, end), false, http.StatusAccepted, "", 2},
		{"error frame", sseFrames(started, "token", `error {"code":"DECODE_TIMEOUT","message":"slow","retriable":true}`), false, http.StatusAccepted, "sse_DECODE_TIMEOUT", 1},
		{"truncated", sseFrames(started, "token"), false, http.StatusAccepted, "truncated", 1},
		{"canceled end", sseFrames(started, `end {"tokens_out":0,"decode_ms":0,"decode_time_ms":0,"canceled":true}`), false, http.StatusAccepted, "sse_canceled", 0},
		{"bad token", sseFrames(started, `token {"i":0}`), false, http.StatusAccepted, "protocol", 0},
		{"stream 404", nil, false, http.StatusAccepted, "stream_http_404", 0},
		{"admission 429", nil, false, http.StatusTooManyRequests, "http_429", 0},
		{"admission 503", nil, false, http.StatusServiceUnavailable, "http_503", 0},
	}
	const requests = 6
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newFakeOrchd(t, &fakeOrchd{
				admitStatus: func(int64) int { return tt.admit },
				stream:      tt.stream,
				holdOpen:    tt.holdOpen,
			})
			res, err := Run(t.Context(), Options{URL: ts.URL, Target: TargetOrchdStream, Requests: requests,
				Concurrency: 3, APIKey: "k", Model: "tiny", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != requests || res.TokensReceived != requests*tt.wantTokens {
				t.Fatalf("requests %d tokens %d", res.Requests, res.TokensReceived)
			}
			if tt.wantClass == "" {
				if res.Succeeded != requests || res.LatencyMs.Count != requests || res.TTFTMs.Count != requests {
					t.Fatalf("result %+v errors %v", res, res.Errors)
				}
				if res.TokenLatencyMs.Count != res.StampedTokens {
					t.Fatalf("token latencies %d for %d stamped tokens", res.TokenLatencyMs.Count, res.StampedTokens)
				}
				return
			}
			if res.Succeeded != 0 || res.Errors[tt.wantClass] != requests || len(res.Errors) != 1 || res.LatencyMs.Count != 0 {
				t.Fatalf("succeeded %d errors %v, want %d %s", res.Succeeded, res.Errors, requests, tt.wantClass)
			}
		})
	}
}

func TestRunOrchdAdmitClasses(t *testing.T) {
	ts := newFakeOrchd(t, &fakeOrchd{admitStatus: func(n int64) int {
		switch n % 4 {
		case 1:
			return http.StatusTooManyRequests
		case 2:
			return http.StatusServiceUnavailable
		}
		return http.StatusAccepted
	}})
	res, err := Run(t.Context(), Options{URL: ts.URL, Target: TargetOrchdAdmit, Requests: 40, Concurrency: 4,
		APIKey: "k", Model: "tiny", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"http_429": 10, "http_503": 10}
	if res.Succeeded != 20 || res.Failed != 20 || fmt.Sprint(res.Errors) != fmt.Sprint(want) || res.LatencyMs.Count != 20 {
		t.Fatalf("succeeded %d failed %d errors %v latency %+v", res.Succeeded, res.Failed, res.Errors, res.LatencyMs)
	}
	if res.TTFTMs != nil || res.TokenLatencyMs != nil || res.Tokens != 1 {
		t.Fatalf("admission run has stream figures: %+v", res)
	}

	// A wrong key is a 401.
	res, err = Run(t.Context(), Options{URL: ts.URL, Target: TargetOrchdAdmit, Requests: 2, Concurrency: 1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors["http_401"] != 2 {
		t.Fatalf("errors %v", res.Errors)
	}
}

// hang is a server whose responses never end until the client goes away.
func hang(t *testing.T) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestRunBounds(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name      string
		ctx       context.Context
		opts      Options
		wantReqs  int64
		wantClass string
		stoppedBy string
	}{
		{"duration and grace abort in-flight", context.Background(),
			Options{Requests: 100, Concurrency: 2, Duration: 20 * time.Millisecond, Grace: 20 * time.Millisecond},
			2, "aborted", "duration"},
		{"per-request timeout", context.Background(),
			Options{Requests: 3, Concurrency: 3, Timeout: 10 * time.Millisecond},
			3, "timeout", "requests"},
		{"canceled before start", canceled,
			Options{Requests: 3, Concurrency: 3},
			0, "", "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := hang(t)
			o := tt.opts
			o.URL, o.Target, o.Logger = ts.URL, TargetLlamaCppStream, testLogger(t)
			res, err := Run(tt.ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != tt.wantReqs || res.Succeeded != 0 || res.StoppedBy != tt.stoppedBy {
				t.Fatalf("requests %d succeeded %d stopped by %s", res.Requests, res.Succeeded, res.StoppedBy)
			}
			if tt.wantClass != "" && (res.Errors[tt.wantClass] != tt.wantReqs || len(res.Errors) != 1) {
				t.Fatalf("errors %v", res.Errors)
			}
		})
	}
}

// TestRunEngineStreamHeldOpenAfterFinalFrame checks a stream whose server does not close it after
// the final frame still counts as a success and does not hold the worker until the timeout.
func TestRunEngineStreamHeldOpenAfterFinalFrame(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"content\":\"%s\",\"stop\":false}\n\n", sim.AppendStamp(nil, time.Now()))
		fmt.Fprint(w, "data: {\"content\":\"\",\"stop\":true}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer ts.Close()
	res, err := Run(t.Context(), Options{URL: ts.URL, Target: TargetLlamaCppStream, Requests: 3, Concurrency: 1,
		Timeout: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded != 3 || res.TokensReceived != 3 || res.StoppedBy != "requests" {
		t.Fatalf("succeeded %d tokens %d errors %v", res.Succeeded, res.TokensReceived, res.Errors)
	}
}

func TestOpenLoopCountsClientOverload(t *testing.T) {
	release := make(chan struct{})
	var ran atomic.Int64
	r := &runner{
		o:      Options{Requests: 5, Concurrency: 1, Rate: 1e6},
		log:    testLogger(t),
		errors: map[string]int64{},
		start:  time.Now(),
	}
	r.exec = func(int, time.Time) {
		r.issued.Add(1)
		ran.Add(1)
		<-release
	}
	done := make(chan struct{})
	go func() {
		r.openLoop(context.Background())
		close(done)
	}()
	waitUntil(t, "five issued requests", func() bool { return r.issued.Load() == 5 })
	close(release)
	recv(t, "the open loop to end", done)
	if ran.Load() != 1 || r.errors["client_overload"] != 4 {
		t.Fatalf("ran %d, errors %v", ran.Load(), r.errors)
	}
}

func TestResultJSONAndSummary(t *testing.T) {
	ts := newSim(t, sim.Options{})
	res, err := Run(t.Context(), Options{URL: ts.URL, Target: TargetOpenAIStream, Requests: 3, Concurrency: 1,
		Tokens: 2, Label: "scenario-a", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Succeeded != 3 || back.TokenLatencyMs == nil || back.TokenLatencyMs.Count != 6 || back.Errors == nil {
		t.Fatalf("round trip %s", b)
	}
	for _, key := range []string{`"schema":1`, `"latency_ms":{`, `"ttft_ms":{`, `"token_latency_ms":{`, `"errors":{}`, `"tokens_per_s":`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	var out strings.Builder
	if err := WriteSummary(&out, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scenario-a (openai-stream)", "3 issued, 3 ok, 0 failed", "latency", "ttft", "token added", "6 received"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// waitLimit only keeps a broken runner from hanging the suite; no assertion depends on how long
// anything takes.
const waitLimit = 30 * time.Second

// waitUntil polls cond until it holds, failing the test after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv receives from ch, failing the test after waitLimit.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("gave up waiting for %s", what)
	}
	var zero T
	return zero
}
