package tenant

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestBudgets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	b, err := OpenBudgets(path)
	if err != nil {
		t.Fatal(err)
	}
	alice := &Key{Name: "alice", TokenBudget: 100}
	free := &Key{Name: "free"}

	if g, rem, err := b.Reserve(free, 5000); err != nil || g != 5000 || rem != -1 {
		t.Fatalf("no budget: %d %d %v", g, rem, err)
	}
	steps := []struct {
		name         string
		want         int
		grant        int
		remaining    int64
		settleUsed   int // -1: keep reserved
		wantErr      bool
		usedAfter    int64
		remainingNow int64
	}{
		{name: "whole", want: 60, grant: 60, remaining: 40, settleUsed: 10, usedAfter: 10, remainingNow: 90},
		{name: "held", want: 80, grant: 80, remaining: 10, settleUsed: -1, usedAfter: 10, remainingNow: 10},
		{name: "partial grant", want: 30, grant: 10, remaining: 0, settleUsed: -1, usedAfter: 10, remainingNow: 0},
		{name: "spent", want: 1, wantErr: true, usedAfter: 10, remainingNow: 0},
	}
	for _, s := range steps {
		g, rem, err := b.Reserve(alice, s.want)
		var be *BudgetError
		if s.wantErr {
			if !errors.As(err, &be) || be.Pending != 90 || be.Budget != 100 {
				t.Fatalf("%s: err = %v (%+v)", s.name, err, be)
			}
			continue
		}
		if err != nil || g != s.grant || rem != s.remaining {
			t.Fatalf("%s: grant %d remaining %d err %v; want %d %d", s.name, g, rem, err, s.grant, s.remaining)
		}
		if s.settleUsed >= 0 {
			if err := b.Settle("alice", g, s.settleUsed); err != nil {
				t.Fatal(err)
			}
		}
		if b.Used("alice") != s.usedAfter || b.Remaining(alice) != s.remainingNow {
			t.Fatalf("%s: used %d remaining %d", s.name, b.Used("alice"), b.Remaining(alice))
		}
	}
	// The held grants end: 80 used 80, 10 used 3.
	if err := b.Settle("alice", 80, 80); err != nil {
		t.Fatal(err)
	}
	if err := b.Settle("alice", 10, 3); err != nil {
		t.Fatal(err)
	}
	if b.Used("alice") != 93 || b.Remaining(alice) != 7 {
		t.Fatalf("after the ends: used %d remaining %d", b.Used("alice"), b.Remaining(alice))
	}

	// A restart reads what was used; a recovered task's grant is not reserved any more, its
	// use is still charged.
	b2, err := OpenBudgets(path)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Used("alice") != 93 || b2.Remaining(alice) != 7 {
		t.Fatalf("after a restart: used %d remaining %d", b2.Used("alice"), b2.Remaining(alice))
	}
	if err := b2.Settle("alice", 50, 2); err != nil {
		t.Fatal(err)
	}
	if b2.Used("alice") != 95 || b2.Remaining(alice) != 5 {
		t.Fatalf("a recovered task: used %d remaining %d", b2.Used("alice"), b2.Remaining(alice))
	}
	// Only the budget file is left in the directory: no temporary files.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d entries", len(entries))
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBudgets(path); err == nil {
		t.Fatal("a torn budget file was accepted")
	}
}

// TestSettleTaskOnce: a task's charge is written once. The file keeps the task until its final
// journal record is durable (its mark at or below the journal's durable mark); a settle of a
// task kept, here or in the file from before a restart, only returns its grant. Recovered
// forgets those from before.
func TestSettleTaskOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	b, err := OpenBudgets(path)
	if err != nil {
		t.Fatal(err)
	}
	durable := uint64(0)
	b.TrackDurable(func() uint64 { return durable })
	alice := &Key{Name: "alice", TokenBudget: 100}
	reserve := func(b *Budgets) {
		t.Helper()
		if _, _, err := b.Reserve(alice, 10); err != nil {
			t.Fatal(err)
		}
	}
	settle := func(b *Budgets, task string, mark uint64) {
		t.Helper()
		if err := b.SettleTask("alice", task, mark, 10, 4); err != nil {
			t.Fatal(err)
		}
	}
	reserve(b)
	settle(b, "t1", 5) // its end not durable yet: kept
	reserve(b)
	settle(b, "t1", 5) // settled again (as a restart would): its grant returns, nothing is charged
	if u, r := b.Used("alice"), b.Remaining(alice); u != 4 || r != 96 {
		t.Fatalf("t1 settled twice: used %d, %d left; want 4, 96", u, r)
	}
	durable = 6 // t1's end is on disk
	reserve(b)
	settle(b, "t2", 9) // its write forgets t1
	if _, kept := b.settled["t1"]; kept {
		t.Fatal("t1 kept after its end was durable")
	}

	b2, err := OpenBudgets(path) // a restart: the file names t2 only
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b2.prev["t2"]; !ok || len(b2.prev) != 1 {
		t.Fatalf("kept from before the restart: %v, want t2", b2.prev)
	}
	b2.TrackDurable(func() uint64 { return 0 })
	b2.Restore("alice", 10)
	settle(b2, "t2", 1) // the restart ends t2 again: not charged
	if u := b2.Used("alice"); u != 8 {
		t.Fatalf("after the restart: used %d, want 8 (t1 and t2, once each)", u)
	}
	b2.Recovered()
	reserve(b2)
	settle(b2, "t3", 2)
	b3, err := OpenBudgets(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b3.prev["t2"]; ok {
		t.Fatalf("t2 still in the file after Recovered: %v", b3.prev)
	}
}
