package pool

import (
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/placement"
)

// TestSlotsTotalHalfOpen: a half-open replica offers the queue the slots of the tasks still
// running on it and one slot for its probe, which is among the busy ones once in flight (never
// all its slots: placement excludes it while its probe runs, so a task granted another slot
// found no replica and failed). The other replicas count as before.
func TestSlotsTotalHalfOpen(t *testing.T) {
	ready := func(b placement.Breaker, probe bool, busy int) ReplicaView {
		return ReplicaView{State: StateReady, Live: true, Healthy: true, Breaker: b, ProbeInFlight: probe, Busy: busy}
	}
	drained := ready(placement.BreakerHalfOpen, false, 1)
	drained.Draining, drained.State = true, StateDraining
	unhealthy := ReplicaView{State: StateUnhealthy, Live: true, Breaker: placement.BreakerHalfOpen, Busy: 1}
	stopped := ReplicaView{State: StateStopped, Breaker: placement.BreakerHalfOpen, Busy: 1}
	tests := []struct {
		name  string
		slots int
		reps  []ReplicaView
		want  int
		ready int // ReadyReplicas
	}{
		{"closed, idle", 2, []ReplicaView{ready(placement.BreakerClosed, false, 0)}, 2, 1},
		{"closed, busy", 2, []ReplicaView{ready(placement.BreakerClosed, false, 1)}, 2, 1},
		{"open, idle", 2, []ReplicaView{ready(placement.BreakerOpen, false, 0)}, 0, 0},
		{"open, a task still running", 2, []ReplicaView{ready(placement.BreakerOpen, false, 1)}, 1, 0},
		{"half-open, idle: the probe's slot", 2, []ReplicaView{ready(placement.BreakerHalfOpen, false, 0)}, 1, 1},
		{"half-open, probe in flight", 2, []ReplicaView{ready(placement.BreakerHalfOpen, true, 1)}, 1, 1},
		{"half-open, probe in flight, many slots", 4, []ReplicaView{ready(placement.BreakerHalfOpen, true, 1)}, 1, 1},
		{"half-open, a task still running, no probe yet", 4, []ReplicaView{ready(placement.BreakerHalfOpen, false, 1)}, 2, 1},
		{"half-open, a task still running and the probe", 4, []ReplicaView{ready(placement.BreakerHalfOpen, true, 2)}, 2, 1},
		{"half-open, full, no probe yet", 2, []ReplicaView{ready(placement.BreakerHalfOpen, false, 2)}, 2, 1},
		{"half-open, over its slots", 2, []ReplicaView{ready(placement.BreakerHalfOpen, true, 3)}, 2, 1},
		{"half-open and drained: its busy slots only", 2, []ReplicaView{drained}, 1, 0},
		{"half-open and unhealthy: its busy slots only", 2, []ReplicaView{unhealthy}, 1, 0},
		{"half-open and stopped", 2, []ReplicaView{stopped}, 0, 0},
		{"closed beside half-open with its probe", 2, []ReplicaView{
			ready(placement.BreakerClosed, false, 2), ready(placement.BreakerHalfOpen, true, 1)}, 3, 2},
		{"closed beside half-open without its probe", 2, []ReplicaView{
			ready(placement.BreakerClosed, false, 0), ready(placement.BreakerHalfOpen, false, 0)}, 3, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := View{Spec: Spec{ID: "x", Slots: tc.slots}, Replicas: tc.reps}
			if got := v.SlotsTotal(); got != tc.want {
				t.Errorf("SlotsTotal = %d, want %d", got, tc.want)
			}
			if got := v.ReadyReplicas(); got != tc.ready {
				t.Errorf("ReadyReplicas = %d, want %d", got, tc.ready)
			}
		})
	}
}

// TestHalfOpenAcquireOneProbe: a half-open replica lets one task through, its probe, and
// refuses another (pool unavailable, as a drained one) while the probe is in flight, even for a
// caller that chose it from a view taken before. The queue is told each change of the slots the
// replica offers: a task's end beside the probe, the probe's end, and the breaker's closing
// (all its slots again) or opening again (its busy slots).
func TestHalfOpenAcquireOneProbe(t *testing.T) {
	one := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2, URL: "http://ext",
		BreakerFaults: 1, BreakerCooldown: time.Minute}
	e, advance := newEnvClock(t, one)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 1 })
	var last View // what the queue was told last
	told := func(step string, want int) {
		t.Helper()
		last = e.lastTold(last)
		cur, _ := e.reg.Get("x")
		if last.SlotsTotal() != want || cur.SlotsTotal() != want {
			t.Fatalf("%s: told %d slots (breaker %v, probe %v), the pool has %d (breaker %v, probe %v); want %d", step,
				last.SlotsTotal(), last.Replicas[0].Breaker, last.Replicas[0].ProbeInFlight,
				cur.SlotsTotal(), cur.Replicas[0].Breaker, cur.Replicas[0].ProbeInFlight, want)
		}
	}
	// acquire is the dispatcher's side: Acquire, then the slot is counted on the replica.
	busy := 0
	acquire := func() func() {
		t.Helper()
		_, release, err := e.reg.Acquire("x", "x/0")
		if err != nil {
			t.Fatal(err)
		}
		busy++
		e.setBusy("x/0", busy)
		return func() { busy--; e.setBusy("x/0", busy); release() }
	}
	halfOpen := func(step string, want int) {
		t.Helper()
		advance(time.Minute)
		if _, err := e.reg.ResumeReplica("x", "x/0"); err != nil { // any update tells the half-open breaker
			t.Fatal(err)
		}
		if v, _ := e.reg.Get("x"); v.Replicas[0].Breaker != placement.BreakerHalfOpen || v.Replicas[0].ProbeInFlight {
			t.Fatalf("%s: %+v", step, v.Replicas[0])
		}
		told(step, want)
	}
	refused := func(step string) {
		t.Helper()
		if _, _, err := e.reg.Acquire("x", "x/0"); engine.KindOf(err) != engine.KindPoolUnavailable {
			t.Fatalf("%s: a second acquire of a half-open replica: %v, want pool unavailable", step, err)
		}
	}

	// A task runs when the breaker opens; it goes on while the breaker is half-open.
	endOld := acquire()
	e.reg.ReportFailure("x", "x/0", leaseOf(e.reg, "x", "x/0"))
	told("open, a task running", 1)
	halfOpen("half-open, a task running", 2)
	endProbe := acquire()
	told("the probe runs beside the task", 2)
	refused("probe in flight")
	endOld()
	told("the older task ended: its slot leaves", 1)
	refused("probe in flight, alone")
	endProbe()
	told("the probe ended, its outcome not reported yet", 1)

	// The next probe fails: the breaker opens again and offers nothing.
	endProbe = acquire()
	refused("second probe in flight")
	endProbe()
	e.reg.ReportFailure("x", "x/0", leaseOf(e.reg, "x", "x/0"))
	told("the probe failed", 0)

	// The next one succeeds: the breaker closes and the replica offers all its slots, to tasks
	// that run together.
	halfOpen("half-open again", 1)
	endProbe = acquire()
	told("the third probe runs", 1)
	refused("third probe in flight")
	e.reg.ReportSuccess("x", "x/0", leaseOf(e.reg, "x", "x/0"))
	told("the probe succeeded", 2)
	endOther := acquire() // closed: no longer one at a time
	endProbe()
	endOther()
	told("closed, idle", 2)
}

// TestBreakerReportsOfEarlierGenerations: a generation reports on the breaker as it was when
// the generation started. One that started before the breaker opened and succeeds after does
// not close it (the replica's faults came after it started); one that fails after the cooldown
// does not open the half-open breaker again (only its probe's outcome does). Acquire refuses an
// open breaker's replica, chosen from a view taken before it opened.
func TestBreakerReportsOfEarlierGenerations(t *testing.T) {
	one := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 4, URL: "http://ext",
		BreakerFaults: 1, BreakerCooldown: time.Minute}
	e, advance := newEnvClock(t, one)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 1 })
	breaker := func(step string, want placement.Breaker) {
		t.Helper()
		if _, err := e.reg.ResumeReplica("x", "x/0"); err != nil { // any update tells the half-open breaker
			t.Fatal(err)
		}
		if v, _ := e.reg.Get("x"); v.Replicas[0].Breaker != want {
			t.Fatalf("%s: breaker %v, want %v", step, v.Replicas[0].Breaker, want)
		}
	}
	acquire := func() (Lease, func()) {
		t.Helper()
		l, release, err := e.reg.Acquire("x", "x/0")
		if err != nil {
			t.Fatal(err)
		}
		return l, release
	}
	early, endEarly := acquire()
	late, endLate := acquire()
	failing, endFailing := acquire()
	endFailing()
	e.reg.ReportFailure("x", "x/0", failing)
	breaker("a fault", placement.BreakerOpen)
	if _, _, err := e.reg.Acquire("x", "x/0"); engine.KindOf(err) != engine.KindPoolUnavailable {
		t.Fatalf("acquire with the breaker open: %v, want pool unavailable", err)
	}
	endEarly()
	e.reg.ReportSuccess("x", "x/0", early)
	breaker("a success of a generation older than the fault", placement.BreakerOpen)

	advance(time.Minute)
	breaker("the cooldown passed", placement.BreakerHalfOpen)
	endLate()
	e.reg.ReportFailure("x", "x/0", late)
	breaker("a failure of a generation older than the fault", placement.BreakerHalfOpen)

	probe, endProbe := acquire()
	endProbe()
	e.reg.ReportSuccess("x", "x/0", probe)
	breaker("the probe succeeded", placement.BreakerClosed)
	e.reg.ReportFailure("x", "x/0", probe)
	breaker("a report of the probe after the breaker closed", placement.BreakerClosed)
}

// TestHalfOpenIsTold: the queue is told a breaker half-opened (its probe's slot) when the
// cooldown passes, not at the next health poll (an hour here), which held back the tasks queued
// for the replica.
func TestHalfOpenIsTold(t *testing.T) {
	one := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2, URL: "http://ext",
		BreakerFaults: 1, BreakerCooldown: 20 * time.Millisecond}
	e := newEnv(t, one)
	e.waitView(t, func(v View) bool { return v.ReadyReplicas() == 1 })
	e.reg.ReportFailure("x", "x/0", leaseOf(e.reg, "x", "x/0"))
	e.waitView(t, func(v View) bool { return v.Replicas[0].Breaker == placement.BreakerOpen && v.SlotsTotal() == 0 })
	e.waitView(t, func(v View) bool { return v.Replicas[0].Breaker == placement.BreakerHalfOpen && v.SlotsTotal() == 1 })
}
