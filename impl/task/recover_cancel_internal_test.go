package task

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// keepQueued runs a task on the one slot of a daemon on dir and another behind it, then stops
// the daemon: the queued one is kept for the next start. It returns the queued task's spec,
// set up by prep when not nil.
func keepQueued(t *testing.T, dir string, clock *tasktest.Clock, prep func(*Spec)) Spec {
	t.Helper()
	d := startDaemon(t, dir, clock)
	running, queued := spec(admission.Interactive), spec(admission.Interactive)
	if prep != nil {
		prep(&queued)
	}
	if _, err := d.svc.Submit(d.ctx, running); err != nil {
		t.Fatal(err)
	}
	d.eng.next(t) // holds the only slot
	if _, err := d.svc.Submit(d.ctx, queued); err != nil {
		t.Fatal(err)
	}
	d.stop()
	return queued
}

// TestCancelOfARecoveredTaskBeforeItIsQueuedAgain: after a restart, a queued task is known (GET
// shows it) before Run queues it again. A cancel in that window was answered (204) with the
// task only marked canceled in memory, for the re-queue to end later: nothing was journaled,
// and a crash before the re-queue brought the task back queued, and the next start ran the
// generation its client had canceled. Its cancel is answered, as an ordinary queued task's,
// once its canceled end is journaled.
func TestCancelOfARecoveredTaskBeforeItIsQueuedAgain(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	queued := keepQueued(t, dir, clock, nil)

	d, _ := startDaemonHeld(t, journal.Options{Dir: dir}, clock, nil) // recovered, not queued again
	if s, err := d.svc.Get(d.ctx, queued.ID); err != nil || s.Status != Queued {
		t.Fatalf("the recovered task: %v %v, want queued", s.Status, err)
	}
	if err := d.svc.Cancel(d.ctx, queued.ID); err != nil {
		t.Fatal(err)
	}
	if s, _ := d.svc.Get(d.ctx, queued.ID); s.Status != Canceled {
		t.Errorf("after its cancel was answered, the recovered task is %v, want canceled", s.Status)
	}
	// The client has its 204; the daemon is killed before Run queued the task again.
	d.j.crash(t)
	d.stop()

	d = startDaemon(t, dir, clock)
	if s, err := d.svc.Get(d.ctx, queued.ID); err != nil || s.Status != Canceled {
		t.Fatalf("after a crash that followed the answered cancel: %v %v, want canceled (not run again)", s.Status, err)
	}
	next := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, next); err != nil {
		t.Fatal(err)
	}
	if g := d.eng.next(t); g.id != next.ID {
		t.Fatalf("generation of %s, want %s: the canceled task ran", g.id, next.ID)
	}
}

// TestRecoveredTaskCanceledBeforeItIsQueuedAgainNeverRuns: the re-queue leaves a recovered task
// that a cancel ended alone: it does not run, and its session keeps no reservation of it.
func TestRecoveredTaskCanceledBeforeItIsQueuedAgainNeverRuns(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	queued := keepQueued(t, dir, clock, func(s *Spec) { s.Owner, s.SessionGrant = "alice", 30 })

	ss, err := session.New(session.Options{TokenBudget: 100})
	if err != nil {
		t.Fatal(err)
	}
	d, run := startDaemonHeld(t, journal.Options{Dir: dir}, clock, func(o *Options, _ *journal.Journal) { o.Sessions = ss })
	if err := d.svc.Cancel(d.ctx, queued.ID); err != nil {
		t.Fatal(err)
	}
	run() // the re-queue
	next := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, next); err != nil {
		t.Fatal(err)
	}
	if g := d.eng.next(t); g.id != next.ID {
		t.Fatalf("generation of %s, want %s: the canceled task ran", g.id, next.ID)
	}
	if s, _ := d.svc.Get(d.ctx, queued.ID); s.Status != Canceled {
		t.Fatalf("the canceled recovered task is %v", s.Status)
	}
	if info, ok := ss.Get(queued.SessionID); ok && *info.TokensBudgetRemaining != 100 {
		t.Fatalf("the canceled recovered task's session has %d tokens left, want 100: a reservation never settled",
			*info.TokensBudgetRemaining)
	}
}

// stubborn is an engine slow to give a request up: a generation streams one token, then
// returns only once released, aborted or not.
type stubborn struct {
	started chan struct{} // the generation streamed its token
	release chan struct{}
}

func (e *stubborn) Generate(ctx context.Context, _ engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	if err := emit(engine.Token{Text: []byte("a")}); err != nil {
		return engine.Result{}, err
	}
	close(e.started)
	<-e.release
	return engine.Result{TokensOut: 1}, ctx.Err()
}

func (e *stubborn) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// TestCancelOfARunningTaskWhoseEngineIsSlowToEnd: Cancel stops waiting for a running task's
// end after CancelWait (here its caller's shorter deadline), and its client has its 204 while
// the engine has not given the request up: GET shows the task running, and canceled once its
// runner ends it. The journal had no record of the cancel then: a crash in between brought the
// task back running, and the restart ended it failed (worker_reset, retriable, "submit it again"),
// not canceled as its client was told. The cancel is journaled before it is answered.
func TestCancelOfARunningTaskWhoseEngineIsSlowToEnd(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	eng := &stubborn{started: make(chan struct{}), release: make(chan struct{})}
	d := startDaemonWith(t, dir, clock, func(o *Options, _ *journal.Journal) { o.Pools.(*fakePools).rep = eng })
	s := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, s); err != nil {
		t.Fatal(err)
	}
	select {
	case <-eng.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no generation started")
	}
	ctx, cancel := context.WithTimeout(d.ctx, 200*time.Millisecond)
	err := d.svc.Cancel(ctx, s.ID)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if snap, _ := d.svc.Get(d.ctx, s.ID); snap.Status != Running {
		t.Fatalf("the engine held the request, yet the task is %v", snap.Status)
	}
	// The client has its 204; the daemon is killed before the engine gave the request up.
	d.j.crash(t)
	close(eng.release)
	d.stop()

	d = startDaemon(t, dir, clock)
	snap, err := d.svc.Get(d.ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Status != Canceled || snap.Error != nil || snap.TokensOut != 1 {
		t.Fatalf("after a crash that followed the answered cancel: %v, error %+v, %d tokens; want canceled, 1 token",
			snap.Status, snap.Error, snap.TokensOut)
	}
	evs := parse(t, d.log(t, s.ID, 0))
	if got := ids(evs); got != "0:started,1:token,2:metrics,3:end" {
		t.Fatalf("the canceled task's log after the restart: %s", got)
	}
	if end := evs[len(evs)-1].Data; !strings.Contains(end, `"canceled":true`) {
		t.Fatalf("its end frame: %s", end)
	}
}
