package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

const testKey = "e2e-test-key-0123456789"

// daemon is a whole orchestratord running on loopback with a managed llama-server pool.
type daemon struct {
	url    string
	c      *client.ClientWithResponses
	stop   func()
	config *config.Config
	logs   *syncBuffer // everything the daemon logged (debug level)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// startDaemon runs the app with a managed llama.cpp pool (1 slot) on a model written into
// stateDir. policy is the admission policy; capacity the queue capacity.
func startDaemon(t *testing.T, stateDir, policy string, capacity int) *daemon {
	t.Helper()
	bin, ok := llamatest.ServerPath()
	if !ok {
		t.Skip("llama-server not found: set ORCHD_LLAMA_SERVER, put it on PATH or run make engine")
	}
	model := filepath.Join(stateDir, "models", "med.gguf")
	if _, err := os.Stat(model); err != nil {
		if err := os.MkdirAll(filepath.Dir(model), 0o700); err != nil {
			t.Fatal(err)
		}
		// A model big enough (~370 tokens/s on one core) that a 4000-token task holds its slot
		// for seconds, which the capacity tests need.
		opts := gguf.DefaultOptions()
		opts.Embd, opts.Layers, opts.FF, opts.Heads = 256, 4, 512, 4
		if err := gguf.WriteFile(model, opts); err != nil {
			t.Fatal(err)
		}
	}
	yaml := fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
llama_server: %s
admission: {capacity: %d, policy: %s}
shutdown_grace: 2s
pools:
  - id: default
    engine: llamacpp
    model_ref: models/med.gguf
    ctx_max: 4096
    slots: 1
    replicas:
      - managed: {args: ["-t", "1", "-tb", "1"]}
`, stateDir, bin, capacity, policy)
	return startDaemonYAML(t, yaml)
}

// startDaemonYAML runs the app with the given configuration and waits for its pool "default"
// to be ready.
func startDaemonYAML(t *testing.T, yaml string) *daemon {
	t.Helper()
	cfg := loadConfig(t, t.TempDir(), yaml)
	logs := &syncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := app.New(cfg, app.Options{Logger: log, HealthInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr, stopServe := serveLoopback(t, a, nil)
	url := "http://" + addr
	c, err := client.NewClientWithResponses(url, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-API-Key", testKey)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{url: url, c: c, config: cfg, logs: logs}
	d.stop = func() {
		if err := stopServe(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	// Wait for the managed engine.
	for i := 0; ; i++ {
		r, err := c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err == nil && r.JSON200 != nil && r.JSON200.Ready {
			break
		}
		if i > 300 {
			t.Fatalf("pool never became ready: %v %s", err, r.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

func (d *daemon) submit(t *testing.T, prio client.Priority, maxTokens int32) (uuid.UUID, *client.CreateTaskResponse) {
	t.Helper()
	id := uuid.New()
	prompt := "Once upon a time"
	r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
		TaskId: id, SessionId: uuid.New(), Workload: client.Completion, ModelRef: "med",
		Engine: client.Llamacpp, Ctx: 4096, Priority: prio, Prompt: &prompt, MaxTokens: maxTokens,
		DeadlineMs: 120000,
	})
	if err != nil {
		t.Fatal(err)
	}
	return id, r
}

type frame struct{ event, data string }

// openStream opens a task's SSE stream through the generated client.
func (d *daemon) openStream(t *testing.T, id uuid.UUID) (*http.Response, *bufio.Reader) {
	t.Helper()
	resp, err := d.c.StreamTask(context.Background(), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp, bufio.NewReader(resp.Body)
}

func nextFrame(t *testing.T, br *bufio.Reader) (frame, bool) {
	t.Helper()
	var f frame
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return f, false
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && f.event != "":
			return f, true
		case strings.HasPrefix(line, "event: "):
			f.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			f.data = line[6:]
		}
	}
}

// lastFrame reads a stream to its end and returns its final frame.
func lastFrame(t *testing.T, br *bufio.Reader) frame {
	t.Helper()
	var last frame
	for {
		f, ok := nextFrame(t, br)
		if !ok {
			return last
		}
		last = f
	}
}

func TestEndToEndRealEngine(t *testing.T) {
	state := t.TempDir()
	d := startDaemon(t, state, "reject", 1)

	t.Run("stream exact text", func(t *testing.T) {
		id, r := d.submit(t, client.Interactive, 12)
		if r.StatusCode() != 202 || r.JSON202 == nil {
			t.Fatalf("create: %d %s", r.StatusCode(), r.Body)
		}
		resp, br := d.openStream(t, id)
		defer resp.Body.Close()
		var text strings.Builder
		var last frame
		for {
			f, ok := nextFrame(t, br)
			if !ok {
				break
			}
			last = f
			if f.event == "token" {
				var tok struct{ T string }
				if err := json.Unmarshal([]byte(f.data), &tok); err != nil {
					t.Fatal(err)
				}
				text.WriteString(tok.T)
			}
		}
		if want := " The quick brown fox jumps over the lazy dog. The quick"; text.String() != want {
			t.Fatalf("text = %q, want %q", text.String(), want)
		}
		if last.event != "end" || !strings.Contains(last.data, `"tokens_out":12`) {
			t.Fatalf("last frame = %+v", last)
		}
	})

	t.Run("the managed engine refuses requests without the daemon's key", func(t *testing.T) {
		m := regexp.MustCompile(`engine process launched".*url=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(d.logs.String())
		if m == nil {
			t.Fatalf("no launch record in the daemon's log:\n%s", d.logs.String())
		}
		engineURL := m[1]
		keys, err := filepath.Glob(filepath.Join(state, "engine-keys", "default.0-*.key"))
		if err != nil || len(keys) != 1 {
			t.Fatalf("engine key files: %v %v", keys, err)
		}
		b, err := os.ReadFile(keys[0])
		if err != nil {
			t.Fatal(err)
		}
		key := strings.TrimSpace(string(b))
		if st, _ := os.Stat(keys[0]); st.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
		}
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		for _, tt := range []struct {
			name, auth string
			want       int
		}{
			{"no key", "", http.StatusUnauthorized},
			{"wrong key", "Bearer not-the-key-0123456789", http.StatusUnauthorized},
			{"the daemon's key", "Bearer " + key, http.StatusOK},
		} {
			req, _ := http.NewRequest(http.MethodPost, engineURL+"/completion", strings.NewReader(`{"prompt":"x","n_predict":1}`))
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s: engine answered %d, want %d", tt.name, resp.StatusCode, tt.want)
			}
		}
		// The key is never logged: not by the daemon, not in the engine's log file.
		engineLog, err := os.ReadFile(filepath.Join(state, "logs", "default", "default.0.log"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(d.logs.String(), key) || bytes.Contains(engineLog, []byte(key)) {
			t.Error("the engine's API key appears in a log")
		}
	})

	t.Run("cancel mid-stream frees the slot", func(t *testing.T) {
		id, r := d.submit(t, client.Interactive, 4000)
		if r.StatusCode() != 202 {
			t.Fatalf("create: %d %s", r.StatusCode(), r.Body)
		}
		resp, br := d.openStream(t, id)
		defer resp.Body.Close()
		for n := 0; n < 3; {
			f, ok := nextFrame(t, br)
			if !ok {
				t.Fatal("stream ended early")
			}
			if f.event == "token" {
				n++
			}
		}
		cr, err := d.c.CancelTaskWithResponse(context.Background(), id, nil)
		if err != nil || cr.StatusCode() != 204 {
			t.Fatalf("cancel: %v %d", err, cr.StatusCode())
		}
		var after []frame
		for {
			f, ok := nextFrame(t, br)
			if !ok {
				break
			}
			after = append(after, f)
		}
		end := after[len(after)-1]
		if end.event != "end" || !strings.Contains(end.data, `"canceled":true`) {
			t.Fatalf("after cancel: %+v", after)
		}
		// The single engine slot is free again: a new task runs to completion.
		id2, r2 := d.submit(t, client.Interactive, 5)
		if r2.StatusCode() != 202 || r2.JSON202.QueuePosition != 0 {
			t.Fatalf("second task: %d %s", r2.StatusCode(), r2.Body)
		}
		resp2, br2 := d.openStream(t, id2)
		defer resp2.Body.Close()
		last := lastFrame(t, br2)
		if last.event != "end" || !strings.Contains(last.data, `"tokens_out":5`) {
			t.Fatalf("second task ended with %+v", last)
		}
	})

	t.Run("429 with both headers at capacity", func(t *testing.T) {
		running, _ := d.submit(t, client.Interactive, 4000)
		queued, r := d.submit(t, client.Interactive, 4000)
		if r.StatusCode() != 202 || r.JSON202.QueuePosition != 0 || r.JSON202.PredictedStartMs <= 0 {
			st, _ := d.c.GetTaskWithResponse(context.Background(), running, nil)
			t.Fatalf("queued: %d %s; running task: %s", r.StatusCode(), r.Body, st.Body)
		}
		_, r = d.submit(t, client.Interactive, 10)
		if r.StatusCode() != 429 || r.JSON429 == nil || r.JSON429.Code != client.ADMISSIONREJECT {
			t.Fatalf("third: %d %s", r.StatusCode(), r.Body)
		}
		ra, bo := r.HTTPResponse.Header.Get("Retry-After"), r.HTTPResponse.Header.Get("X-Backoff-Ms")
		var secs, ms int
		if _, err := fmt.Sscan(ra, &secs); err != nil || secs < 1 {
			t.Fatalf("Retry-After = %q", ra)
		}
		if _, err := fmt.Sscan(bo, &ms); err != nil || ms < 1 {
			t.Fatalf("X-Backoff-Ms = %q", bo)
		}
		for _, id := range []uuid.UUID{queued, running} {
			if cr, err := d.c.CancelTaskWithResponse(context.Background(), id, nil); err != nil || cr.StatusCode() != 204 {
				t.Fatalf("cancel: %v", err)
			}
		}
	})

	ar, err := d.c.CreateArtifactWithResponse(context.Background(), nil, client.Artifact{
		Kind: client.Plan, Content: map[string]any{"steps": []any{"a", "b"}, "n": 3},
	})
	if err != nil || ar.JSON201 == nil {
		t.Fatalf("create artifact: %v %s", err, ar.Body)
	}
	d.stop()

	// A restarted daemon on the same state directory still has the artifact; and drop-lru.
	d2 := startDaemon(t, state, "drop-lru", 1)
	gr, err := d2.c.GetArtifactWithResponse(context.Background(), ar.JSON201.Id, nil)
	if err != nil || gr.JSON200 == nil || gr.JSON200.Content["n"] != float64(3) {
		t.Fatalf("artifact after restart: %v %d %s", err, gr.StatusCode(), gr.Body)
	}

	t.Run("drop-lru eviction", func(t *testing.T) {
		running, _ := d2.submit(t, client.Interactive, 4000)
		batch, r := d2.submit(t, client.Batch, 10)
		if r.StatusCode() != 202 {
			t.Fatalf("batch: %d %s", r.StatusCode(), r.Body)
		}
		inter, r := d2.submit(t, client.Interactive, 10)
		if r.StatusCode() != 202 {
			t.Fatalf("interactive: %d %s", r.StatusCode(), r.Body)
		}
		resp, br := d2.openStream(t, batch)
		defer resp.Body.Close()
		last := lastFrame(t, br)
		if last.event != "error" || !strings.Contains(last.data, `"code":"QUEUE_FULL_DROP_LRU"`) {
			t.Fatalf("evicted batch task ended with %+v", last)
		}
		for _, id := range []uuid.UUID{inter, running} {
			_, _ = d2.c.CancelTaskWithResponse(context.Background(), id, nil)
		}
	})

	t.Run("reload switches models, or rolls back", func(t *testing.T) {
		src, err := os.ReadFile(filepath.Join(state, "models", "med.gguf"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "models", "med2.gguf"), src, 0o600); err != nil {
			t.Fatal(err)
		}
		rr, err := d2.c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: "models/missing.gguf"})
		if err != nil || rr.StatusCode() != 400 || rr.JSON400.Code != client.INVALIDPARAMS {
			t.Fatalf("reload to a missing model: %v %d %s", err, rr.StatusCode(), rr.Body)
		}
		// A file llama-server cannot load: the engine exits, the pool rolls back.
		if err := os.WriteFile(filepath.Join(state, "models", "junk.gguf"), []byte("not a model"), 0o600); err != nil {
			t.Fatal(err)
		}
		rr, err = d2.c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: "models/junk.gguf"})
		if err != nil || rr.StatusCode() != 409 || rr.JSON409.Status != client.Rollback || *rr.JSON409.ModelId != "med" ||
			rr.JSON409.Reason == nil || *rr.JSON409.Reason != client.EngineExited {
			t.Fatalf("reload to a junk model: %v %d %s", err, rr.StatusCode(), rr.Body)
		}
		if strings.Contains(string(rr.Body), "not a model") || strings.Contains(string(rr.Body), "gguf_init") {
			t.Fatalf("the rollback leaks engine output: %s", rr.Body)
		}
		rr, err = d2.c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: "models/med2.gguf"})
		if err != nil || rr.StatusCode() != 200 || rr.JSON200.Status != client.Reloaded || *rr.JSON200.ModelId != "med2" {
			t.Fatalf("reload: %v %d %s", err, rr.StatusCode(), rr.Body)
		}
		prompt := "x"
		cr, err := d2.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "med2",
			Engine: client.Llamacpp, Ctx: 1024, Priority: client.Interactive, Prompt: &prompt, MaxTokens: 3, DeadlineMs: 60000,
		})
		if err != nil || cr.StatusCode() != 202 {
			t.Fatalf("task on the reloaded model: %v %d %s", err, cr.StatusCode(), cr.Body)
		}
		resp, br := d2.openStream(t, cr.JSON202.TaskId)
		defer resp.Body.Close()
		last := lastFrame(t, br)
		if last.event != "end" {
			t.Fatalf("task on the reloaded model ended with %+v", last)
		}
	})
}

// TestEndToEndOpenAIProtocol runs a pool with engine: vllm against a real llama-server's
// OpenAI-compatible /v1 (external replica): completion and chat tasks go through admission,
// the OpenAI adapter and SSE, with the tiny model's exact text.
func TestEndToEndOpenAIProtocol(t *testing.T) {
	base := llamatest.Start(t, llamatest.TinyModel(t, gguf.DefaultOptions()), "-np", "2")
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 2s
pools:
  - id: default
    engine: vllm
    model_ref: tiny
    ctx_max: 2048
    slots: 2
    workloads: [completion, chat]
    replicas: [{url: "%s"}]
`, t.TempDir(), base))

	caps, err := d.c.GetCapabilitiesWithResponse(context.Background(), nil)
	if err != nil || caps.JSON200 == nil {
		t.Fatalf("capabilities: %v", err)
	}
	var vllm *client.EngineCapability
	for i, e := range caps.JSON200.Engines {
		if e.Engine == client.Vllm {
			vllm = &caps.JSON200.Engines[i]
		}
	}
	if vllm == nil || vllm.Slots != 2 || !vllm.Managed || len(vllm.SupportedWorkloads) != 2 {
		t.Errorf("capabilities engines = %+v", caps.JSON200.Engines)
	}

	const want = " The quick brown fox jumps over the lazy dog. The quick"
	prompt := "Hello"
	tests := []struct {
		name     string
		workload client.Workload
		prompt   *string
		inputs   *[]string
	}{
		{"completion", client.Completion, &prompt, nil},
		{"chat from a prompt", client.Chat, &prompt, nil},
		{"chat from a conversation", client.Chat, nil, &[]string{"Hi", "Hello, how can I help?", "Tell me about foxes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
				TaskId: uuid.New(), SessionId: uuid.New(), Workload: tt.workload, ModelRef: "tiny",
				Engine: client.Vllm, Ctx: 2048, Priority: client.Interactive, Prompt: tt.prompt, Inputs: tt.inputs,
				MaxTokens: 12, DeadlineMs: 60000, Determinism: ptr(client.Strict),
			})
			if err != nil || r.StatusCode() != 202 {
				t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
			}
			resp, br := d.openStream(t, r.JSON202.TaskId)
			defer resp.Body.Close()
			var text strings.Builder
			var last frame
			tokens := 0
			for {
				f, ok := nextFrame(t, br)
				if !ok {
					break
				}
				last = f
				if f.event == "token" {
					var tok struct{ T string }
					if err := json.Unmarshal([]byte(f.data), &tok); err != nil {
						t.Fatal(err)
					}
					text.WriteString(tok.T)
					tokens++
				}
			}
			if text.String() != want || tokens != 12 {
				t.Errorf("text = %q in %d token frames, want %q in 12", text.String(), tokens, want)
			}
			if last.event != "end" || !strings.Contains(last.data, `"tokens_out":12`) {
				t.Errorf("last frame = %+v", last)
			}
		})
	}

	t.Run("an even conversation is refused", func(t *testing.T) {
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Chat, ModelRef: "tiny",
			Engine: client.Vllm, Ctx: 2048, Priority: client.Interactive, Inputs: &[]string{"Hi", "Hello"},
			MaxTokens: 3, DeadlineMs: 60000,
		})
		if err != nil || r.StatusCode() != 400 || r.JSON400 == nil || r.JSON400.Code != client.INVALIDPARAMS {
			t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
		}
	})

	t.Run("context too long fails the task, the pool stays ready", func(t *testing.T) {
		long := strings.Repeat("hello ", 2000) // ~10,000 tokens; the server's slot has 2,048
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "tiny",
			Engine: client.Vllm, Ctx: 2048, Priority: client.Interactive, Prompt: &long, MaxTokens: 3, DeadlineMs: 60000,
		})
		if err != nil || r.StatusCode() != 202 {
			t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
		}
		resp, br := d.openStream(t, r.JSON202.TaskId)
		defer resp.Body.Close()
		last := lastFrame(t, br)
		if last.event != "error" || !strings.Contains(last.data, `"code":"INVALID_PARAMS"`) || !strings.Contains(last.data, `"retriable":false`) {
			t.Fatalf("last frame = %+v", last)
		}
		h, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err != nil || h.JSON200 == nil || !h.JSON200.Ready {
			t.Fatalf("pool after a request fault: %v %s", err, h.Body)
		}
		mr, err := d.c.GetMetrics(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer mr.Body.Close()
		body, _ := io.ReadAll(mr.Body)
		if !strings.Contains(string(body), `engine_errors_total{engine="vllm",fault="request",kind="invalid_request",pool_id="default"} 1`) {
			t.Errorf("engine_errors_total missing in:\n%s", grepLines(string(body), "engine_errors"))
		}
	})
}

func ptr[T any](v T) *T { return &v }

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
