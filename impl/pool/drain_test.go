package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

func replicaView(t *testing.T, v View, id string) ReplicaView {
	t.Helper()
	for _, r := range v.Replicas {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no replica %s in %+v", id, v.Replicas)
	return ReplicaView{}
}

// TestDrainReplica: a drained replica shows draining and gives its slots up, while the pool
// stays ready on the others; draining the last ready one makes the pool not ready; resuming
// brings it back. Unknown pools and replicas are distinct errors.
func TestDrainReplica(t *testing.T) {
	two := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2,
		Replicas: []ReplicaSpec{{ID: "x/0", URL: "http://a"}, {ID: "x/1", URL: "http://b"}}}
	e := newEnv(t, two)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 2 })

	if err := e.reg.DrainReplica("x", "x/1", time.Hour); err != nil {
		t.Fatal(err)
	}
	v, _ := e.reg.Get("x")
	r1 := replicaView(t, v, "x/1")
	if !v.Ready() || v.Draining || v.ReadyReplicas() != 1 || v.SlotsTotal() != 2 {
		t.Fatalf("one replica drained: ready %v, draining %v, %d ready, %d slots", v.Ready(), v.Draining, v.ReadyReplicas(), v.SlotsTotal())
	}
	if r1.State != StateDraining || !r1.Draining || r1.DrainDeadline.IsZero() || replicaView(t, v, "x/0").State != StateReady {
		t.Fatalf("replicas %+v", v.Replicas)
	}
	if err := e.reg.DrainReplica("x", "x/0", time.Hour); err != nil {
		t.Fatal(err)
	}
	if v, _ = e.reg.Get("x"); v.Ready() || v.Healthy || v.SlotsTotal() != 0 {
		t.Fatalf("both drained: ready %v, healthy %v, %d slots", v.Ready(), v.Healthy, v.SlotsTotal())
	}
	rv, err := e.reg.ResumeReplica("x", "x/0")
	if err != nil || rv.Draining || rv.State != StateReady {
		t.Fatalf("resume: %+v, %v", rv, err)
	}
	if _, err := e.reg.ResumeReplica("x", "x/0"); err != nil { // idempotent
		t.Fatal(err)
	}
	if v, _ = e.reg.Get("x"); !v.Ready() || v.ReadyReplicas() != 1 || !replicaView(t, v, "x/1").Draining {
		t.Fatalf("after resume: ready %v, %+v", v.Ready(), v.Replicas)
	}
	// A draining replica takes no new generation, even from a caller that chose it from a view
	// taken before the drain; a resumed one does.
	if _, _, err := e.reg.Acquire("x", "x/1"); engine.KindOf(err) != engine.KindPoolUnavailable {
		t.Fatalf("acquire of a draining replica: %v, want pool unavailable", err)
	}
	_, release, err := e.reg.Acquire("x", "x/0")
	if err != nil {
		t.Fatalf("acquire of a resumed replica: %v", err)
	}
	release()

	tests := []struct {
		pool, replica string
		want          error
	}{
		{"nope", "x/0", ErrNotFound},
		{"x", "x/9", ErrReplicaNotFound},
	}
	for _, tc := range tests {
		if err := e.reg.DrainReplica(tc.pool, tc.replica, time.Second); !errors.Is(err, tc.want) {
			t.Errorf("drain %s %s: %v, want %v", tc.pool, tc.replica, err, tc.want)
		}
		if _, err := e.reg.ResumeReplica(tc.pool, tc.replica); !errors.Is(err, tc.want) {
			t.Errorf("resume %s %s: %v, want %v", tc.pool, tc.replica, err, tc.want)
		}
	}
	if errors.Is(ErrReplicaNotFound, ErrNotFound) {
		t.Error("an unknown replica must not read as an unknown pool")
	}
}

// TestReplicaDrainDeadline: the deadline callback names the replica; a replica resumed, or
// drained again with a later deadline, before the first deadline fires nothing for it.
func TestReplicaDrainDeadline(t *testing.T) {
	e := newEnv(t, threeExternal)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 3 })
	if err := e.reg.DrainReplica("x", "edge", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := <-e.replicaDrained; got != "x edge" {
		t.Fatalf("deadline for %q", got)
	}
	// Resumed before its deadline: the timer is stopped.
	if err := e.reg.DrainReplica("x", "x/0", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.ResumeReplica("x", "x/0"); err != nil {
		t.Fatal(err)
	}
	// Drained again: only the latest deadline fires.
	if err := e.reg.DrainReplica("x", "x/1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.DrainReplica("x", "x/1", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := <-e.replicaDrained; got != "x x/1" {
		t.Fatalf("deadline for %q, want x x/1 (x/0 was resumed)", got)
	}
	select {
	case got := <-e.replicaDrained:
		t.Fatalf("a resumed or superseded drain fired: %q", got)
	default:
	}
	if v, _ := e.reg.Get("x"); !replicaView(t, v, "x/1").Draining {
		t.Fatal("the deadline ends the tasks, not the drain")
	}
}

// TestReloadEndsReplicaDrain: a successful reload ends the drains of the pool's replicas.
func TestReloadEndsReplicaDrain(t *testing.T) {
	two := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", ModelIDDerived: true, CtxMax: 1024, Slots: 2,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", Managed: true}}}
	e := newEnv(t, two)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 2 })
	if err := e.reg.DrainReplica("m", "m/1", time.Hour); err != nil {
		t.Fatal(err)
	}
	v, err := e.reg.Reload(context.Background(), "m", "models/b.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if r := replicaView(t, v, "m/1"); r.Draining || r.State != StateReady || v.ReadyReplicas() != 2 {
		t.Fatalf("after reload: %+v", v.Replicas)
	}
}

// TestDrainedReplicaSlots: the slots that tasks still hold on a drained replica stay in the
// pool's total (the queue counts those tasks as busy) until each ends, and each end (release,
// once the dispatcher took the slot off the replica) is reported, so that the queue's capacity
// for the other replicas never shrinks by them. The registry counts nothing itself: the busy
// slots it shows are the dispatcher's.
func TestDrainedReplicaSlots(t *testing.T) {
	two := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2,
		Replicas: []ReplicaSpec{{ID: "x/0", URL: "http://a"}, {ID: "x/1", URL: "http://b"}}}
	e := newEnv(t, two)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 2 })
	_, rel1, err := e.reg.Acquire("x", "x/1")
	if err != nil {
		t.Fatal(err)
	}
	_, rel2, err := e.reg.Acquire("x", "x/1")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := e.reg.Get("x"); replicaView(t, v, "x/1").Busy != 0 {
		t.Fatal("Acquire counted a busy slot: the dispatcher counts them")
	}
	e.setBusy("x/1", 2)
	if err := e.reg.DrainReplica("x", "x/1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if v := e.waitView(t, func(v View) bool { return replicaView(t, v, "x/1").Draining }); v.SlotsTotal() != 4 {
		t.Fatalf("drained with 2 running: %d slots, want 2 + 2 held", v.SlotsTotal())
	}
	e.setBusy("x/1", 1)
	rel1()
	if v := e.waitView(t, func(View) bool { return true }); replicaView(t, v, "x/1").Busy != 1 || v.SlotsTotal() != 3 {
		t.Fatalf("one ended: busy %d, %d slots, want 1, 3", replicaView(t, v, "x/1").Busy, v.SlotsTotal())
	}
	e.setBusy("x/1", 0)
	rel2()
	rel2() // idempotent
	if v := e.waitView(t, func(View) bool { return true }); replicaView(t, v, "x/1").Busy != 0 || v.SlotsTotal() != 2 {
		t.Fatalf("both ended: %d slots, want 2", v.SlotsTotal())
	}
	select {
	case v := <-e.changes:
		t.Fatalf("a second release reported a change: %+v", v)
	default:
	}
	if _, err := e.reg.ResumeReplica("x", "x/1"); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.reg.Get("x"); v.SlotsTotal() != 4 {
		t.Fatalf("resumed: %d slots", v.SlotsTotal())
	}
}

// TestDrainDeadlinesReadTheClock: a pool's drain and a replica's drain both report their deadline
// from the injected clock (the pool's once read the wall clock while its replicas read Options.Now).
func TestDrainDeadlinesReadTheClock(t *testing.T) {
	now := time.Unix(1000, 0)
	reg, err := New(Options{Pools: []Spec{threeExternal}, Now: func() time.Time { return now }, HealthInterval: time.Hour,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.DrainReplica("x", "x/1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := reg.Drain("x", time.Hour); err != nil {
		t.Fatal(err)
	}
	v, _ := reg.Get("x")
	if want := now.Add(time.Hour); !v.DrainDeadline.Equal(want) {
		t.Errorf("pool drain deadline %v, want %v", v.DrainDeadline, want)
	}
	if got, want := replicaView(t, v, "x/1").DrainDeadline, now.Add(time.Minute); !got.Equal(want) {
		t.Errorf("replica drain deadline %v, want %v", got, want)
	}
}

// A drain asked while a reload runs outlives it: the reload ends only the drains asked before
// it began (the operator who drains a pool or a replica mid-reload wants it drained after).
func TestReloadKeepsDrainsAskedDuringIt(t *testing.T) {
	two := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", ModelIDDerived: true, CtxMax: 1024, Slots: 2,
		Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", Managed: true}}}
	starting := make(chan struct{}, 2)
	proceed := make(chan struct{})
	reg, err := New(Options{Pools: []Spec{two}, HealthInterval: time.Hour, ReloadGrace: 10 * time.Millisecond,
		NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
			r := &fakeReplica{url: ep.URL}
			r.ready.Store(true)
			return r
		},
		StartManaged: func(_ context.Context, _ Spec, rs ReplicaSpec, ref string) (Managed, error) {
			if ref == "models/b.gguf" && rs.ID == "m/0" {
				starting <- struct{}{}
				<-proceed
			}
			return &fakeManaged{url: "http://managed/" + ref + "@" + rs.ID}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	t.Cleanup(func() { cancel(); reg.Wait() })
	for {
		if v, _ := reg.Get("m"); v.ReadyReplicas() == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		_, err := reg.Reload(context.Background(), "m", "models/b.gguf")
		done <- err
	}()
	<-starting // the reload runs
	if err := reg.DrainReplica("m", "m/1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := reg.Drain("m", time.Hour); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	v, _ := reg.Get("m")
	if !v.Draining || !replicaView(t, v, "m/1").Draining {
		t.Errorf("after the reload: pool draining %v, replica m/1 draining %v; both were drained during it",
			v.Draining, replicaView(t, v, "m/1").Draining)
	}
}

// TestDrainKeepsAFailedReplicaUnhealthy: a drain (of the pool or of the replica) does not
// show a replica that fails its health checks as draining: an operator watching a drain must
// still see which replica is down. Its Draining flag still says that it is drained.
func TestDrainKeepsAFailedReplicaUnhealthy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drain func(*Registry) error
	}{
		{"pool drained", func(r *Registry) error { return r.Drain("x", time.Hour) }},
		{"replica drained", func(r *Registry) error { return r.DrainReplica("x", "x/1", time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			two := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2,
				Replicas: []ReplicaSpec{{ID: "x/0", URL: "http://a"}, {ID: "x/1", URL: "http://b"}}}
			e := newEnv(t, two)
			e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 2 })
			e.mu.Lock()
			down := e.replicas["http://b"]
			e.mu.Unlock()
			down.ready.Store(false)
			e.reg.check(context.Background(), "x")
			e.reg.check(context.Background(), "x")
			e.reg.ReportFailure("x", "x/1", leaseOf(e.reg, "x", "x/1")) // the third failure in a row
			e.waitView(t, func(v View) bool { return replicaView(t, v, "x/1").State == StateUnhealthy })
			if err := tc.drain(e.reg); err != nil {
				t.Fatal(err)
			}
			v, _ := e.reg.Get("x")
			if r := replicaView(t, v, "x/1"); r.State != StateUnhealthy || r.LastError == "" {
				t.Fatalf("the failed replica after the drain: state %s, last error %q; want unhealthy with its error", r.State, r.LastError)
			}
			want := StateReady
			if v.Draining {
				want = StateDraining
			}
			if r := replicaView(t, v, "x/0"); r.State != want {
				t.Fatalf("the healthy replica after the drain: state %s, want %s", r.State, want)
			}
			if tc.name == "replica drained" && !replicaView(t, v, "x/1").Draining {
				t.Fatal("the drained replica lost its Draining flag")
			}
		})
	}
}
