package admission_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// TestGivenBackGrantIsRefunded: a slot granted just as the waiter's ctx ended is given back
// by Wait, which the package doc says "refunds the tenant's charge". It does not: the tenant
// stays charged the full cost of an item that never ran, and its next item waits behind
// everyone else's.
func TestGivenBackGrantIsRefunded(t *testing.T) {
	h := start(t, admission.Options{Capacity: 100})
	h.setPool("p", openPool(1))
	en := func(id, tenant string, cost float64) {
		t.Helper()
		if _, err := h.q.Enqueue(context.Background(), admission.Item{ID: id, Pool: "p", Tenant: tenant, Cost: cost}); err != nil {
			t.Fatal(err)
		}
	}
	en("run", "z", 1) // holds the slot; the counters start at 1
	en("a1", "a", 100)
	en("a2", "a", 1)
	en("b1", "b", 10)
	en("b2", "b", 10)
	en("b3", "b", 10)
	h.done("p", admission.DoneInfo{}) // run ends: a1 is granted (a and b tie at 1; a by name)
	if got := h.rec.dispatchedIDs(); got[len(got)-1] != "a1" {
		t.Fatalf("dispatched %v, want a1 last", got)
	}
	// a1's waiter's deadline passed just as the slot was granted: Wait gives the slot back.
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(admission.ErrExpired)
	if err := h.q.ticket("a1").Wait(ctx); err == nil {
		t.Fatal("Wait = nil with an ended ctx")
	}
	h.q.mu.Lock()
	h.q.running["p"] = h.q.running["p"][1:] // a1 no longer holds the slot
	h.q.mu.Unlock()
	// Refunded, a's counter is back at 1, tied with b's: a2 (a before b) is served next.
	got := h.rec.dispatchedIDs()
	if last := got[len(got)-1]; last != "a2" {
		pl, _ := h.position("a2")
		t.Errorf("after a1's grant was given back, dispatched %v; want a2 next (a refunded); a2 now at position %d, virtual start %v",
			got, pl.Position, pl.VirtualStart)
	}
}

// TestInfiniteChargeRefused: an item whose charge (cost / weight) is not finite is refused:
// its charge would lift one counter to +Inf, f.last and every newcomer's lift with it, and the
// heap would order no one in the pool and class until a restart (Inf < Inf and tied(Inf, Inf)
// are false). Costs and weights of 0, below 0 or NaN mean 1, as before.
func TestInfiniteChargeRefused(t *testing.T) {
	h := start(t, admission.Options{Capacity: 100})
	h.setPool("p", openPool(0))
	for i, tc := range []struct {
		cost, weight float64
		refused      bool
	}{
		{math.Inf(1), 1, true},
		{1, math.Inf(1), true},
		{1, 1e-320, true}, // the charge overflows
		{math.NaN(), 1, false},
		{0, -1, false},
		{100, 0.001, false},
	} {
		_, err := h.q.Enqueue(context.Background(), admission.Item{ID: "i" + strconv.Itoa(i), Pool: "p", Tenant: "x",
			Cost: tc.cost, Weight: tc.weight})
		if refused := errors.Is(err, admission.ErrInvalid); refused != tc.refused {
			t.Errorf("cost %v, weight %v: %v, want refused %v", tc.cost, tc.weight, err, tc.refused)
		}
	}
}
