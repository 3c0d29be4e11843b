package task

import (
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// halfOpenHarness is a pool of one replica with 2 slots whose breaker opens after one fault
// and half-opens after cooldown: a first task's replica fault opens it, and once the cooldown
// has passed the queue is told the breaker is half-open.
func halfOpenHarness(t *testing.T, cooldown time.Duration) *regHarness {
	t.Helper()
	h := newRegHarness(t, 1, 2, 1, func(rs *regSetup) {
		rs.pool = func(s *pool.Spec) { s.BreakerCooldown = cooldown }
	})
	a := spec(0)
	h.submit(a)
	h.next()
	h.step(a.ID, cstep{err: resetErr()})
	if evs := h.events(a.ID); evs[len(evs)-1].Event != "error" {
		t.Fatalf("a: %s", names(evs))
	}
	h.waitHalfOpen()
	return h
}

// waitHalfOpen waits until the queue is told the replica's breaker half-opened: the registry
// tells it when the cooldown passes (the harness polls health once an hour).
func (h *regHarness) waitHalfOpen() {
	h.t.Helper()
	waitFor(h.t, func() bool { return h.svc.queue.Stats().Pools["p"].Dispatchable })
	if v, _ := h.reg.Get("p"); v.Replicas[0].Breaker != placement.BreakerHalfOpen {
		h.t.Fatalf("breaker %v", v.Replicas[0].Breaker)
	}
}

// stillQueued asserts that the task neither ends nor starts for a while (a half-open
// replica's probe runs, or its breaker opened again).
func (h *regHarness) stillQueued(id, while string) {
	h.t.Helper()
	tk, err := h.svc.Task(id)
	if err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-tk.Done():
		evs := h.events(id)
		h.t.Fatalf("%s: a queued task ended: %s %s (queue pool %+v)", while, names(evs), evs[len(evs)-1].Data,
			h.svc.queue.Stats().Pools["p"])
	case s := <-h.started:
		h.mu.Lock()
		h.on[s.task] = s.eng
		h.mu.Unlock()
		h.t.Fatalf("%s: task %s ran on the half-open replica beside its probe", while, s.task)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestHalfOpenReplicaOffersOneSlot: the replica's breaker is half-open and its probe task runs.
// The pool's view counted the half-open replica with all its slots, so the queue granted a
// second task a slot at once; replica placement, which excludes the replica while its probe is
// in flight, found no replica for it, and the task failed POOL_UNAVAILABLE ("no replica of pool
// p can take the task"). The replica offers one slot, its probe's: the second task waits in the
// queue, and runs once the probe succeeded and closed the breaker (all the slots again).
func TestHalfOpenReplicaOffersOneSlot(t *testing.T) {
	h := halfOpenHarness(t, 20*time.Millisecond)
	if ps := h.svc.queue.Stats().Pools["p"]; ps.Slots != 1 {
		t.Errorf("the half-open replica offers the queue %d slots, want 1 (its probe's)", ps.Slots)
	}
	probe := spec(0)
	h.submit(probe)
	if s := h.next(); s.task != probe.ID {
		t.Fatalf("started %s", s.task)
	}
	second := spec(0)
	h.submit(second)
	h.stillQueued(second.ID, "while the probe runs")
	h.check("the probe runs")

	h.end(probe.ID)
	if s := h.next(); s.task != second.ID || s.eng.replica != "p/0" {
		t.Fatalf("started %s on %s after the probe succeeded", s.task, s.eng.replica)
	}
	waitFor(t, func() bool { ps := h.svc.queue.Stats().Pools["p"]; return ps.Slots == 2 && ps.Busy == 1 })
	h.check("the breaker closed")
	if v, _ := h.reg.Get("p"); v.Replicas[0].Breaker != placement.BreakerClosed {
		t.Fatalf("breaker %v after the probe succeeded", v.Replicas[0].Breaker)
	}
	h.end(second.ID)
	if evs := h.events(second.ID); evs[len(evs)-1].Event == "error" {
		t.Fatalf("second: %s %s", names(evs), evs[len(evs)-1].Data)
	}
}

// TestHalfOpenProbeFails: the probe fails by the replica's fault: the breaker opens again and
// the replica offers nothing, so the task queued behind the probe goes on waiting, and runs as
// the next probe once the breaker is half-open again (told when the cooldown passes, with no
// health poll: the harness polls once an hour). The cooldown is long enough for stillQueued.
func TestHalfOpenProbeFails(t *testing.T) {
	h := halfOpenHarness(t, time.Second)
	probe := spec(0)
	h.submit(probe)
	h.next()
	second := spec(0)
	h.submit(second)
	h.stillQueued(second.ID, "while the probe runs")
	h.step(probe.ID, cstep{err: resetErr()})
	if evs := h.events(probe.ID); evs[len(evs)-1].Event != "error" {
		t.Fatalf("probe: %s", names(evs))
	}
	waitFor(t, func() bool { ps := h.svc.queue.Stats().Pools["p"]; return ps.Slots == 0 && ps.Busy == 0 })
	h.stillQueued(second.ID, "after the probe failed")

	if s := h.next(); s.task != second.ID {
		t.Fatalf("started %s", s.task)
	}
	h.check("the next probe runs")
	h.end(second.ID)
	if evs := h.events(second.ID); evs[len(evs)-1].Event == "error" {
		t.Fatalf("second: %s %s", names(evs), evs[len(evs)-1].Data)
	}
	waitFor(t, func() bool { ps := h.svc.queue.Stats().Pools["p"]; return ps.Slots == 2 && ps.Busy == 0 })
}
