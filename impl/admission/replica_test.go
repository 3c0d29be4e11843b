package admission_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// TestReplicaBusy: a granted slot is on no replica until Assign, moves with Assign, leaves
// its replica with Assign("") and with Done; the pool's busy is always the replicas' sum plus
// the unassigned slots. A ticket without a slot cannot be assigned.
func TestReplicaBusy(t *testing.T) {
	q, err := admission.New(admission.Options{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SetPool("p", admission.PoolConfig{Slots: 2, Dispatchable: true}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enqueue := func(id string) *admission.Ticket {
		t.Helper()
		tk, _, err := q.Enqueue(admission.Item{ID: id, Pool: "p"})
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	a, b, c := enqueue("a"), enqueue("b"), enqueue("c") // c queued: the pool has 2 slots
	for _, tk := range []*admission.Ticket{a, b} {
		if err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	type want struct {
		busy int
		reps map[string]int
	}
	check := func(step string, w want) {
		t.Helper()
		got := map[string]int{}
		busy := q.Busy("p", got)
		if busy != w.busy || q.Stats().Pools["p"].Busy != w.busy || !maps.Equal(got, w.reps) {
			t.Fatalf("%s: busy %d, replicas %v; want %d, %v", step, busy, got, w.busy, w.reps)
		}
		for _, id := range []string{"p/0", "p/1"} {
			if n := q.ReplicaBusy("p", id); n != w.reps[id] {
				t.Fatalf("%s: ReplicaBusy(%s) = %d, want %d", step, id, n, w.reps[id])
			}
		}
	}
	check("granted, not placed", want{2, map[string]int{}})

	steps := []struct {
		name    string
		tk      *admission.Ticket
		replica string
		want    want
	}{
		{"a on p/0", a, "p/0", want{2, map[string]int{"p/0": 1}}},
		{"again: no change", a, "p/0", want{2, map[string]int{"p/0": 1}}},
		{"b on p/0", b, "p/0", want{2, map[string]int{"p/0": 2}}},
		{"a moves to p/1", a, "p/1", want{2, map[string]int{"p/0": 1, "p/1": 1}}},
		{"b taken off", b, "", want{2, map[string]int{"p/1": 1}}},
		{"b on p/1", b, "p/1", want{2, map[string]int{"p/1": 2}}},
	}
	for _, s := range steps {
		if err := s.tk.Assign(s.replica); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		check(s.name, s.want)
	}
	if got := a.Replica(); got != "p/1" {
		t.Fatalf("a is on %q", got)
	}
	if err := c.Assign("p/0"); !errors.Is(err, admission.ErrNotBusy) {
		t.Fatalf("assigning a queued ticket: %v", err)
	}
	if err := a.Done(admission.DoneInfo{}); err != nil { // its slot goes to c
		t.Fatal(err)
	}
	check("a done", want{2, map[string]int{"p/1": 1}})
	if a.Replica() != "" {
		t.Fatalf("a done, still on %q", a.Replica())
	}
	if err := a.Assign("p/0"); !errors.Is(err, admission.ErrNotBusy) {
		t.Fatalf("assigning a released ticket: %v", err)
	}
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Assign("p/0"); err != nil {
		t.Fatal(err)
	}
	check("c on p/0", want{2, map[string]int{"p/0": 1, "p/1": 1}})
	for _, tk := range []*admission.Ticket{b, c} {
		if err := tk.Done(admission.DoneInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	check("all done", want{0, map[string]int{}})
	if q.ReplicaBusy("nope", "p/0") != 0 {
		t.Fatal("an unknown pool has busy replicas")
	}
	if err := new(admission.Ticket).Assign("p/0"); !errors.Is(err, admission.ErrNotBusy) {
		t.Fatalf("assigning a ticket never enqueued: %v", err)
	}
}

// TestReplicaBusyConcurrent: items dispatched, assigned, moved between replicas and released
// from many goroutines; at every Stats the replicas' sum never exceeds the pool's busy, and at
// rest both are 0.
func TestReplicaBusyConcurrent(t *testing.T) {
	q, err := admission.New(admission.Options{Capacity: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SetPool("p", admission.PoolConfig{Slots: 3, Dispatchable: true}); err != nil {
		t.Fatal(err)
	}
	reps := []string{"p/0", "p/1", "p/2"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bad error
	var badOnce sync.Once
	wg.Add(1)
	go func() { // the observer
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			per := map[string]int{}
			busy := q.Busy("p", per)
			sum := 0
			for _, id := range reps {
				n := q.ReplicaBusy("p", id)
				if n < 0 {
					badOnce.Do(func() { bad = fmt.Errorf("negative busy on %s: %d", id, n) })
				}
			}
			for _, n := range per {
				sum += n
			}
			if sum > busy || busy > 3 {
				badOnce.Do(func() { bad = fmt.Errorf("busy %d, replicas %v", busy, per) })
			}
		}
	}()
	var workers sync.WaitGroup
	for w := range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range 50 {
				tk, _, err := q.Enqueue(admission.Item{ID: fmt.Sprintf("%d-%d", w, i), Pool: "p"})
				if err != nil {
					t.Error(err)
					return
				}
				if err := tk.Wait(context.Background()); err != nil {
					t.Error(err)
					return
				}
				for k := range i % 4 { // placed, failed over, placed again
					if err := tk.Assign(reps[(w+k)%len(reps)]); err != nil {
						t.Error(err)
					}
				}
				if i%5 == 0 {
					_ = tk.Assign("")
				}
				if err := tk.Done(admission.DoneInfo{}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
	per := map[string]int{}
	if busy := q.Busy("p", per); busy != 0 || len(per) != 0 {
		t.Fatalf("at rest busy %d, replicas %v", busy, per)
	}
	for _, id := range reps {
		if n := q.ReplicaBusy("p", id); n != 0 {
			t.Fatalf("at rest %s has %d busy", id, n)
		}
	}
}

// BenchmarkAssign: moving a slot between replicas and reading a replica's count, as the task
// service and the registry's views do per generation; neither allocates once the replicas
// are known.
func BenchmarkAssign(b *testing.B) {
	q, err := admission.New(admission.Options{Capacity: 4})
	if err != nil {
		b.Fatal(err)
	}
	if err := q.SetPool("p", admission.PoolConfig{Slots: 1, Dispatchable: true}); err != nil {
		b.Fatal(err)
	}
	tk, _, err := q.Enqueue(admission.Item{ID: "a", Pool: "p"})
	if err != nil {
		b.Fatal(err)
	}
	if err := tk.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	reps := [2]string{"p/0", "p/1"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := tk.Assign(reps[i%2]); err != nil {
			b.Fatal(err)
		}
		if q.ReplicaBusy("p", reps[i%2]) != 1 {
			b.Fatal("not counted")
		}
	}
}
