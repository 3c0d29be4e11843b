package pool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// lastTold collects the views OnChange is told; last is what the queue believes.
type lastTold struct {
	mu   sync.Mutex
	last View
	n    int
}

func (l *lastTold) OnChange(v View) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last, l.n = v, l.n+1
}

func (l *lastTold) get() (View, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.n
}

// TestBreakerHalfOpenIsTold: a single-replica pool whose breaker opened is told as not
// healthy (the queue stops dispatching to it). Once the cooldown passes the breaker half-opens
// and the pool's view is healthy again (so that one probe task can go through), but OnChange
// is never told: the queue keeps the pool undispatchable with 0 slots, so no probe is ever
// sent and queued tasks wait until something else about the pool changes.
func TestBreakerHalfOpenIsTold(t *testing.T) {
	told := &lastTold{}
	reg, err := New(Options{Pools: []Spec{externalSpec}, BreakerFaults: 1, BreakerCooldown: 100 * time.Millisecond,
		HealthInterval: time.Hour,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		},
		OnChange: told.OnChange})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait() })
	for {
		if v, _ := told.get(); v.Healthy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	reg.ReportFailure("x", "x/0", leaseOf(reg, "x", "x/0"))
	if v, _ := told.get(); v.Healthy || v.SlotsTotal() != 0 {
		t.Fatalf("after the breaker opened, told healthy %v slots %d", v.Healthy, v.SlotsTotal())
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		reg.check(context.Background(), "x") // the poller's health checks go on
		if v, _ := told.get(); v.Healthy && v.SlotsTotal() == 1 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	now, _ := reg.Get("x")
	v, n := told.get()
	t.Fatalf("breaker half-open: the pool is healthy %v with %d slots (breaker %v), but the last of %d views told says healthy %v with %d slots",
		now.Healthy, now.SlotsTotal(), now.Replicas[0].Breaker, n, v.Healthy, v.SlotsTotal())
}

// TestPoolDrainUnhealthyReplicaIsTold: while a pool is drained its replicas still run the
// queued tasks (the queue dispatches on View.Healthy with SlotsTotal). A replica that goes
// unhealthy then, with the same error its earlier failed checks already reported, changes
// SlotsTotal but no OnChange is sent: the replica's State stays "draining" and changed() does
// not compare replicas' Healthy, so the queue keeps counting the dead replica's slots.
func TestPoolDrainUnhealthyReplicaIsTold(t *testing.T) {
	e := newEnv(t, threeExternal)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 3 })
	if err := e.reg.Drain("x", time.Hour); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	b := e.replicas["http://b"]
	e.mu.Unlock()
	b.ready.Store(false)
	for range 3 { // UnhealthyAfter
		e.reg.check(context.Background(), "x")
	}
	last := e.lastTold(View{})
	now, _ := e.reg.Get("x")
	if now.SlotsTotal() != 4 {
		t.Fatalf("pool slots now %d, want 4 (setup)", now.SlotsTotal())
	}
	if last.SlotsTotal() != now.SlotsTotal() {
		t.Fatalf("the last view told has %d slots (%d ready replicas), the pool %d (%d ready replicas)",
			last.SlotsTotal(), last.ReadyReplicas(), now.SlotsTotal(), now.ReadyReplicas())
	}
}

// TestStopDuringReload: the daemon stops (Registry.Stop) while a reload is starting the
// new engine. The reload then installs the new replica after Stop took the replicas down: it
// is never stopped (a leaked engine process holding GPU memory after shutdown) and the
// replica shows ready again.
func TestStopDuringReload(t *testing.T) {
	var mu sync.Mutex
	var ms []*fakeManaged
	reloadStarting := make(chan struct{})
	proceed := make(chan struct{})
	reg, err := New(Options{Pools: []Spec{managedSpec}, HealthInterval: time.Hour, ReloadGrace: 10 * time.Millisecond,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		},
		StartManaged: func(_ context.Context, _ Spec, rs ReplicaSpec, ref string) (Managed, error) {
			if ref == "models/b.gguf" {
				close(reloadStarting)
				<-proceed
			}
			m := &fakeManaged{url: "http://managed/" + ref + "@" + rs.ID}
			mu.Lock()
			ms = append(ms, m)
			mu.Unlock()
			return m, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait() })
	for {
		if v, _ := reg.Get("m"); v.Ready() {
			break
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		_, err := reg.Reload(context.Background(), "m", "models/b.gguf")
		done <- err
	}()
	<-reloadStarting
	if err := reg.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	rerr := <-done
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, m := range ms {
		if !m.stopped.Load() {
			v, _ := reg.Get("m")
			t.Errorf("after Stop, the engine %s started by the reload (reload err %v) still runs; replica state %s",
				m.url, rerr, v.Replicas[0].State)
		}
	}
}

// TestStartRetryAfterReload: the pool's configured model cannot start (a transient
// failure, retried with backoff). A reload to a model that works succeeds, but the start
// goroutine goes on retrying the old model, launching engines for it, and overwrites the
// reloaded replica's LastError with its failure.
func TestStartRetryAfterReload(t *testing.T) {
	var mu sync.Mutex
	var afterReload []string
	reloaded := false
	reg, err := New(Options{Pools: []Spec{managedSpec}, HealthInterval: time.Hour,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		},
		StartManaged: func(_ context.Context, _ Spec, rs ReplicaSpec, ref string) (Managed, error) {
			mu.Lock()
			defer mu.Unlock()
			if reloaded {
				afterReload = append(afterReload, ref)
			}
			if ref == managedSpec.ModelRef {
				return nil, errors.New("exited") // transient: retried
			}
			return &fakeManaged{url: "http://managed/" + ref + "@" + rs.ID}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait(); _ = reg.Stop(context.Background()) })
	for {
		if v, _ := reg.Get("m"); v.LastError != "" {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	reloaded = true
	mu.Unlock()
	if _, err := reg.Reload(context.Background(), "m", "models/b.gguf"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the start goroutine's first retry comes 1 s after its failure
	v, _ := reg.Get("m")
	mu.Lock()
	defer mu.Unlock()
	var stale []string
	for _, ref := range afterReload {
		if ref != "models/b.gguf" {
			stale = append(stale, ref)
		}
	}
	if len(stale) > 0 || v.LastError != "" {
		t.Fatalf("after the reload to models/b.gguf succeeded: engines started for %v; pool ready %v, model %s, last error %q",
			stale, v.Ready(), v.ModelRef, v.LastError)
	}
}

// TestReloadAfterPermanentFailureIsPolled: a managed replica whose first start failed
// for good (program not found) has no poller: its start goroutine ended. Once the program is
// installed, a reload succeeds and installs a replica, but nothing ever reads its health
// again: when its supervisor reports it down, the pool still shows it ready.
func TestReloadAfterPermanentFailureIsPolled(t *testing.T) {
	var mu sync.Mutex
	permanent := true
	var sm *supervisedManaged
	reg, err := New(Options{Pools: []Spec{managedSpec}, HealthInterval: 20 * time.Millisecond,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		},
		StartManaged: func(_ context.Context, _ Spec, rs ReplicaSpec, ref string) (Managed, error) {
			mu.Lock()
			defer mu.Unlock()
			if permanent {
				return nil, &StartError{Reason: ReasonProgramNotFound, Message: "llama-server not found", Permanent: true}
			}
			sm = &supervisedManaged{fakeManaged: fakeManaged{url: "http://managed/" + ref + "@" + rs.ID},
				st: ManagedStatus{Ready: true, Live: true}}
			return sm, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait(); _ = reg.Stop(context.Background()) })
	for {
		if v, _ := reg.Get("m"); v.LastError != "" {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	permanent = false // the program was installed
	mu.Unlock()
	if v, err := reg.Reload(context.Background(), "m", "models/b.gguf"); err != nil || !v.Ready() {
		t.Fatalf("reload: %+v, %v", v, err)
	}
	sm.mu.Lock()
	sm.st = ManagedStatus{Live: false, LastError: "engine failed"}
	sm.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if v, _ := reg.Get("m"); !v.Ready() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	v, _ := reg.Get("m")
	t.Fatalf("the supervisor reports the replica failed for 2 s (health interval 20 ms); the pool still shows ready %v, replica %s",
		v.Ready(), v.Replicas[0].State)
}
