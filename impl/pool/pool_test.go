package pool

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeReplica struct {
	url     string
	key     string
	ready   atomic.Bool
	running atomic.Int32 // reported by Load; negative: Load fails
	// conns is what EngineConns reports (env.conns[url] at its creation); nil: an adapter
	// that keeps no engine connections.
	conns *engine.ConnStats
}

// EngineConns makes every fake an engine.ConnReporter, as the adapters are; ok is false for
// one that keeps no connections, as httpengine.Conns answers for a nil pool.
func (f *fakeReplica) EngineConns() (engine.ConnStats, bool) {
	if f.conns == nil {
		return engine.ConnStats{}, false
	}
	return *f.conns, true
}

func (f *fakeReplica) Load(context.Context) (engine.Load, error) {
	n := f.running.Load()
	if n < 0 {
		return engine.Load{}, errors.New("no metrics")
	}
	return engine.Load{Running: int(n), Waiting: 1, KVUsage: 0.5}, nil
}

func (f *fakeReplica) Generate(context.Context, engine.Request, engine.EmitFunc) (engine.Result, error) {
	return engine.Result{}, nil
}

// Version is the engine version a Versioner reports: one per replica here.
func (f *fakeReplica) Version(context.Context) (string, error) { return "v:" + f.url, nil }

func (f *fakeReplica) Health(context.Context) (engine.Health, error) {
	if f.ready.Load() {
		return engine.Health{Live: true, Ready: true}, nil
	}
	return engine.Health{Live: true, Detail: "loading model"}, nil
}

type fakeManaged struct {
	url     string
	key     string
	stopped atomic.Bool
	// onStop, when set, is what Stop does first (its error is Stop's).
	onStop func(context.Context) error
}

func (m *fakeManaged) BaseURL() string { return m.url }
func (m *fakeManaged) APIKey() string  { return m.key }
func (m *fakeManaged) Stop(ctx context.Context) error {
	m.stopped.Store(true)
	if m.onStop != nil {
		return m.onStop(ctx)
	}
	return nil
}

type env struct {
	reg      *Registry
	mu       sync.Mutex
	replicas map[string]*fakeReplica
	managed  []*fakeManaged
	changes  chan View
	drained  chan string
	// replicaDrained receives "<pool> <replica>" when a replica's drain deadline passes.
	replicaDrained chan string
	startErr       error
	// onStop is the managed replicas' Stop hook (fakeManaged.onStop), when a setup sets it.
	onStop      func(context.Context) error
	notReady    string // a replica URL that reports not ready
	notReadyToo string // another
	// busy is the dispatcher's count of busy slots per replica id, which the registry reads.
	busy map[string]int
	// conns is the engine connections each replica's adapter reports, by URL (see fakeReplica).
	conns map[string]engine.ConnStats
	// now is the registry's clock when a setup sets it (else the wall clock).
	now func() time.Time
}

// setBusy sets the dispatcher's count of a replica's busy slots.
func (e *env) setBusy(replicaID string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.busy[replicaID] = n
}

func newEnv(t *testing.T, specs ...Spec) *env {
	t.Helper()
	return newEnvWith(t, nil, specs...)
}

// newEnvWith is newEnv with setup(e) run before the registry starts.
func newEnvWith(t *testing.T, setup func(*env), specs ...Spec) *env {
	t.Helper()
	e := &env{replicas: map[string]*fakeReplica{}, changes: make(chan View, 64), drained: make(chan string, 4),
		replicaDrained: make(chan string, 4), busy: map[string]int{}}
	if setup != nil {
		setup(e)
	}
	reg, err := New(Options{
		Pools: specs,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			e.mu.Lock()
			defer e.mu.Unlock()
			url := ep.URL
			r := &fakeReplica{url: url, key: ep.APIKey}
			if c, ok := e.conns[url]; ok {
				r.conns = &c
			}
			r.ready.Store(url != e.notReady && url != e.notReadyToo)
			e.replicas[url] = r
			return r
		},
		StartManaged: func(_ context.Context, _ Spec, rep ReplicaSpec, ref string) (Managed, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.startErr != nil {
				return nil, e.startErr
			}
			m := &fakeManaged{url: "http://managed/" + ref + "@" + rep.ID, key: "key-of-" + ref + "@" + rep.ID, onStop: e.onStop}
			e.managed = append(e.managed, m)
			return m, nil
		},
		ReplicaBusy: func(_, replicaID string) int {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.busy[replicaID]
		},
		Now:             e.now,
		HealthInterval:  time.Hour, // checks happen at start and on ReportFailure only
		ReloadGrace:     time.Second,
		OnChange:        func(v View) { e.changes <- v },
		OnDrainDeadline: func(id string) { e.drained <- id },
		OnReplicaDrainDeadline: func(poolID, replicaID string) {
			e.replicaDrained <- poolID + " " + replicaID
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() {
		cancel()
		reg.Wait()
		_ = reg.Stop(context.Background())
	})
	return e
}

// lastTold takes every view told so far and returns the last (last when none was told since).
func (e *env) lastTold(last View) View {
	for {
		select {
		case v := <-e.changes:
			last = v
		default:
			return last
		}
	}
}

// newEnvClock is newEnv on a clock that moves only when advance is called.
func newEnvClock(t *testing.T, specs ...Spec) (e *env, advance func(time.Duration)) {
	t.Helper()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	e = newEnvWith(t, func(e *env) {
		e.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	}, specs...)
	return e, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

func (e *env) waitView(t *testing.T, cond func(View) bool) View {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case v := <-e.changes:
			if cond(v) {
				return v
			}
		case <-timeout:
			t.Fatal("no matching pool change")
		}
	}
}

var managedSpec = Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", ModelIDDerived: true, CtxMax: 1024, Slots: 2, Managed: true}
var externalSpec = Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 1, URL: "http://ext"}

// TestEngineLoad: each health check of a ready replica refreshes the load its engine reports;
// a failed probe leaves none.
func TestEngineLoad(t *testing.T) {
	e := newEnv(t, externalSpec)
	e.waitView(t, func(v View) bool { return v.Ready() })
	e.mu.Lock()
	r := e.replicas["http://ext"]
	e.mu.Unlock()
	tests := []struct {
		running int32
		want    engine.Load
		has     bool
	}{
		{3, engine.Load{Running: 3, Waiting: 1, KVUsage: 0.5}, true},
		{0, engine.Load{Running: 0, Waiting: 1, KVUsage: 0.5}, true},
		{-1, engine.Load{}, false},
	}
	for _, tt := range tests {
		r.running.Store(tt.running)
		e.reg.check(context.Background(), "x")
		if v, _ := e.reg.Get("x"); v.HasEngineLoad != tt.has || v.EngineLoad != tt.want {
			t.Errorf("running %d: load %+v (has %v), want %+v (has %v)", tt.running, v.EngineLoad, v.HasEngineLoad, tt.want, tt.has)
		}
	}
}

func TestHealthBecomesReady(t *testing.T) {
	e := newEnv(t, externalSpec)
	v := e.waitView(t, func(v View) bool { return v.Ready() })
	if v.ID != "x" || !v.Live {
		t.Fatalf("view = %+v", v)
	}
	e.mu.Lock()
	r := e.replicas["http://ext"]
	e.mu.Unlock()
	r.ready.Store(false)
	// One failed check (say, a slow answer under load) is not enough to take it out of service.
	e.reg.check(context.Background(), "x")
	if v, _ := e.reg.Get("x"); !v.Ready() || v.LastError != "loading model" {
		t.Fatalf("after one failed check: %+v", v)
	}
	e.reg.check(context.Background(), "x")
	e.reg.ReportFailure("x", "x/0", leaseOf(e.reg, "x", "x/0")) // the third consecutive failure
	v = e.waitView(t, func(v View) bool { return !v.Ready() })
	if v.LastError != "loading model" {
		t.Fatalf("last error = %q", v.LastError)
	}
}

func TestDrain(t *testing.T) {
	e := newEnv(t, externalSpec)
	e.waitView(t, func(v View) bool { return v.Ready() })
	if err := e.reg.Drain("x", 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	v, _ := e.reg.Get("x")
	if !v.Draining || v.Ready() || !v.Healthy {
		t.Fatalf("view = %+v", v)
	}
	if got := <-e.drained; got != "x" {
		t.Fatalf("drained %q", got)
	}
	if err := e.reg.Drain("nope", time.Second); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}

// TestDrainDeadlineOfAnEndedDrain: a drain's deadline whose timer fires after the drain ended
// (a reload whose Stop of the timer came too late) or was replaced (drained again) cancels
// nothing: only the current drain's deadline fires.
func TestDrainDeadlineOfAnEndedDrain(t *testing.T) {
	const deadline = 100 * time.Millisecond
	for _, tc := range []struct {
		name string
		end  func(s *state) // under the registry's lock, as Reload (or Drain) leaves the pool
	}{
		{"reloaded", func(s *state) { s.draining, s.drainDeadline, s.drainTimer = false, time.Time{}, nil }},
		{"drained again", func(s *state) {
			s.drainTimer = time.NewTimer(time.Hour) // the later drain's timer (its callback is not needed here)
			s.drainTimer.Stop()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, externalSpec)
			e.waitView(t, func(v View) bool { return v.Ready() })
			start := time.Now()
			if err := e.reg.Drain("x", deadline); err != nil {
				t.Fatal(err)
			}
			e.reg.mu.Lock()
			tc.end(e.reg.pools["x"]) // the timer is left running, as a Stop that came too late
			e.reg.mu.Unlock()
			if time.Since(start) >= deadline {
				t.Skip("the deadline may have fired before its drain ended; nothing shown")
			}
			select {
			case id := <-e.drained:
				t.Fatalf("the deadline of an ended drain fired for %q", id)
			case <-time.After(3 * deadline):
			}
		})
	}
}

func TestReload(t *testing.T) {
	t.Run("success switches and stops the old replica", func(t *testing.T) {
		e := newEnv(t, managedSpec)
		e.waitView(t, func(v View) bool { return v.Ready() })
		_ = e.reg.Drain("m", time.Hour)
		v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
		if err != nil {
			t.Fatal(err)
		}
		if v.ModelRef != "models/b.gguf" || v.ModelID != "b" || v.Draining || !v.Ready() {
			t.Fatalf("view = %+v", v)
		}
		// The new replica's version is known at switch-over, not after the next health check.
		if want := "v:http://managed/models/b.gguf@m/0"; v.EngineVersion != want {
			t.Errorf("engine version after the reload %q, want %q", v.EngineVersion, want)
		}
		e.mu.Lock()
		old := e.managed[0]
		e.mu.Unlock()
		for range 200 {
			if old.stopped.Load() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !old.stopped.Load() {
			t.Fatal("old replica not stopped")
		}
		// Each managed replica's adapter carries that replica's own key.
		e.mu.Lock()
		defer e.mu.Unlock()
		for url, want := range map[string]string{"http://managed/" + managedSpec.ModelRef + "@m/0": "key-of-" + managedSpec.ModelRef + "@m/0",
			"http://managed/models/b.gguf@m/0": "key-of-models/b.gguf@m/0"} {
			if r := e.replicas[url]; r == nil || r.key != want {
				t.Errorf("replica %s: %+v, want key %q", url, r, want)
			}
		}
	})
	t.Run("a configured model id survives the reload", func(t *testing.T) {
		spec := managedSpec
		spec.ModelID, spec.ModelIDDerived = "chat-model", false
		e := newEnv(t, spec)
		e.waitView(t, func(v View) bool { return v.Ready() })
		v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
		if err != nil {
			t.Fatal(err)
		}
		if v.ModelRef != "models/b.gguf" || v.ModelID != "chat-model" {
			t.Fatalf("view = %+v, want model_ref models/b.gguf and model_id chat-model", v)
		}
	})
	t.Run("failure rolls back", func(t *testing.T) {
		for _, tt := range []struct {
			name        string
			startErr    error
			reason, msg string
		}{
			{"classified", &StartError{Reason: ReasonEngineExited, Message: "the engine exited"}, ReasonEngineExited, "the engine exited"},
			{"wrapped", fmt.Errorf("start: %w", &StartError{Reason: ReasonHealthGateTimeout, Message: "slow"}), ReasonHealthGateTimeout, "slow"},
			// An unclassified error may hold engine output: its text never reaches the message.
			{"unclassified", errors.New("exit 1; output tail: SECRET"), ReasonStartFailed, "the engine could not be started"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e := newEnv(t, managedSpec)
				e.waitView(t, func(v View) bool { return v.Ready() })
				e.mu.Lock()
				e.startErr = tt.startErr
				e.mu.Unlock()
				v, err := e.reg.Reload(context.Background(), "m", "models/missing.gguf")
				if !errors.Is(err, ErrReloadFailed) || v.ModelRef != "models/a.gguf" || !v.Ready() {
					t.Fatalf("reload = %+v, %v", v, err)
				}
				var re *ReloadError
				if !errors.As(err, &re) || re.Reason != tt.reason || re.Message != tt.msg {
					t.Fatalf("reload error = %#v, want reason %q message %q", err, tt.reason, tt.msg)
				}
			})
		}
	})
	t.Run("a replica that is not ready rolls back", func(t *testing.T) {
		e := newEnv(t, managedSpec)
		e.waitView(t, func(v View) bool { return v.Ready() })
		e.mu.Lock()
		e.notReady = "http://managed/models/b.gguf@m/0"
		e.mu.Unlock()
		v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
		var re *ReloadError
		if !errors.As(err, &re) || re.Reason != ReasonHealthCheckFailed || v.ModelRef != "models/a.gguf" {
			t.Fatalf("reload = %+v, %#v", v, err)
		}
		e.mu.Lock()
		stopped := e.managed[len(e.managed)-1].stopped.Load()
		e.mu.Unlock()
		if !stopped {
			t.Fatal("the replica that was not ready still runs")
		}
	})
	t.Run("external pools are not reloadable", func(t *testing.T) {
		e := newEnv(t, externalSpec)
		_, err := e.reg.Reload(context.Background(), "x", "other")
		var re *ReloadError
		if !errors.Is(err, ErrNotReloadable) || !errors.As(err, &re) || re.Reason != ReasonNotReloadable {
			t.Fatalf("err = %v", err)
		}
		if _, err := e.reg.Reload(context.Background(), "nope", "other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestEngineConns: EngineConns lists the engine connections of each started replica whose
// adapter keeps them, in configuration order, under its pool and replica ids; a managed
// replica that never started (it has no adapter yet) and an adapter that keeps no connections
// are left out.
func TestEngineConns(t *testing.T) {
	two := externalSpec
	two.ID, two.Replicas = "y", []ReplicaSpec{{ID: "y/a", URL: "http://y-a"}, {ID: "y/b", URL: "http://y-b"}}
	ext := engine.ConnStats{Dialed: 3, Reused: 7, Retried: 1, Idle: 2}
	yb := engine.ConnStats{Dialed: 9, Fallbacks: 1, LateEnds: 3, OnePerGeneration: true}
	e := newEnvWith(t, func(e *env) {
		e.startErr = &StartError{Reason: ReasonEngineExited, Message: "the engine exited", Permanent: true}
		e.conns = map[string]engine.ConnStats{"http://ext": ext, "http://y-b": yb,
			// The managed replica's URL, were it started: it must not show.
			"http://managed/" + managedSpec.ModelRef + "@m/0": {Dialed: 100}}
	}, managedSpec, externalSpec, two)
	deadline := time.Now().Add(5 * time.Second)
	for settled := false; !settled; time.Sleep(time.Millisecond) { // the external replicas up, the managed one given up
		if time.Now().After(deadline) {
			t.Fatalf("pools not settled: %+v", e.reg.Views())
		}
		vs := e.reg.Views()
		settled = vs[0].Replicas[0].LastError != "" && vs[1].ReadyReplicas() == 1 && vs[2].ReadyReplicas() == 2
	}
	want := []ReplicaConns{{Pool: "x", Replica: e.reg.Views()[1].Replicas[0].ID, ConnStats: ext},
		{Pool: "y", Replica: "y/b", ConnStats: yb}}
	if got := e.reg.EngineConns(); !reflect.DeepEqual(got, want) {
		t.Fatalf("EngineConns = %+v\nwant %+v", got, want)
	}
}

// TestViewsInto: the views written over a kept slice are Views' own, with the replicas' busy
// counts read at the call; a kept slice is reused without allocating; GetInto is Get.
func TestViewsInto(t *testing.T) {
	two := externalSpec
	two.ID, two.Replicas = "y", []ReplicaSpec{{ID: "y/a", URL: "http://y-a"}, {ID: "y/b", URL: "http://y-b"}}
	e := newEnv(t, managedSpec, externalSpec, two)
	deadline := time.Now().Add(5 * time.Second)
	for ready := false; !ready; time.Sleep(time.Millisecond) { // every replica's first probe done
		if time.Now().After(deadline) {
			t.Fatalf("pools not ready: %+v", e.reg.Views())
		}
		ready = true
		for _, v := range e.reg.Views() {
			ready = ready && v.ReadyReplicas() == len(v.Replicas)
		}
	}
	e.setBusy("y/b", 1)
	var kept []View
	kept = e.reg.ViewsInto(kept)
	if got, want := kept, e.reg.Views(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ViewsInto = %+v\nViews = %+v", got, want)
	}
	if got := kept[2].Replicas[1].Busy; got != 1 {
		t.Fatalf("busy of y/b = %d, want 1", got)
	}
	e.setBusy("y/b", 0)
	if allocs := testing.AllocsPerRun(100, func() { kept = e.reg.ViewsInto(kept) }); allocs != 0 {
		t.Errorf("ViewsInto over a kept slice allocates %v times", allocs)
	}
	if got := kept[2].Replicas[1].Busy; got != 0 {
		t.Fatalf("busy of y/b after the reuse = %d, want 0", got)
	}
	// A slice longer than the pools keeps none of their views past the pools' count.
	long := make([]View, 5)
	long[4] = kept[0]
	long = e.reg.ViewsInto(long)
	if len(long) != 3 || !reflect.DeepEqual(long, e.reg.Views()) || !reflect.DeepEqual(long[:5][3:], make([]View, 2)) {
		t.Fatalf("ViewsInto over 5 views = %d views %+v", len(long), long[:5])
	}

	reps := kept[2].Replicas
	for _, id := range []string{"m", "x", "y"} {
		want, _ := e.reg.Get(id)
		got, ok := e.reg.GetInto(id, reps)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("GetInto(%s) = %+v, %v; Get = %+v", id, got, ok, want)
		}
		reps = got.Replicas
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = e.reg.GetInto("y", reps) }); allocs != 0 {
		t.Errorf("GetInto over kept replicas allocates %v times", allocs)
	}
	if _, ok := e.reg.GetInto("nope", reps); ok {
		t.Fatal("GetInto of an unknown pool succeeded")
	}
}

// leaseOf is a lease of the engine replicaID of poolID runs now, as Acquire would hand it out:
// the reports of a generation that started at the breaker's current state.
func leaseOf(r *Registry, poolID, replicaID string) Lease {
	rs := r.replicaState(poolID, replicaID)
	r.mu.Lock()
	defer r.mu.Unlock()
	return Lease{Engine: rs.replica, epoch: rs.epoch}
}
