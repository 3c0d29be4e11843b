package task

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// TestSyncPoolsBeforeReady: the registry shows a pool ready before its PoolChanged reaches the
// queue. Once SyncPools has run (the daemon runs it before the pools start), a task placed on
// the pool in between is queued there, not refused as bound for an unknown pool, and runs when
// the change arrives.
func TestSyncPoolsBeforeReady(t *testing.T) {
	eng := newGate()
	ss, err := session.New(session.Options{MaxTurns: 3})
	if err != nil {
		t.Fatal(err)
	}
	starting := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
		Slots: 1, KVBytesPerToken: 10, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}}}
	fp := &fakePools{views: []pool.View{starting}, rep: eng}
	svc := mustNew(t, Options{Capacity: 4, Policy: admission.Reject, Pools: fp, Sessions: ss,
		Metrics: metrics.New(prometheus.NewRegistry()), Clock: tasktest.NewClock(time.Unix(1_700_000_000, 0))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	t.Cleanup(func() {
		sctx, c := context.WithCancel(context.Background())
		c()
		svc.Shutdown(sctx)
		cancel()
		<-done
	})

	svc.SyncPools(ctx)
	ready := starting
	ready.Live, ready.Healthy = true, true
	fp.mu.Lock()
	fp.views = []pool.View{ready} // ready in the registry; PoolChanged not delivered yet
	fp.mu.Unlock()
	sp := spec(admission.Interactive)
	if _, err := svc.Submit(ctx, sp); err != nil {
		t.Fatalf("a task on a pool ready before the queue heard of the change: %v", err)
	}
	if snap, err := svc.Get(ctx, sp.ID); err != nil || snap.Status != Queued {
		t.Fatalf("before the change reached the queue: %v %v, want queued", snap.Status, err)
	}
	svc.PoolChanged(ctx, oneReplica(ready))
	if id := <-eng.started; id != sp.ID {
		t.Fatalf("started %s, want %s", id, sp.ID)
	}
	close(eng.tokens)
	tk, err := svc.Task(sp.ID)
	if err != nil {
		t.Fatal(err)
	}
	<-tk.Done()
	if snap, err := svc.Get(ctx, sp.ID); err != nil || snap.Status != Succeeded {
		t.Fatalf("the task ended %v %v, want succeeded", snap.Status, err)
	}
}
