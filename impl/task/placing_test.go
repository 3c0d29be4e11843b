package task

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
	"github.com/prometheus/client_golang/prometheus"
)

// gatedSessions holds the first Admit, which Submit calls after placing the task and before
// enqueueing it, until released.
type gatedSessions struct {
	*session.Store
	once             sync.Once
	entered, release chan struct{}
}

func (g *gatedSessions) Admit(id, owner string) (session.Info, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.release
	}
	return g.Store.Admit(id, owner)
}

// TestPlacementCountsTasksNotYetEnqueued: a task placed on a pool counts in that pool's load
// until the queue counts it, so two admissions placing at the same moment spread over two
// idle pools instead of both taking the one that was least loaded before either was
// enqueued (5,000 streams opened at once left tasks queued on full pools while others had
// free slots).
func TestPlacementCountsTasksNotYetEnqueued(t *testing.T) {
	eng := newGate()
	store, err := session.New(session.Options{MaxTurns: 3})
	if err != nil {
		t.Fatal(err)
	}
	ss := &gatedSessions{Store: store, entered: make(chan struct{}), release: make(chan struct{})}
	var views []pool.View
	for _, id := range []string{"a", "b"} {
		views = append(views, oneReplica(pool.View{Spec: pool.Spec{ID: id, Engine: "llamacpp", ModelRef: "/m/tiny.gguf",
			ModelID: "tiny", CtxMax: 4096, Slots: 1, KVBytesPerToken: 10, PriorServiceMs: 100, PriorTokensPerS: 100,
			Workloads: []string{"completion"}}, Live: true, Healthy: true}))
	}
	fp := &fakePools{views: views, rep: eng}
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

	type result struct {
		adm Admission
		err error
	}
	first := make(chan result, 1)
	go func() {
		a, err := svc.Submit(ctx, spec(admission.Interactive))
		first <- result{a, err}
	}()
	<-ss.entered // the first task is placed, not enqueued
	second, err := svc.Submit(ctx, spec(admission.Interactive))
	if err != nil {
		t.Fatal(err)
	}
	close(ss.release)
	r := <-first
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.adm.PoolID == second.PoolID {
		t.Fatalf("both tasks placed on pool %s while pool %s was idle", second.PoolID, map[string]string{"a": "b", "b": "a"}[second.PoolID])
	}
	for range 2 {
		<-eng.started
	}
	close(eng.tokens)
}
