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
