package task

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// cstep is what a ctlEngine generation does next: emit tok, fail with err, or (neither) end.
type cstep struct {
	tok string
	err error
}

// started is a generation that began: the engine instance and the task.
type started struct {
	eng  *ctlEngine
	task string
}

// ctlEngine is one engine instance of a replica whose generations the test steers one step at
// a time. Its active generations are the ground truth that the busy counts must match.
type ctlEngine struct {
	replica string
	url     string
	started chan<- started

	mu   sync.Mutex
	runs map[string]chan cstep // task id -> its generation here
}

func (e *ctlEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	ch := make(chan cstep)
	e.mu.Lock()
	e.runs[req.TaskID] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.runs, req.TaskID)
		e.mu.Unlock()
	}()
	e.started <- started{e, req.TaskID}
	n := 0
	for {
		select {
		case st := <-ch:
			switch {
			case st.err != nil:
				return engine.Result{TokensOut: n}, st.err
			case st.tok == "":
				return engine.Result{TokensOut: n, Stop: engine.StopLimit}, nil
			}
			if err := emit(engine.Token{Text: []byte(st.tok), Index: n}); err != nil {
				return engine.Result{TokensOut: n}, err
			}
			n++
		case <-ctx.Done():
			return engine.Result{TokensOut: n}, ctx.Err()
		}
	}
}

func (e *ctlEngine) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// running reports whether the task's generation runs on e.
func (e *ctlEngine) running(task string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[task] != nil
}

// send gives the task's generation on e its next step (false: the generation had ended).
func (e *ctlEngine) send(ctx context.Context, task string, st cstep) bool {
	e.mu.Lock()
	ch := e.runs[task]
	e.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- st:
		return true
	case <-ctx.Done():
		return false
	}
}

// fakeProcess is a managed replica's process.
type fakeProcess struct {
	url     string
	stopped atomic.Bool
}

func (m *fakeProcess) BaseURL() string { return m.url }
func (m *fakeProcess) Stop(context.Context) error {
	m.stopped.Store(true)
	return nil
}

// regHarness is a task service over the real pool registry, wired as the daemon wires them
// (the registry reads busy slots from the service; its changes update the queue), with
// managed replicas whose engines the test steers.
type regHarness struct {
	*harness
	reg     *pool.Registry
	started chan started

	mu        sync.Mutex
	engines   []*ctlEngine
	processes map[string]*fakeProcess // by url
	on        map[string]*ctlEngine   // task -> the engine instance it runs on now
}

// regSetup changes what newRegHarness wires: each field, when set, is used.
type regSetup struct {
	sessions   func(*session.Store) sessions // wraps the session store the service uses
	onDrained  func(replicaID string)        // after the service handled a replica's drain deadline
	beforeStop func()                        // first thing the harness's stop does
	pool       func(*pool.Spec)              // changes the pool's spec before the registry starts
}

func newRegHarness(t *testing.T, replicas, slots, breakerFaults int, setups ...func(*regSetup)) *regHarness {
	t.Helper()
	var rs regSetup
	for _, f := range setups {
		f(&rs)
	}
	rh := &regHarness{started: make(chan started, 1024), processes: map[string]*fakeProcess{}, on: map[string]*ctlEngine{}}
	spec := pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 4096, Slots: slots,
		KVBytesPerToken: 10, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"},
		MigrateOnFailure: true, BreakerFaults: breakerFaults}
	for i := range replicas {
		spec.Replicas = append(spec.Replicas, pool.ReplicaSpec{ID: fmt.Sprintf("p/%d", i), Managed: true})
	}
	if rs.pool != nil {
		rs.pool(&spec)
	}
	var svc *Service
	reg, err := pool.New(pool.Options{
		Pools: []pool.Spec{spec},
		NewReplica: func(_ pool.Spec, ep pool.Endpoint) engine.Replica {
			rh.mu.Lock()
			defer rh.mu.Unlock()
			rep, _, _ := strings.Cut(strings.TrimPrefix(ep.URL, "http://"), "@")
			e := &ctlEngine{replica: rep, url: ep.URL, started: rh.started, runs: map[string]chan cstep{}}
			rh.engines = append(rh.engines, e)
			return e
		},
		StartManaged: func(_ context.Context, _ pool.Spec, rep pool.ReplicaSpec, ref string) (pool.Managed, error) {
			rh.mu.Lock()
			defer rh.mu.Unlock()
			m := &fakeProcess{url: "http://" + rep.ID + "@" + ref}
			rh.processes[m.url] = m
			return m, nil
		},
		HealthInterval: time.Hour, // checked at start and after a fault
		ReloadGrace:    time.Minute,
		ReplicaBusy:    func(poolID, replicaID string) int { return svc.ReplicaBusy(poolID, replicaID) },
		OnChange:       func(v pool.View) { svc.PoolChanged(context.Background(), v) },
		OnReplicaDrainDeadline: func(poolID, replicaID string) {
			svc.ReplicaDrained(context.Background(), poolID, replicaID)
			if rs.onDrained != nil {
				rs.onDrained(replicaID)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	store, err := session.New(session.Options{MaxTurns: 8})
	if err != nil {
		t.Fatal(err)
	}
	var ss sessions = store
	if rs.sessions != nil {
		ss = rs.sessions(store)
	}
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	m := metrics.New(prometheus.NewRegistry())
	svc = mustNew(t, Options{Capacity: 256, Pools: reg, Sessions: ss, Metrics: m, Clock: clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	waitRun(t, ctx, svc)
	svc.SyncPools(ctx)
	rctx, rcancel := context.WithCancel(context.Background())
	reg.Start(rctx)
	h := &harness{t: t, svc: svc, clock: clock, m: m, ctx: ctx}
	h.stop = func() {
		if rs.beforeStop != nil {
			rs.beforeStop()
		}
		sctx, c := context.WithCancel(context.Background())
		c()
		svc.Shutdown(sctx)
		cancel()
		<-done
		rcancel()
		reg.Wait()
	}
	t.Cleanup(h.stop)
	rh.harness, rh.reg = h, reg
	for i := 0; ; i++ {
		ps := svc.queue.Stats().Pools["p"]
		if ps.Dispatchable && ps.Slots == replicas*slots {
			break
		}
		if i == 2000 {
			v, _ := reg.Get("p")
			t.Fatalf("the queue has pool %+v; the registry %+v", ps, v)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return rh
}

// next waits for the next generation to start and records where its task runs.
func (h *regHarness) next() started {
	h.t.Helper()
	select {
	case s := <-h.started:
		h.mu.Lock()
		h.on[s.task] = s.eng
		h.mu.Unlock()
		return s
	case <-time.After(10 * time.Second):
		h.t.Fatal("no generation started")
		return started{}
	}
}

// engineOf is the engine instance a task runs on now.
func (h *regHarness) engineOf(task string) *ctlEngine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.on[task]
}

// step sends the task's generation its next step.
func (h *regHarness) step(task string, st cstep) {
	h.t.Helper()
	if !h.engineOf(task).send(h.ctx, task, st) {
		h.t.Fatalf("task %s has no generation on %s", task, h.engineOf(task).replica)
	}
}

// onReplica is the tasks running on a replica (any of its engine instances), from the engines.
func (h *regHarness) onReplica(replica string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, e := range h.engines {
		if e.replica != replica {
			continue
		}
		e.mu.Lock()
		for id := range e.runs {
			out = append(out, id)
		}
		e.mu.Unlock()
	}
	return out
}

// check asserts, at a quiet moment, that the one count of busy slots agrees everywhere with the
// generations the engines run: per replica in the registry's view (what placement and pool
// health read) and in the queue; for the pool in the queue, equal to the running tasks; and
// that the queue's slots follow the view's total (a drained replica's held slots).
func (h *regHarness) check(step string) {
	h.t.Helper()
	v, _ := h.reg.Get("p")
	per := map[string]int{}
	busy := h.svc.Busy("p", per)
	sum := 0
	for _, r := range v.Replicas {
		want := len(h.onReplica(r.ID))
		sum += want
		if r.Busy != want || per[r.ID] != want || h.svc.ReplicaBusy("p", r.ID) != want {
			h.t.Fatalf("%s: replica %s runs %d; view says %d busy, queue %d", step, r.ID, want, r.Busy, per[r.ID])
		}
	}
	if running := h.running(); busy != sum || running != sum {
		h.t.Fatalf("%s: pool busy %d, running tasks %d, engines run %d", step, busy, running, sum)
	}
	if ps := h.svc.queue.Stats().Pools["p"]; ps.Slots != v.SlotsTotal() || ps.Busy != busy {
		h.t.Fatalf("%s: the queue has %d slots (%d busy), the pool %d", step, ps.Slots, ps.Busy, v.SlotsTotal())
	}
}

// fuller is the replica running the most tasks, and one of its tasks other than skip.
func (h *regHarness) fuller(skip string, replicas ...string) (string, string) {
	best, task := "", ""
	n := -1
	for _, r := range replicas {
		if ts := h.onReplica(r); len(ts) > n {
			best, n, task = r, len(ts), ""
			for _, id := range ts {
				if id != skip {
					task = id
				}
			}
		}
	}
	return best, task
}

// submitN submits n interactive tasks and waits for each to start; it returns their ids.
func (h *regHarness) submitN(n int) []string {
	h.t.Helper()
	var ids []string
	for range n {
		s := spec(0)
		h.submit(s)
		ids = append(ids, s.ID)
		if got := h.next(); got.task != s.ID {
			h.t.Fatalf("started %s, want %s", got.task, s.ID)
		}
	}
	return ids
}

// end ends a running task normally and waits for its final frame.
func (h *regHarness) end(task string) {
	h.t.Helper()
	h.step(task, cstep{})
	h.events(task)
}

// testBusyOverRegistry: the pool registry counts nothing; the busy slots it shows per replica,
// the pool's in the queue and the queue's capacity agree with what the engines run through
// dispatch, failover before the first token and mid-stream, cancel, a replica's drain and a
// reload.
func testBusyOverRegistry(t *testing.T) {
	h := newRegHarness(t, 2, 2, 0)
	h.check("idle")
	a := h.submitN(3)
	h.check("dispatch")

	// Before the first token: the task moves from the fuller replica to the other.
	from, task := h.fuller("", "p/0", "p/1")
	h.step(task, cstep{err: resetErr()})
	if s := h.next(); s.task != task || s.eng.replica == from {
		t.Fatalf("failover: %s started on %s, want %s off %s", s.task, s.eng.replica, task, from)
	}
	h.check("failover before the first token")

	// Mid-stream: a token, then the replica fails; the task migrates with its slot. (Another
	// task: the first already tried the other replica.)
	from, task = h.fuller(task, "p/0", "p/1")
	h.step(task, cstep{tok: "x"})
	h.step(task, cstep{err: resetErr()})
	if s := h.next(); s.task != task || s.eng.replica == from {
		t.Fatalf("migration: %s started on %s, want %s off %s", s.task, s.eng.replica, task, from)
	}
	h.check("migration mid-stream")

	if err := h.svc.Cancel(h.ctx, a[0]); err != nil {
		t.Fatal(err)
	}
	h.events(a[0])
	h.check("cancel")
	h.end(a[1])
	h.check("end")

	// Drain the replica that runs the remaining task, with one more task on it.
	b := h.submitN(2)
	drained, _ := h.fuller("", "p/0", "p/1")
	other := map[string]string{"p/0": "p/1", "p/1": "p/0"}[drained]
	held := h.onReplica(drained)
	if len(held) == 0 {
		t.Fatalf("nothing runs on %s", drained)
	}
	if err := h.reg.DrainReplica("p", drained, time.Hour); err != nil {
		t.Fatal(err)
	}
	h.check("replica drained")
	for range 2 - len(h.onReplica(other)) { // fill the other replica: new tasks go there only
		c := h.submitN(1)
		if e := h.engineOf(c[0]); e.replica != other {
			t.Fatalf("a task was placed on the drained replica %s", e.replica)
		}
		b = append(b, c...)
	}
	h.check("the other replica full")
	for _, id := range held {
		h.end(id)
		h.check("a task on the drained replica ended")
	}
	if _, err := h.reg.ResumeReplica("p", drained); err != nil {
		t.Fatal(err)
	}
	h.check("resumed")

	// Reload with a task on each replica: the old engines finish theirs, on the same replicas'
	// slots; the new engines take the new tasks.
	for _, r := range []string{"p/0", "p/1"} {
		if len(h.onReplica(r)) == 0 {
			b = append(b, h.submitN(1)...)
		}
	}
	old := map[string]*ctlEngine{}
	for _, id := range append(a, b...) {
		if e := h.engineOf(id); e != nil && e.running(id) {
			old[id] = e
		}
	}
	if _, err := h.reg.Reload(h.ctx, "p", "tiny2"); err != nil {
		t.Fatal(err)
	}
	h.check("reloaded, old engines still running")
	for id, e := range old {
		h.end(id)
		h.check("a task on a replaced engine ended")
		h.mu.Lock()
		p := h.processes[e.url]
		h.mu.Unlock()
		if p != nil && len(h.onReplica(e.replica)) == 0 {
			waitFor(t, p.stopped.Load) // the replaced process stops once its generations end
		}
	}
	n := h.submitN(2)
	for _, id := range n {
		if e := h.engineOf(id); !strings.HasSuffix(e.url, "@tiny2") {
			t.Fatalf("a new task ran on the replaced engine %s", e.url)
		}
	}
	h.check("new tasks on the new engines")
	for _, id := range n {
		h.end(id)
	}
	h.check("at rest")
	if v, _ := h.reg.Get("p"); v.SlotsTotal() != 4 {
		t.Fatalf("at rest the pool has %d slots", v.SlotsTotal())
	}
}

// testBusyStress: tasks are dispatched onto three replicas whose engines end, fail before the
// first token or fail mid-stream at random, while other goroutines cancel tasks and a replica
// is drained and resumed; an observer checks throughout that the replicas' counts never exceed
// the pool's nor go negative, and at rest every count is 0 and the queue's slots are whole.
func testBusyStress(t *testing.T) {
	h := newRegHarness(t, 3, 2, 1<<20) // no breaker opens: the pool stays ready
	ctx, stop := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the engines: each generation gets a random fate
		defer wg.Done()
		n := 0
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-h.started:
				n++
				fate := []cstep{{}, {err: resetErr()}, {tok: "x"}}[n%3]
				wg.Add(1)
				go func() {
					defer wg.Done()
					if s.eng.send(ctx, s.task, fate) && fate.tok != "" {
						s.eng.send(ctx, s.task, cstep{err: resetErr()}) // mid-stream
					}
				}()
			}
		}
	}()
	var bad atomic.Value
	wg.Add(1)
	go func() { // the observer
		defer wg.Done()
		for ctx.Err() == nil {
			per := map[string]int{}
			busy := h.svc.Busy("p", per)
			sum := 0
			for _, n := range per {
				sum += n
			}
			if sum > busy || busy > 6 {
				bad.CompareAndSwap(nil, fmt.Sprintf("busy %d, replicas %v", busy, per))
			}
			for _, r := range []string{"p/0", "p/1", "p/2"} {
				if n := h.svc.ReplicaBusy("p", r); n < 0 || n > 6 {
					bad.CompareAndSwap(nil, fmt.Sprintf("%s busy %d", r, n))
				}
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	const n = 120
	ids := make([]string, n)
	for i := range ids {
		s := spec(0)
		ids[i] = s.ID
		h.submit(s)
		switch {
		case i%7 == 3:
			go func() { _ = h.svc.Cancel(h.ctx, s.ID) }()
		case i == n/3:
			if err := h.reg.DrainReplica("p", "p/2", time.Hour); err != nil {
				t.Error(err)
			}
		case i == 2*n/3:
			if _, err := h.reg.ResumeReplica("p", "p/2"); err != nil {
				t.Error(err)
			}
		}
	}
	for _, id := range ids {
		h.events(id)
	}
	stop()
	wg.Wait()
	if msg := bad.Load(); msg != nil {
		t.Fatal(msg)
	}
	h.check("at rest")
}

// waitRun waits until svc.Run(ctx) has taken ctx as its tasks' base: a task submitted before
// would run under context.Background, out of reach of Run's end, and could outlive the test.
func waitRun(t *testing.T, ctx context.Context, svc *Service) {
	t.Helper()
	waitFor(t, func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		return svc.runCtx == ctx
	})
}

// TestReplacedEngineFailureSparesTheNewOne: a task still running on a replica's engine that a
// reload replaced fails there (the old process is stopped after the grace). The failure counts
// against the old engine only: the replica's breaker, with the new engine in place, stays
// closed, and the next task runs on the new engine.
func TestReplacedEngineFailureSparesTheNewOne(t *testing.T) {
	h := newRegHarness(t, 1, 2, 1) // one fault opens a breaker
	a := h.submitN(1)[0]
	if _, err := h.reg.Reload(h.ctx, "p", "tiny2"); err != nil {
		t.Fatal(err)
	}
	h.step(a, cstep{err: resetErr()}) // as the old process is stopped under it
	if evs := h.events(a); evs[len(evs)-1].Event != "error" {
		t.Fatalf("the task on the stopped engine ended with %s", names(evs))
	}
	v, _ := h.reg.Get("p")
	if r := v.Replicas[0]; r.Breaker != placement.BreakerClosed || !v.Ready() {
		t.Fatalf("after the replaced engine's failure: breaker %v, pool ready %v", r.Breaker, v.Ready())
	}
	b := h.submitN(1)[0]
	if e := h.engineOf(b); !strings.HasSuffix(e.url, "@tiny2") {
		t.Fatalf("the next task ran on %s, want the new engine", e.url)
	}
	h.end(b)
	h.check("at rest")
}
