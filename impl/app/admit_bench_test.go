package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// BenchmarkAdmitHTTP measures the daemon's whole admission path for a 1-token task, as the
// harness's admission scenario drives it: POST /v1/tasks through the handler the daemon serves
// (otelhttp, HEAD-as-GET, echo, correlation, body limits, auth, body read, OpenAPI validation,
// the strict handler, budgets and limits, placement and the queue) into a recorder, answered
// 202. The journal is off (its fsync is measured in impl/journal). The tasks run on a fake
// engine meanwhile, on the daemon's own goroutines: their cost shows in ns/op only in part.
// Each request has a new task and session id, like the harness's.
//
//	go test -run XXX -bench AdmitHTTP -benchtime 20000x -benchmem ./impl/app
func BenchmarkAdmitHTTP(b *testing.B) {
	dir := b.TempDir()
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 1s
admission: {capacity: 1000000, policy: reject}
sessions: {max_sessions: 1000000}
journal: {enabled: false}
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/fake.gguf
    model_id: tiny
    ctx_max: 4096
    slots: 64
    replicas:
      - url: http://127.0.0.1:1
`, filepath.Join(dir, "state"))
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: p, APIKeys: testKey})
	if err != nil {
		b.Fatal(err)
	}
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	replica := fake.New(fake.Options{})
	a, err := app.New(cfg, app.Options{
		Logger: slog.New(slog.DiscardHandler), NVML: gpus, Registry: prometheus.NewRegistry(), HealthInterval: 20 * time.Millisecond,
		NewReplica: func(pool.Spec, pool.Endpoint) engine.Replica { return replica },
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
	}()
	h := a.Handler()
	post := func(body []byte) *httptest.ResponseRecorder {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/tasks", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", testKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	const rest = `"workload":"completion","model_ref":"tiny","engine":"llamacpp","ctx":512,` +
		`"priority":"interactive","prompt":"The quick brown fox","max_tokens":1,"deadline_ms":60000}`
	body := func() []byte {
		return []byte(`{"task_id":"` + uuid.NewString() + `","session_id":"` + uuid.NewString() + `",` + rest)
	}
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rec := post(body()); rec.Code == http.StatusAccepted {
			break
		} else if time.Now().After(end) {
			b.Fatalf("the pool never admitted a task: %d %s", rec.Code, rec.Body)
		}
	}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = body()
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := range b.N {
		if rec := post(bodies[i]); rec.Code != http.StatusAccepted {
			b.Fatalf("POST /v1/tasks: %d %s", rec.Code, rec.Body)
		}
	}
	b.StopTimer()
	// The process's CPU time (user + system, every goroutine: the tasks' runs and the GC too)
	// per admitted task: what a busy shared machine disturbs less than ns/op.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
