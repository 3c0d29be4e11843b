package tenant

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestPendingMarkForgottenOnceJournaled: a task settled before its final journal record
// was appended (PendingMark) stays named in budgets.json until Journaled gives the record's
// mark and the journal has it on disk; then the next write leaves it out.
func TestPendingMarkForgottenOnceJournaled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	b, err := OpenBudgets(path)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk uint64
	b.TrackDurable(func() uint64 { return onDisk })
	k := &Key{Name: "alice", TokenBudget: 100}
	settled := func() []string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f budgetFile
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		return f.Settled
	}
	for range 2 {
		if _, _, err := b.Reserve(k, 10); err != nil {
			t.Fatal(err)
		}
	}
	onDisk = 100 // everything journaled so far is on disk; t1's final record is not appended yet
	if err := b.SettleTask("alice", "t1", PendingMark, 10, 3); err != nil {
		t.Fatal(err)
	}
	if got := settled(); !slices.Equal(got, []string{"t1"}) {
		t.Fatalf("after t1's charge: the file names %v, want t1 (its final record is not journaled yet)", got)
	}
	b.Journaled("t1", 101)
	onDisk = 101
	if err := b.SettleTask("alice", "t2", PendingMark, 10, 4); err != nil {
		t.Fatal(err)
	}
	if got := settled(); !slices.Equal(got, []string{"t2"}) {
		t.Fatalf("after t1's end is on disk: the file names %v, want t2 only", got)
	}
	if used := b.Used("alice"); used != 7 {
		t.Fatalf("used %d, want 7", used)
	}
}
