package admission_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// ledger records how every item ended. Each admitted item must end exactly once.
type ledger struct {
	mu       sync.Mutex
	admitted map[string]bool
	ended    map[string]string // id -> how
	errs     []string
}

func (l *ledger) admit(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.admitted[id] = true
}

func (l *ledger) end(id, how string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, dup := l.ended[id]; dup {
		l.errs = append(l.errs, fmt.Sprintf("%s ended twice: %s, then %s", id, prev, how))
		return
	}
	l.ended[id] = how
}

func (l *ledger) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, args...))
}

// TestConcurrentInvariants hammers one queue from many goroutines (Enqueue, Cancel, Done,
// Remove, SetPool toggles, Position, Stats) and checks that no item is dispatched twice, no
// pool runs more than its slots, and every admitted item ends exactly once.
func TestConcurrentInvariants(t *testing.T) {
	for _, policy := range []admission.Policy{admission.Reject, admission.DropLRU} {
		t.Run(policy.String(), func(t *testing.T) {
			stress(t, policy)
		})
	}
}

func stress(t *testing.T, policy admission.Policy) {
	const (
		producers = 8
		perProd   = 400
		slots     = 2
	)
	pools := []string{"p0", "p1", "p2", "p3"}
	l := &ledger{admitted: map[string]bool{}, ended: map[string]string{}}

	var (
		runMu    sync.Mutex
		inflight = map[string]int{}
		doneWG   sync.WaitGroup
		q        *admission.Queue
	)
	ctx, stop := context.WithCancel(context.Background())
	dispatch := func(it admission.Item) {
		l.end(it.ID, "dispatched")
		runMu.Lock()
		inflight[it.Pool]++
		if n := inflight[it.Pool]; n > slots {
			l.fail("pool %s runs %d items > %d slots", it.Pool, n, slots)
		}
		runMu.Unlock()
		doneWG.Add(1)
		go func() {
			defer doneWG.Done()
			runMu.Lock()
			inflight[it.Pool]--
			runMu.Unlock()
			err := q.Done(context.Background(), it.Pool, admission.DoneInfo{Service: time.Millisecond, Tokens: 1, Decode: time.Millisecond})
			if err != nil && !errors.Is(err, admission.ErrClosed) {
				l.fail("Done(%s): %v", it.Pool, err)
			}
		}()
	}
	q = admission.New(admission.Options{
		Capacity: 16, Policy: policy, Dispatch: dispatch,
		Evict: func(it admission.Item) { l.end(it.ID, "evicted") },
	})
	runErr := make(chan error, 1)
	go func() { runErr <- q.Run(ctx) }()

	bg := context.Background()
	for _, p := range pools {
		if err := q.SetPool(bg, p, admission.PoolConfig{Slots: slots, Dispatchable: true, PriorServiceMs: 10}); err != nil {
			t.Fatal(err)
		}
	}

	var refused sync.Map
	var wg sync.WaitGroup
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var mine []string
			for i := range perProd {
				id := fmt.Sprintf("g%d-%d", g, i)
				it := admission.Item{ID: id, Pool: pools[rng.IntN(len(pools))], Priority: admission.Priority(rng.IntN(2))}
				l.admit(id) // before Enqueue: Dispatch may run before Enqueue returns
				if _, err := q.Enqueue(bg, it); err != nil {
					if !errors.Is(err, admission.ErrRejected) && !errors.Is(err, admission.ErrDropLRUFull) {
						l.fail("Enqueue(%s): %v", id, err)
					}
					l.mu.Lock()
					delete(l.admitted, id)
					l.mu.Unlock()
					refused.Store(id, true)
					continue
				}
				mine = append(mine, id)
				switch r := rng.IntN(10); {
				case r < 3:
					victim := mine[rng.IntN(len(mine))]
					ok, err := q.Cancel(bg, victim)
					if err != nil {
						l.fail("Cancel: %v", err)
					}
					if ok {
						l.end(victim, "canceled")
					}
				case r == 3:
					if _, _, err := q.Position(bg, mine[rng.IntN(len(mine))]); err != nil {
						l.fail("Position: %v", err)
					}
				case r == 4:
					if _, err := q.Stats(bg); err != nil {
						l.fail("Stats: %v", err)
					}
				}
			}
		}()
	}
	// Operators: drain and re-open pools, and remove queued items of a pool.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(99, 1))
		for range 200 {
			p := pools[rng.IntN(len(pools))]
			switch rng.IntN(3) {
			case 0:
				if err := q.SetPool(bg, p, admission.PoolConfig{Slots: slots, Dispatchable: false, PriorServiceMs: 10}); err != nil {
					l.fail("SetPool: %v", err)
				}
			case 1:
				if err := q.SetPool(bg, p, admission.PoolConfig{Slots: slots, Dispatchable: true, PriorServiceMs: 10}); err != nil {
					l.fail("SetPool: %v", err)
				}
			case 2:
				items, err := q.Remove(bg, p)
				if err != nil {
					l.fail("Remove: %v", err)
				}
				for _, it := range items {
					l.end(it.ID, "removed")
				}
			}
		}
	}()
	wg.Wait()

	st, err := q.Stats(bg)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	doneWG.Wait()
	for _, it := range q.Drain() {
		l.end(it.ID, "drained")
	}

	for _, e := range l.errs {
		t.Error(e)
	}
	nAdmitted, nRefused := len(l.admitted), 0
	refused.Range(func(any, any) bool { nRefused++; return true })
	if nAdmitted+nRefused != producers*perProd {
		t.Errorf("admitted %d + refused %d != %d", nAdmitted, nRefused, producers*perProd)
	}
	for id := range l.admitted {
		if _, ok := l.ended[id]; !ok {
			t.Errorf("%s admitted but never ended", id)
		}
	}
	for id, how := range l.ended {
		if !l.admitted[id] {
			t.Errorf("%s ended (%s) but was never admitted", id, how)
		}
	}
	if got := st.Outcomes[admission.Admitted]; got != uint64(nAdmitted) {
		t.Errorf("Stats admitted = %d, want %d", got, nAdmitted)
	}
	if got := st.Outcomes[admission.RejectedFull] + st.Outcomes[admission.RejectedDropLRU]; got != uint64(nRefused) {
		t.Errorf("Stats refused = %d, want %d", got, nRefused)
	}
	counts := map[string]int{}
	for _, how := range l.ended {
		counts[how]++
	}
	t.Logf("admitted %d refused %d ended %v", nAdmitted, nRefused, counts)
}
