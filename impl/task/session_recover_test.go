package task

import (
	"fmt"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// startBudgetDaemon is startDaemon with the session store ss (sessions live in memory: each
// start gets a new one).
func startBudgetDaemon(t *testing.T, dir string, clock *tasktest.Clock, ss *session.Store) *daemon {
	t.Helper()
	return startDaemonWith(t, dir, clock, func(o *Options, _ *journal.Journal) { o.Sessions = ss })
}

// TestRecoveredTaskReservesItsSessionAgain: a queued task recovered after a restart takes its
// reservation of its session's budget again in the session the restart re-creates, and
// settles it when it ends.
func TestRecoveredTaskReservesItsSessionAgain(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	newStore := func() *session.Store {
		ss, err := session.New(session.Options{TokenBudget: 100})
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	ss := newStore()
	d := startBudgetDaemon(t, dir, clock, ss)
	running, queued := spec(admission.Interactive), spec(admission.Batch)
	for _, s := range []*Spec{&running, &queued} {
		s.Owner = "alice"
		r, err := ss.Reserve(s.SessionID, s.Owner, 30) // as admission does
		if err != nil {
			t.Fatal(err)
		}
		s.SessionGrant, s.SessionGen = r.Grant, r.Gen
		if _, err := d.svc.Submit(d.ctx, *s); err != nil {
			t.Fatal(err)
		}
	}
	d.eng.next(t)
	d.stop() // the queued task stays for the next start

	ss = newStore()
	d = startBudgetDaemon(t, dir, clock, ss)
	g := d.eng.next(t)
	if g.id != queued.ID {
		t.Fatalf("generation of %s, want the queued task", g.id)
	}
	info, ok := ss.Get(queued.SessionID)
	if !ok || info.Owner != "alice" || *info.TokensBudgetRemaining != 70 {
		t.Fatalf("the recovered task's session while it runs: %+v %v, want alice's with 70 left", info, ok)
	}
	for i := range 5 {
		g.tokens <- fmt.Sprint(" t", i)
	}
	close(g.tokens)
	d.log(t, queued.ID, 0)
	if info, _ := ss.Get(queued.SessionID); *info.TokensBudgetRemaining != 95 {
		t.Fatalf("the recovered task's session after it ended: %d left, want 95", *info.TokensBudgetRemaining)
	}
}
