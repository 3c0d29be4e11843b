package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// heldReplica is the fake engine whose health checks wait until release is closed: until
// then its pool never turns ready, nor changes at all.
type heldReplica struct {
	engine.Replica
	release chan struct{}
}

func (r heldReplica) Health(ctx context.Context) (engine.Health, error) {
	<-r.release
	return r.Replica.Health(ctx)
}

// TestQueueKnowsPoolsBeforeTheyStart: the daemon serves only once its queue knows every
// configured pool, ready or not. A pool turns ready in the registry before the change reaches
// the queue; were the queue to learn of the pool only then, a task placed on the pool in
// between would be refused as bound for an unknown pool. Here the pool's first health check
// never answers, so the registry reports no change at all: the queue knows the pool from the
// start (its pool health carries the queue's rates) while it is not ready.
func TestQueueKnowsPoolsBeforeTheyStart(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	dir := t.TempDir()
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 50ms
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/fake.gguf
    ctx_max: 32768
    slots: 1
    replicas:
      - url: http://127.0.0.1:1
`, filepath.Join(dir, "state"))
	cfg := loadConfig(t, dir, yaml)
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	rep := heldReplica{Replica: fake.New(fake.Options{}), release: make(chan struct{})}
	a, err := app.New(cfg, app.Options{
		Logger: slog.New(slog.DiscardHandler), NVML: gpus, Registry: prometheus.NewRegistry(),
		HealthInterval: 20 * time.Millisecond,
		NewReplica:     func(pool.Spec, pool.Endpoint) engine.Replica { return rep },
	})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveLoopback(t, a, nil)
	d := &fakeDaemon{addr: addr, hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(rep.release) }) }) // before the daemon stops (cleanups run last in, first out)

	var res response
	eventually(t, "the daemon serving", func() bool {
		res, err = d.do("GET", "/v1/pools/p1/health", "")
		return err == nil
	})
	var h struct {
		Ready   bool
		Metrics struct {
			MeanServiceMs *float64 `json:"mean_service_ms"`
		}
	}
	if err := json.Unmarshal(res.body, &h); err != nil || res.status != 200 {
		t.Fatalf("pool health: %d %s", res.status, res.body)
	}
	if h.Ready || h.Metrics.MeanServiceMs == nil {
		t.Fatalf("pool health before its first health check answered: %s (want not ready, with the queue's rates)", res.body)
	}
	release.Do(func() { close(rep.release) })
	eventually(t, "the pool ready", func() bool {
		res, err := d.do("GET", "/v1/pools/p1/health", "")
		return err == nil && json.Unmarshal(res.body, &h) == nil && h.Ready && h.Metrics.MeanServiceMs != nil
	})
}
