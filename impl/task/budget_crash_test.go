package task

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

// dyingMeter is impl/app's meter in a process killed while it writes budgets.json: at its
// first Settle the journal's goroutine has written everything appended so far (it writes each
// batch at once, while the budget file is synced), and the process dies before the file is
// replaced: nothing more is charged or journaled.
type dyingMeter struct {
	t       *testing.T
	budgets *tenant.Budgets
	j       *crashable

	mu   sync.Mutex
	dead bool
}

func (m *dyingMeter) Settle(owner, task string, mark uint64, _, granted, used int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return
	}
	if granted > 0 {
		m.j.crash(m.t) // what was written outlives the process (page cache); nothing follows
		m.dead = true
		return
	}
	_ = m.budgets.SettleTask(owner, task, mark, granted, used)
}

func (m *dyingMeter) Recovered() {}

func (m *dyingMeter) Restore(owner string, granted int) { m.budgets.Restore(owner, granted) }

// TestTaskEndedAtACrashIsCharged: README (Budgets) "Used tokens persist in budgets.json,
// each task's once even across a crash". A task of a key with a budget ends; the daemon is
// killed (kill -9, OOM) while it writes the task's charge to budgets.json, after the journal's
// goroutine wrote the task's final record. The restart finds the task ended, so it settles
// nothing: the key was never charged for the 3 tokens it was served.
func TestTaskEndedAtACrashIsCharged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "budgets.json")
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	alice := &tenant.Key{Name: "alice", TokenBudget: 100}

	b := openBudgets(t, path)
	dm := &dyingMeter{t: t, budgets: b}
	d := startDaemonWith(t, dir, clock, func(o *Options, jr *journal.Journal) {
		o.Meter = dm
		dm.j = o.Journal.(*crashable)
		b.TrackDurable(jr.OnDisk)
	})
	s := d.submitCharged(t, b, alice)
	g := d.eng.next(t)
	for _, tok := range []string{"a", "b", "c"} {
		g.tokens <- tok
	}
	close(g.tokens)
	waitFor(t, func() bool {
		dm.mu.Lock()
		defer dm.mu.Unlock()
		return dm.dead
	})
	d.stop()

	b = openBudgets(t, path)
	d = startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	snap, err := d.svc.Get(d.ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if used := b.Used("alice"); used != int64(snap.TokensOut) {
		t.Fatalf("after a crash while its charge was written, the task (%s, %d tokens) is charged %d tokens to its key",
			snap.Status, snap.TokensOut, used)
	}
}
