package task

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// TestPoolDrainedCatchesATaskBeingDispatched: a task whose ticket was granted a slot just
// before its pool's drain deadline, and whose runner has not yet marked it running, must not
// run on the drained pool after the deadline: PoolDrained must cancel it as it does the
// running ones (the queue's Remove no longer sees it, and its status is still Queued).
func TestPoolDrainedCatchesATaskBeingDispatched(t *testing.T) {
	tr := &heldTracer{hold: newHold()}
	h := newHarnessWith(t, 4, 1, admission.Reject, func(o *Options) { o.Tracer = tr })
	t.Cleanup(tr.free) // runs before the harness stops
	s := spec(admission.Interactive)
	h.submit(s)
	<-tr.entered // s's runner got the slot; its status is not Running yet

	h.svc.PoolDrained(h.ctx, "p") // the pool's drain deadline passes
	tr.free()

	tk, err := h.svc.Task(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tk.Done():
	case <-time.After(time.Second):
		// It runs on the drained pool: let the engine finish it, to see how it ends.
		close(h.eng.tokens)
	}
	evs := h.events(s.ID)
	if last := evs[len(evs)-1]; last.Event != "error" || !strings.Contains(last.Data, "pool_unavailable") {
		t.Fatalf("a task dispatched as its pool's drain deadline passed ran on after it: %s, final %s %s",
			names(evs), last.Event, last.Data)
	}
}

// heldSessions is a session store whose SetReplica (replica placement, after the decision and
// before Acquire) holds on its hold while armed, recording the replica chosen.
type heldSessions struct {
	*session.Store
	armed  atomic.Bool
	h      *hold
	chosen chan string
}

func (s *heldSessions) SetReplica(id string, gen uint64, replica string) error {
	if s.armed.CompareAndSwap(true, false) {
		s.chosen <- replica
		s.h.wait()
	}
	return s.Store.SetReplica(id, gen, replica)
}

// newHeldRegHarness is newRegHarness (no breaker opens) whose session store can hold a
// placement (heldSessions), with a channel told the replica each time a replica's drain
// deadline has been handled.
func newHeldRegHarness(t *testing.T, replicas, slots int) (*regHarness, *heldSessions, chan string) {
	t.Helper()
	var ss *heldSessions
	drained := make(chan string, 16)
	h := newRegHarness(t, replicas, slots, 1<<20, func(rs *regSetup) {
		rs.sessions = func(store *session.Store) sessions {
			ss = &heldSessions{Store: store, h: newHold(), chosen: make(chan string, 1)}
			return ss
		}
		rs.onDrained = func(replicaID string) { drained <- replicaID }
		rs.beforeStop = func() { ss.h.free() }
	})
	return h, ss, drained
}

// TestReplicaDrainSparesATaskLeavingIt: a task that streamed on replica A, whose A then
// failed mid-stream, is being placed again on B (the pool migrates). A's drain deadline passes
// meanwhile: the task no longer runs on A, so A's deadline must not end it; it continues on B.
func TestReplicaDrainSparesATaskLeavingIt(t *testing.T) {
	h, ss, drained := newHeldRegHarness(t, 2, 1)
	id := h.submitN(1)[0]
	from := h.engineOf(id).replica
	h.step(id, cstep{tok: "x"})
	ss.armed.Store(true)
	h.step(id, cstep{err: resetErr()}) // A fails mid-stream: the task is placed again
	to := <-ss.chosen                  // held after the decision, before Acquire
	if to == from {
		t.Fatalf("placed again on %s", to)
	}
	if err := h.reg.DrainReplica("p", from, 0); err != nil { // the failing replica is drained
		t.Fatal(err)
	}
	if r := <-drained; r != from {
		t.Fatalf("drained %s", r)
	}
	ss.h.free()
	if s := h.next(); s.task != id || s.eng.replica != to {
		t.Fatalf("%s started on %s, want %s on %s", s.task, s.eng.replica, id, to)
	}
	tk, _ := h.svc.Task(id)
	select {
	case <-tk.Done():
		evs := h.events(id)
		last := evs[len(evs)-1]
		t.Fatalf("the task, migrating off %s to %s, was ended by %s's drain deadline: %s, final %s %s",
			from, to, from, names(evs), last.Event, last.Data)
	case <-time.After(300 * time.Millisecond):
	}
	h.step(id, cstep{tok: "y"})
	h.end(id)
	if evs := h.events(id); evs[len(evs)-1].Event != "end" {
		t.Fatalf("events %s", names(evs))
	}
}

// TestNothingRunsOnADrainedReplicaAfterItsDeadline: a task is being placed on replica X (decision
// made, engine not acquired yet) when X is drained and its deadline passes at once. After X's
// deadline nothing may run on X: the task runs elsewhere, or ends by the drain.
func TestNothingRunsOnADrainedReplicaAfterItsDeadline(t *testing.T) {
	h, ss, drained := newHeldRegHarness(t, 2, 1)
	ss.armed.Store(true)
	s := spec(0)
	h.submit(s)
	x := <-ss.chosen
	if err := h.reg.DrainReplica("p", x, 0); err != nil {
		t.Fatal(err)
	}
	if r := <-drained; r != x {
		t.Fatalf("drained %s", r)
	}
	ss.h.free()
	got := h.next()
	if got.eng.replica == x {
		time.Sleep(300 * time.Millisecond)
		if got.eng.running(s.ID) {
			v, _ := h.reg.Get("p")
			var draining bool
			for _, r := range v.Replicas {
				if r.ID == x {
					draining = r.Draining
				}
			}
			t.Fatalf("task %s runs on replica %s after its drain deadline passed (draining %v, busy there %d)",
				s.ID, x, draining, h.svc.ReplicaBusy("p", x))
		}
	}
}

// TestShutdownCutsAJournaledTaskBeingDispatched: with a journal, a task granted its slot
// just before the shutdown grace ended, whose runner has not yet marked it running, is neither
// kept queued (it passed the halted check) nor cut by Shutdown (its status is still Queued): it
// runs on until the Run context ends, and then fails as an internal, non-retriable error
// ("context canceled") instead of the retriable "daemon shut down" of the tasks Shutdown cut.
func TestShutdownCutsAJournaledTaskBeingDispatched(t *testing.T) {
	jr, err := journal.Open(journal.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	eng := &stepper{calls: make(chan *generation, 4)}
	ss, err := session.New(session.Options{MaxTurns: 8})
	if err != nil {
		t.Fatal(err)
	}
	v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
		Slots: 1, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}},
		Live: true, Healthy: true}
	tr := &heldTracer{hold: newHold()}
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	svc := mustNew(t, Options{Capacity: 16, Policy: admission.Reject, Pools: &fakePools{views: []pool.View{v}, rep: eng},
		Sessions: ss, Metrics: metrics.New(prometheus.NewRegistry()), Clock: clock, Journal: jr, Tracer: tr})
	if err := svc.Recover(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	jctx, jcancel := context.WithCancel(context.Background())
	jdone, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(jdone); _ = jr.Run(jctx) }()
	go func() { defer close(done); _ = svc.Run(ctx) }()
	waitRun(t, ctx, svc)
	svc.PoolChanged(ctx, oneReplica(v))
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		tr.free()
		cancel()
		<-done
		jcancel()
		<-jdone
	}
	t.Cleanup(stop)

	s := spec(admission.Interactive)
	if _, err := svc.Submit(ctx, s); err != nil {
		t.Fatal(err)
	}
	<-tr.entered // s's runner got the slot, passed the halted check; its status is still Queued
	sctx, c := context.WithCancel(context.Background())
	c()
	svc.Shutdown(sctx) // the grace is over at once
	tr.free()
	select {
	case <-eng.calls: // it runs, after the shutdown
	case <-time.After(time.Second):
	}
	stop() // the daemon's stopRun
	snap, err := svc.Get(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Status == Failed && (snap.Error == nil || !snap.Error.Retriable || snap.Error.Class == ClassInternal) {
		t.Fatalf("a task dispatched as the shutdown grace ended: %v, error %+v", snap.Status, snap.Error)
	}
}

// TestCancelAfterTheShutdownGraceIsKept: with a journal, a task granted a slot after the
// shutdown grace is kept queued for the next start, and no runner of this process will run it.
// A client's cancel in that window (the HTTP server still drains) ends it, canceled, with its
// final record: the next start does not run it.
func TestCancelAfterTheShutdownGraceIsKept(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	a, b := spec(admission.Interactive), spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, a); err != nil {
		t.Fatal(err)
	}
	d.eng.next(t) // a runs, b waits for the one slot
	if _, err := d.svc.Submit(d.ctx, b); err != nil {
		t.Fatal(err)
	}
	sctx, c := context.WithCancel(context.Background())
	c()
	d.svc.Shutdown(sctx) // the grace is over at once: a is cut, b gets its slot and keeps its place
	waitFor(t, func() bool { st := d.svc.queue.Stats(); return st.Depth == 0 && st.Busy == 0 })
	if err := d.svc.Cancel(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	if snap, _ := d.svc.Get(context.Background(), b.ID); snap.Status != Canceled {
		t.Fatalf("after its cancel, the task kept for the next start is %v, want canceled", snap.Status)
	}
	d.stop()
	d = startDaemon(t, dir, clock)
	if snap, err := d.svc.Get(context.Background(), b.ID); err != nil || snap.Status != Canceled {
		t.Fatalf("after the restart: %v %v, want the task canceled (not run again)", snap.Status, err)
	}
}
