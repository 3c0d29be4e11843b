//go:build pact

package pact

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
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/google/uuid"
	"github.com/pact-foundation/pact-go/v2/models"
	"github.com/pact-foundation/pact-go/v2/provider"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

// TestProvider replays every interaction of the pact file against the real daemon. Each
// interaction gets a fresh daemon (impl/app, in-process, on its own loopback listener) reached
// through one stable address; its provider state handler starts the daemon with the
// configuration the state needs and then produces the state through the daemon's public API or
// its engine, and tears it down afterwards.
func TestProvider(t *testing.T) {
	pactEnv(t)
	file, err := filepath.Abs(pactPath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no pact to verify (%v): run the consumer tests first (make pact)", err)
	}
	p := newProvider(t)
	err = provider.NewVerifier().VerifyProvider(t, provider.VerifyRequest{
		ProviderBaseURL: p.url,
		Provider:        providerName,
		PactFiles:       []string{file},
		StateHandlers: models.StateHandlers{
			stateReady:                p.state(base, nil),
			stateRateLimited:          p.state(base, submitAs(limitedKey)),
			stateBudgetSpent:          p.state(base, submitAs(budgetKey)),
			stateTask:                 p.state(base, (*daemon).runningTask),
			stateFinishedTask:         p.state(base, (*daemon).finishedTask),
			stateSession:              p.state(base, (*daemon).session),
			stateArtifact:             p.state(base, (*daemon).artifact),
			stateManaged:              p.state(managed, nil),
			stateBodyLimit:            p.state(smallBodies, nil),
			stateArtifactsFull:        p.state(oneArtifact, (*daemon).artifact),
			stateQueueFull:            p.state(base, fillQueue(priorityInteractive)),
			stateQueueFullInteractive: p.state(dropLRU, fillQueue(priorityInteractive)),
			stateDrained:              p.state(base, (*daemon).drain),
			stateReplicaDrained:       p.state(base, (*daemon).drainReplica),
			stateEngineStopped:        p.state(base, (*daemon).stopEngine),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------------------------
// The stable front: the address the verifier talks to, forwarding to the current daemon.

type providerFront struct {
	t   *testing.T
	url string

	mu  sync.Mutex
	cur *daemon
}

func newProvider(t *testing.T) *providerFront {
	p := &providerFront{t: t}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	p.url = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		_ = srv.Close()
		p.swap(nil)
	})
	return p
}

// serve forwards a request to the current daemon unchanged (a reverse proxy that streams).
func (p *providerFront) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	d := p.cur
	p.mu.Unlock()
	if d == nil {
		http.Error(w, "no daemon: the interaction has no provider state", http.StatusBadGateway)
		return
	}
	d.proxy.ServeHTTP(w, r)
}

// swap makes d the current daemon and stops the previous one.
func (p *providerFront) swap(d *daemon) {
	p.mu.Lock()
	old := p.cur
	p.cur = d
	p.mu.Unlock()
	if old != nil {
		old.stop(p.t)
	}
}

// state returns the handler of a provider state: on setup a fresh daemon with cfg, then
// produce (when not nil), whose values the interaction reads with FromProviderState.
func (p *providerFront) state(cfg daemonConfig, produce func(*daemon) (models.ProviderStateResponse, error)) models.StateHandler {
	return func(setup bool, s models.ProviderState) (models.ProviderStateResponse, error) {
		if !setup {
			p.swap(nil)
			return nil, nil
		}
		d, err := startDaemon(p.t, cfg)
		if err != nil {
			return nil, fmt.Errorf("state %q: %w", s.Name, err)
		}
		p.swap(d)
		if produce == nil {
			return nil, nil
		}
		res, err := produce(d)
		if err != nil {
			return nil, fmt.Errorf("state %q: %w", s.Name, err)
		}
		return res, nil
	}
}

// ---------------------------------------------------------------------------------------------
// Daemon configurations.

type daemonConfig struct {
	policy    string
	capacity  int
	bodyLimit int
	// managed: pool default runs llama.cpp's llama-server on the tiny model, started by the
	// daemon (the real engine adapter); otherwise an external replica served by a fake engine.
	managed bool
	// artifactsMaxCount is artifacts.max_count (0: the default).
	artifactsMaxCount int
}

var (
	base        = daemonConfig{policy: "reject", capacity: 2, bodyLimit: 1 << 20}
	dropLRU     = daemonConfig{policy: "drop-lru", capacity: 2, bodyLimit: 1 << 20}
	smallBodies = daemonConfig{policy: "reject", capacity: 2, bodyLimit: 4096}
	managed     = daemonConfig{policy: "reject", capacity: 2, bodyLimit: 1 << 20, managed: true}
	oneArtifact = daemonConfig{policy: "reject", capacity: 2, bodyLimit: 1 << 20, artifactsMaxCount: 1}
)

type daemon struct {
	cfg    daemonConfig
	url    string
	proxy  *httputil.ReverseProxy
	engine *fake.Replica // nil for a managed pool
	hc     *http.Client
	cancel context.CancelFunc
	served chan error
}

func startDaemon(t *testing.T, dc daemonConfig) (*daemon, error) {
	dir, err := os.MkdirTemp("", "orchd-pact-")
	if err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	replica := "      - url: http://127.0.0.1:1\n"
	ov := config.Overrides{APIKeys: apiKey}
	if dc.managed {
		bin, ok := llamatest.ServerPath()
		if !ok {
			return nil, errors.New("no llama-server (set ORCHD_LLAMA_SERVER or run tools/ensure-llama-server.sh)")
		}
		ov.LlamaServer = bin
		if err := os.MkdirAll(filepath.Join(state, "models"), 0o700); err != nil {
			return nil, err
		}
		if err := gguf.WriteFile(filepath.Join(state, modelRef), gguf.DefaultOptions()); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(state, brokenModelRef), []byte("not a GGUF file\n"), 0o600); err != nil {
			return nil, err
		}
		replica = "      - managed:\n          args: [\"-t\", \"1\", \"-tb\", \"1\"]\n          start_timeout: 60s\n"
	}
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
log_level: warn
body_limit_bytes: %d
admission:
  capacity: %d
  policy: %s
artifacts:
  max_count: %d
shutdown_grace: 50ms
pools:
  - id: %s
    engine: llamacpp
    model_ref: %s
    model_id: %s
    ctx_max: 4096
    slots: 1
    kv_bytes_per_token: 512
    prior_service_ms: 1500
    prior_tokens_per_s: 50
    replicas:
%s`, state, dc.bodyLimit, dc.capacity, dc.policy, dc.artifactsMaxCount, poolID, modelRef, modelID, replica)
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte(keysFile), 0o600); err != nil {
		return nil, err
	}
	yaml = "keys_file: keys.yaml\n" + yaml
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	ov.ConfigFile = cfgPath
	conf, err := config.Load(ov)
	if err != nil {
		return nil, err
	}
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	opts := app.Options{
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		NVML:           gpus,
		Registry:       prometheus.NewRegistry(),
		HealthInterval: 20 * time.Millisecond,
	}
	d := &daemon{cfg: dc, hc: &http.Client{Timeout: 30 * time.Second}}
	if !dc.managed {
		d.engine = fake.New(fake.Options{})
		opts.NewReplica = func(pool.Spec, pool.Endpoint) engine.Replica { return d.engine }
	}
	a, err := app.New(conf, opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.served = cancel, make(chan error, 1)
	go func() {
		d.served <- a.Serve(ctx, ln)
		_ = os.RemoveAll(dir)
	}()
	d.url = "http://" + ln.Addr().String()
	target, _ := url.Parse(d.url)
	d.proxy = httputil.NewSingleHostReverseProxy(target)
	d.proxy.FlushInterval = -1 // stream SSE frames as they come
	if err := d.waitFor(func(h poolHealth) bool { return h.Ready && h.Metrics.MeanServiceMs != nil }, 90*time.Second); err != nil {
		d.stop(t)
		return nil, fmt.Errorf("pool %s never became ready: %w", poolID, err)
	}
	return d, nil
}

func (d *daemon) stop(t *testing.T) {
	if d.engine != nil {
		d.engine.Resume()
	}
	d.cancel()
	select {
	case err := <-d.served:
		if err != nil {
			t.Errorf("daemon: Serve: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("daemon at %s did not stop within 60s", d.url)
	}
	d.hc.CloseIdleConnections()
}

// ---------------------------------------------------------------------------------------------
// The daemon's public API, as the states use it.

type poolHealth struct {
	Ready    bool `json:"ready"`
	Draining bool `json:"draining"`
	Metrics  struct {
		SlotsBusy     int      `json:"slots_busy"`
		QueueDepth    int      `json:"queue_depth"`
		MeanServiceMs *float64 `json:"mean_service_ms"`
	} `json:"metrics"`
}

// call sends a request with the API key and decodes a JSON answer into out (when not nil).
func (d *daemon) call(method, path string, body, out any, want int) error {
	return d.callAs(apiKey, method, path, body, out, want)
}

// callAs is call with another key.
func (d *daemon) callAs(key, method, path string, body, out any, want int) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (d *daemon) health() (poolHealth, error) {
	var h poolHealth
	err := d.call(http.MethodGet, "/v1/pools/"+poolID+"/health", nil, &h, http.StatusOK)
	return h, err
}

// waitFor polls the pool's health until cond holds (the bound only keeps a broken daemon from
// hanging the verification).
func (d *daemon) waitFor(cond func(poolHealth) bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		h, err := d.health()
		if err == nil && cond(h) {
			return nil
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	if last == nil {
		last = errors.New("condition not reached")
	}
	return last
}

const (
	priorityInteractive = "interactive"
	priorityBatch       = "batch"
)

// submitAs produces a state by admitting one small task (max_tokens 16) with key.
func submitAs(key string) func(*daemon) (models.ProviderStateResponse, error) {
	return func(d *daemon) (models.ProviderStateResponse, error) {
		id := uuid.NewString()
		err := d.callAs(key, http.MethodPost, "/v1/tasks", map[string]any{
			"task_id": id, "session_id": uuid.NewString(), "workload": "completion", "model_ref": modelID,
			"engine": "llamacpp", "ctx": 2048, "priority": priorityInteractive, "prompt": "Once upon a time",
			"max_tokens": 16, "deadline_ms": 60000,
		}, nil, http.StatusAccepted)
		return nil, err
	}
}

// submit admits a small task and returns its id.
func (d *daemon) submit(sessionID, priority string) (string, error) {
	id := uuid.NewString()
	err := d.call(http.MethodPost, "/v1/tasks", map[string]any{
		"task_id": id, "session_id": sessionID, "workload": "completion", "model_ref": modelID,
		"engine": "llamacpp", "ctx": 2048, "priority": priority, "prompt": "Once upon a time",
		"max_tokens": 16, "deadline_ms": 60000,
	}, nil, http.StatusAccepted)
	return id, err
}

func (d *daemon) waitTask(id, state string) error {
	deadline := time.Now().Add(30 * time.Second)
	var got struct {
		State string `json:"state"`
	}
	for time.Now().Before(deadline) {
		if err := d.call(http.MethodGet, "/v1/tasks/"+id, nil, &got, http.StatusOK); err != nil {
			return err
		}
		if got.State == state {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("task %s is %s, want %s", id, got.State, state)
}

// ---------------------------------------------------------------------------------------------
// The states.

// runningTask: a task holds the pool's slot, its generation paused in the engine.
func (d *daemon) runningTask() (models.ProviderStateResponse, error) {
	d.engine.Pause()
	session := uuid.NewString()
	id, err := d.submit(session, priorityInteractive)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.engine.WaitActive(ctx, 1); err != nil {
		return nil, fmt.Errorf("the task's generation never started: %w", err)
	}
	if err := d.waitTask(id, "running"); err != nil {
		return nil, err
	}
	return models.ProviderStateResponse{"taskId": id, "sessionId": session}, nil
}

// finishedTask: a task ran to completion.
func (d *daemon) finishedTask() (models.ProviderStateResponse, error) {
	id, err := d.submit(uuid.NewString(), priorityInteractive)
	if err != nil {
		return nil, err
	}
	if err := d.waitTask(id, "succeeded"); err != nil {
		return nil, err
	}
	return models.ProviderStateResponse{"taskId": id}, nil
}

// session: a task of the session ran to completion (the session has one turn and KV warmth).
func (d *daemon) session() (models.ProviderStateResponse, error) {
	session := uuid.NewString()
	id, err := d.submit(session, priorityInteractive)
	if err != nil {
		return nil, err
	}
	if err := d.waitTask(id, "succeeded"); err != nil {
		return nil, err
	}
	return models.ProviderStateResponse{"sessionId": session}, nil
}

// artifact: the plan artifact the consumer reads is stored.
func (d *daemon) artifact() (models.ProviderStateResponse, error) {
	var ref struct {
		ID string `json:"id"`
	}
	err := d.call(http.MethodPost, "/v1/artifacts", map[string]any{
		"kind": "plan", "content": map[string]any{"steps": []string{"read", "write"}}, "tags": []string{"demo"},
	}, &ref, http.StatusCreated)
	if err != nil {
		return nil, err
	}
	return models.ProviderStateResponse{"artifactId": ref.ID}, nil
}

// fillQueue: the engine is paused, one task holds the pool's only slot and the queue is filled
// to its capacity with tasks of the given priority.
func fillQueue(priority string) func(*daemon) (models.ProviderStateResponse, error) {
	return func(d *daemon) (models.ProviderStateResponse, error) {
		d.engine.Pause()
		if _, err := d.submit(uuid.NewString(), priority); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.engine.WaitActive(ctx, 1); err != nil {
			return nil, fmt.Errorf("the first task never started: %w", err)
		}
		capacity := d.cfg.capacity
		for range capacity {
			if _, err := d.submit(uuid.NewString(), priority); err != nil {
				return nil, err
			}
		}
		if err := d.waitFor(func(h poolHealth) bool { return h.Metrics.QueueDepth == capacity && h.Metrics.SlotsBusy == 1 }, 10*time.Second); err != nil {
			return nil, fmt.Errorf("queue not full: %w", err)
		}
		return nil, nil
	}
}

// drain: pool default was drained through the control plane.
func (d *daemon) drain() (models.ProviderStateResponse, error) {
	if err := d.call(http.MethodPost, "/v1/pools/"+poolID+"/drain", map[string]any{"deadline_ms": 60000}, nil, http.StatusAccepted); err != nil {
		return nil, err
	}
	return nil, d.waitFor(func(h poolHealth) bool { return h.Draining && !h.Ready }, 10*time.Second)
}

// drainReplica: replica default/0, the pool's only one, was drained through the control plane;
// the pool is not ready, though not drained itself.
func (d *daemon) drainReplica() (models.ProviderStateResponse, error) {
	if err := d.call(http.MethodPost, replicaPath+"/drain", map[string]any{"deadline_ms": 60000}, nil, http.StatusAccepted); err != nil {
		return nil, err
	}
	return nil, d.waitFor(func(h poolHealth) bool { return !h.Draining && !h.Ready }, 10*time.Second)
}

// stopEngine: the engine replica stops serving; the daemon's health poll sees it.
func (d *daemon) stopEngine() (models.ProviderStateResponse, error) {
	d.engine.SetHealthy(false)
	return nil, d.waitFor(func(h poolHealth) bool { return !h.Ready }, 10*time.Second)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
