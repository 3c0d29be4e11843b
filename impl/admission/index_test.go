package admission

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestIDIndexMatchesMap plays random puts, gets and deletes against a map, checking every
// answer, and that no probe run has a hole between an entry and its home slot.
func TestIDIndexMatchesMap(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 3))
		x := newIDIndex()
		ref := map[string]*Ticket{}
		keys := 1 + rng.IntN(2000)
		for step := range 20000 {
			id := "t" + strconv.Itoa(rng.IntN(keys))
			switch rng.IntN(3) {
			case 0:
				if ref[id] == nil {
					tk := &Ticket{item: Item{ID: id}}
					x.put(tk, x.hash(id))
					ref[id] = tk
				}
			case 1:
				if tk := ref[id]; tk != nil {
					x.remove(tk)
					delete(ref, id)
				}
			}
			if got := x.get(id); got != ref[id] {
				t.Fatalf("seed %d step %d: get(%s) = %p, want %p", seed, step, id, got, ref[id])
			}
			if x.n != len(ref) {
				t.Fatalf("seed %d step %d: %d entries, want %d", seed, step, x.n, len(ref))
			}
		}
		mask := len(x.slots) - 1
		for i, s := range x.slots {
			if s.tk == nil {
				continue
			}
			for j := int(s.h) & mask; j != i; j = (j + 1) & mask {
				if x.slots[j].tk == nil {
					t.Fatalf("seed %d: hole at %d before %s at %d", seed, j, s.tk.item.ID, i)
				}
			}
			if ref[s.tk.item.ID] != s.tk {
				t.Fatalf("seed %d: stale entry %s", seed, s.tk.item.ID)
			}
		}
	}
}

// TestIDIndexSteadyChurnAllocatesNothing: a table at a level size keeps its slots under
// deletes and puts of new ids (Go's maps grow under such churn).
func TestIDIndexSteadyChurnAllocatesNothing(t *testing.T) {
	x := newIDIndex()
	const level = 1000
	tks := make([]Ticket, 4*level)
	for i := range tks {
		tks[i].item.ID = "t" + strconv.Itoa(i)
	}
	for i := range level {
		x.put(&tks[i], x.hash(tks[i].item.ID))
	}
	next := level
	allocs := testing.AllocsPerRun(2000, func() {
		x.remove(&tks[(next-level)%len(tks)])
		tk := &tks[next%len(tks)]
		x.put(tk, x.hash(tk.item.ID))
		next++
	})
	if allocs != 0 || x.n != level {
		t.Fatalf("%v allocs per delete and put, %d entries", allocs, x.n)
	}
}
