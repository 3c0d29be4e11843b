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

// TestConcurrentInvariants hammers one queue from many goroutines (Enqueue, waiters whose
// contexts end at random — often just as their slot is granted —, Cancel, Done, Remove, SetPool
// toggles, Position, Stats) and checks that no pool runs more than its slots, every admitted
// item ends exactly once, and no slot is lost or freed twice: at the end every pool is idle.
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
		waiters  sync.WaitGroup
	)
	q, err := admission.New(admission.Options{Capacity: 16, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pools {
		if err := q.SetPool(p, admission.PoolConfig{Slots: slots, Dispatchable: true, PriorServiceMs: 10}); err != nil {
			t.Fatal(err)
		}
	}

	// wait is an item's goroutine: it waits on its ticket under a ctx that some producers end
	// at random, runs the item when granted a slot, and releases it.
	wait := func(id string, tk *admission.Ticket, ctx context.Context, cancel context.CancelFunc) {
		defer waiters.Done()
		defer cancel()
		err := tk.Wait(ctx)
		switch {
		case err == nil:
		case errors.Is(err, admission.ErrEvicted):
			l.end(id, "evicted")
			return
		case errors.Is(err, admission.ErrRemoved):
			l.end(id, "removed")
			return
		case errors.Is(err, admission.ErrCanceled):
			l.end(id, "canceled")
			return
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			l.end(id, "ctx")
			return
		default:
			l.fail("Wait(%s): %v", id, err)
			return
		}
		l.end(id, "dispatched")
		pool := tk.Item().Pool
		runMu.Lock()
		inflight[pool]++
		if n := inflight[pool]; n > slots {
			l.fail("pool %s runs %d items > %d slots", pool, n, slots)
		}
		runMu.Unlock()
		runMu.Lock()
		inflight[pool]--
		runMu.Unlock()
		if err := tk.Done(admission.DoneInfo{Service: time.Millisecond, Tokens: 1, Decode: time.Millisecond}); err != nil {
			l.fail("Done(%s): %v", id, err)
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
				l.admit(id)
				tk, _, err := q.Enqueue(it)
				if err != nil {
					if !errors.Is(err, admission.ErrRejected) && !errors.Is(err, admission.ErrDropLRUFull) {
						l.fail("Enqueue(%s): %v", id, err)
					}
					l.mu.Lock()
					delete(l.admitted, id)
					l.mu.Unlock()
					refused.Store(id, true)
					continue
				}
				ctx, cancel := context.WithCancel(context.Background())
				waiters.Add(1)
				go wait(id, tk, ctx, cancel)
				mine = append(mine, id)
				switch r := rng.IntN(10); {
				case r < 2:
					q.Cancel(mine[rng.IntN(len(mine))])
				case r < 4:
					cancel() // the waiter gives up, racing its dispatch
				case r == 4:
					q.Position(mine[rng.IntN(len(mine))])
				case r == 5:
					_ = q.Stats()
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
				if err := q.SetPool(p, admission.PoolConfig{Slots: slots, Dispatchable: false, PriorServiceMs: 10}); err != nil {
					l.fail("SetPool: %v", err)
				}
			case 1:
				if err := q.SetPool(p, admission.PoolConfig{Slots: slots, Dispatchable: true, PriorServiceMs: 10}); err != nil {
					l.fail("SetPool: %v", err)
				}
			case 2:
				if _, err := q.Remove(p); err != nil {
					l.fail("Remove: %v", err)
				}
			}
		}
	}()
	wg.Wait()
	// Open every pool: what is queued runs, and every waiter ends.
	for _, p := range pools {
		if err := q.SetPool(p, admission.PoolConfig{Slots: slots, Dispatchable: true, PriorServiceMs: 10}); err != nil {
			t.Fatal(err)
		}
	}
	waiters.Wait()
	st := q.Stats()

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
	if st.Busy != 0 || st.Depth != 0 {
		t.Errorf("at rest: busy %d depth %d, want 0 and 0 (a slot lost or freed twice)", st.Busy, st.Depth)
	}
	counts := map[string]int{}
	for _, how := range l.ended {
		counts[how]++
	}
	t.Logf("admitted %d refused %d ended %v", nAdmitted, nRefused, counts)
}
