package admission

import (
	"container/heap"
	"math"
)

// earlier orders two virtual starts: a before b, counters within rounding of each other
// being equal and then ordered by tenant name. Counters are sums of cost/weight in floating
// point; two ways of summing the same terms may differ in the last bits.
func earlier(a float64, an string, b float64, bn string) bool {
	if math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b))) {
		return an < bn
	}
	return a < b
}

// Fair queueing within a pool's priority class: virtual token counters (VTC, Sheng et al.,
// "Fairness in Serving Large Language Models", OSDI 2024). Each tenant (the key that submitted
// the item) has a counter of the service it received, in tokens divided by its weight. The
// class serves the backlogged tenant with the smallest counter, oldest item first, and charges
// the item's cost when it is dispatched. A tenant that becomes backlogged is lifted to the
// smallest counter among the backlogged (or, with none, to the counter of the tenant served
// last): it gets no credit for the time it was idle, and no debt from others' backlog.

// tenantQ is one tenant's queued items of one pool and class, with its counter.
type tenantQ struct {
	name string
	q    dlist // k = linkTenant, FIFO
	vtc  float64
	// pending is the queued items' cost/weight: the tenant's last item starts at
	// vtc+pending-its own.
	pending float64
	idx     int // in fairQueue.h; -1 while not backlogged
}

// fairQueue is the tenants of one pool and class. The heap holds the backlogged tenants, least
// counter first.
type fairQueue struct {
	tenants map[string]*tenantQ
	h       tenantHeap
	last    float64 // counter of the tenant charged last
}

func (f *fairQueue) tenant(name string) *tenantQ {
	if f.tenants == nil {
		f.tenants = map[string]*tenantQ{}
	}
	t := f.tenants[name]
	if t == nil {
		t = &tenantQ{name: name, idx: -1, q: dlist{k: linkTenant}}
		f.tenants[name] = t
	}
	return t
}

// push queues n behind its tenant's other items, lifting a tenant that was idle.
func (f *fairQueue) push(n *node) {
	t := f.tenant(n.item.Tenant)
	if t.idx < 0 {
		floor := f.last
		if len(f.h) > 0 {
			floor = f.h[0].vtc
		}
		t.vtc = max(t.vtc, floor)
		heap.Push(&f.h, t)
	}
	t.q.pushBack(n)
	t.pending += n.item.cost() / n.item.weight()
	n.tq = t
}

// remove takes n off its tenant's list.
func (f *fairQueue) remove(n *node) {
	t := n.tq
	t.q.remove(n)
	t.pending -= n.item.cost() / n.item.weight()
	if t.q.len == 0 {
		t.pending = 0 // no drift left behind
	}
	n.tq = nil
	if t.q.len == 0 && t.idx >= 0 {
		heap.Remove(&f.h, t.idx)
	}
}

// head is the next item to serve: the oldest of the backlogged tenant with the least counter.
func (f *fairQueue) head() *node {
	if len(f.h) == 0 {
		return nil
	}
	return f.h[0].q.head
}

// charge adds v (an item's cost over its weight) to t's counter as the item is dispatched.
func (f *fairQueue) charge(t *tenantQ, v float64) {
	if t.idx < 0 && len(f.h) > 0 { // dispatched without queueing: lift as a newcomer would be
		t.vtc = max(t.vtc, f.h[0].vtc)
	} else if t.idx < 0 {
		t.vtc = max(t.vtc, f.last)
	}
	t.vtc += v
	f.last = t.vtc
	if t.idx >= 0 {
		heap.Fix(&f.h, t.idx)
	}
}

// correct adds delta to t's counter when a dispatched item ends: its charge is settled from the
// cost it was charged at dispatch to the tokens it actually produced, so that a tenant whose
// items stop early is not over-charged (nor one whose items run long under-charged).
func (f *fairQueue) correct(t *tenantQ, delta float64) {
	if delta == 0 {
		return
	}
	t.vtc += delta
	if t.idx >= 0 {
		heap.Fix(&f.h, t.idx)
	}
}

// tailOrder is order for n, the last item of its tenant (just pushed), in O(tenants) when
// every other tenant's items start either all before or all after it: an item ahead is one
// whose virtual start is smaller (on a tie, whose tenant name is).
func (f *fairQueue) tailOrder(n *node) (int, float64) {
	t := n.tq
	v := t.vtc + t.pending - n.item.cost()/n.item.weight()
	pos := t.q.len - 1
	for _, u := range f.h {
		if u == t {
			continue
		}
		before := func(vs float64) bool { return earlier(vs, u.name, v, t.name) }
		last := u.q.tail
		if before(u.vtc + u.pending - last.item.cost()/last.item.weight()) {
			pos += u.q.len
			continue
		}
		vs := u.vtc
		for m := u.q.head; m != nil && before(vs); m = m.links[linkTenant].next {
			pos++
			vs += m.item.cost() / m.item.weight()
		}
	}
	return pos, v
}

// order is how many queued items of the class would be served before until if nothing else
// arrived: the counters are played forward, O(position × log tenants).
func (f *fairQueue) order(until *node) (int, float64) {
	cs := make(cursorHeap, 0, len(f.h))
	for _, t := range f.h {
		cs = append(cs, cursor{n: t.q.head, vtc: t.vtc})
	}
	heap.Init(&cs)
	pos := 0
	for len(cs) > 0 {
		c := &cs[0]
		if c.n == until {
			return pos, c.vtc
		}
		it := c.n.item
		c.vtc += it.cost() / it.weight()
		c.n = c.n.links[linkTenant].next
		if c.n == nil {
			heap.Pop(&cs)
		} else {
			heap.Fix(&cs, 0)
		}
		pos++
	}
	return pos, 0
}

// cursor walks one tenant's items with its counter, for order.
type cursor struct {
	n   *node
	vtc float64
}

type cursorHeap []cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	return earlier(h[i].vtc, h[i].n.item.Tenant, h[j].vtc, h[j].n.item.Tenant)
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(cursor)) } //nolint:forcetypeassert // only cursors are pushed
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// tenantHeap orders backlogged tenants by counter, then name (deterministic ties).
type tenantHeap []*tenantQ

func (h tenantHeap) Len() int           { return len(h) }
func (h tenantHeap) Less(i, j int) bool { return earlier(h[i].vtc, h[i].name, h[j].vtc, h[j].name) }
func (h tenantHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *tenantHeap) Push(x any) {
	t := x.(*tenantQ) //nolint:forcetypeassert // only *tenantQ is pushed
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *tenantHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}
