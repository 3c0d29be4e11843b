package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/internal/cpuclock"
)

// BenchmarkAdmitHTTP measures the daemon's whole admission path for a 1-token task, as the
// harness's admission scenario drives it: POST /v1/tasks through the handler the daemon serves
// (trace context, HEAD-as-GET, echo, correlation, body limits, auth, body read, OpenAPI
// validation, the strict handler, budgets and limits, placement and the queue) into a recorder,
// answered 202. The journal is off (its fsync is measured in impl/journal). The tasks run on a
// fake engine meanwhile, on the daemon's own goroutines. Each request has a new task and session
// id, like the harness's. Besides ns/op it reports cpu-ns/op, the process's CPU time per
// admitted task (user + system, every goroutine: the tasks' runs and the GC included), which a
// busy machine disturbs less than ns/op.
//
//	go test -run XXX -bench AdmitHTTP -benchtime 20000x -benchmem ./impl/app
func BenchmarkAdmitHTTP(b *testing.B) { benchmarkAdmitHTTP(b, "{enabled: false}") }

// BenchmarkAdmitHTTPJournal is BenchmarkAdmitHTTP with the journal on, sync none: each task's
// records are encoded and written (the 202 waits for the admission record's write, not an
// fdatasync, whose cost is the disk's), and the segment is compacted as it fills.
func BenchmarkAdmitHTTPJournal(b *testing.B) { benchmarkAdmitHTTP(b, "{sync: none}") }

func benchmarkAdmitHTTP(b *testing.B, journal string) {
	ctx, h, _ := admitDaemon(b, journal)
	post := func(body []byte) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/tasks", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", testKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	runAdmissions(b, post)
}

// BenchmarkAdmitLoopback is BenchmarkAdmitHTTP over a keep-alive loopback connection, one
// request at a time (the harness's concurrency 1): p50-ns and p99-ns are the admission latency
// a client sees, net/http's server and client included.
func BenchmarkAdmitLoopback(b *testing.B) {
	ctx, _, addr := admitDaemon(b, "{enabled: false}")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer hc.CloseIdleConnections()
	url := "http://" + addr + "/v1/tasks"
	lat := make([]time.Duration, 0, b.N)
	post := func(body []byte) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", testKey)
		start := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		out, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		lat = append(lat, time.Since(start))
		return res.StatusCode, string(out)
	}
	runAdmissions(b, post)
	lat = lat[len(lat)-b.N:] // the timed ones
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

// admitDaemon starts the daemon on a fake engine (64 slots, the journal configured as journal
// says) and returns its handler and address; it stops with the benchmark.
func admitDaemon(b *testing.B, journal string) (context.Context, http.Handler, string) {
	dir := b.TempDir()
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 1s
admission: {capacity: 1000000, policy: reject}
sessions: {max_sessions: 1000000}
journal: %s
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/fake.gguf
    model_id: tiny
    ctx_max: 4096
    slots: 64
    replicas:
      - url: http://127.0.0.1:1
`, filepath.Join(dir, "state"), journal)
	cfg := loadConfig(b, dir, yaml)
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
	addr, _ := serveLoopback(b, a, nil)
	return b.Context(), a.Handler(), addr
}

// runAdmissions waits for the pool to admit, then times b.N admissions through post.
func runAdmissions(b *testing.B, post func(body []byte) (int, string)) {
	const rest = `"workload":"completion","model_ref":"tiny","engine":"llamacpp","ctx":512,` +
		`"priority":"interactive","prompt":"The quick brown fox","max_tokens":1,"deadline_ms":60000}`
	body := func() []byte {
		return []byte(`{"task_id":"` + uuid.NewString() + `","session_id":"` + uuid.NewString() + `",` + rest)
	}
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, msg := post(body())
		if code == http.StatusAccepted {
			break
		}
		if time.Now().After(end) {
			b.Fatalf("the pool never admitted a task: %d %s", code, msg)
		}
	}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = body()
	}
	b.ReportAllocs()
	cpu0 := cpuclock.Total()
	b.ResetTimer()
	for i := range b.N {
		if code, msg := post(bodies[i]); code != http.StatusAccepted {
			b.Fatalf("POST /v1/tasks: %d %s", code, msg)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuclock.Total()-cpu0)/float64(b.N), "cpu-ns/op")
}
