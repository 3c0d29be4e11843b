package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

const shutdownKey = "shutdown-test-key-0123456789"

// gatedReplica is the fake engine whose health checks, once armed, wait for gate (ignoring
// their context): the registry's poller then holds Serve's shutdown in pools.Wait, so that the
// journal stays open until the test has seen what it needs.
type gatedReplica struct {
	*fake.Replica
	mu    sync.Mutex
	armed bool
	gate  chan struct{}
}

func (g *gatedReplica) Health(ctx context.Context) (engine.Health, error) {
	g.mu.Lock()
	armed := g.armed
	g.mu.Unlock()
	if armed {
		<-g.gate
	}
	return g.Replica.Health(ctx)
}

func shutdownConfig(t *testing.T, state string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 50ms
journal: {enabled: true}
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/fake.gguf
    ctx_max: 32768
    slots: 1
    replicas:
      - url: http://127.0.0.1:1
`, state)
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: p, APIKeys: shutdownKey})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func shutdownApp(t *testing.T, cfg *config.Config, rep engine.Replica) *App {
	t.Helper()
	return shutdownAppWith(t, cfg, rep, prometheus.NewRegistry(), nil)
}

func shutdownAppWith(t *testing.T, cfg *config.Config, rep engine.Replica, reg *prometheus.Registry, clock task.Clock) *App {
	t.Helper()
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	a, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), NVML: gpus, Registry: reg,
		HealthInterval: 20 * time.Millisecond, TaskClock: clock,
		NewReplica: func(pool.Spec, pool.Endpoint) engine.Replica { return rep }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func shutdownDo(addr, method, path, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-API-Key", shutdownKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

func shutdownSubmit(t *testing.T, addr string) string {
	t.Helper()
	return shutdownSubmitWith(t, addr, "")
}

// shutdownSubmitWith submits a task with extra fields (`, "k": v...`) added to its body.
func shutdownSubmitWith(t *testing.T, addr, extra string) string {
	t.Helper()
	id := uuid.New()
	body := fmt.Sprintf(`{"task_id": %q, "workload": "completion", "model_ref": "fake",
		"engine": "llamacpp", "ctx": 32768, "priority": "interactive", "prompt": "Once upon a time",
		"max_tokens": 5, "deadline_ms": 600000%s}`, id, extra)
	st, b, err := shutdownDo(addr, "POST", "/v1/tasks", body)
	if err != nil || st != http.StatusAccepted {
		t.Fatalf("POST /v1/tasks: %d %s %v", st, b, err)
	}
	return id.String()
}

// TestShutdownKeepsStreamedQueuedTask: README, Shutdown: "With the journal on, tasks still
// queued are not failed: the next start runs them." That holds for a task whose client follows
// its event stream when the daemon stops. Its stream ends without a final frame once the task
// is kept, and its client resumes after the restart. Neither that end nor a close by the daemon
// is the client's disconnect: with stream.cancel_on_disconnect (the default) it must not cancel
// the task (which the journal would then record, and the next start not run).
func TestShutdownKeepsStreamedQueuedTask(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := shutdownConfig(t, state)
	rep := &gatedReplica{Replica: fake.New(fake.Options{}), gate: make(chan struct{})}
	rep.Pause() // A holds the only slot until the shutdown cuts it; B stays queued
	a := shutdownApp(t, cfg, rep)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	released := false
	release := func() {
		if !released {
			released = true
			close(rep.gate)
		}
	}
	t.Cleanup(func() { release(); cancel(); _ = <-served })
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, b, err := shutdownDo(addr, "GET", "/v1/pools/p1/health", "")
		var h struct{ Ready bool }
		if err == nil && st == 200 && json.Unmarshal(b, &h) == nil && h.Ready {
			break
		}
		if time.Now().After(end) {
			t.Fatal("pool never ready")
		}
	}
	idA := shutdownSubmit(t, addr)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := rep.WaitActive(wctx, 1); err != nil {
		t.Fatal(err)
	}
	idB := shutdownSubmit(t, addr)
	snap, err := a.tasks.Get(context.Background(), idB)
	if err != nil || snap.Status != task.Queued {
		t.Fatalf("task B: %+v %v, want queued", snap.Status, err)
	}

	// B's client follows its stream (HTTP/1.1: a hijacked stream, the default).
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /v1/tasks/"+idB+"/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: "+shutdownKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("stream: %v %v", res, err)
	}
	defer res.Body.Close()

	// SIGTERM. The poller's next health check holds pools.Wait, so the journal is still open
	// when the stream is cut.
	rep.mu.Lock()
	rep.armed = true
	rep.mu.Unlock()
	cancel()
	// The daemon ends B's stream once it keeps B for the next start: a clean end of the
	// chunked body, after the frames B has and no final one (its client resumes after the
	// restart), not a connection cut when the shutdown's 10 s wait for open streams runs out.
	// (Serve handles the end, and a cancel it would cause, before it can return.)
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Errorf("task B's stream did not end cleanly when the daemon kept B for the next start: %v (read %q)", err, got)
	}
	if strings.Contains(string(got), "event: end") || strings.Contains(string(got), "event: error") {
		t.Errorf("task B's stream, kept queued, got a final frame: %q", got)
	}
	_ = idA
	release()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	served <- nil // for the cleanup

	// The next start.
	a2 := shutdownApp(t, cfg, fake.New(fake.Options{}))
	jctx, jcancel := context.WithCancel(context.Background())
	jcancel()
	defer func() { _ = a2.journal.Run(jctx) }() // closes the journal a2 opened
	snap, err = a2.tasks.Get(context.Background(), idB)
	if err != nil {
		t.Fatalf("task B after the restart: %v", err)
	}
	if snap.Status != task.Queued {
		t.Errorf("task B, queued when the daemon stopped (journal on), is %s after the restart, want queued "+
			"(README: tasks still queued are not failed: the next start runs them); the daemon's own close of "+
			"its client's stream was taken for the client's disconnect", snap.Status)
	}
}

// shutdownServe serves a on loopback until the returned cancel; served reports Serve's end.
func shutdownServe(t *testing.T, a *App) (addr string, cancel context.CancelFunc, served chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served = make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	addr = ln.Addr().String()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, b, err := shutdownDo(addr, "GET", "/v1/pools/p1/health", "")
		var h struct{ Ready bool }
		if err == nil && st == 200 && json.Unmarshal(b, &h) == nil && h.Ready {
			break
		}
		if time.Now().After(end) {
			t.Fatal("pool never ready")
		}
	}
	return addr, cancel, served
}

// TestShutdownIgnoresDisconnectGrace: a task queued with on_disconnect: grace (up to
// disconnect_grace_ms 600000, 10 minutes), whose client went away, must not hold the daemon's
// shutdown for the rest of that grace: with the journal on the task stays queued past
// shutdown_grace and never ends in this process, and a service manager's stop timeout
// (systemd: 90 s) would SIGKILL the daemon mid-shutdown. The task clock here is a fake: the
// grace passes only when the test advances it.
func TestShutdownIgnoresDisconnectGrace(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := shutdownConfig(t, state)
	rep := fake.New(fake.Options{})
	rep.Pause() // A holds the only slot; B stays queued
	reg := prometheus.NewRegistry()
	clock := tasktest.NewClock(time.Now())
	a := shutdownAppWith(t, cfg, rep, reg, clock)
	addr, cancel, served := shutdownServe(t, a)
	stopped := false
	t.Cleanup(func() {
		cancel()
		if !stopped {
			clock.Advance(time.Hour)
			_ = <-served
		}
	})
	_ = shutdownSubmit(t, addr)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := rep.WaitActive(wctx, 1); err != nil {
		t.Fatal(err)
	}
	idB := shutdownSubmitWith(t, addr, `, "on_disconnect": "grace", "disconnect_grace_ms": 600000`)

	// B's client reads its stream's head and goes away.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /v1/tasks/"+idB+"/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: "+shutdownKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("stream: %v %v", res, err)
	}
	_ = c.Close()
	_ = res.Body.Close() // after the connection's: the stream's body has no end of its own
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if shutdownCounter(t, reg, "sse_client_disconnects_total") >= 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the disconnect was never seen")
		}
	}

	// SIGTERM. shutdown_grace is 50ms, no stream is open, the engine gives A up at once: Serve
	// returns in well under a second. Twenty seconds is far beyond that and far below the
	// task's ten-minute grace, which the fake clock never reaches unless advanced.
	cancel()
	select {
	case err := <-served:
		stopped = true
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		clock.Advance(10 * time.Minute) // the task's disconnect grace passes: Serve returns now
		err := <-served
		stopped = true
		t.Fatalf("Serve did not return after SIGTERM (shutdown_grace 50ms) until the queued task's "+
			"disconnect_grace_ms (10 min) had passed on the task clock (Serve: %v)", err)
	}
}

func shutdownCounter(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}
