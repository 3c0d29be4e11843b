package admission_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// sim drives a queue with one pool on a fake clock: tenants submit at fixed intervals, each
// dispatched item holds its slot for service, then Done frees it. Everything happens on whole
// milliseconds of the fake clock; nothing depends on real time.
type sim struct {
	h       *harness
	service time.Duration
	seen    int // dispatched items already handled
	ends    []simEnd
	queued  map[string]int
	enq     map[string]time.Time
	// served counts dispatches per tenant at or after from; waits are the queue waits per tenant.
	served map[string]int
	from   time.Time
	waits  map[string][]time.Duration
	used   map[string]int // id -> tokens its item produces (settled at Done)
}

// label names an item's tenant, and its session when it has one ("A/s1").
func label(it admission.Item) string {
	if it.Session == "" {
		return it.Tenant
	}
	return it.Tenant + "/" + it.Session
}

type simEnd struct {
	at time.Time
	id string
	// used is the tokens the item produced, settled at Done (0: not settled).
	used int
}

type simTenant struct {
	name    string
	session string // within the tenant name
	used    int    // tokens each item produces, settled at Done (0: the charge stands)
	every   time.Duration
	weight  float64
	prio    admission.Priority
	next    time.Time
	n       int
}

func newSim(t *testing.T, slots int, service time.Duration, opts admission.Options) *sim {
	if opts.Capacity == 0 {
		opts.Capacity = 1 << 20
	}
	s := &sim{h: start(t, opts), service: service, queued: map[string]int{}, enq: map[string]time.Time{},
		served: map[string]int{}, waits: map[string][]time.Duration{}, used: map[string]int{}}
	s.h.setPool("p", openPool(slots))
	return s
}

// collect schedules the end of every item dispatched since the last call.
func (s *sim) collect() {
	s.h.rec.mu.Lock()
	newly := append([]admission.Item(nil), s.h.rec.dispatched[s.seen:]...)
	s.seen = len(s.h.rec.dispatched)
	s.h.rec.mu.Unlock()
	now := s.h.clock.Now()
	for _, it := range newly {
		k := label(it)
		s.queued[k]--
		if !now.Before(s.from) {
			s.served[k]++
		}
		s.waits[k] = append(s.waits[k], now.Sub(s.enq[it.ID]))
		s.ends = append(s.ends, simEnd{at: now.Add(s.service), id: it.ID, used: s.used[it.ID]})
	}
}

// run plays the tenants' arrivals until the clock reaches until. onStep runs after each event.
func (s *sim) run(until time.Time, tenants []*simTenant, onStep func()) {
	ctx := context.Background()
	for {
		next := until
		for _, tn := range tenants {
			if tn.next.Before(next) {
				next = tn.next
			}
		}
		ei := -1
		for i, e := range s.ends {
			if e.at.Before(next) || (ei < 0 && e.at.Equal(next)) {
				next, ei = e.at, i
			}
		}
		if !next.Before(until) {
			return
		}
		s.h.clock.Advance(next.Sub(s.h.clock.Now()))
		if ei >= 0 && s.ends[ei].at.Equal(next) {
			e := s.ends[ei]
			s.ends = append(s.ends[:ei], s.ends[ei+1:]...)
			s.h.doneID("p", e.id, admission.DoneInfo{Service: s.service, Settle: e.used > 0, Used: e.used})
		} else {
			for _, tn := range tenants {
				if tn.next.Equal(next) {
					id := fmt.Sprintf("%s/%s-%d", tn.name, tn.session, tn.n)
					tn.n++
					tn.next = tn.next.Add(tn.every)
					s.enq[id] = next
					it := admission.Item{ID: id, Pool: "p", Priority: tn.prio,
						Tenant: tn.name, Session: tn.session, Weight: tn.weight, Cost: 100}
					s.queued[label(it)]++
					s.used[id] = tn.used
					if _, err := s.h.q.Enqueue(ctx, it); err != nil {
						s.h.t.Fatalf("Enqueue %s: %v", id, err)
					}
					break
				}
			}
		}
		s.collect()
		if onStep != nil {
			onStep()
		}
	}
}

func within(got, want, tol float64) bool { return math.Abs(got-want) <= tol*want }

// TestFairShareFlood: tenant A submits 10× tenant B's rate with equal weights; while both are
// backlogged each gets half the service (±10 %). With FIFO, A would get ~10/11 of it.
func TestFairShareFlood(t *testing.T) {
	// 2 slots × 100 ms: 20 items/s. A 60/s, B 6/s... B must stay backlogged too: B 12/s, A 120/s.
	for _, tc := range []struct {
		name             string
		wA, wB           float64
		everyA, everyB   time.Duration
		shareA           float64
		checkBBacklogged bool
	}{
		{name: "equal weights, A floods 10x", wA: 1, wB: 1, everyA: 8 * time.Millisecond, everyB: 80 * time.Millisecond, shareA: 0.5},
		{name: "weights 3:1", wA: 3, wB: 1, everyA: 10 * time.Millisecond, everyB: 10 * time.Millisecond, shareA: 0.75},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 2, 100*time.Millisecond, admission.Options{})
			a := &simTenant{name: "A", every: tc.everyA, weight: tc.wA, next: epoch}
			b := &simTenant{name: "B", every: tc.everyB, weight: tc.wB, next: epoch}
			s.from = epoch.Add(2 * time.Second)
			bothBacklogged := true
			s.run(epoch.Add(15*time.Second), []*simTenant{a, b}, func() {
				if !s.h.clock.Now().Before(s.from) && (s.queued["A"] == 0 || s.queued["B"] == 0) {
					bothBacklogged = false
				}
			})
			if !bothBacklogged {
				t.Fatal("the scenario lost its backlog: it measures nothing")
			}
			total := float64(s.served["A"] + s.served["B"])
			gotA := float64(s.served["A"]) / total
			if !within(gotA, tc.shareA, 0.10) || !within(1-gotA, 1-tc.shareA, 0.10) {
				t.Fatalf("served A %d, B %d: A's share %.3f, want %.2f ±10%%", s.served["A"], s.served["B"], gotA, tc.shareA)
			}
		})
	}
}

// TestLateArriverNotPunished: A floods; B, under its share, arrives after A has built a long
// backlog. B's queue wait stays within a few service times, while A's grows without bound.
func TestLateArriverNotPunished(t *testing.T) {
	s := newSim(t, 2, 100*time.Millisecond, admission.Options{})
	a := &simTenant{name: "A", every: 20 * time.Millisecond, next: epoch}                        // 50/s against 20/s served
	b := &simTenant{name: "B", every: 250 * time.Millisecond, next: epoch.Add(10 * time.Second)} // 4/s, under half
	s.run(epoch.Add(30*time.Second), []*simTenant{a, b}, nil)
	if len(s.waits["B"]) < 50 {
		t.Fatalf("B served %d times", len(s.waits["B"]))
	}
	var maxB time.Duration
	for _, w := range s.waits["B"] {
		maxB = max(maxB, w)
	}
	if maxB > 200*time.Millisecond {
		t.Fatalf("B's longest queue wait %v, want at most two service times", maxB)
	}
	if last := s.waits["A"][len(s.waits["A"])-1]; last < 10*time.Second {
		t.Fatalf("A's last wait %v: the scenario does not flood", last)
	}
}

// TestBatchNotStarved: interactive items keep the only slot busy; a batch item still starts
// once it has waited MaxBatchWait, and without the bound it would wait for ever.
func TestBatchNotStarved(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bound   time.Duration
		started bool
	}{
		{name: "bounded", bound: 2 * time.Second, started: true},
		{name: "strict priority", bound: 0, started: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 1, 100*time.Millisecond, admission.Options{MaxBatchWait: tc.bound})
			inter := &simTenant{name: "I", every: 50 * time.Millisecond, next: epoch}
			batch := &simTenant{name: "Bt", every: time.Hour, prio: admission.Batch, next: epoch.Add(time.Second)}
			s.run(epoch.Add(20*time.Second), []*simTenant{inter, batch}, nil)
			waits := s.waits["Bt"]
			if !tc.started {
				if len(waits) != 0 {
					t.Fatalf("strict priority started the batch item after %v", waits[0])
				}
				return
			}
			if len(waits) != 1 {
				t.Fatal("the batch item never started")
			}
			// It starts at the first slot freed once the bound has passed.
			if waits[0] < tc.bound || waits[0] > tc.bound+100*time.Millisecond {
				t.Fatalf("batch wait %v, want within one service time after %v", waits[0], tc.bound)
			}
		})
	}
}

// TestFairPosition: a queued item's position follows the fair order, not arrival order.
func TestFairPosition(t *testing.T) {
	h := start(t, admission.Options{Capacity: 100})
	h.setPool("p", closedPool(1))
	ctx := context.Background()
	for i := range 4 {
		if _, err := h.q.Enqueue(ctx, admission.Item{ID: fmt.Sprint("a", i), Pool: "p", Priority: I, Tenant: "a", Cost: 10}); err != nil {
			t.Fatal(err)
		}
	}
	adm, err := h.q.Enqueue(ctx, admission.Item{ID: "b0", Pool: "p", Priority: I, Tenant: "b", Cost: 10})
	if err != nil {
		t.Fatal(err)
	}
	// b0 is lifted to a's counter: it goes after a0 only (tie broken by name).
	if adm.Position != 1 {
		t.Fatalf("b0 position %d, want 1", adm.Position)
	}
	if pl, _ := h.position("a3"); pl.Position != 4 {
		t.Fatalf("a3 position %d, want 4", pl.Position)
	}
	h.setPool("p", openPool(1))
	for range 4 {
		h.done("p", admission.DoneInfo{})
	}
	got := h.rec.dispatchedIDs()
	want := []string{"a0", "b0", "a1", "a2", "a3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dispatch order %v, want %v", got, want)
	}
}

// TestFairPositionAtEnqueue: the position Enqueue reports (computed from the tenants' pending
// sums) is the one Position reports (computed by playing the counters forward), for random
// tenants, weights and costs, with some items dispatched in between.
func TestFairPositionAtEnqueue(t *testing.T) {
	for _, withSessions := range []bool{false, true} {
		t.Run(fmt.Sprint("sessions=", withSessions), func(t *testing.T) { fairPositionAtEnqueue(t, withSessions) })
	}
}

func fairPositionAtEnqueue(t *testing.T, withSessions bool) {
	h := start(t, admission.Options{Capacity: 10000})
	h.setPool("p", closedPool(1))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		tenant := fmt.Sprint("t", rng.IntN(7))
		it := admission.Item{ID: fmt.Sprint("i", i), Pool: "p", Priority: admission.Priority(rng.IntN(2)),
			Tenant: tenant, Weight: float64(1 + len(tenant)%3), Cost: float64(1 + rng.IntN(64))}
		if withSessions {
			it.Session = fmt.Sprint("s", rng.IntN(3)) // a tenant's sessions are served by their own counters
		}
		adm, err := h.q.Enqueue(ctx, it)
		if err != nil {
			t.Fatal(err)
		}
		pl, ok := h.position(it.ID)
		if !ok || pl.Position != adm.Position || math.Abs(pl.VirtualStart-adm.VirtualStart) > 1e-9 {
			t.Fatalf("item %d: Enqueue placed it at %+v, Position says %+v", i, adm.Placement, pl)
		}
		if i%7 == 6 { // take one out of the middle of its lane
			h.q.Queue.Cancel(fmt.Sprint("i", rng.IntN(i)))
		}
		if i%50 == 49 { // let a few go, charging counters
			h.setPool("p", openPool(1))
			h.done("p", admission.DoneInfo{})
			h.done("p", admission.DoneInfo{})
			h.setPool("p", closedPool(1))
			h.done("p", admission.DoneInfo{})
		}
	}
}

// TestFairSessionsWithinKey: within key A, session s1 submits 10x session s2's rate; key B
// submits alone. Keys share the service half and half, and A's half is shared by its sessions
// half and half (±10 %), while all three are backlogged. Without session lanes, s1 would take
// ~10/11 of A's half.
func TestFairSessionsWithinKey(t *testing.T) {
	s := newSim(t, 2, 100*time.Millisecond, admission.Options{})
	s1 := &simTenant{name: "A", session: "s1", every: 8 * time.Millisecond, next: epoch}
	s2 := &simTenant{name: "A", session: "s2", every: 80 * time.Millisecond, next: epoch}
	b := &simTenant{name: "B", every: 20 * time.Millisecond, next: epoch}
	s.from = epoch.Add(2 * time.Second)
	backlogged := true
	s.run(epoch.Add(15*time.Second), []*simTenant{s1, s2, b}, func() {
		if !s.h.clock.Now().Before(s.from) && (s.queued["A/s1"] == 0 || s.queued["A/s2"] == 0 || s.queued["B"] == 0) {
			backlogged = false
		}
	})
	if !backlogged {
		t.Fatal("the scenario lost its backlog: it measures nothing")
	}
	a1, a2, bb := float64(s.served["A/s1"]), float64(s.served["A/s2"]), float64(s.served["B"])
	total := a1 + a2 + bb
	if !within((a1+a2)/total, 0.5, 0.10) || !within(bb/total, 0.5, 0.10) {
		t.Fatalf("served A %v+%v, B %v: want A and B half each ±10%%", a1, a2, bb)
	}
	if !within(a1/(a1+a2), 0.5, 0.10) || !within(a2/(a1+a2), 0.5, 0.10) {
		t.Fatalf("within A: s1 %v, s2 %v: want half each ±10%%", a1, a2)
	}
}

// TestChargeSettledToActualTokens: both tenants' items are charged 100 tokens at dispatch, but
// A's stop after 20 tokens and B's run all 100. With the charge settled to the tokens produced
// at Done, the tenants get equal tokens of service (±10 %): A is dispatched ~5x as often. With
// the charge left at 100, both would be dispatched equally, A receiving a fifth of B's tokens.
func TestChargeSettledToActualTokens(t *testing.T) {
	s := newSim(t, 2, 100*time.Millisecond, admission.Options{})
	a := &simTenant{name: "A", used: 20, every: 5 * time.Millisecond, next: epoch}
	b := &simTenant{name: "B", used: 100, every: 5 * time.Millisecond, next: epoch}
	s.from = epoch.Add(2 * time.Second)
	backlogged := true
	s.run(epoch.Add(20*time.Second), []*simTenant{a, b}, func() {
		if !s.h.clock.Now().Before(s.from) && (s.queued["A"] == 0 || s.queued["B"] == 0) {
			backlogged = false
		}
	})
	if !backlogged {
		t.Fatal("the scenario lost its backlog: it measures nothing")
	}
	tokA, tokB := float64(s.served["A"]*a.used), float64(s.served["B"]*b.used)
	if share := tokA / (tokA + tokB); !within(share, 0.5, 0.10) {
		t.Fatalf("tokens served A %v, B %v (dispatches %d, %d): A's share %.3f, want 0.5 ±10%%",
			tokA, tokB, s.served["A"], s.served["B"], share)
	}
}

// TestSessionsTieFIFO: a key whose every task has its own session (equal session counters)
// keeps its tasks in arrival order, whatever the session names; positions agree.
func TestSessionsTieFIFO(t *testing.T) {
	h := start(t, admission.Options{Capacity: 100})
	h.setPool("p", closedPool(1))
	ctx := context.Background()
	sessions := []string{"zz", "mm", "aa", "qq"}
	for i, sess := range sessions {
		adm, err := h.q.Enqueue(ctx, admission.Item{ID: fmt.Sprint("a", i), Pool: "p", Priority: I, Tenant: "a", Session: sess, Cost: 10})
		if err != nil {
			t.Fatal(err)
		}
		if adm.Position != i {
			t.Fatalf("a%d (session %s) position %d, want %d", i, sess, adm.Position, i)
		}
	}
	h.setPool("p", openPool(1))
	for range len(sessions) - 1 {
		h.done("p", admission.DoneInfo{})
	}
	if got, want := h.rec.dispatchedIDs(), []string{"a0", "a1", "a2", "a3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dispatch order %v, want %v", got, want)
	}
}
