package admission

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// tailOrderRef is the position computation the tree replaced, kept as the reference: every
// backlogged tenant walked at each Enqueue, O(tenants).
func (f *fairQueue) tailOrderRef(n *node) (int, float64) {
	t, l := n.tq, n.lq
	c := costOf(n)
	vl := l.vtc + l.pending - c
	pos, sum := l.q.len-1, l.pending-c
	for _, m := range t.lh {
		if m != l {
			k, s := countBefore(m, m.vtc, m.seq < l.seq, vl)
			pos += k
			sum += s
		}
	}
	v := t.vtc + sum
	band := 2e-9 * max(1, v, -v)
	lo, hi := v-band, v+band
	for _, u := range f.h {
		switch {
		case u == t:
		case u.vtc > hi && u.vtc-v > 2e-9*max(1, u.vtc):
		case len(u.lh) == 1 && u.vtc+u.pending-u.lh[0].tailCost < lo:
			pos += u.n
		case len(u.lh) == 1:
			m := u.lh[0]
			k, _ := countBefore(m, u.vtc, u.name < t.name, v)
			pos += k
		default:
			pos += u.playBefore(v, t.name)
		}
	}
	return pos, v
}

// checkTree verifies that f's tree holds exactly the queued items of its regular tenants, in
// key order, with consistent sizes, and that irr lists exactly the irregular tenants.
func checkTree(t *testing.T, f *fairQueue) {
	t.Helper()
	if err := f.tree.check(); err != nil {
		t.Fatal(err)
	}
	for i, u := range f.byName {
		if f.tenants[u.name] != u || i > 0 && (f.byName[i-1].name >= u.name || f.byName[i-1].ord >= u.ord) {
			t.Fatalf("tenant %s at %d of byName out of name or ord order", u.name, i)
		}
	}
	if len(f.byName) != len(f.tenants) {
		t.Fatalf("byName lists %d tenants of %d", len(f.byName), len(f.tenants))
	}
	for i, u := range f.h {
		if u.idx != i || i > 0 && f.h.Less(i, (i-1)/2) {
			t.Fatalf("heap entry %d (tenant %s, index %d) out of place", i, u.name, u.idx)
		}
	}
	inTree := 0
	for _, e := range f.tree.entries() {
		n := e.n
		if !n.inTree() || n.ot.bkey != e.bkey || n.ot.start != e.start || n.tq == nil || n.tq != e.tq || n.tq.irr >= 0 {
			t.Fatalf("%s in the tree of an irregular tenant, or keyed apart from its ticket", n.item.ID)
		}
		inTree++
	}
	want := 0
	for i, u := range f.irr {
		if u.irr != i || u.n == 0 {
			t.Fatalf("irr[%d] = %s with index %d, %d items", i, u.name, u.irr, u.n)
		}
	}
	for _, u := range f.h {
		if u.irr < 0 {
			want += u.n
			if len(u.lh) != 1 {
				t.Fatalf("regular tenant %s has %d sessions", u.name, len(u.lh))
			}
		}
	}
	if inTree != want {
		t.Fatalf("tree holds %d items, regular tenants %d", inTree, want)
	}
}

// TestTailOrderMatchesReference plays random sequences of enqueues, dispatches, settlements,
// cancels, evictions, expiries and drains, and checks at every Enqueue that the position and
// virtual start the tree gives are those of the O(tenants) walk it replaced.
func TestTailOrderMatchesReference(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) { playPositions(t, seed) })
	}
}

func playPositions(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	tenants := []int{1, 3, 20, 200}[rng.IntN(4)]
	sessions := 1 + rng.IntN(3)
	now := time.Unix(0, 0)
	policy := Policy(rng.IntN(2))
	q, err := New(Options{Capacity: 20 + rng.IntN(300), Policy: policy, Now: func() time.Time { return now },
		MaxBatchWait: time.Duration(rng.IntN(2)) * 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SetPool("p", PoolConfig{Slots: 1 + rng.IntN(3), Dispatchable: true, PriorServiceMs: 10}); err != nil {
		t.Fatal(err)
	}
	weights := []float64{1, 2, 3, 4, 0.5}
	var running []*Ticket
	var queued []*Ticket
	checked := 0
	for step := range 1500 {
		now = now.Add(time.Duration(rng.IntN(20)) * time.Millisecond)
		switch r := rng.IntN(100); {
		case r < 55: // enqueue
			ten := rng.IntN(tenants)
			if rng.IntN(4) == 0 {
				ten = 0 // one tenant floods
			}
			it := Item{ID: fmt.Sprintf("i%d", step), Pool: "p", Priority: Priority(rng.IntN(2)),
				Tenant: "k" + strconv.Itoa(ten), Weight: weights[(ten+rng.IntN(2))%len(weights)],
				Cost: float64(int(1) << rng.IntN(8))}
			if s := rng.IntN(sessions + 1); s > 0 {
				it.Session = "s" + strconv.Itoa(s)
			}
			tk := new(Ticket)
			adm, err := q.EnqueueTicket(tk, it)
			if err != nil {
				continue
			}
			q.mu.Lock()
			if tk.state == stQueued {
				p := tk.pool
				f := &p.fair[it.Priority]
				wantAhead, wantV := f.tailOrderRef(tk)
				got := adm.AheadInteractive
				if it.Priority == Batch {
					got = adm.AheadBatch
				}
				if got != wantAhead || adm.VirtualStart != wantV {
					q.mu.Unlock()
					t.Fatalf("step %d: %s ahead %d at %v, reference %d at %v", step, it.ID, got, adm.VirtualStart, wantAhead, wantV)
				}
				checked++
				queued = append(queued, tk)
			}
			for c := range p0(q).fair {
				checkTree(t, &p0(q).fair[c])
			}
			q.mu.Unlock()
			if tk.state == stDispatched {
				running = append(running, tk)
			}
		case r < 80: // a running item ends, settled to what it used
			if len(running) == 0 {
				continue
			}
			i := rng.IntN(len(running))
			tk := running[i]
			running = append(running[:i], running[i+1:]...)
			d := DoneInfo{Settle: rng.IntN(4) > 0, Used: rng.IntN(300)}
			if err := tk.Done(d); err != nil {
				t.Fatal(err)
			}
		case r < 90: // a queued item is canceled or its deadline passes
			if len(queued) == 0 {
				continue
			}
			tk := queued[rng.IntN(len(queued))]
			if rng.IntN(2) == 0 {
				q.Cancel(tk.item.ID)
			} else {
				ctx, cancel := context.WithCancelCause(context.Background())
				cancel(ErrExpired)
				if err := tk.Wait(ctx); err == nil {
					running = append(running, tk)
				}
			}
		case r < 91: // the pool's drain deadline
			if _, err := q.Remove("p"); err != nil {
				t.Fatal(err)
			}
		default: // dispatched tickets take their slots
		}
		// Position of a queued item (GET): the tree's answer is the played order's.
		if len(queued) > 0 {
			tk := queued[rng.IntN(len(queued))]
			q.mu.Lock()
			if tk.state == stQueued {
				f := &tk.pool.fair[tk.item.Priority]
				gotPos, gotV := f.orderOf(tk)
				wantPos, wantV := f.order(tk)
				if gotPos != wantPos || !tied(gotV, wantV) {
					q.mu.Unlock()
					t.Fatalf("step %d: %s at %d (%v), played order %d (%v)", step, tk.item.ID, gotPos, gotV, wantPos, wantV)
				}
				checked++
			}
			q.mu.Unlock()
		}
		// Tickets granted a slot move to running; the others stay while queued.
		kept := queued[:0]
		q.mu.Lock()
		for _, tk := range queued {
			switch tk.state {
			case stQueued:
				kept = append(kept, tk)
			case stDispatched, stRunning:
				running = append(running, tk)
			}
		}
		for c := range p0(q).fair {
			checkTree(t, &p0(q).fair[c])
		}
		q.mu.Unlock()
		queued = kept
	}
	if checked == 0 {
		t.Fatal("no position was checked")
	}
}

func p0(q *Queue) *pool { return q.st.pools["p"] }

// TestTailOrderBand covers starts that before ties (within 1e-9 of each other) but that the
// tree keys apart (more than 2^-31 apart): their order is by tenant name, as in the reference.
func TestTailOrderBand(t *testing.T) {
	const near = 1000.0000007 // tied with 1000 (band 1e-6), another key (step 4.7e-7)
	if !tied(near, 1000) || snap(near) == snap(1000) {
		t.Fatal("the test's starts are not in the band with distinct keys")
	}
	for _, c := range []struct {
		name  string
		items []Item // enqueued in order; the last one's position is checked
		want  int
	}{
		{"a ahead of b by name, its key after b's", []Item{
			{Tenant: "a", Cost: near}, {Tenant: "b", Cost: 1000}, {Tenant: "a", Cost: 1}, {Tenant: "b", Cost: 1}}, 3},
		{"b after a by name, its key before a's", []Item{
			{Tenant: "a", Cost: near}, {Tenant: "b", Cost: 1000}, {Tenant: "b", Cost: 1}, {Tenant: "a", Cost: 1}}, 2},
		{"b after a's tied item, a irregular (two sessions)", []Item{
			{Tenant: "a", Cost: near}, {Tenant: "b", Cost: 1000}, {Tenant: "a", Session: "x", Cost: 1},
			{Tenant: "a", Cost: 1}, {Tenant: "b", Cost: 1}}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, err := New(Options{Capacity: 10})
			if err != nil {
				t.Fatal(err)
			}
			if err := q.SetPool("p", PoolConfig{Slots: 0, Dispatchable: true}); err != nil {
				t.Fatal(err)
			}
			var adm Admission
			var tk *Ticket
			for i, it := range c.items {
				it.ID, it.Pool = "i"+strconv.Itoa(i), "p"
				tk = new(Ticket)
				if adm, err = q.EnqueueTicket(tk, it); err != nil {
					t.Fatal(err)
				}
			}
			f := &p0(q).fair[Interactive]
			want, _ := f.tailOrderRef(tk)
			if adm.Position != c.want || want != c.want {
				t.Errorf("position %d, reference %d, want %d", adm.Position, want, c.want)
			}
			if got, _ := f.orderOf(tk); got != c.want {
				t.Errorf("orderOf %d, want %d", got, c.want)
			}
		})
	}
}
