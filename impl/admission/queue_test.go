package admission_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
)

func TestEnumStrings(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"interactive", admission.Interactive.String(), "interactive"},
		{"batch", admission.Batch.String(), "batch"},
		{"bad priority", admission.Priority(9).String(), "priority(9)"},
		{"reject", admission.Reject.String(), "reject"},
		{"drop-lru", admission.DropLRU.String(), "drop-lru"},
		{"bad policy", admission.Policy(7).String(), "policy(7)"},
		{"admitted", admission.Admitted.String(), "admitted"},
		{"rejected full", admission.RejectedFull.String(), "rejected_full"},
		{"rejected drop-lru", admission.RejectedDropLRU.String(), "rejected_drop_lru"},
		{"evicted", admission.Evicted.String(), "evicted"},
		{"canceled", admission.Canceled.String(), "canceled"},
		{"removed", admission.Removed.String(), "removed"},
		{"dispatched", admission.Dispatched.String(), "dispatched"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("String() = %q, want %q", tt.got, tt.want)
			}
		})
	}
	var st admission.Stats
	for o := range st.Outcomes {
		if name := admission.Outcome(o).String(); strings.HasPrefix(name, "outcome(") {
			t.Errorf("Outcome(%d) has no name: %q", o, name)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		policy  admission.Policy
		prio    admission.Priority
		wantPol bool
		wantPri bool
	}{
		{in: "reject", policy: admission.Reject, wantPol: true},
		{in: "drop-lru", policy: admission.DropLRU, wantPol: true},
		{in: "interactive", prio: admission.Interactive, wantPri: true},
		{in: "batch", prio: admission.Batch, wantPri: true},
		{in: ""},
		{in: "Reject"},
		{in: "drop_lru"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			pol, err := admission.ParsePolicy(tt.in)
			if tt.wantPol != (err == nil) || (err == nil && pol != tt.policy) {
				t.Errorf("ParsePolicy(%q) = %v, %v", tt.in, pol, err)
			}
			if err != nil && !errors.Is(err, admission.ErrInvalid) {
				t.Errorf("ParsePolicy error %v is not ErrInvalid", err)
			}
			pri, err := admission.ParsePriority(tt.in)
			if tt.wantPri != (err == nil) || (err == nil && pri != tt.prio) {
				t.Errorf("ParsePriority(%q) = %v, %v", tt.in, pri, err)
			}
			if err != nil && !errors.Is(err, admission.ErrInvalid) {
				t.Errorf("ParsePriority error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestPredictStartMs(t *testing.T) {
	tests := []struct {
		name                  string
		position, slots, free int
		mean                  float64
		want                  int64
	}{
		{"free slot", 0, 4, 1, 100, 0},
		{"within free slots", 2, 4, 3, 100, 0},
		{"first after free", 3, 4, 3, 100, 100},
		{"head, no free, one slot", 0, 1, 0, 250, 250},
		{"third, one slot", 2, 1, 0, 250, 750},
		{"two slots first wave", 1, 2, 0, 100, 100},
		{"two slots second wave", 2, 2, 0, 100, 200},
		{"two slots second wave end", 3, 2, 0, 100, 200},
		{"free counted", 3, 2, 1, 100, 200},
		{"fractional mean truncated", 0, 1, 0, 99.9, 99},
		{"zero slots as one", 1, 0, 0, 10, 20},
		{"negative free as zero", 0, 1, -3, 10, 10},
		{"saturated, not wrapped", 0, 1, 0, 1e300, math.MaxInt64},
		{"saturated at 2^63", 1, 1, 0, 1 << 62, math.MaxInt64},
		{"largest float", 5, 1, 0, math.MaxFloat64, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := admission.PredictStartMs(tt.position, tt.slots, tt.free, tt.mean); got != tt.want {
				t.Errorf("PredictStartMs(%d, %d, %d, %v) = %d, want %d",
					tt.position, tt.slots, tt.free, tt.mean, got, tt.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name  string
		mean  float64
		slots int
		want  time.Duration
	}{
		{"one slot", 1000, 1, time.Second},
		{"four slots", 1000, 4, 250 * time.Millisecond},
		{"fractional", 1.5, 1, 1500 * time.Microsecond},
		{"floor 1ms", 0.2, 4, time.Millisecond},
		{"zero mean", 0, 1, time.Millisecond},
		{"zero slots as one", 300, 0, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := admission.RetryAfter(tt.mean, tt.slots); got != tt.want {
				t.Errorf("RetryAfter(%v, %d) = %v, want %v", tt.mean, tt.slots, got, tt.want)
			}
		})
	}
}

func TestDispatchOrder(t *testing.T) {
	tests := []struct {
		name string
		in   []in
		want []string // dispatch order with one slot
	}{
		{"fifo batch", []in{{"b1", "p", B}, {"b2", "p", B}, {"b3", "p", B}}, []string{"b1", "b2", "b3"}},
		{"fifo interactive", []in{{"i1", "p", I}, {"i2", "p", I}}, []string{"i1", "i2"}},
		{
			"interactive before batch",
			[]in{{"b1", "p", B}, {"i1", "p", I}, {"b2", "p", B}, {"i2", "p", I}},
			[]string{"i1", "i2", "b1", "b2"},
		},
		{
			"other pool not in order",
			[]in{{"b1", "p", B}, {"x1", "x", I}, {"i1", "p", I}},
			[]string{"i1", "b1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, admission.Options{Capacity: 10})
			h.setPool("p", closedPool(1))
			h.setPool("x", closedPool(1))
			for _, it := range tt.in {
				h.enqueue(it.id, it.pool, it.prio)
			}
			// Queue positions follow the dispatch order.
			for pos, id := range tt.want {
				pl, ok := h.position(id)
				if !ok || pl.Position != pos {
					t.Errorf("Position(%q) = %+v, %v; want position %d", id, pl, ok, pos)
				}
			}
			h.setPool("p", openPool(1))
			for range len(tt.want) - 1 {
				h.done("p", admission.DoneInfo{})
			}
			if got := h.rec.dispatchedIDs(); !slices.Equal(got, tt.want) {
				t.Errorf("dispatched %v, want %v", got, tt.want)
			}
		})
	}
}

func TestImmediateDispatch(t *testing.T) {
	h := start(t, admission.Options{Capacity: 1})
	h.setPool("p", openPool(2))
	h.setPool("q", closedPool(1))
	h.enqueue("q1", "q", B) // fills the queue

	for _, id := range []string{"a", "b"} {
		adm := h.enqueue(id, "p", B)
		if adm != (admission.Admission{}) {
			t.Errorf("Enqueue(%q) = %+v, want dispatched at once", id, adm)
		}
	}
	if got, want := h.rec.dispatchedIDs(), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
	// Both slots busy and the queue is full: the next one is refused.
	_, err := h.q.Enqueue(context.Background(), admission.Item{ID: "c", Pool: "p", Priority: I})
	if !errors.Is(err, admission.ErrRejected) {
		t.Fatalf("Enqueue(c) error = %v, want ErrRejected", err)
	}
	st := h.stats()
	if st.Depth != 1 || st.Pools["p"].Busy != 2 || h.q.Depth() != 1 {
		t.Errorf("stats = %+v, Depth() = %d", st, h.q.Depth())
	}
	if st.Outcomes[admission.Admitted] != 3 || st.Outcomes[admission.Dispatched] != 2 ||
		st.Outcomes[admission.RejectedFull] != 1 {
		t.Errorf("outcomes = %v", st.Outcomes)
	}
}

func TestCapacitySharedAcrossPools(t *testing.T) {
	tests := []struct {
		name   string
		policy admission.Policy
		fill   []in
		next   in
		want   error
	}{
		{"reject, other pools fill it", admission.Reject,
			[]in{{"a1", "a", B}, {"a2", "a", I}, {"b1", "b", I}}, in{"c1", "c", I}, admission.ErrRejected},
		{"reject, same pool", admission.Reject,
			[]in{{"a1", "a", I}, {"a2", "a", I}, {"a3", "a", I}}, in{"a4", "a", I}, admission.ErrRejected},
		{"drop-lru batch, only interactive queued elsewhere", admission.DropLRU,
			[]in{{"a1", "a", I}, {"b1", "b", I}, {"b2", "b", I}}, in{"c1", "c", B}, admission.ErrDropLRUFull},
		{"not full", admission.Reject, []in{{"a1", "a", B}, {"b1", "b", B}}, in{"c1", "c", B}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, admission.Options{Capacity: 3, Policy: tt.policy})
			for _, p := range []string{"a", "b", "c"} {
				h.setPool(p, admission.PoolConfig{Slots: 2, PriorServiceMs: 900})
			}
			for _, it := range tt.fill {
				h.enqueue(it.id, it.pool, it.prio)
			}
			adm, err := h.q.Enqueue(context.Background(),
				admission.Item{ID: tt.next.id, Pool: tt.next.pool, Priority: tt.next.prio})
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Enqueue = %+v, %v; want %v", adm, err, tt.want)
			}
			if err == nil {
				return
			}
			if adm.RetryAfter != 450*time.Millisecond { // 900 ms / 2 slots
				t.Errorf("RetryAfter = %v, want 450ms", adm.RetryAfter)
			}
			if _, ok := h.position(tt.next.id); ok {
				t.Errorf("refused item %q is queued", tt.next.id)
			}
			if d := h.stats().Depth; d != len(tt.fill) {
				t.Errorf("depth = %d, want %d", d, len(tt.fill))
			}
			if ev := h.rec.evictedIDs(); len(ev) != 0 {
				t.Errorf("evicted %v", ev)
			}
		})
	}
}

func TestDropLRU(t *testing.T) {
	tests := []struct {
		name        string
		fill        []in
		next        in
		wantEvicted string // "" means refused with ErrDropLRUFull
	}{
		{"interactive evicts oldest batch across pools",
			[]in{{"i1", "a", I}, {"b1", "b", B}, {"b2", "a", B}}, in{"n", "a", I}, "b1"},
		{"interactive with only interactive evicts oldest interactive",
			[]in{{"i1", "b", I}, {"i2", "a", I}, {"i3", "a", I}}, in{"n", "a", I}, "i1"},
		{"batch evicts oldest batch, not older interactive",
			[]in{{"i1", "a", I}, {"b1", "a", B}, {"b2", "b", B}}, in{"n", "b", B}, "b1"},
		{"batch with only interactive is refused",
			[]in{{"i1", "a", I}, {"i2", "b", I}, {"i3", "a", I}}, in{"n", "a", B}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, admission.Options{Capacity: 3, Policy: admission.DropLRU})
			h.setPool("a", closedPool(1))
			h.setPool("b", closedPool(1))
			for _, it := range tt.fill {
				h.enqueue(it.id, it.pool, it.prio)
			}
			adm, err := h.q.Enqueue(context.Background(),
				admission.Item{ID: tt.next.id, Pool: tt.next.pool, Priority: tt.next.prio})
			if tt.wantEvicted == "" {
				if !errors.Is(err, admission.ErrDropLRUFull) {
					t.Fatalf("Enqueue = %+v, %v; want ErrDropLRUFull", adm, err)
				}
				if adm.RetryAfter != 100*time.Millisecond || adm.Evicted != nil {
					t.Errorf("refusal = %+v", adm)
				}
				if st := h.stats(); st.Depth != 3 || st.Outcomes[admission.RejectedDropLRU] != 1 {
					t.Errorf("stats = %+v", st)
				}
				return
			}
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if adm.Evicted == nil || adm.Evicted.ID != tt.wantEvicted {
				t.Fatalf("Admission.Evicted = %+v, want %q", adm.Evicted, tt.wantEvicted)
			}
			if got := h.rec.evictedIDs(); !slices.Equal(got, []string{tt.wantEvicted}) {
				t.Errorf("Evict got %v, want [%s]", got, tt.wantEvicted)
			}
			if _, ok := h.position(tt.wantEvicted); ok {
				t.Errorf("evicted %q still queued", tt.wantEvicted)
			}
			if _, ok := h.position(tt.next.id); !ok {
				t.Errorf("new item %q not queued", tt.next.id)
			}
			if st := h.stats(); st.Depth != 3 || st.Outcomes[admission.Evicted] != 1 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	h := start(t, admission.Options{Capacity: 4})
	h.setPool("p", openPool(1))
	h.enqueue("running", "p", I)
	h.enqueue("q1", "p", B)
	h.enqueue("q2", "p", B)

	tests := []struct {
		id   string
		want bool
	}{
		{"q1", true},
		{"q1", false}, // already canceled
		{"running", false},
		{"unknown", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			ok, err := h.q.Cancel(context.Background(), tt.id)
			if err != nil || ok != tt.want {
				t.Errorf("Cancel(%q) = %v, %v; want %v", tt.id, ok, err, tt.want)
			}
		})
	}
	if pl, ok := h.position("q2"); !ok || pl.Position != 0 {
		t.Errorf("Position(q2) = %+v, %v; want 0", pl, ok)
	}
	// A canceled id may be admitted again.
	h.enqueue("q1", "p", B)
	h.done("p", admission.DoneInfo{})
	if got, want := h.rec.dispatchedIDs(), []string{"running", "q2"}; !slices.Equal(got, want) {
		t.Errorf("dispatched %v, want %v", got, want)
	}
	st := h.stats()
	if st.Depth != 1 || st.Outcomes[admission.Canceled] != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestDispatchOnSetPoolAndDone(t *testing.T) {
	h := start(t, admission.Options{Capacity: 10})
	h.setPool("p", closedPool(2))
	for _, id := range []string{"a", "b", "c", "d"} {
		h.enqueue(id, "p", B)
	}
	steps := []struct {
		name string
		do   func()
		want []string
		busy int
	}{
		{"nothing while not dispatchable", func() {}, []string{}, 0},
		{"set dispatchable", func() { h.setPool("p", openPool(2)) }, []string{"a", "b"}, 2},
		{"done frees a slot", func() { h.done("p", admission.DoneInfo{}) }, []string{"a", "b", "c"}, 2},
		{"lower slots below busy", func() { h.setPool("p", openPool(1)) }, []string{"a", "b", "c"}, 2},
		{"done still above slots", func() { h.done("p", admission.DoneInfo{}) }, []string{"a", "b", "c"}, 1},
		{"done below slots", func() { h.done("p", admission.DoneInfo{}) }, []string{"a", "b", "c", "d"}, 1},
		{"draining stops dispatch", func() {
			h.setPool("p", closedPool(1))
			h.enqueue("e", "p", I)
			h.done("p", admission.DoneInfo{})
		}, []string{"a", "b", "c", "d"}, 0},
		{"raising slots dispatches", func() { h.setPool("p", openPool(3)) }, []string{"a", "b", "c", "d", "e"}, 1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			if got := h.rec.dispatchedIDs(); !slices.Equal(got, s.want) {
				t.Errorf("dispatched %v, want %v", got, s.want)
			}
			if busy := h.stats().Pools["p"].Busy; busy != s.busy {
				t.Errorf("busy = %d, want %d", busy, s.busy)
			}
		})
	}
}

func TestPoolIndependence(t *testing.T) {
	h := start(t, admission.Options{Capacity: 10})
	h.setPool("a", openPool(1))
	h.setPool("b", openPool(1))
	h.enqueue("a1", "a", I) // runs
	h.enqueue("a2", "a", I) // queued behind a1
	h.enqueue("a3", "a", I)
	if adm := h.enqueue("b1", "b", B); adm.Position != 0 || adm.PredictedStartMs != 0 {
		t.Errorf("b1 admission = %+v, want immediate", adm)
	}
	h.enqueue("b2", "b", B)
	h.done("b", admission.DoneInfo{}) // frees b only: b2 runs, a2 still waits
	if got, want := h.rec.dispatchedIDs(), []string{"a1", "b1", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
	h.done("a", admission.DoneInfo{})
	if got, want := h.rec.dispatchedIDs(), []string{"a1", "b1", "b2", "a2"}; !slices.Equal(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
	// A pool that is not dispatchable holds only itself up.
	h.setPool("a", closedPool(1))
	h.done("a", admission.DoneInfo{})
	h.done("b", admission.DoneInfo{})
	h.enqueue("b3", "b", I)
	if got, want := h.rec.dispatchedIDs(), []string{"a1", "b1", "b2", "a2", "b3"}; !slices.Equal(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
}

func TestPredictions(t *testing.T) {
	h := start(t, admission.Options{Capacity: 20})
	h.setPool("p", admission.PoolConfig{Slots: 2, Dispatchable: true, PriorServiceMs: 100})
	h.enqueue("r1", "p", B)
	h.enqueue("r2", "p", B) // both slots busy

	steps := []struct {
		in       in
		wantPos  int
		wantPred int64
	}{
		{in{"b1", "p", B}, 0, 100},
		{in{"b2", "p", B}, 1, 100},
		{in{"b3", "p", B}, 2, 200},
		{in{"i1", "p", I}, 0, 100}, // jumps ahead of the batch items
		{in{"i2", "p", I}, 1, 100},
		{in{"b4", "p", B}, 5, 300},
	}
	for _, s := range steps {
		t.Run("enqueue "+s.in.id, func(t *testing.T) {
			adm := h.enqueue(s.in.id, s.in.pool, s.in.prio)
			if adm.Position != s.wantPos || adm.PredictedStartMs != s.wantPred {
				t.Errorf("admission = %+v, want position %d predicted %d", adm.Placement, s.wantPos, s.wantPred)
			}
		})
	}
	// Positions now follow the dispatch order: i1 i2 b1 b2 b3 b4.
	for pos, id := range []string{"i1", "i2", "b1", "b2", "b3", "b4"} {
		t.Run("position "+id, func(t *testing.T) {
			pl, ok := h.position(id)
			// One tenant, cost 1 each: its counter grows by one per dispatch of the class (two
			// batch items were dispatched before the interactive ones arrived).
			want := admission.Placement{Position: pos, PredictedStartMs: int64((pos/2 + 1) * 100),
				AheadInteractive: min(pos, 2), AheadBatch: max(pos-2, 0), VirtualStart: float64(pos)}
			if !ok || pl != want {
				t.Errorf("Position(%q) = %+v, %v; want %+v", id, pl, ok, want)
			}
		})
	}
	t.Run("measured rate changes predictions", func(t *testing.T) {
		h.done("p", admission.DoneInfo{Service: 40 * time.Millisecond}) // first measurement replaces prior; i1 runs
		pl, ok := h.position("b4")
		// i1 left the queue; its dispatch charged the interactive counter, not the batch one.
		if want := (admission.Placement{Position: 4, PredictedStartMs: 120, AheadInteractive: 1, AheadBatch: 3, VirtualStart: 5}); !ok || pl != want {
			t.Errorf("Position(b4) = %+v, %v; want %+v", pl, ok, want)
		}
	})
	t.Run("free slots of a non-dispatchable pool do not count", func(t *testing.T) {
		h.setPool("d", admission.PoolConfig{Slots: 4, PriorServiceMs: 100})
		adm := h.enqueue("d1", "d", I)
		if adm.Position != 0 || adm.PredictedStartMs != 100 {
			t.Errorf("admission = %+v", adm)
		}
	})
	t.Run("unknown id", func(t *testing.T) {
		if pl, ok := h.position("nope"); ok {
			t.Errorf("Position(nope) = %+v, true", pl)
		}
	})
}

func TestRatesEWMA(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		done      []admission.DoneInfo
		wantMean  float64
		wantTokS  float64
		wantRetry time.Duration // RetryAfter for 2 slots
		// after a prior update to 5/5: measured averages stay, unmeasured ones take the new prior
		wantMean2, wantTokS2 float64
	}{
		{"priors before any measurement", nil, 1000, 50, 500 * ms, 5, 5},
		{"first measurement replaces the prior",
			[]admission.DoneInfo{{Service: 200 * ms, Tokens: 100, Decode: time.Second}}, 200, 100, 100 * ms, 200, 100},
		{"second is averaged with alpha 0.2",
			[]admission.DoneInfo{{Service: 200 * ms, Tokens: 100, Decode: time.Second}, {Service: 700 * ms, Tokens: 30, Decode: 100 * ms}},
			300, 140, 150 * ms, 300, 140},
		{"unmeasured done leaves the averages",
			[]admission.DoneInfo{{Service: 200 * ms}, {}, {Tokens: 5}, {Decode: ms}}, 200, 50, 100 * ms, 200, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, admission.Options{Capacity: 1})
			cfg := admission.PoolConfig{Slots: 2, Dispatchable: true, PriorServiceMs: 1000, PriorTokensPerS: 50}
			h.setPool("p", cfg)
			for i, d := range tt.done {
				h.enqueue(string(rune('a'+i)), "p", B)
				h.done("p", d)
			}
			r, err := h.q.PoolRates(context.Background(), "p")
			if err != nil || !near(r.MeanServiceMs, tt.wantMean) || !near(r.TokensPerS, tt.wantTokS) {
				t.Errorf("PoolRates = %+v, %v; want mean %v tok/s %v", r, err, tt.wantMean, tt.wantTokS)
			}
			ps := h.stats().Pools["p"]
			if !near(ps.MeanServiceMs, tt.wantMean) || !near(ps.TokensPerS, tt.wantTokS) {
				t.Errorf("stats = %+v", ps)
			}
			// The refusal's back-off follows the measured rate.
			h.setPool("p", admission.PoolConfig{Slots: 2, PriorServiceMs: 1000, PriorTokensPerS: 50})
			h.enqueue("fill", "p", B)
			adm, err := h.q.Enqueue(context.Background(), admission.Item{ID: "x", Pool: "p"})
			if !errors.Is(err, admission.ErrRejected) || adm.RetryAfter != tt.wantRetry {
				t.Errorf("refusal = %+v, %v; want RetryAfter %v", adm, err, tt.wantRetry)
			}
			// New priors only matter until the first measurement.
			cfg.PriorServiceMs, cfg.PriorTokensPerS = 5, 5
			h.setPool("p", cfg)
			r, _ = h.q.PoolRates(context.Background(), "p")
			if !near(r.MeanServiceMs, tt.wantMean2) || !near(r.TokensPerS, tt.wantTokS2) {
				t.Errorf("after prior update PoolRates = %+v, want mean %v tok/s %v", r, tt.wantMean2, tt.wantTokS2)
			}
		})
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestRemove(t *testing.T) {
	h := start(t, admission.Options{Capacity: 10})
	h.setPool("a", closedPool(1))
	h.setPool("b", closedPool(1))
	h.setPool("empty", closedPool(1))
	for _, it := range []in{{"a1", "a", B}, {"b1", "b", B}, {"a2", "a", I}, {"a3", "a", B}, {"b2", "b", I}} {
		h.enqueue(it.id, it.pool, it.prio)
	}
	tests := []struct {
		pool    string
		want    []string
		wantErr error
	}{
		{"a", []string{"a2", "a1", "a3"}, nil},
		{"a", []string{}, nil},
		{"empty", []string{}, nil},
		{"nope", []string{}, admission.ErrUnknownPool},
	}
	for _, tt := range tests {
		t.Run(tt.pool, func(t *testing.T) {
			items, err := h.q.Remove(context.Background(), tt.pool)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Remove(%q) error = %v, want %v", tt.pool, err, tt.wantErr)
			}
			if got := ids(items); !slices.Equal(got, tt.want) {
				t.Errorf("Remove(%q) = %v, want %v", tt.pool, got, tt.want)
			}
		})
	}
	st := h.stats()
	if st.Depth != 2 || st.Pools["b"].QueuedBatch != 1 || st.Pools["b"].QueuedInteractive != 1 ||
		st.Outcomes[admission.Removed] != 3 {
		t.Errorf("stats = %+v", st)
	}
}

func TestInvalidCalls(t *testing.T) {
	h := start(t, admission.Options{Capacity: 10})
	h.setPool("p", closedPool(1))
	h.setPool("open", openPool(1))
	h.enqueue("dup", "p", B)
	ctx := context.Background()

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"duplicate queued id", func() error {
			_, err := h.q.Enqueue(ctx, admission.Item{ID: "dup", Pool: "p", Priority: I})
			return err
		}, admission.ErrDuplicate},
		{"unknown pool", func() error {
			_, err := h.q.Enqueue(ctx, admission.Item{ID: "x", Pool: "nope"})
			return err
		}, admission.ErrUnknownPool},
		{"empty id", func() error {
			_, err := h.q.Enqueue(ctx, admission.Item{Pool: "p"})
			return err
		}, admission.ErrInvalid},
		{"bad priority", func() error {
			_, err := h.q.Enqueue(ctx, admission.Item{ID: "x", Pool: "p", Priority: 5})
			return err
		}, admission.ErrInvalid},
		{"empty pool id", func() error { return h.q.SetPool(ctx, "", openPool(1)) }, admission.ErrInvalid},
		{"negative slots", func() error { return h.q.SetPool(ctx, "x", openPool(-1)) }, admission.ErrInvalid},
		{"negative prior", func() error {
			return h.q.SetPool(ctx, "x", admission.PoolConfig{Slots: 1, PriorServiceMs: -1})
		}, admission.ErrInvalid},
		{"done without slot", func() error { var tk admission.Ticket; return tk.Done(admission.DoneInfo{}) }, admission.ErrNotBusy},
		{"rates unknown pool", func() error {
			_, err := h.q.PoolRates(ctx, "nope")
			return err
		}, admission.ErrUnknownPool},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
	if st := h.stats(); st.Depth != 1 || len(st.Pools) != 2 || st.Outcomes[admission.Admitted] != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestNewInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts admission.Options
	}{
		{"zero capacity", admission.Options{}},
		{"bad policy", admission.Options{Capacity: 1, Policy: 9}},
		{"negative max batch wait", admission.Options{Capacity: 1, MaxBatchWait: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := admission.New(tt.opts)
			if !errors.Is(err, admission.ErrInvalid) || q != nil {
				t.Errorf("New = %v, %v; want nil, ErrInvalid", q, err)
			}
		})
	}
	if _, err := admission.New(admission.Options{Capacity: 1, Policy: admission.DropLRU}); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}

func TestEnqueuedAtUsesClock(t *testing.T) {
	h := start(t, admission.Options{Capacity: 4})
	h.setPool("p", openPool(1))
	h.enqueue("a", "p", I)
	h.clock.Advance(3 * time.Second)
	h.enqueue("b", "p", I)
	h.clock.Advance(time.Second)
	h.done("p", admission.DoneInfo{})

	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	want := []time.Time{epoch, epoch.Add(3 * time.Second)}
	for i, it := range h.rec.dispatched {
		if !it.EnqueuedAt.Equal(want[i]) {
			t.Errorf("%s EnqueuedAt = %v, want %v", it.ID, it.EnqueuedAt, want[i])
		}
	}
}

func TestStatsTotals(t *testing.T) {
	h := start(t, admission.Options{Capacity: 10})
	h.setPool("a", openPool(1))
	h.setPool("b", closedPool(3))
	for _, it := range []in{{"a1", "a", I}, {"a2", "a", I}, {"a3", "a", B}, {"b1", "b", B}, {"b2", "b", B}} {
		h.enqueue(it.id, it.pool, it.prio)
	}
	st := h.stats()
	want := admission.Stats{
		Capacity: 10, Depth: 4, QueuedInteractive: 1, QueuedBatch: 3, Busy: 1, Slots: 4,
		Pools: map[string]admission.PoolStats{
			"a": {QueuedInteractive: 1, QueuedBatch: 1, Busy: 1, Slots: 1, MeanServiceMs: 100, TokensPerS: 50, Dispatchable: true},
			"b": {QueuedBatch: 2, Slots: 3, MeanServiceMs: 100, TokensPerS: 50},
		},
	}
	want.Outcomes[admission.Admitted] = 5
	want.Outcomes[admission.Dispatched] = 1
	if st.Capacity != want.Capacity || st.Depth != want.Depth || st.QueuedInteractive != want.QueuedInteractive ||
		st.QueuedBatch != want.QueuedBatch || st.Busy != want.Busy || st.Slots != want.Slots ||
		st.Outcomes != want.Outcomes || len(st.Pools) != 2 || st.Pools["a"] != want.Pools["a"] || st.Pools["b"] != want.Pools["b"] {
		t.Errorf("stats = %+v\nwant    %+v", st, want)
	}
	if h.q.Depth() != 4 {
		t.Errorf("Depth() = %d, want 4", h.q.Depth())
	}
}

// TestTicketWait: what Wait returns for each way an item leaves the queue, and the outcome the
// queue counts for it.
func TestTicketWait(t *testing.T) {
	deadlineCtx := func() (context.Context, context.CancelFunc) {
		return context.WithDeadline(context.Background(), time.Unix(1, 0)) // passed already
	}
	causeCtx := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(fmt.Errorf("task deadline: %w", admission.ErrExpired))
		return ctx, func() {}
	}
	canceledCtx := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, func() {}
	}
	tests := []struct {
		name    string
		act     func(h *harness) // after "w" is queued behind "busy" on pool p (1 slot)
		ctx     func() (context.Context, context.CancelFunc)
		want    error
		outcome admission.Outcome
		owns    bool
	}{
		{name: "dispatched", act: func(h *harness) { h.done("p", admission.DoneInfo{}) }, want: nil, outcome: admission.Dispatched, owns: true},
		{name: "evicted", act: func(h *harness) { h.enqueue("x", "p", I) }, want: admission.ErrEvicted, outcome: admission.Evicted},
		{name: "removed", act: func(h *harness) {
			if _, err := h.q.Remove(context.Background(), "p"); err != nil {
				h.t.Fatal(err)
			}
		}, want: admission.ErrRemoved, outcome: admission.Removed},
		{name: "canceled", act: func(h *harness) { h.q.Queue.Cancel("w") }, want: admission.ErrCanceled, outcome: admission.Canceled},
		{name: "deadline", ctx: deadlineCtx, want: context.DeadlineExceeded, outcome: admission.Expired},
		{name: "deadline cause", ctx: causeCtx, want: admission.ErrExpired, outcome: admission.Expired},
		{name: "ctx canceled", ctx: canceledCtx, want: context.Canceled, outcome: admission.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, admission.Options{Capacity: 1, Policy: admission.DropLRU})
			h.setPool("p", openPool(1))
			h.enqueue("busy", "p", I)
			h.enqueue("w", "p", B)
			if tt.act != nil {
				tt.act(h)
			}
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			tk := h.q.ticket("w")
			err := tk.Wait(ctx)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Wait = %v, want %v", err, tt.want)
			}
			want := uint64(1)
			if tt.outcome == admission.Dispatched { // "busy" too
				want = 2
			}
			if got := h.stats().Outcomes[tt.outcome]; got != want {
				t.Errorf("outcome %v counted %d times, want %d", tt.outcome, got, want)
			}
			if _, queued := h.position("w"); queued {
				t.Error("w still queued after Wait returned")
			}
			if err := tk.Done(admission.DoneInfo{}); (err == nil) != tt.owns {
				t.Errorf("Done = %v, owns slot %v", err, tt.owns)
			}
			if err := tk.Done(admission.DoneInfo{}); !errors.Is(err, admission.ErrNotBusy) {
				t.Errorf("second Done = %v, want ErrNotBusy", err)
			}
		})
	}
}

// TestWaitGivesBackGrantedSlot: a slot granted to a ticket whose ctx has already ended is
// given back by Wait, and the pool's next item gets it.
func TestWaitGivesBackGrantedSlot(t *testing.T) {
	h := start(t, admission.Options{Capacity: 4})
	h.setPool("p", openPool(1))
	h.enqueue("busy", "p", I)
	h.enqueue("w", "p", I)
	h.enqueue("next", "p", I)
	h.done("p", admission.DoneInfo{}) // w is granted the slot...
	ctx, cancel := context.WithCancelCause(context.Background())
	gone := errors.New("client went away")
	cancel(gone) // ...but its waiter has gone
	if err := h.q.ticket("w").Wait(ctx); !errors.Is(err, gone) {
		t.Fatalf("Wait = %v, want the ctx's cause", err)
	}
	if got, want := h.rec.dispatchedIDs(), []string{"busy", "w", "next"}; !slices.Equal(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
	if err := h.q.ticket("next").Wait(context.Background()); err != nil {
		t.Fatalf("next Wait = %v", err)
	}
	if st := h.stats(); st.Pools["p"].Busy != 1 || st.Depth != 0 {
		t.Errorf("busy %d depth %d, want 1 and 0", st.Pools["p"].Busy, st.Depth)
	}
}

// TestTicketReuse: a ticket embedded in the caller's struct is reused once its item ended; a
// ticket still in use is refused.
func TestTicketReuse(t *testing.T) {
	q, err := admission.New(admission.Options{Capacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SetPool("p", openPool(1)); err != nil {
		t.Fatal(err)
	}
	var tk admission.Ticket
	if _, err := q.EnqueueTicket(&tk, admission.Item{ID: "a", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.EnqueueTicket(&tk, admission.Item{ID: "b", Pool: "p"}); !errors.Is(err, admission.ErrInvalid) {
		t.Fatalf("EnqueueTicket of a ticket in use = %v, want ErrInvalid", err)
	}
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := tk.Done(admission.DoneInfo{}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.EnqueueTicket(&tk, admission.Item{ID: "b", Pool: "p"}); err != nil {
		t.Fatalf("reuse: %v", err)
	}
	if err := tk.Wait(context.Background()); err != nil || tk.Item().ID != "b" {
		t.Fatalf("Wait = %v, item %q", err, tk.Item().ID)
	}
	var never admission.Ticket
	if err := never.Wait(context.Background()); !errors.Is(err, admission.ErrInvalid) {
		t.Errorf("Wait on a fresh ticket = %v, want ErrInvalid", err)
	}
}

// TestPredictionSaturates: a pool's prior service time is any positive finite number (the
// configuration's prior_service_ms takes 1e300): a task queued behind a running one is
// predicted to start at the largest int64, never a negative predicted_start_ms (the contract's
// minimum is 0), both at admission and when its position is read again.
func TestPredictionSaturates(t *testing.T) {
	q, err := admission.New(admission.Options{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SetPool("p", admission.PoolConfig{Slots: 1, Dispatchable: true, PriorServiceMs: 1e300}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.Enqueue(admission.Item{ID: "a", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	_, adm, err := q.Enqueue(admission.Item{ID: "b", Pool: "p"})
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := q.Position("b")
	if adm.PredictedStartMs != math.MaxInt64 || pl.PredictedStartMs != math.MaxInt64 {
		t.Fatalf("queued behind a running item: predicted_start_ms %d at admission, %d by Position; want %d",
			adm.PredictedStartMs, pl.PredictedStartMs, int64(math.MaxInt64))
	}
}
