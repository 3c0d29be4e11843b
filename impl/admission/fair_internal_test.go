package admission

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestTenantOrdFollowsNames files tenants in orders that exhaust the room between
// neighbours' ords (each new name first, or next to the last one filed) and checks that ord
// order stays name order.
func TestTenantOrdFollowsNames(t *testing.T) {
	for _, c := range []struct {
		name string
		key  func(i int) string
	}{
		{"descending", func(i int) string { return fmt.Sprintf("k%06d", 1000-i) }},
		{"ascending", func(i int) string { return fmt.Sprintf("k%06d", i) }},
		{"squeezed", func(i int) string { // each between "a" and the previous one
			if i == 0 {
				return "b"
			}
			return "a" + strings.Repeat("z", 1000-i)
		}},
		{"random", func(int) string { return fmt.Sprintf("k%x", rand.Uint64()) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f fairQueue
			for i := range 1000 {
				f.tenant(c.key(i))
				for k := 1; k < len(f.byName); k++ {
					a, b := f.byName[k-1], f.byName[k]
					if a.name >= b.name || a.ord >= b.ord {
						t.Fatalf("after %d tenants: %q (ord %d) before %q (ord %d)", i+1, a.name, a.ord, b.name, b.ord)
					}
				}
			}
		})
	}
}

// TestHeapOrdsFollowRenumbering queues an item for each of tenants filed in an order that
// exhausts the room between ords (each new name squeezed in before the last), so that ords are
// renumbered while the earlier tenants are backlogged, and checks that the tenant heap stays in
// order and that tenants of equal counters are dispatched in name order.
func TestHeapOrdsFollowRenumbering(t *testing.T) {
	q, err := New(Options{Capacity: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SetPool("p", PoolConfig{Slots: 1, Dispatchable: true, PriorServiceMs: 10}); err != nil {
		t.Fatal(err)
	}
	enqueue := func(id, tenant string) *Ticket {
		tk := new(Ticket)
		if _, err := q.EnqueueTicket(tk, Item{ID: id, Pool: "p", Tenant: tenant, Cost: 1}); err != nil {
			t.Fatal(err)
		}
		return tk
	}
	running := enqueue("hold", "b") // takes the slot
	const n = 200
	names := make([]string, n)
	queued := make([]*Ticket, n)
	for i := range n {
		names[i] = "a" + strings.Repeat("z", n-i) // each before the previous one
		queued[i] = enqueue(fmt.Sprintf("i%d", i), names[i])
	}
	q.mu.Lock()
	checkTree(t, &p0(q).fair[Interactive])
	q.mu.Unlock()
	// Every tenant was lifted to the same counter: they are served in name order, which is
	// the order they were filed in, reversed.
	for i := n - 1; i >= 0; i-- {
		if err := running.Done(DoneInfo{}); err != nil {
			t.Fatal(err)
		}
		q.mu.Lock()
		var next *Ticket
		for _, tk := range queued {
			if tk.state == stDispatched {
				next = tk
			}
		}
		q.mu.Unlock()
		if next == nil || next.item.Tenant != names[i] {
			t.Fatalf("dispatched %v, want tenant %s", next, names[i])
		}
		running = next
	}
}
