package task

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

// budgetMeter is impl/app's meter: the key's token budget (no rate limits here).
type budgetMeter struct{ budgets *tenant.Budgets }

func (m *budgetMeter) Settle(owner, task string, mark uint64, _, granted, used int) {
	_ = m.budgets.SettleTask(owner, task, mark, granted, used)
}

func (m *budgetMeter) Recovered() { m.budgets.Recovered() }

func (m *budgetMeter) Restore(owner string, granted int) { m.budgets.Restore(owner, granted) }

// submitCharged submits a task of key k with its grant reserved in b, as the daemon does.
func (d *daemon) submitCharged(t *testing.T, b *tenant.Budgets, k *tenant.Key) Spec {
	t.Helper()
	s := spec(admission.Interactive)
	s.Owner = k.Name
	grant, _, err := b.Reserve(k, s.MaxTokens)
	if err != nil {
		t.Fatal(err)
	}
	s.Grant = grant
	if _, err := d.svc.Submit(d.ctx, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func openBudgets(t *testing.T, path string) *tenant.Budgets {
	t.Helper()
	b, err := tenant.OpenBudgets(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startMeterDaemon is startDaemon with the meter m; a budgetMeter's budgets keep a task charged
// until the journal's durable mark passes its end, as the daemon wires them.
func startMeterDaemon(t *testing.T, dir string, clock *tasktest.Clock, m Meter) *daemon {
	t.Helper()
	return startDaemonWith(t, dir, clock, func(o *Options, jr *journal.Journal) {
		o.Meter = m
		if bm, ok := m.(*budgetMeter); ok {
			bm.budgets.TrackDurable(jr.OnDisk)
		}
	})
}

// A task queued when the daemon stopped holds a grant of its key's token budget (reserved at
// admission). After the restart the budget file has its used count only: the recovered task
// must hold its grant again while it waits and runs (as its session's reservation is taken
// again), or another task of the key is granted the same tokens, and the recovered task's
// settlement then releases that other task's reservation as if it were its own.
func TestRecoveredTaskKeepsItsKeyBudgetGrant(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "budgets.json")
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	alice := &tenant.Key{Name: "alice", TokenBudget: 8}

	b := openBudgets(t, path)
	d := startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	running, queued := spec(admission.Interactive), spec(admission.Batch)
	running.Owner = "bob" // no budget: it only holds the slot
	queued.Owner = "alice"
	grant, _, err := b.Reserve(alice, queued.MaxTokens) // as admission does
	if err != nil || grant != 8 {
		t.Fatalf("reserve: %d %v", grant, err)
	}
	queued.Grant = grant
	for _, s := range []Spec{running, queued} {
		if _, err := d.svc.Submit(d.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	d.eng.next(t)
	d.stop() // the queued task stays for the next start, its grant unsettled

	b = openBudgets(t, path)
	d = startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	g := d.eng.next(t)
	if g.id != queued.ID {
		t.Fatalf("generation of %s, want the recovered task", g.id)
	}
	// The recovered task may still produce its 8 tokens: the key has nothing left to grant.
	other, _, otherErr := b.Reserve(alice, 8)
	for _, tok := range []string{"a", "b", "c"} {
		g.tokens <- tok
	}
	close(g.tokens)
	d.log(t, queued.ID, 0)
	if otherErr == nil {
		t.Fatalf("after the restart, while the recovered task (grant 8 of a budget of 8) ran, another task of the key "+
			"was granted %d tokens; once the recovered task ended with 3 tokens the key still has %d to grant while "+
			"that task holds %d: the key may spend %d tokens of its budget of 8",
			other, b.Remaining(alice), other, int64(3+other)+b.Remaining(alice))
	}
}

// TestTaskEndedBeforeACrashIsChargedOnce: a task of a key with a budget ends; its charge is
// written at once, its final record reaches the journal's disk within MaxUnsynced. The machine
// goes down in between: the restart finds the task unended and ends it (worker_reset), settling
// it again. The budget file kept the task until its end was on disk, so it is charged once.
func TestTaskEndedBeforeACrashIsChargedOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "budgets.json")
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	alice := &tenant.Key{Name: "alice", TokenBudget: 100}

	b := openBudgets(t, path)
	d := startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	s := d.submitCharged(t, b, alice)
	g := d.eng.next(t)
	d.j.mu.Lock()
	d.j.loseFinal = true
	d.j.mu.Unlock()
	for _, tok := range []string{"a", "b", "c"} {
		g.tokens <- tok
	}
	close(g.tokens)
	d.log(t, s.ID, 0)
	if used := b.Used("alice"); used != 3 {
		t.Fatalf("used before the crash: %d, want 3", used)
	}
	d.stop()

	b = openBudgets(t, path)
	d = startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	snap, err := d.svc.Get(d.ctx, s.ID)
	if err != nil || snap.Status != Failed {
		t.Fatalf("after the restart: %+v %v, want the task recovered unended, then failed", snap, err)
	}
	if used := b.Used("alice"); used != 3 {
		t.Fatalf("after the restart the key is charged %d tokens for a task that produced 3: charged twice", used)
	}
	if r := b.Remaining(alice); r != 97 {
		t.Fatalf("after the restart %d of alice's 100 are left, want 97 (nothing reserved)", r)
	}
}
