package admission

import (
	"context"

	"math/rand/v2"
	"strconv"
	"testing"
)

// countLinear is the reference for the straddle searches: the starts base+(pre[k]-pre[0])
// before v (ties: tie), counted one by one.
func countLinear(pre []float64, base, v float64, tie bool) int {
	k := 0
	for k < len(pre) && before(base+(pre[k]-pre[0]), v, tie) {
		k++
	}
	return k
}

// irrFor is an irrSum for one session's sums pre from counter base, as syncIrr makes it.
func irrFor(pre []float64, base float64) irrSum {
	p0, pn := pre[0], pre[len(pre)-1]
	return irrSum{first: base, pre: pre, shift: p0 - base, mag: max(base, -base) + max(p0, -p0) + max(pn, -pn)}
}

// TestStraddleSearch checks a straddle's count, searched alone and four in lockstep, against
// the linear count, for starts away from v, tied with it, just outside its tie band and within
// the search's margin.
func TestStraddleSearch(t *testing.T) {
	type search struct {
		pre  []float64
		base float64
		v    float64
		tie  bool
	}
	cases := []struct {
		name string
		s    search
		want int
	}{
		{"between starts", search{[]float64{0, 10, 20, 30}, 100, 115, false}, 2},
		{"at a start, tie after", search{[]float64{0, 10, 20, 30}, 100, 110, false}, 1},
		{"at a start, tie before", search{[]float64{0, 10, 20, 30}, 100, 110, true}, 2},
		{"tied within rounding, tie before", search{[]float64{0, 10, 20, 30}, 100, 110 * (1 + 5e-10), true}, 2},
		{"tied within rounding, tie after", search{[]float64{0, 10, 20, 30}, 100, 110 * (1 - 5e-10), false}, 1},
		{"just past the tie band", search{[]float64{0, 10, 20, 30}, 100, 110 * (1 + 3e-9), false}, 2},
		{"equal starts, tie before", search{[]float64{5, 5, 5, 6, 6}, 0, 0, true}, 3},
		{"equal starts, tie after", search{[]float64{5, 5, 5, 6, 6}, 0, 0, false}, 0},
		{"sums far from zero", search{[]float64{1e12, 1e12 + 1, 1e12 + 2}, 3, 4.5, false}, 2},
		{"negative counter", search{[]float64{0, 1, 2, 3}, -2, -0.5, false}, 2},
		{"one item", search{[]float64{7}, 1, 1, true}, 1},
		{"all before", search{[]float64{0, 1, 2}, 0, 10, false}, 3},
		{"none before", search{[]float64{0, 1, 2}, 10, 0, true}, 0},
	}
	run := func(t *testing.T, ss []search) []int {
		t.Helper()
		got := make([]int, len(ss))
		// A tie goes to the tenant named first: ahead is named before of, behind after.
		ahead, of, behind := &tenantQ{ord: 1}, &tenantQ{ord: 2}, &tenantQ{ord: 3}
		var q [4]straddle
		for i := 0; i < len(ss); i += 4 {
			for j := range 4 {
				s := ss[(i+j)%len(ss)]
				lo, _ := tieBand(s.v)
				is := irrFor(s.pre, s.base)
				u := behind
				if s.tie {
					u = ahead
				}
				q[j] = is.straddle(lo, u)
			}
			search4(&q)
			for j := range 4 {
				if i+j >= len(ss) {
					break
				}
				s := ss[i+j]
				lo, hi := tieBand(s.v)
				alone := q[j]
				alone.search()
				if alone.b != q[j].b {
					t.Fatalf("search %d: alone %d sums below the bound, in lockstep %d", i+j, alone.b, q[j].b)
				}
				got[i+j] = q[j].finish(s.v, lo, hi, of)
			}
		}
		return got
	}
	t.Run("table", func(t *testing.T) {
		ss := make([]search, len(cases))
		for i, c := range cases {
			ss[i] = c.s
			if ref := countLinear(c.s.pre, c.s.base, c.s.v, c.s.tie); ref != c.want {
				t.Fatalf("%s: the linear count is %d, want %d", c.name, ref, c.want)
			}
		}
		for i, got := range run(t, ss) {
			if got != cases[i].want {
				t.Errorf("%s: %d, want %d", cases[i].name, got, cases[i].want)
			}
		}
	})
	t.Run("random", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for round := range 2000 {
			ss := make([]search, 1+rng.IntN(9))
			for i := range ss {
				n := 1 + rng.IntN(70)
				pre := make([]float64, n)
				pre[0] = []float64{0, 1e3, 1e9, 1e13}[rng.IntN(4)] * rng.Float64()
				for k := 1; k < n; k++ {
					pre[k] = pre[k-1] + []float64{0, 1e-7, 0.5, 16, 256}[rng.IntN(5)]/float64(1+rng.IntN(4))
				}
				base := 1e4 * (rng.Float64() - 0.25)
				k := rng.IntN(n)
				v := base + (pre[k] - pre[0]) // at a start, or near one
				switch rng.IntN(4) {
				case 1:
					v *= 1 + (rng.Float64()-0.5)*4e-9
				case 2:
					v += (rng.Float64() - 0.5) * 64
				case 3:
					v = base + (rng.Float64()*1.2-0.1)*(pre[n-1]-pre[0]+1)
				}
				ss[i] = search{pre, base, v, rng.IntN(2) == 0}
			}
			for i, got := range run(t, ss) {
				s := ss[i]
				if want := countLinear(s.pre, s.base, s.v, s.tie); got != want {
					t.Fatalf("round %d search %d (%d sums from %v, counter %v, v %v, tie %v): %d, linear count %d",
						round, i, len(s.pre), s.pre[0], s.base, s.v, s.tie, got, want)
				}
			}
		}
	})
}

// checkIrrSums verifies that every irregular tenant's irrSum is what syncIrr would make now.
func checkIrrSums(t *testing.T, f *fairQueue) {
	t.Helper()
	if len(f.irrSum) != len(f.irr) {
		t.Fatalf("%d irregular tenants, %d sums", len(f.irr), len(f.irrSum))
	}
	for i, u := range f.irr {
		s := f.irrSum[i]
		if s.first != u.vtc || (s.pre == nil) != (len(u.lh) != 1 || u.lh[0].stale) {
			t.Fatalf("irrSum %d (%s) out of step with its tenant", i, u.name)
		}
		if s.pre == nil {
			continue
		}
		l := u.lh[0]
		want := []float64{0}
		for m := l.q.head; m != nil; m = m.links[linkTenant].next {
			want = append(want, want[len(want)-1]+costOf(m))
		}
		if len(s.pre) != l.q.len || s.last != u.vtc+u.pending-l.tailCost || s.lastL != u.vtc+l.pending-l.tailCost {
			t.Fatalf("irrSum %d (%s): %d sums for %d items, or its last start is stale", i, u.name, len(s.pre), l.q.len)
		}
		for k := range s.pre {
			if d, w := s.pre[k]-s.pre[0], want[k]; !within(d, w, 1e-12) {
				t.Fatalf("irrSum %d (%s): item %d starts %v after the first, its list says %v", i, u.name, k, d, w)
			}
		}
		p0, pn := s.pre[0], s.pre[len(s.pre)-1]
		if s.shift != p0-s.first || s.mag != max(s.first, -s.first)+max(p0, -p0)+max(pn, -pn) {
			t.Fatalf("irrSum %d (%s): bound terms stale", i, u.name)
		}
	}
}

// TestIrregularTenantsDeep keeps tenants irregular with many items queued each (settlements,
// cancels from the middle, a second session now and then) and checks after every operation that
// their sums are in step, and at every Enqueue that the position is the reference walk's, with
// enough tenants straddling the new item that the searches run four at a time.
func TestIrregularTenantsDeep(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			const tenants = 24
			q, err := New(Options{Capacity: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if err := q.SetPool("p", PoolConfig{Slots: 1, Dispatchable: true}); err != nil {
				t.Fatal(err)
			}
			f := &p0(q).fair[Interactive]
			var queued []*Ticket
			var running *Ticket
			straddled := 0
			enqueue := func(id int) {
				ten := rng.IntN(tenants)
				it := Item{ID: "i" + strconv.Itoa(id), Pool: "p", Tenant: "k" + strconv.Itoa(ten),
					Weight: float64(1 + ten%4), Cost: float64(int(16) << rng.IntN(5))}
				if rng.IntN(40) == 0 {
					it.Session = "s"
				}
				tk := new(Ticket)
				adm, err := q.EnqueueTicket(tk, it)
				if err != nil {
					t.Fatal(err)
				}
				q.mu.Lock()
				defer q.mu.Unlock()
				checkIrrSums(t, f)
				if tk.state != stQueued {
					running = tk
					return
				}
				queued = append(queued, tk)
				want, wantV := f.tailOrderRef(tk)
				if adm.Position != want || adm.VirtualStart != wantV {
					t.Fatalf("%s at %d (%v), reference %d (%v)", it.ID, adm.Position, adm.VirtualStart, want, wantV)
				}
				v := adm.VirtualStart
				lo, hi := tieBand(v)
				n := 0
				for i, s := range f.irrSum {
					if i != tk.tq.irr && s.pre != nil && s.first < lo && s.last > hi && s.lastL > hi {
						n++
					}
				}
				if n >= 4 {
					straddled++
				}
			}
			for id := range 3000 {
				switch r := rng.IntN(10); {
				case r < 6 || len(queued) < 200:
					enqueue(id)
				case r < 8 && running != nil: // the running item ends, settled below its cost
					tk := running
					running = nil
					if err := tk.Wait(context.Background()); err != nil {
						t.Fatal(err)
					}
					if err := tk.Done(DoneInfo{Settle: true, Used: rng.IntN(int(tk.item.Cost) + 1)}); err != nil {
						t.Fatal(err)
					}
				default: // a queued item is canceled, from anywhere in its tenant's list
					i := rng.IntN(len(queued))
					q.Cancel(queued[i].item.ID)
				}
				q.mu.Lock()
				checkIrrSums(t, f)
				kept := queued[:0]
				for _, tk := range queued {
					switch tk.state {
					case stQueued:
						kept = append(kept, tk)
					case stDispatched:
						running = tk
					}
				}
				queued = kept
				q.mu.Unlock()
			}
			if straddled == 0 {
				t.Fatal("no Enqueue had four irregular tenants straddling it")
			}
		})
	}
}

// TestStaleSumsRebuiltWhenCounted checks that a cancel from the middle of an irregular tenant's
// list leaves its sums stale rather than rebuilding them (a cancel stays O(log n) for a tenant
// no count needs, such as its own Enqueue), and that the next count that reaches the tenant (an
// Enqueue of another tenant's) rebuilds them and gets the reference's position.
func TestStaleSumsRebuiltWhenCounted(t *testing.T) {
	for _, c := range []struct {
		name     string
		tenant   string // of the item enqueued after the cancels
		rebuilds bool   // its count reads a's sums
	}{
		{"another tenant's item counts a's items", "b", true},
		{"a's own item counts them by the tree and its session", "a", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, err := New(Options{Capacity: 100})
			if err != nil {
				t.Fatal(err)
			}
			if err := q.SetPool("p", PoolConfig{Slots: 0, Dispatchable: true}); err != nil {
				t.Fatal(err)
			}
			enqueue := func(id, tenant string, cost float64) Admission {
				t.Helper()
				adm, err := q.EnqueueTicket(new(Ticket), Item{ID: id, Pool: "p", Tenant: tenant, Cost: cost})
				if err != nil {
					t.Fatal(err)
				}
				return adm
			}
			for i := range 20 {
				enqueue("a"+strconv.Itoa(i), "a", 100)
			}
			f := &p0(q).fair[Interactive]
			a := f.tenants["a"]
			for _, id := range []string{"a5", "a9"} { // the first makes a irregular, the second finds it so
				if !q.Cancel(id) {
					t.Fatalf("Cancel(%s) found nothing", id)
				}
			}
			if a.irr < 0 || !a.lh[0].stale || f.irrSum[a.irr].pre != nil {
				t.Fatalf("after cancels from its middle: irregular %v, stale %v, sums kept %v",
					a.irr >= 0, a.lh[0].stale, f.irrSum[a.irr].pre != nil)
			}
			adm := enqueue("new", c.tenant, 1)
			q.mu.Lock()
			defer q.mu.Unlock()
			checkIrrSums(t, f)
			tk := q.st.index.get("new")
			if want, _ := f.tailOrderRef(tk); adm.Position != want {
				t.Errorf("position %d, reference %d", adm.Position, want)
			}
			if rebuilt := !a.lh[0].stale; rebuilt != c.rebuilds {
				t.Errorf("a's sums rebuilt %v, want %v", rebuilt, c.rebuilds)
			}
		})
	}
}
