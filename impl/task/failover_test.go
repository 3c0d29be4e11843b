package task

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// replicaScript is a replica that emits its tokens, failing with err after failAfter of them
// (failAfter < 0: never). It records the requests it got.
type replicaScript struct {
	tokens    []string
	failAfter int
	err       error

	mu   sync.Mutex
	reqs []engine.Request
}

func (e *replicaScript) Generate(_ context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	e.mu.Lock()
	e.reqs = append(e.reqs, req)
	e.mu.Unlock()
	n := 0
	for i, tok := range e.tokens {
		if i == e.failAfter {
			return engine.Result{TokensOut: n}, e.err
		}
		if i >= req.MaxTokens {
			break
		}
		if err := emit(engine.Token{Text: []byte(tok)}); err != nil {
			return engine.Result{TokensOut: n}, err
		}
		n++
	}
	if e.failAfter == len(e.tokens) {
		return engine.Result{TokensOut: n}, e.err
	}
	return engine.Result{TokensOut: n, Stop: engine.StopLimit}, nil
}

func (e *replicaScript) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

func (e *replicaScript) requests() []engine.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]engine.Request(nil), e.reqs...)
}

// newReplicaHarness is a harness whose pool "p" has the given replicas (ids in order, each
// with 2 slots), served by the given engines.
func newReplicaHarness(t *testing.T, migrate bool, ids []string, engines map[string]engine.Replica) *harness {
	t.Helper()
	return newGPUHarness(t, migrate, ids, engines, nil, nil)
}

// newGPUHarness is newReplicaHarness with each replica's devices and a GPU inventory.
func newGPUHarness(t *testing.T, migrate bool, ids []string, engines map[string]engine.Replica, devices map[string][]int, gpus gpuInventory) *harness {
	t.Helper()
	ss, err := session.New(session.Options{MaxTurns: 8})
	if err != nil {
		t.Fatal(err)
	}
	v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
		Slots: 2, KVBytesPerToken: 10, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion", "chat"},
		MigrateOnFailure: migrate}, Live: true, Healthy: true}
	for _, id := range ids {
		v.Replicas = append(v.Replicas, pool.ReplicaView{ReplicaSpec: pool.ReplicaSpec{ID: id, Devices: devices[id]}, State: pool.StateReady,
			Live: true, Healthy: true, Slots: 2})
	}
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	fp := &fakePools{views: []pool.View{v}, reps: engines}
	m := metrics.New(prometheus.NewRegistry())
	svc := mustNew(t, Options{Capacity: 16, Policy: admission.Reject, Pools: fp, Sessions: ss, Metrics: m, Clock: clock, GPUs: gpus})
	fp.counted = svc.ReplicaBusy
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	waitRun(t, ctx, svc)
	svc.PoolChanged(ctx, v)
	h := &harness{t: t, svc: svc, clock: clock, pools: fp, m: m, ctx: ctx}
	h.stop = func() {
		sctx, c := context.WithCancel(context.Background())
		c()
		svc.Shutdown(sctx)
		cancel()
		<-done
	}
	t.Cleanup(h.stop)
	return h
}

func resetErr() error { return engine.Errorf(engine.KindWorkerReset, "connection reset by peer") }

// TestFailoverBeforeFirstToken: a replica that fails a task before its first token (by its
// own fault) is reported and the task runs on another replica; the client's stream shows one
// started frame and the other replica's tokens from index 0. A task's own failure (a 4xx)
// is not retried and counts against no replica.
func TestFailoverBeforeFirstToken(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantState Status
		wantTried int
		wantFault int
	}{
		{"replica fault moves the task", resetErr(), Succeeded, 2, 1},
		{"the request's own fault does not", engine.Errorf(engine.KindInvalidRequest, "context too long"), Failed, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := &replicaScript{tokens: []string{"x"}, failAfter: 0, err: tt.err}
			good := &replicaScript{tokens: []string{" one", " two"}, failAfter: -1}
			h := newReplicaHarness(t, true, []string{"p/0", "p/1"}, map[string]engine.Replica{"p/0": bad, "p/1": good})
			h.pools.busy = map[string]int{"p/1": 1} // another task on p/1: p/0 is the least loaded
			s := spec(admission.Interactive)
			h.submit(s)
			evs := h.events(s.ID)
			snap, _ := h.svc.Get(h.ctx, s.ID)
			if snap.Status != tt.wantState {
				t.Fatalf("state %v, want %v (events %s)", snap.Status, tt.wantState, names(evs))
			}
			if len(bad.requests())+len(good.requests()) != tt.wantTried {
				t.Fatalf("%d attempts, want %d", len(bad.requests())+len(good.requests()), tt.wantTried)
			}
			if int(h.pools.fails.Load()) != tt.wantFault {
				t.Fatalf("%d replica faults reported, want %d", h.pools.fails.Load(), tt.wantFault)
			}
			if tt.wantState != Succeeded {
				return
			}
			if got := names(evs); got != "started,token,metrics,token,end" {
				t.Fatalf("events %s", got)
			}
			if evs[1].Data != `{"t":" one","i":0}` || evs[3].Data != `{"t":" two","i":1}` {
				t.Fatalf("tokens %s %s", evs[1].Data, evs[3].Data)
			}
			if strings.Contains(evs[4].Data, "migrations") {
				t.Fatalf("a failover before the first token is no migration: %s", evs[4].Data)
			}
			if snap.Placement == nil || snap.Placement.ReplicaID != "p/1" || snap.Placement.Reason != "retry" {
				t.Fatalf("placement %+v", snap.Placement)
			}
			if c := snap.Placement.Candidates; len(c) != 2 || c[0].ExcludedBecause != "tried" || c[1].ExcludedBecause != "" {
				t.Fatalf("candidates %+v", c)
			}
			if n := testutil.ToFloat64(h.m.Placements.WithLabelValues("p", "retry")); n != 1 {
				t.Fatalf("placements_total{reason=retry} = %v", n)
			}
		})
	}
}

// TestMigrationMidStream: a replica that fails after some tokens hands the task to another
// replica, which continues from the prompt plus the text already streamed with max_tokens
// reduced; the client sees contiguous indices, no repeated text, and migrations: 1. Without
// migrate_on_failure, or for a chat task, the stream ends with a retriable worker reset.
func TestMigrationMidStream(t *testing.T) {
	tests := []struct {
		name     string
		migrate  bool
		workload string
		want     string // event names
	}{
		{"migrates", true, "completion", "started,token,metrics,token,token,token,end"},
		{"migration off", false, "completion", "started,token,metrics,token,error"},
		{"chat cannot continue", true, "chat", "started,token,metrics,token,error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := &replicaScript{tokens: []string{" The", " quick", " brown"}, failAfter: 2, err: resetErr()}
			second := &replicaScript{tokens: []string{" brown", " fox"}, failAfter: -1}
			h := newReplicaHarness(t, tt.migrate, []string{"p/0", "p/1"}, map[string]engine.Replica{"p/0": first, "p/1": second})
			h.pools.busy = map[string]int{"p/1": 1} // another task on p/1: p/0 is the least loaded
			s := spec(admission.Interactive)
			s.Prompt, s.MaxTokens, s.Workload = "Once:", 4, tt.workload
			if tt.workload == "chat" {
				s.Messages = []engine.Message{{Role: "user", Content: "Once:"}}
			}
			h.submit(s)
			evs := h.events(s.ID)
			if got := names(evs); got != tt.want {
				t.Fatalf("events %s, want %s", got, tt.want)
			}
			last := evs[len(evs)-1]
			if !tt.migrate || tt.workload == "chat" {
				if !strings.Contains(last.Data, `"code":"worker_reset"`) || !strings.Contains(last.Data, `"retriable":true`) {
					t.Fatalf("error frame %s", last.Data)
				}
				if n := len(second.requests()); n != 0 {
					t.Fatalf("the second replica got %d requests", n)
				}
				return
			}
			var text []string
			for _, ev := range evs {
				if ev.Event == "token" {
					text = append(text, ev.Data)
				}
			}
			want := []string{`{"t":" The","i":0}`, `{"t":" quick","i":1}`, `{"t":" brown","i":2}`, `{"t":" fox","i":3}`}
			if strings.Join(text, "|") != strings.Join(want, "|") {
				t.Fatalf("tokens %v, want %v", text, want)
			}
			if !strings.Contains(last.Data, `"migrations":1`) || !strings.Contains(last.Data, `"tokens_out":4`) {
				t.Fatalf("end %s", last.Data)
			}
			reqs := second.requests()
			if len(reqs) != 1 || reqs[0].Prompt != "Once: The quick" || reqs[0].MaxTokens != 2 {
				t.Fatalf("continuation request %+v", reqs)
			}
			snap, _ := h.svc.Get(h.ctx, s.ID)
			if snap.Migrations != 1 || snap.Placement.ReplicaID != "p/1" {
				t.Fatalf("snapshot %+v", snap)
			}
			if n := testutil.ToFloat64(h.m.Migrations.WithLabelValues("p")); n != 1 {
				t.Fatalf("task_migrations_total = %v", n)
			}
			// The replica label names the replicas that ran it: started on p/0, two tokens
			// each, and the queue knew no replica yet.
			for _, c := range []struct {
				name string
				got  float64
				want float64
			}{
				{"tasks_started p/0", testutil.ToFloat64(h.m.TasksStarted.WithLabelValues("llamacpp", "", "p", "p/0", "interactive")), 1},
				{"tasks_started p/1", testutil.ToFloat64(h.m.TasksStarted.WithLabelValues("llamacpp", "", "p", "p/1", "interactive")), 0},
				{"tokens_out p/0", testutil.ToFloat64(h.m.TokensOut.WithLabelValues("llamacpp", "", "p", "p/0")), 2},
				{"tokens_out p/1", testutil.ToFloat64(h.m.TokensOut.WithLabelValues("llamacpp", "", "p", "p/1")), 2},
				{"tasks_enqueued unplaced", testutil.ToFloat64(h.m.TasksEnqueued.WithLabelValues("llamacpp", "", "p", "", "interactive")), 1},
			} {
				if c.got != c.want {
					t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
				}
			}
		})
	}
}

// TestMigrationsCountMoves: a task's migrations (its state, its end frame) and
// task_migrations_total count the moves to another replica that took the task, not the
// failures: a replica failing mid-stream with no other replica left to take the task moves
// nothing.
func TestMigrationsCountMoves(t *testing.T) {
	tests := []struct {
		name string
		ids  []string
		want int // moves
	}{
		{"no other replica", []string{"p/0"}, 0},
		{"one other replica, which fails too", []string{"p/0", "p/1"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engines := map[string]engine.Replica{
				"p/0": &replicaScript{tokens: []string{" The", " quick", " brown"}, failAfter: 2, err: resetErr()},
				"p/1": &replicaScript{tokens: []string{" brown", " fox"}, failAfter: 1, err: resetErr()},
			}
			h := newReplicaHarness(t, true, tt.ids, engines)
			h.pools.busy = map[string]int{"p/1": 1} // another task on p/1: p/0 is the least loaded
			s := spec(admission.Interactive)
			s.Prompt, s.MaxTokens = "Once:", 4
			h.submit(s)
			evs := h.events(s.ID)
			if last := evs[len(evs)-1]; last.Event != "error" || !strings.Contains(last.Data, `"code":"worker_reset"`) {
				t.Fatalf("events %s, last %s: want a worker reset", names(evs), last.Data)
			}
			snap, _ := h.svc.Get(h.ctx, s.ID)
			if snap.Status != Failed || snap.Migrations != tt.want {
				t.Fatalf("state %v with %d migrations, want failed with %d", snap.Status, snap.Migrations, tt.want)
			}
			if n := testutil.ToFloat64(h.m.Migrations.WithLabelValues("p")); n != float64(tt.want) {
				t.Fatalf("task_migrations_total = %v, want %d", n, tt.want)
			}
		})
	}
}

// TestNoReplicaLeft: when every replica fails the task before its first token, each is tried
// once and the task fails retriable with the last replica's error.
func TestNoReplicaLeft(t *testing.T) {
	a := &replicaScript{failAfter: 0, tokens: []string{"x"}, err: resetErr()}
	b := &replicaScript{failAfter: 0, tokens: []string{"x"}, err: resetErr()}
	h := newReplicaHarness(t, true, []string{"p/0", "p/1"}, map[string]engine.Replica{"p/0": a, "p/1": b})
	s := spec(admission.Interactive)
	h.submit(s)
	evs := h.events(s.ID)
	if got := names(evs); got != "started,error" {
		t.Fatalf("events %s", got)
	}
	if len(a.requests()) != 1 || len(b.requests()) != 1 {
		t.Fatalf("attempts %d and %d, want one each", len(a.requests()), len(b.requests()))
	}
	if !strings.Contains(evs[1].Data, `"retriable":true`) {
		t.Fatalf("error %s", evs[1].Data)
	}
}

// TestSessionAffinity: the second turn of a session goes to the replica of the first.
func TestSessionAffinity(t *testing.T) {
	engines := map[string]engine.Replica{}
	ids := []string{"p/0", "p/1", "p/2"}
	for _, id := range ids {
		engines[id] = &replicaScript{tokens: []string{" ok"}, failAfter: -1}
	}
	h := newReplicaHarness(t, true, ids, engines)
	s1 := spec(admission.Interactive)
	h.submit(s1)
	h.events(s1.ID)
	first, _ := h.svc.Get(h.ctx, s1.ID)
	for range 3 {
		s := spec(admission.Interactive)
		s.SessionID = s1.SessionID
		h.submit(s)
		h.events(s.ID)
		snap, _ := h.svc.Get(h.ctx, s.ID)
		if snap.Placement.ReplicaID != first.Placement.ReplicaID || snap.Placement.Reason != "session" {
			t.Fatalf("turn on %s (%s), first turn on %s", snap.Placement.ReplicaID, snap.Placement.Reason, first.Placement.ReplicaID)
		}
	}
	// The engine is told the session, to keep its turns on one slot (llama.cpp id_slot).
	reqs := engines[first.Placement.ReplicaID].(*replicaScript).requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests on the session's replica, want 4", len(reqs))
	}
	for i, r := range reqs {
		if r.SessionID != s1.SessionID {
			t.Errorf("request %d has session %q, want %q", i, r.SessionID, s1.SessionID)
		}
	}
}
