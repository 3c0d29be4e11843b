package app_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// twoReplicaPool serves a pool p1 of two external replicas (p1/0 on fakes[url :1], p1/1
// on fakes[url :2]), one slot each, and returns a client.
func twoReplicaPool(t *testing.T) (*client.ClientWithResponses, map[string]*fake.Replica) {
	t.Helper()
	var mu sync.Mutex
	fakes := map[string]*fake.Replica{"http://127.0.0.1:1": fake.New(fake.Options{}), "http://127.0.0.1:2": fake.New(fake.Options{})}
	addr, _ := serveApp(t, `shutdown_grace: 50ms
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/tiny.gguf
    model_id: tiny
    ctx_max: 4096
    slots: 1
    replicas:
      - url: http://127.0.0.1:1
      - url: http://127.0.0.1:2
`, app.Options{NewReplica: func(_ pool.Spec, ep pool.Endpoint) engine.Replica {
		mu.Lock()
		defer mu.Unlock()
		return fakes[ep.URL]
	}})
	return clientAs(t, "http://"+addr, testKey), fakes
}

func poolHealthOf(t *testing.T, c *client.ClientWithResponses) (client.PoolHealth, map[string]client.ReplicaHealth) {
	t.Helper()
	h, err := c.GetPoolHealthWithResponse(context.Background(), "p1", nil)
	if err != nil || h.JSON200 == nil || h.JSON200.Replicas == nil {
		t.Fatalf("pool health: %v %s", err, h.Body)
	}
	reps := map[string]client.ReplicaHealth{}
	for _, r := range *h.JSON200.Replicas {
		reps[r.Id] = r
	}
	return *h.JSON200, reps
}

func pinnedTask(pin string) client.TaskRequest {
	p := "Once upon a time"
	req := client.TaskRequest{TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "tiny",
		Engine: client.Llamacpp, Ctx: 2048, Priority: client.Interactive, Prompt: &p, MaxTokens: 4, DeadlineMs: 60000}
	if pin != "" {
		mode, pool := client.Pin, "p1"
		req.Placement = &client.PlacementOverrides{Mode: &mode, PinPoolId: &pool, PinReplicaId: &pin}
	}
	return req
}

// TestUnhealthyReplicaWithRunningTaskStarvesHealthyOne: replica p1/0 runs a long generation and
// then fails its health checks (a slow /health under load, the case the UnhealthyAfter debounce
// exists for); the generation keeps streaming and keeps its slot. Replica p1/1 is ready and
// idle. A new task runs on p1/1 at once. It waited: the queue's pool capacity counted the ready
// replicas' slots only (View.SlotsTotal added back the busy slots of drained replicas, not of
// unhealthy or breaker-open ones), so the task on p1/0 took p1/1's only slot.
func TestUnhealthyReplicaWithRunningTaskStarvesHealthyOne(t *testing.T) {
	c, fakes := twoReplicaPool(t)
	a, b := fakes["http://127.0.0.1:1"], fakes["http://127.0.0.1:2"]
	ctx := context.Background()
	eventually(t, "both replicas ready", func() bool {
		_, reps := poolHealthOf(t, c)
		return reps["p1/0"].State == client.ReplicaHealthStateReady && reps["p1/1"].State == client.ReplicaHealthStateReady
	})
	a.Pause()
	t.Cleanup(a.Resume)
	long := pinnedTask("p1/0")
	if r, err := c.CreateTaskWithResponse(ctx, nil, long); err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("submit: %v %d %s", err, r.StatusCode(), r.Body)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.WaitActive(wctx, 1); err != nil {
		t.Fatal("the long task never ran on p1/0")
	}
	a.SetHealthy(false) // its /health fails from now on; the running generation goes on
	eventually(t, "p1/0 unhealthy, p1/1 ready, pool ready", func() bool {
		ph, reps := poolHealthOf(t, c)
		return reps["p1/0"].State == client.ReplicaHealthStateUnhealthy && reps["p1/1"].State == client.ReplicaHealthStateReady && ph.Ready
	})
	next := pinnedTask("")
	if r, err := c.CreateTaskWithResponse(ctx, nil, next); err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("submit next: %v %d %s", err, r.StatusCode(), r.Body)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		g, err := c.GetTaskWithResponse(ctx, next.TaskId, nil)
		if err != nil || g.JSON200 == nil {
			t.Fatalf("get task: %v", err)
		}
		if g.JSON200.State != client.Queued {
			return // dispatched: p1/1 took it
		}
		if time.Now().After(deadline) {
			ph, reps := poolHealthOf(t, c)
			t.Fatalf("a task on a ready pool stays %s for 3s while replica p1/1 is ready and idle (p1/1 slots_busy %d of %d, engine active %d); "+
				"pool health: slots_total %d, slots_busy %d, queue_depth %d: the unhealthy p1/0's running task took p1/1's slot",
				g.JSON200.State, reps["p1/1"].SlotsBusy, reps["p1/1"].SlotsTotal, b.Active(), ph.Metrics.SlotsTotal, ph.Metrics.SlotsBusy, ph.Metrics.QueueDepth)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
