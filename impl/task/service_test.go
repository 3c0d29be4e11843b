package task

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/sse"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gate is an engine whose tokens the test releases one by one.
type gate struct {
	tokens  chan string // closed: generation ends with StopLimit
	fail    chan error
	started chan string // receives the task id of each generation
	active  atomic.Int32
}

func newGate() *gate {
	return &gate{tokens: make(chan string), fail: make(chan error, 1), started: make(chan string, 16)}
}

func (g *gate) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	g.active.Add(1)
	defer g.active.Add(-1)
	g.started <- req.TaskID
	n := 0
	for {
		select {
		case tok, ok := <-g.tokens:
			if !ok {
				return engine.Result{TokensOut: n, TokensIn: 3, Stop: engine.StopLimit}, nil
			}
			if err := emit(engine.Token{Text: []byte(tok), Index: n}); err != nil {
				return engine.Result{TokensOut: n}, err
			}
			n++
		case err := <-g.fail:
			return engine.Result{TokensOut: n}, err
		case <-ctx.Done():
			return engine.Result{TokensOut: n}, ctx.Err()
		}
	}
}

func (g *gate) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// fakePools serves every replica of its views with rep (or reps[replica id] when set). A
// view given without replicas has one, "<pool>/0", ready when the pool is healthy. Like the
// registry, it counts no busy slot: its views read them from the service (counted), plus busy,
// slots held by tasks outside the service (another daemon's, to steer placement).
type fakePools struct {
	mu       sync.Mutex
	views    []pool.View
	rep      engine.Replica
	reps     map[string]engine.Replica
	busy     map[string]int
	counted  func(poolID, replicaID string) int
	fails    atomic.Int32
	failed   []string // replica ids reported, in order
	acquired []string
}

func (p *fakePools) Get(id string) (pool.View, bool) {
	for _, v := range p.Views() {
		if v.ID == id {
			return v, true
		}
	}
	return pool.View{}, false
}

func (p *fakePools) GetInto(id string, _ []pool.ReplicaView) (pool.View, bool) { return p.Get(id) }

func (p *fakePools) ViewsInto([]pool.View) []pool.View { return p.Views() }

func (p *fakePools) Views() []pool.View {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]pool.View, len(p.views))
	for i, v := range p.views {
		v = oneReplica(v)
		for j := range v.Replicas {
			v.Replicas[j].Busy = p.busy[v.Replicas[j].ID]
			if p.counted != nil {
				v.Replicas[j].Busy += p.counted(v.ID, v.Replicas[j].ID)
			}
		}
		out[i] = v
	}
	return out
}

// oneReplica gives a view built without replicas its one replica, "<pool>/0", ready when the
// pool is healthy.
func oneReplica(v pool.View) pool.View {
	if len(v.Replicas) > 0 {
		v.Replicas = slices.Clone(v.Replicas)
		return v
	}
	st := pool.StateReady
	if !v.Healthy {
		st = pool.StateUnhealthy
	}
	v.Replicas = []pool.ReplicaView{{ReplicaSpec: pool.ReplicaSpec{ID: v.ID + "/0"}, State: st, Live: v.Live,
		Healthy: v.Healthy, Slots: v.Slots}}
	return v
}

func (p *fakePools) Acquire(_, replicaID string) (pool.Lease, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.acquired = append(p.acquired, replicaID)
	rep := p.rep
	if r, ok := p.reps[replicaID]; ok {
		rep = r
	}
	return pool.Lease{Engine: rep}, func() {}, nil
}

func (p *fakePools) ReportFailure(_, replicaID string, _ pool.Lease) {
	p.fails.Add(1)
	p.mu.Lock()
	p.failed = append(p.failed, replicaID)
	p.mu.Unlock()
}

func (p *fakePools) ReportSuccess(string, string, pool.Lease) {}

type harness struct {
	t     *testing.T
	svc   *Service
	eng   *gate
	clock *tasktest.Clock
	pools *fakePools
	m     *metrics.Metrics
	ctx   context.Context
	stop  func()
	meter *recMeter
}

// recMeter records what the service settles.
type recMeter struct {
	mu      sync.Mutex
	settled []string
}

func (r *recMeter) Recovered() {}

func (r *recMeter) Settle(owner, _ string, _ uint64, reserved, granted, used int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settled = append(r.settled, fmt.Sprintf("%s:%d/%d/%d", owner, used, granted, reserved))
}

func (r *recMeter) Restore(owner string, granted int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settled = append(r.settled, fmt.Sprintf("%s:restored %d", owner, granted))
}

func (r *recMeter) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.settled)
}

// hold holds its callers until free; entered tells the first one. A test frees it in a
// cleanup registered after its harness's, which runs first: a failed test then ends instead
// of waiting on a held runner.
type hold struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHold() *hold { return &hold{entered: make(chan struct{}, 1), release: make(chan struct{})} }

func (h *hold) wait() {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-h.release
}

func (h *hold) free() { h.once.Do(func() { close(h.release) }) }

// heldMeter holds every Settle: a task's end, before its final state.
type heldMeter struct{ *hold }

func (m heldMeter) Settle(string, string, uint64, int, int, int) { m.wait() }
func (heldMeter) Restore(string, int)                            {}
func (heldMeter) Recovered()                                     {}

// queuedBehind returns a harness of one slot whose task ends are held (its hold), with a
// first task running and a second queued behind it.
func queuedBehind(t *testing.T) (h *harness, held *hold, first, second Spec) {
	t.Helper()
	held = newHold()
	h = newHarnessWith(t, 4, 1, admission.Reject, func(o *Options) { o.Meter = heldMeter{held} })
	t.Cleanup(held.free) // runs before the harness stops
	first, second = spec(admission.Interactive), spec(admission.Interactive)
	h.submit(first)
	<-h.eng.started
	h.submit(second)
	return h, held, first, second
}

func newHarness(t *testing.T, capacity, slots int, policy admission.Policy) *harness {
	t.Helper()
	return newHarnessWith(t, capacity, slots, policy, nil)
}

// newHarnessWith is newHarness with more options (opt changes them before the service starts).
func newHarnessWith(t *testing.T, capacity, slots int, policy admission.Policy, opt func(*Options)) *harness {
	t.Helper()
	eng := newGate()
	ss, err := session.New(session.Options{MaxTurns: 3})
	if err != nil {
		t.Fatal(err)
	}
	v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
		Slots: slots, KVBytesPerToken: 10, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}},
		Live: true, Healthy: true}
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	fp := &fakePools{views: []pool.View{v}, rep: eng}
	m := metrics.New(prometheus.NewRegistry())
	meter := &recMeter{}
	o := Options{Capacity: capacity, Policy: policy, Pools: fp,
		Sessions: ss, Metrics: m, CancelOnDisconnect: true, Clock: clock, Meter: meter}
	if opt != nil {
		opt(&o)
	}
	svc := mustNew(t, o)
	fp.counted = svc.ReplicaBusy
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	waitRun(t, ctx, svc)
	svc.PoolChanged(ctx, oneReplica(v))
	h := &harness{t: t, svc: svc, eng: eng, clock: clock, pools: fp, m: m, ctx: ctx, meter: meter}
	h.stop = func() {
		// An ended context: Shutdown cancels at once whatever a test left running or queued.
		sctx, c := context.WithCancel(context.Background())
		c()
		svc.Shutdown(sctx)
		cancel()
		<-done
	}
	t.Cleanup(h.stop)
	return h
}

var nextID atomic.Int32

func spec(prio admission.Priority) Spec {
	n := nextID.Add(1)
	id := strings.Repeat("0", 8) + "-0000-4000-8000-" + strings.Repeat("0", 8) + string(rune('a'+n%26)) + string(rune('a'+n/26%26)) + "00"
	return Spec{ID: id, SessionID: "11111111-1111-4111-8111-1111111111" + string(rune('a'+n%26)) + string(rune('a'+n/26%26)), Workload: "completion", ModelRef: "tiny",
		Engine: "llamacpp", Ctx: 1024, Priority: prio, Prompt: "hi", MaxTokens: 8, Deadline: time.Minute}
}

func (h *harness) submit(s Spec) Admission {
	h.t.Helper()
	a, err := h.svc.Submit(h.ctx, s)
	if err != nil {
		h.t.Fatalf("Submit: %v", err)
	}
	return a
}

// events reads a task's whole log (waiting for the task to end).
func (h *harness) events(id string) []sse.Event {
	h.t.Helper()
	tk, err := h.svc.Task(id)
	if err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-tk.Done():
	case <-time.After(10 * time.Second):
		h.t.Fatalf("task %s did not finish", id)
	}
	cur := tk.Subscribe(0, false)
	defer cur.Close()
	b, complete := cur.Next(nil)
	if !complete {
		h.t.Fatal("log not complete after Done")
	}
	var out []sse.Event
	r := sse.NewReader(bytes.NewReader(b), 0)
	for {
		ev, err := r.Next()
		if err != nil {
			break
		}
		out = append(out, ev)
	}
	return out
}

func names(evs []sse.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Event)
	}
	return strings.Join(s, ",")
}

func TestStreamToEnd(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	s := spec(admission.Interactive)
	a := h.submit(s)
	if a.QueuePosition != 0 || a.PoolID != "p" {
		t.Fatalf("admission = %+v", a)
	}
	<-h.eng.started
	h.eng.tokens <- " The"
	h.eng.tokens <- " quick"
	close(h.eng.tokens)
	evs := h.events(s.ID)
	if got := names(evs); got != "started,token,metrics,token,end" {
		t.Fatalf("events = %s", got)
	}
	if evs[1].Data != `{"t":" The","i":0}` || evs[3].Data != `{"t":" quick","i":1}` {
		t.Fatalf("tokens = %s %s", evs[1].Data, evs[3].Data)
	}
	if !strings.Contains(evs[4].Data, `"tokens_out":2`) || !strings.Contains(evs[4].Data, `"stop_reason":"limit"`) {
		t.Fatalf("end = %s", evs[4].Data)
	}
	snap, err := h.svc.Get(h.ctx, s.ID)
	if err != nil || snap.Status != Succeeded || snap.TokensOut != 2 {
		t.Fatalf("snapshot = %+v, %v", snap, err)
	}
}

func TestCancel(t *testing.T) {
	t.Run("queued", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		first, second := spec(admission.Interactive), spec(admission.Interactive)
		h.submit(first)
		<-h.eng.started
		if a := h.submit(second); a.QueuePosition != 0 || a.PredictedStartMs != 100 {
			t.Fatalf("second admission = %+v", a)
		}
		if err := h.svc.Cancel(h.ctx, second.ID); err != nil {
			t.Fatal(err)
		}
		if got := names(h.events(second.ID)); got != "started,end" {
			t.Fatalf("events = %s", got)
		}
		if err := h.svc.Cancel(h.ctx, second.ID); err != nil { // idempotent
			t.Fatal(err)
		}
		close(h.eng.tokens)
		h.events(first.ID)
	})
	t.Run("queued: the answer waits until the task has ended", func(t *testing.T) {
		h, meter, first, second := queuedBehind(t)
		returned := make(chan error, 1)
		go func() { returned <- h.svc.Cancel(h.ctx, second.ID) }()
		<-meter.entered // second's runner is ending it, held before its final state
		select {
		case err := <-returned:
			t.Fatalf("Cancel returned (%v) while the task was still queued", err)
		case <-time.After(100 * time.Millisecond): // with the wait, Cancel cannot return before the release
		}
		meter.free()
		if err := <-returned; err != nil {
			t.Fatal(err)
		}
		if snap, _ := h.svc.Get(h.ctx, second.ID); snap.Status != Canceled || snap.QueuePosition != nil || snap.Finished.IsZero() {
			t.Fatalf("after Cancel: %+v", snap)
		}
		close(h.eng.tokens)
		h.events(first.ID)
	})
	t.Run("queued: a second cancel waits as the first does", func(t *testing.T) {
		// The runner is held where a cancelled queued task has left the queue and is not yet
		// ended (its queue-wait span's End): the task is cancelled, not yet canceled.
		tr := &heldTracer{hold: newHold()}
		h := newHarnessWith(t, 4, 1, admission.Reject, func(o *Options) { o.Tracer = tr })
		t.Cleanup(tr.free) // runs before the harness stops
		blocker, s := spec(admission.Interactive), spec(admission.Interactive)
		h.submit(blocker)
		<-tr.entered // blocker's runner ends its wait, held: s stays queued until cancelled
		h.submit(s)
		returned := make(chan error, 2)
		go func() { returned <- h.svc.Cancel(h.ctx, s.ID) }()
		<-tr.entered // s's runner, after the first cancel
		go func() { returned <- h.svc.Cancel(h.ctx, s.ID) }()
		select {
		case err := <-returned:
			snap, _ := h.svc.Get(context.WithoutCancel(h.ctx), s.ID)
			t.Fatalf("a Cancel returned (%v) before the task ended (%v)", err, snap.Status)
		case <-time.After(100 * time.Millisecond): // with the wait, neither can return before the release
		}
		tr.free()
		for range 2 {
			if err := <-returned; err != nil {
				t.Fatal(err)
			}
		}
		if snap, _ := h.svc.Get(h.ctx, s.ID); snap.Status != Canceled {
			t.Fatalf("after Cancel: %+v", snap)
		}
		close(h.eng.tokens)
	})
	t.Run("queued: the caller leaving ends the wait", func(t *testing.T) {
		h, meter, first, second := queuedBehind(t)
		ctx, leave := context.WithCancel(h.ctx)
		returned := make(chan error, 1)
		go func() { returned <- h.svc.Cancel(ctx, second.ID) }()
		<-meter.entered
		leave()
		if err := <-returned; err != nil {
			t.Fatal(err)
		}
		meter.free()
		close(h.eng.tokens)
		if got := names(h.events(second.ID)); got != "started,end" {
			t.Fatalf("events = %s", got)
		}
		h.events(first.ID)
	})
	t.Run("running: no token after the cancel", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		s := spec(admission.Interactive)
		h.submit(s)
		<-h.eng.started
		h.eng.tokens <- " The"
		waitFor(t, func() bool { snap, _ := h.svc.Get(h.ctx, s.ID); return snap.TokensOut == 1 })
		if err := h.svc.Cancel(h.ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		evs := h.events(s.ID)
		// The metrics frame that follows a first token may or may not precede the cancel.
		if got := strings.ReplaceAll(names(evs), ",metrics", ""); got != "started,token,end" {
			t.Fatalf("events = %s", got)
		}
		if end := evs[len(evs)-1]; !strings.Contains(end.Data, `"canceled":true`) {
			t.Fatalf("end = %s", end.Data)
		}
		if snap, _ := h.svc.Get(h.ctx, s.ID); snap.Status != Canceled {
			t.Fatalf("status = %v", snap.Status)
		}
		waitFor(t, func() bool { return h.eng.active.Load() == 0 })
	})
	t.Run("unknown", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		if err := h.svc.Cancel(h.ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestQueueFull(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		h := newHarness(t, 1, 1, admission.Reject)
		run, queued := spec(admission.Interactive), spec(admission.Interactive)
		h.submit(run)
		<-h.eng.started
		h.submit(queued)
		_, err := h.svc.Submit(h.ctx, spec(admission.Interactive))
		var re *RejectError
		if !errors.As(err, &re) || re.Class != ClassQueueFull || re.RetryAfter <= 0 || re.Policy != "reject" {
			t.Fatalf("err = %#v", err)
		}
		close(h.eng.tokens)
	})
	t.Run("drop-lru evicts the oldest batch task", func(t *testing.T) {
		h := newHarness(t, 1, 1, admission.DropLRU)
		run, batch, inter := spec(admission.Interactive), spec(admission.Batch), spec(admission.Interactive)
		h.submit(run)
		<-h.eng.started
		h.submit(batch)
		h.submit(inter)
		evs := h.events(batch.ID)
		if got := names(evs); got != "started,error" || !strings.Contains(evs[1].Data, `"code":"evicted"`) {
			t.Fatalf("evicted = %s %v", got, evs)
		}
		if !strings.Contains(evs[1].Data, "new task_id") { // a re-post of its id returns this end
			t.Errorf("the eviction does not say to retry under a new task_id: %s", evs[1].Data)
		}
		// A batch task finding only interactive work queued is refused.
		_, err := h.svc.Submit(h.ctx, spec(admission.Batch))
		var re *RejectError
		if !errors.As(err, &re) || re.Class != ClassEvicted {
			t.Fatalf("err = %v", err)
		}
		close(h.eng.tokens)
		h.events(inter.ID)
	})
}

// TestWhoseFault: only the replica's faults are reported against the pool's health; every engine
// failure is counted in engine_errors_total by kind and fault; the task fails with the kind's
// class (Options.Code is the default Class.String here) and is retriable unless the request or
// the daemon is at fault.
func TestWhoseFault(t *testing.T) {
	tests := []struct {
		kind      engine.Kind
		fault     string
		code      string
		reported  bool
		retriable bool
	}{
		{engine.KindInvalidRequest, "request", "invalid", false, false},
		{engine.KindOverload, "overload", "overload", false, true},
		{engine.KindWorkerReset, "replica", "worker_reset", true, true},
		{engine.KindPoolUnavailable, "replica", "pool_unavailable", true, true},
		{engine.KindEngineFailure, "replica", "worker_reset", true, true},
		{engine.KindDecodeTimeout, "replica", "decode_timeout", true, true},
		{engine.KindProtocol, "replica", "worker_reset", true, true},
		{engine.KindInternal, "daemon", "internal", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			h := newHarness(t, 4, 1, admission.Reject)
			s := spec(admission.Interactive)
			h.submit(s)
			<-h.eng.started
			h.eng.fail <- engine.Errorf(tt.kind, "engine says no")
			evs := h.events(s.ID)
			last := evs[len(evs)-1]
			if last.Event != "error" || !strings.Contains(last.Data, `"code":"`+tt.code+`"`) ||
				!strings.Contains(last.Data, fmt.Sprintf(`"retriable":%v`, tt.retriable)) {
				t.Errorf("final frame %s %s, want error %s retriable=%v", last.Event, last.Data, tt.code, tt.retriable)
			}
			if got := h.pools.fails.Load() > 0; got != tt.reported {
				t.Errorf("reported against the replica: %v, want %v", got, tt.reported)
			}
			var m dto.Metric
			if err := h.m.EngineErrors.WithLabelValues("llamacpp", "p", tt.kind.String(), tt.fault).Write(&m); err != nil {
				t.Fatal(err)
			}
			if n := m.GetCounter().GetValue(); n != 1 {
				t.Errorf("engine_errors_total{kind=%s,fault=%s} = %v, want 1", tt.kind, tt.fault, n)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	t.Run("engine reset", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		s := spec(admission.Interactive)
		h.submit(s)
		<-h.eng.started
		h.eng.fail <- engine.Errorf(engine.KindWorkerReset, "connection reset")
		evs := h.events(s.ID)
		if got := names(evs); got != "started,error" || !strings.Contains(evs[1].Data, `"code":"worker_reset"`) ||
			!strings.Contains(evs[1].Data, `"retriable":true`) {
			t.Fatalf("events = %s %v", got, evs)
		}
	})
	t.Run("deadline while running", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		s := spec(admission.Interactive)
		s.Deadline = 20 * time.Millisecond
		h.submit(s)
		<-h.eng.started // the runner has armed the deadline before it calls the engine
		h.clock.Advance(19 * time.Millisecond)
		h.eng.tokens <- " The" // still running: the token is taken
		h.clock.Advance(time.Millisecond)
		evs := h.events(s.ID)
		if got := strings.ReplaceAll(names(evs), ",metrics", ""); got != "started,token,error" ||
			!strings.Contains(evs[len(evs)-1].Data, `"code":"deadline"`) || !strings.Contains(evs[len(evs)-1].Data, "deadline of 20 ms passed") {
			t.Fatalf("events = %s %v", got, evs)
		}
		waitFor(t, func() bool { return h.eng.active.Load() == 0 })
	})
	t.Run("deadline while queued", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		blocker, s := spec(admission.Interactive), spec(admission.Interactive)
		h.submit(blocker)
		<-h.eng.started
		s.Deadline = 1500 * time.Millisecond
		h.submit(s)
		waitFor(t, func() bool { return h.clock.Timers() == 2 }) // both runners wait under their deadlines
		h.clock.Advance(time.Second)                             // before the deadline: still queued
		if snap, _ := h.svc.Get(h.ctx, s.ID); snap.Status != Queued {
			t.Fatalf("status %v before the deadline", snap.Status)
		}
		h.clock.Advance(time.Second) // past it: the deadline itself wakes the waiter
		evs := h.events(s.ID)
		if got := names(evs); got != "started,error" || !strings.Contains(evs[1].Data, `"code":"deadline"`) ||
			!strings.Contains(evs[1].Data, "passed while it was queued") {
			t.Fatalf("events = %s %v", got, evs)
		}
		close(h.eng.tokens)
		h.events(blocker.ID)
	})
	t.Run("ctx above ctx_max", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		s := spec(admission.Interactive)
		s.Ctx = 8192
		if _, err := h.svc.Submit(h.ctx, s); !errors.Is(err, ErrInvalid) || !errors.Is(err, placement.ErrCtxTooLarge) ||
			!strings.Contains(err.Error(), "ctx_max 4096") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no pool", func(t *testing.T) {
		h := newHarness(t, 4, 1, admission.Reject)
		s := spec(admission.Interactive)
		s.ModelRef = "other"
		if _, err := h.svc.Submit(h.ctx, s); !errors.Is(err, ErrNoMatch) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("turn limit", func(t *testing.T) {
		h := newHarness(t, 8, 1, admission.Reject)
		sess := spec(admission.Batch).SessionID
		for range 3 {
			s := spec(admission.Batch)
			s.SessionID = sess
			h.submit(s)
		}
		s := spec(admission.Batch)
		s.SessionID = sess
		_, err := h.svc.Submit(h.ctx, s)
		var tl *session.TurnLimitError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &tl) || tl.Limit != 3 {
			t.Fatalf("err = %v, want ErrInvalid wrapping the session's *TurnLimitError{Limit: 3}", err)
		}
		close(h.eng.tokens)
	})
}

func TestIdempotentSubmit(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	s := spec(admission.Interactive)
	s.Fingerprint = [32]byte{1}
	h.submit(s)
	a := h.submit(s)
	if !a.Replayed {
		t.Fatalf("second submit = %+v", a)
	}
	other := s
	other.Fingerprint = [32]byte{2}
	if _, err := h.svc.Submit(h.ctx, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v", err)
	}
	// The same body from another key is no replay of this key's task.
	stranger := s
	stranger.Owner = "mallory"
	if _, err := h.svc.Submit(h.ctx, stranger); !errors.Is(err, ErrConflict) {
		t.Fatalf("another key's re-post: err = %v", err)
	}
	close(h.eng.tokens)
}

// TestReplay: Replay answers a re-post of its owner's admitted task (again, or a conflict for
// another body), and leaves everything else to Submit.
func TestReplay(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	s := spec(admission.Interactive)
	s.Owner, s.Fingerprint = "alice", [32]byte{1}
	if _, ok, err := h.svc.Replay(h.ctx, s); ok || err != nil {
		t.Fatalf("Replay of an unknown task: ok %v, err %v", ok, err)
	}
	h.submit(s)
	if a, ok, err := h.svc.Replay(h.ctx, s); !ok || err != nil || !a.Replayed || a.TaskID != s.ID {
		t.Fatalf("Replay of the task: %+v, ok %v, err %v", a, ok, err)
	}
	other := s
	other.Fingerprint = [32]byte{2}
	if _, ok, err := h.svc.Replay(h.ctx, other); !ok || !errors.Is(err, ErrConflict) {
		t.Fatalf("Replay with another body: ok %v, err %v; want ErrConflict", ok, err)
	}
	stranger := s
	stranger.Owner = "mallory"
	if _, ok, err := h.svc.Replay(h.ctx, stranger); ok || err != nil {
		t.Fatalf("Replay by another key: ok %v, err %v; want it left to Submit", ok, err)
	}
	close(h.eng.tokens)
}

// gateJournal holds every Wait until the test opens it, and counts the waits begun.
type gateJournal struct {
	mu    sync.Mutex
	seq   uint64
	open  chan struct{}
	waits atomic.Int32
}

func (j *gateJournal) Append(string, uint8, string, []byte, []byte) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	return j.seq
}

func (j *gateJournal) Wait(ctx context.Context, _ uint64) error {
	j.waits.Add(1)
	select {
	case <-j.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *gateJournal) Visible() (uint64, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq, nil
}
func (j *gateJournal) Retire(string) {}
func (j *gateJournal) Replay(func(string, uint8, string, []byte, []byte) error) error {
	return nil
}

// TestTaskShownOnceDurable: a task is in the table from just before its admission is
// recorded (a concurrent post of its id finds it), but a GET in that moment waits until the
// admission is durable, as its 202 does: nobody sees a task that a crash would take back.
func TestTaskShownOnceDurable(t *testing.T) {
	j := &gateJournal{open: make(chan struct{})}
	h := newHarnessWith(t, 4, 1, admission.Reject, func(o *Options) { o.Journal = j })
	s := spec(admission.Interactive)
	submitted := make(chan error, 1)
	go func() { _, err := h.svc.Submit(h.ctx, s); submitted <- err }()
	for j.waits.Load() < 1 { // the admission waits for the journal
		runtime.Gosched()
	}
	got := make(chan error, 1)
	go func() { _, err := h.svc.Get(h.ctx, s.ID); got <- err }()
	for j.waits.Load() < 2 { // so does the GET, which cannot answer until the journal opens
		select {
		case err := <-got:
			t.Fatalf("GET answered (%v) before the admission was durable", err)
		default:
			runtime.Gosched()
		}
	}
	close(j.open)
	if err := <-submitted; err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("GET after the admission: %v", err)
	}
	close(h.eng.tokens)
}

// TestOwnerAndSettle: a task keeps the key that created it, and its end settles the tokens it
// used against the tokens its admission reserved (its max_tokens, for a key with a tpm limit).
func TestOwnerAndSettle(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	s := spec(admission.Interactive)
	s.Owner, s.TPMReserved = "alice", s.MaxTokens
	h.submit(s)
	<-h.eng.started
	h.eng.tokens <- " a"
	h.eng.tokens <- " b"
	close(h.eng.tokens)
	h.events(s.ID)
	snap, err := h.svc.Get(h.ctx, s.ID)
	if err != nil || snap.Owner != "alice" {
		t.Fatalf("snapshot = %+v, %v", snap, err)
	}
	if tk, _ := h.svc.Task(s.ID); tk.Owner() != "alice" {
		t.Fatalf("owner = %q", tk.Owner())
	}
	if got := h.meter.got(); !slices.Equal(got, []string{"alice:2/0/8"}) {
		t.Fatalf("settled = %v", got)
	}
}

// TestBudgetStop: a task granted fewer tokens than its max_tokens ends after the grant with
// end carrying stop "budget", and is settled with what it used.
func TestBudgetStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		grant  int
		send   int
		events string
		end    []string // substrings of the end frame
		nostop bool
	}{
		{name: "spent", grant: 2, send: 3, events: "started,token,metrics,token,end",
			end: []string{`"tokens_out":2`, `"stop_reason":"budget"`, `"stop":"budget"`}},
		{name: "within", grant: 5, send: 2, events: "started,token,metrics,token,end",
			end: []string{`"tokens_out":2`, `"stop_reason":"limit"`}, nostop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 4, 1, admission.Reject)
			s := spec(admission.Interactive)
			s.Owner, s.Grant, s.StopAt, s.TPMReserved = "alice", tc.grant, tc.grant, s.MaxTokens
			h.submit(s)
			<-h.eng.started
			for i := range tc.send {
				h.eng.tokens <- fmt.Sprint(" t", i)
			}
			if tc.send <= tc.grant {
				close(h.eng.tokens)
			}
			evs := h.events(s.ID)
			if got := names(evs); got != tc.events {
				t.Fatalf("events = %s", got)
			}
			end := evs[len(evs)-1].Data
			for _, want := range tc.end {
				if !strings.Contains(end, want) {
					t.Errorf("end = %s, want %s", end, want)
				}
			}
			if tc.nostop && strings.Contains(end, `"stop"`) {
				t.Errorf("end = %s carries stop", end)
			}
			if snap, _ := h.svc.Get(h.ctx, s.ID); snap.Status != Succeeded {
				t.Errorf("status %v", snap.Status)
			}
			if got := h.meter.got(); !slices.Equal(got, []string{fmt.Sprintf("alice:2/%d/8", tc.grant)}) {
				t.Fatalf("settled = %v", got)
			}
		})
	}
}

func TestPoolDrained(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	run, queued := spec(admission.Interactive), spec(admission.Interactive)
	h.submit(run)
	<-h.eng.started
	h.submit(queued)
	h.svc.PoolDrained(h.ctx, "p")
	for _, id := range []string{run.ID, queued.ID} {
		evs := h.events(id)
		if !strings.Contains(evs[len(evs)-1].Data, `"code":"pool_unavailable"`) {
			t.Fatalf("%s: %v", id, evs)
		}
	}
}

func TestShutdownStopsAdmission(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	s := spec(admission.Interactive)
	h.submit(s)
	<-h.eng.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the grace is over at once: the running task is cancelled, not waited for
	h.svc.Shutdown(ctx)
	if _, err := h.svc.Submit(h.ctx, spec(admission.Interactive)); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("err = %v", err)
	}
	evs := h.events(s.ID)
	if !strings.Contains(evs[len(evs)-1].Data, "shut down") {
		t.Fatalf("events = %v", evs)
	}
}

func TestOnTimeProbability(t *testing.T) {
	tests := []struct {
		a, r float64
		want float64
	}{
		{1000, 1000, 0.5},
		{10000, 100, 1},
		{0, 5000, 0},
		{-10, 0, 0},
		{1, 5000, 0.018},
		{200, 100, 0.881}, // s = 50: 1/(1+e^-2)
	}
	for _, tt := range tests {
		if got := OnTimeProbability(tt.a, tt.r); got != tt.want {
			t.Errorf("OnTimeProbability(%v, %v) = %v, want %v", tt.a, tt.r, got, tt.want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not met")
}

// mustNew is New for tests: invalid options end the test.
func mustNew(tb testing.TB, opts Options) *Service {
	tb.Helper()
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
