package pool

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/placement"
)

var threeExternal = Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2,
	Replicas: []ReplicaSpec{{ID: "x/0", URL: "http://a"}, {ID: "x/1", URL: "http://b"}, {ID: "edge", URL: "http://c"}}}

// TestReplicasHaveTheirOwnHealth: each replica of a pool is polled on its own; one going
// unhealthy takes its slots out of the pool while the others serve.
func TestReplicasHaveTheirOwnHealth(t *testing.T) {
	e := newEnv(t, threeExternal)
	v := e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 3 })
	if v.SlotsTotal() != 6 || len(v.Replicas) != 3 || v.Replicas[2].ID != "edge" || v.Replicas[1].URL != "http://b" {
		t.Fatalf("view %+v", v)
	}
	e.mu.Lock()
	b := e.replicas["http://b"]
	e.mu.Unlock()
	b.ready.Store(false)
	for range 3 { // UnhealthyAfter
		e.reg.check(context.Background(), "x")
	}
	v, _ = e.reg.Get("x")
	if !v.Ready() || v.ReadyReplicas() != 2 || v.SlotsTotal() != 4 {
		t.Fatalf("after one replica failed: ready %v, %d replicas ready, %d slots", v.Ready(), v.ReadyReplicas(), v.SlotsTotal())
	}
	if r := v.Replicas[1]; r.State != StateUnhealthy || r.LastError != "loading model" || v.Replicas[0].State != StateReady {
		t.Fatalf("replicas %+v", v.Replicas)
	}
}

// TestBreaker: replica faults open a replica's breaker (never the pool's other replicas');
// after the cooldown it half-opens and lets one probe task through; a success closes it, a
// fault opens it again.
func TestBreaker(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	reg, err := New(Options{Pools: []Spec{threeExternal}, Now: clock, BreakerFaults: 2, BreakerCooldown: time.Minute,
		HealthInterval: time.Hour,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait() })
	for {
		if v, _ := reg.Get("x"); v.ReadyReplicas() == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	breaker := func(id string) placement.Breaker {
		v, _ := reg.Get("x")
		for _, r := range v.Replicas {
			if r.ID == id {
				return r.Breaker
			}
		}
		t.Fatalf("no replica %s", id)
		return 0
	}
	reg.ReportFailure("x", "x/1", leaseOf(reg, "x", "x/1"))
	if b := breaker("x/1"); b != placement.BreakerClosed {
		t.Fatalf("one fault: %v", b)
	}
	reg.ReportFailure("x", "x/1", leaseOf(reg, "x", "x/1"))
	if b := breaker("x/1"); b != placement.BreakerOpen {
		t.Fatalf("two faults: %v", b)
	}
	if v, _ := reg.Get("x"); v.ReadyReplicas() != 2 || breaker("x/0") != placement.BreakerClosed {
		t.Fatalf("the open breaker of x/1 affects the others: %+v", v.Replicas)
	}
	advance(time.Minute)
	if b := breaker("x/1"); b != placement.BreakerHalfOpen {
		t.Fatalf("after the cooldown: %v", b)
	}
	_, release, err := reg.Acquire("x", "x/1")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := reg.Get("x"); !v.Replicas[1].ProbeInFlight {
		t.Fatalf("probe not marked: %+v", v.Replicas[1])
	}
	release()
	release() // idempotent
	if v, _ := reg.Get("x"); v.Replicas[1].ProbeInFlight {
		t.Fatalf("after release: %+v", v.Replicas[1])
	}
	reg.ReportFailure("x", "x/1", leaseOf(reg, "x", "x/1")) // the probe failed: open again, for another cooldown
	if b := breaker("x/1"); b != placement.BreakerOpen {
		t.Fatalf("failed probe: %v", b)
	}
	advance(time.Minute)
	reg.ReportSuccess("x", "x/1", leaseOf(reg, "x", "x/1"))
	if b := breaker("x/1"); b != placement.BreakerClosed {
		t.Fatalf("successful probe: %v", b)
	}
}

type supervisedManaged struct {
	fakeManaged
	mu sync.Mutex
	st ManagedStatus
}

func (s *supervisedManaged) Status() ManagedStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// TestSupervisorOwnsManagedHealth: a managed replica's health is what its supervisor says
// (the registry does not poll the engine's health on its own), with its restarts and error.
func TestSupervisorOwnsManagedHealth(t *testing.T) {
	var mu sync.Mutex
	var sups []*supervisedManaged
	healthCalls := 0
	spec := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", CtxMax: 1024, Slots: 1,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true, Devices: []int{0}}, {ID: "m/1", Managed: true, Devices: []int{1}}}}
	changes := make(chan View, 64)
	reg, err := New(Options{Pools: []Spec{spec}, HealthInterval: time.Hour,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			return &countingReplica{calls: func() { mu.Lock(); healthCalls++; mu.Unlock() }}
		},
		StartManaged: func(_ context.Context, _ Spec, rs ReplicaSpec, ref string) (Managed, error) {
			m := &supervisedManaged{fakeManaged: fakeManaged{url: "http://" + rs.ID}, st: ManagedStatus{Ready: true, Live: true}}
			mu.Lock()
			sups = append(sups, m)
			mu.Unlock()
			return m, nil
		},
		OnChange: func(v View) { changes <- v },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait(); _ = reg.Stop(context.Background()) })
	waitFor := func(cond func(View) bool) View {
		t.Helper()
		for {
			select {
			case v := <-changes:
				if cond(v) {
					return v
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no matching change")
			}
		}
	}
	waitFor(func(v View) bool { return v.ReadyReplicas() == 2 })
	mu.Lock()
	s := sups[0]
	mu.Unlock()
	s.mu.Lock()
	s.st = ManagedStatus{Live: false, LastError: "engine restarting", Restarts: 1}
	s.mu.Unlock()
	reg.check(context.Background(), "m")
	v, _ := reg.Get("m")
	var r ReplicaView
	for _, rv := range v.Replicas {
		if rv.URL == s.url {
			r = rv
		}
	}
	if r.State != StateUnhealthy || r.LastError != "engine restarting" || r.Restarts != 1 || !v.Ready() || v.ReadyReplicas() != 1 {
		t.Fatalf("replica %+v, pool ready %v", r, v.Ready())
	}
	mu.Lock()
	defer mu.Unlock()
	if healthCalls != 0 {
		t.Fatalf("the registry polled a supervised engine's health %d times", healthCalls)
	}
}

type countingReplica struct{ calls func() }

func (c *countingReplica) Generate(context.Context, engine.Request, engine.EmitFunc) (engine.Result, error) {
	return engine.Result{}, nil
}

func (c *countingReplica) Health(context.Context) (engine.Health, error) {
	c.calls()
	return engine.Health{Live: true, Ready: true}, nil
}

// TestReloadReplicaByReplica: a reload replaces each managed replica in turn; when one fails
// its health gate, the replicas already switched are switched back and the pool keeps its
// model.
func TestReloadReplicaByReplica(t *testing.T) {
	three := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", CtxMax: 1024, Slots: 1,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", Managed: true}, {ID: "m/2", Managed: true}}}
	t.Run("success", func(t *testing.T) {
		e := newEnv(t, three)
		e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 3 })
		v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
		if err != nil {
			t.Fatal(err)
		}
		if v.ModelRef != "models/b.gguf" || v.ReadyReplicas() != 3 {
			t.Fatalf("view %+v", v)
		}
		for _, r := range v.Replicas {
			if r.ModelRef != "models/b.gguf" || r.URL != "http://managed/models/b.gguf@"+r.ID {
				t.Errorf("replica %s: model %s at %s", r.ID, r.ModelRef, r.URL)
			}
		}
	})
	t.Run("a failed gate rolls back", func(t *testing.T) {
		e := newEnv(t, three)
		e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 3 })
		e.mu.Lock()
		e.notReady = "http://managed/models/b.gguf@m/1"
		e.mu.Unlock()
		v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
		var re *ReloadError
		if !errors.As(err, &re) || re.Reason != ReasonHealthCheckFailed {
			t.Fatalf("reload: %v", err)
		}
		if v.ModelRef != "models/a.gguf" || v.ReadyReplicas() != 3 {
			t.Fatalf("view %+v", v)
		}
		for _, r := range v.Replicas {
			if r.ModelRef != "models/a.gguf" {
				t.Errorf("replica %s left on %s", r.ID, r.ModelRef)
			}
		}
	})
}

// TestFailedRollbackReplicaIsNotReady: when a reload fails on one replica and switching an
// already-switched replica back fails too, that replica serves the new model while the pool
// still names the old one. It must take no task (clients asked for the pool's model) and the
// pool's health must say why, until a reload succeeds.
func TestFailedRollbackReplicaIsNotReady(t *testing.T) {
	two := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", CtxMax: 1024, Slots: 1,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", Managed: true}}}
	e := newEnv(t, two)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 2 })
	e.mu.Lock()
	e.notReady = "http://managed/models/b.gguf@m/1"    // the reload fails on m/1 ...
	e.notReadyToo = "http://managed/models/a.gguf@m/0" // ... and m/0's switch back fails
	e.mu.Unlock()
	v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
	var re *ReloadError
	if !errors.As(err, &re) {
		t.Fatalf("reload: %v", err)
	}
	if v.ModelRef != "models/a.gguf" {
		t.Fatalf("pool model %s", v.ModelRef)
	}
	r0 := v.Replicas[0]
	if r0.ModelRef != "models/b.gguf" {
		t.Fatalf("m/0 runs %s: the test did not fail the rollback", r0.ModelRef)
	}
	if r0.Healthy || r0.State == StateReady || v.ReadyReplicas() != 1 || v.SlotsTotal() != 1 {
		t.Fatalf("m/0 on another model is placeable: %+v (ready replicas %d)", r0, v.ReadyReplicas())
	}
	if !strings.Contains(r0.LastError, "models/b.gguf") || !strings.Contains(v.LastError, "reload the pool") {
		t.Fatalf("errors: replica %q, pool %q", r0.LastError, v.LastError)
	}
	if !v.Replicas[1].Healthy || !v.Ready() {
		t.Fatalf("m/1 kept model a and must serve: %+v", v)
	}
	// Chosen from a view taken before the rollback failed, it is refused all the same.
	if _, _, err := e.reg.Acquire("m", "m/0"); engine.KindOf(err) != engine.KindPoolUnavailable {
		t.Fatalf("acquire of m/0, on another model than the pool's: %v, want pool unavailable", err)
	}

	// A reload that succeeds puts both on one model again.
	e.mu.Lock()
	e.notReady, e.notReadyToo = "", ""
	e.mu.Unlock()
	if v, err = e.reg.Reload(context.Background(), "m", "models/b.gguf"); err != nil {
		t.Fatal(err)
	}
	if v.ReadyReplicas() != 2 || v.LastError != "" {
		t.Fatalf("after a good reload: %+v", v)
	}
}

// TestBreakerPerPool: a pool's breaker settings (config breaker: {faults, cooldown}) override
// the registry's for its replicas only.
func TestBreakerPerPool(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	strict := threeExternal
	strict.ID, strict.BreakerFaults, strict.BreakerCooldown = "strict", 1, 5*time.Second
	strict.Replicas = nil
	for i, r := range threeExternal.Replicas {
		r.ID = "strict/" + string(rune('0'+i))
		r.URL += "0"
		strict.Replicas = append(strict.Replicas, r)
	}
	reg, err := New(Options{Pools: []Spec{threeExternal, strict}, Now: clock, BreakerFaults: 2, BreakerCooldown: time.Minute,
		HealthInterval: time.Hour,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait() })
	breaker := func(pool, id string) placement.Breaker {
		v, _ := reg.Get(pool)
		for _, r := range v.Replicas {
			if r.ID == id {
				return r.Breaker
			}
		}
		t.Fatalf("no replica %s", id)
		return 0
	}
	reg.ReportFailure("x", "x/1", leaseOf(reg, "x", "x/1"))
	reg.ReportFailure("strict", "strict/1", leaseOf(reg, "strict", "strict/1"))
	if b, s := breaker("x", "x/1"), breaker("strict", "strict/1"); b != placement.BreakerClosed || s != placement.BreakerOpen {
		t.Fatalf("after one fault: default pool %v, strict pool %v", b, s)
	}
	reg.ReportFailure("x", "x/1", leaseOf(reg, "x", "x/1"))
	advance(5 * time.Second)
	if b, s := breaker("x", "x/1"), breaker("strict", "strict/1"); b != placement.BreakerOpen || s != placement.BreakerHalfOpen {
		t.Fatalf("after 5s: default pool %v (cooldown 1m), strict pool %v (cooldown 5s)", b, s)
	}
}

// TestDrainShowsEachReplica: draining a pool drains each of its replicas: every replica in
// the pool's health shows draining.
func TestDrainShowsEachReplica(t *testing.T) {
	e := newEnv(t, threeExternal)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 3 })
	if err := e.reg.Drain("x", time.Hour); err != nil {
		t.Fatal(err)
	}
	v, _ := e.reg.Get("x")
	if !v.Draining || len(v.Replicas) != 3 {
		t.Fatalf("view %+v", v)
	}
	for _, r := range v.Replicas {
		if r.State != StateDraining {
			t.Errorf("replica %s is %s while its pool drains", r.ID, r.State)
		}
	}
}

// TestReportsOfAReplacedEngine: a reload replaces a replica's engine while generations still run
// on the old one, which is stopped after the grace. Their failures (and successes) are about
// the old engine: they leave the new one's breaker alone, and an old probe's end does not
// end the new engine's probe.
func TestReportsOfAReplacedEngine(t *testing.T) {
	one := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", CtxMax: 1024, Slots: 2,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}}}
	e := newEnv(t, one)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 1 })
	old, releaseOld, err := e.reg.Acquire("m", "m/0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Reload(context.Background(), "m", "models/b.gguf"); err != nil {
		t.Fatal(err)
	}
	breaker := func() placement.Breaker {
		v, _ := e.reg.Get("m")
		return replicaView(t, v, "m/0").Breaker
	}
	for range 5 { // the old engine's generations fail as it is stopped
		e.reg.ReportFailure("m", "m/0", old)
	}
	releaseOld()
	if b := breaker(); b != placement.BreakerClosed {
		t.Fatalf("the new engine's breaker after the old one's failures: %v, want closed", b)
	}

	cur, releaseCur, err := e.reg.Acquire("m", "m/0")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseCur()
	for range 3 {
		e.reg.ReportFailure("m", "m/0", cur)
	}
	if b := breaker(); b != placement.BreakerOpen {
		t.Fatalf("the new engine's breaker after its own failures: %v, want open", b)
	}
	e.reg.ReportSuccess("m", "m/0", old) // a late success of the old engine closes nothing
	if b := breaker(); b != placement.BreakerOpen {
		t.Fatalf("the new engine's breaker after the old one's success: %v, want open", b)
	}
}

// TestProbeOfAReplacedEngine: a probe that a reload overtook ends after the new engine's own
// breaker half-opened and sent its probe: the new engine's probe is still in flight (no second
// task is let through as a probe beside it).
func TestProbeOfAReplacedEngine(t *testing.T) {
	one := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", CtxMax: 1024, Slots: 2,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}}, BreakerFaults: 1, BreakerCooldown: time.Minute}
	e, advance := newEnvClock(t, one)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 1 })
	probe := func() (Lease, func()) {
		t.Helper()
		e.reg.ReportFailure("m", "m/0", leaseOf(e.reg, "m", "m/0"))
		advance(2 * time.Minute)
		rep, release, err := e.reg.Acquire("m", "m/0")
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := e.reg.Get("m"); !replicaView(t, v, "m/0").ProbeInFlight {
			t.Fatalf("no probe in flight after a half-open acquire: %+v", v.Replicas)
		}
		return rep, release
	}
	_, releaseOld := probe()
	if _, err := e.reg.Reload(context.Background(), "m", "models/b.gguf"); err != nil {
		t.Fatal(err)
	}
	_, releaseNew := probe()
	defer releaseNew()
	releaseOld()
	if v, _ := e.reg.Get("m"); !replicaView(t, v, "m/0").ProbeInFlight {
		t.Fatalf("the new engine's probe ended with the old engine's: %+v", v.Replicas)
	}
}

// TestStopStopsReplicasTogether: the daemon stops its managed engines under one deadline
// (15 s); each engine may take its stop grace to exit. Stopped one after another, the last
// ones found the deadline spent and were killed without a grace: they are stopped together.
// Here each Stop waits until all three have begun (or its ctx ends).
func TestStopStopsReplicasTogether(t *testing.T) {
	const n = 3
	var begun sync.WaitGroup
	begun.Add(n)
	all := make(chan struct{})
	go func() { begun.Wait(); close(all) }()
	spec := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", CtxMax: 1024, Slots: 1, Managed: true,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", Managed: true}, {ID: "m/2", Managed: true}}}
	var stops atomic.Int32
	e := newEnvWith(t, func(e *env) {
		e.onStop = func(ctx context.Context) error {
			if stops.Add(1) <= n {
				begun.Done()
			}
			select {
			case <-all:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}, spec)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == n })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.reg.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v; the replicas' stops did not run together", err)
	}
}
