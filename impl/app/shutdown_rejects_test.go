package app_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// TestShutdownRefusalsAreCountedRejected: during the shutdown grace the daemon still answers,
// and refuses every submission with 503 POOL_UNAVAILABLE (README: "admission stops (503)").
// tasks_rejected_total (the dashboard's "Admissions by outcome" panel) counts those refusals,
// as tenant_rejections_total does for the same requests. It did not: impl/tasks.go counts a
// refusal only before the task service is called, and task.Service.Submit returned
// ErrShuttingDown without counting it.
func TestShutdownRefusalsAreCountedRejected(t *testing.T) {
	f := fake.New(fake.Options{})
	addr, stop := serveApp(t, `shutdown_grace: 20s
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/tiny.gguf
    model_id: tiny
    ctx_max: 4096
    slots: 1
    replicas:
      - url: http://127.0.0.1:1
`, app.Options{NewReplica: func(pool.Spec, pool.Endpoint) engine.Replica { return f }})
	t.Cleanup(f.Resume) // before the daemon's stop (cleanups run last in, first out)
	c := clientAs(t, "http://"+addr, testKey)
	ctx := context.Background()
	f.Pause()
	eventually(t, "a task admitted", func() bool {
		r, err := c.CreateTaskWithResponse(ctx, nil, pinnedTask(""))
		return err == nil && r.StatusCode() == http.StatusAccepted
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := f.WaitActive(wctx, 1); err != nil {
		t.Fatal("the task never ran")
	}
	go func() { _ = stop() }() // shutdown: the running task holds the grace open
	refused := 0
	eventually(t, "a submission refused by the shutdown", func() bool {
		r, err := c.CreateTaskWithResponse(ctx, nil, pinnedTask(""))
		if err == nil && r.StatusCode() == http.StatusServiceUnavailable && strings.Contains(string(r.Body), "shutting down") {
			refused++
		}
		return refused > 0
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rejected := regexp.MustCompile(`(?m)^tasks_rejected_total\{engine="llamacpp",reason="POOL_UNAVAILABLE"\} (\d+)$`).FindStringSubmatch(string(b))
	tenant := regexp.MustCompile(`(?m)^tenant_rejections_total\{key="[^"]*",reason="POOL_UNAVAILABLE"\} (\d+)$`).FindStringSubmatch(string(b))
	if rejected == nil {
		t.Errorf("after %d submission(s) refused with 503 POOL_UNAVAILABLE during the shutdown, /metrics has no tasks_rejected_total{reason=\"POOL_UNAVAILABLE\"} sample (tenant_rejections_total: %v)",
			refused, tenant)
	}
	f.Resume()
}
