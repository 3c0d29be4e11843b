package admission_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// recorder collects the items the queue dispatched and evicted, in order.
type recorder struct {
	mu         sync.Mutex
	dispatched []admission.Item
	evicted    []admission.Item
}

func (r *recorder) dispatch(it admission.Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dispatched = append(r.dispatched, it)
}

func (r *recorder) evict(it admission.Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evicted = append(r.evicted, it)
}

func (r *recorder) dispatchedIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ids(r.dispatched)
}

func (r *recorder) evictedIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ids(r.evicted)
}

func ids(items []admission.Item) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var epoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// tq adapts the ticket API to the calls the table tests make: it keeps every ticket it
// enqueued, and Done(pool) releases the pool's earliest dispatched ticket still holding its slot.
type tq struct {
	*admission.Queue
	mu      sync.Mutex
	tickets map[string]*admission.Ticket
	running map[string][]string // pool -> ids holding a slot, in dispatch order
}

func (q *tq) observe(o admission.Outcome, it *admission.Item) {
	if o != admission.Dispatched {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.running[it.Pool] = append(q.running[it.Pool], it.ID)
}

func (q *tq) Enqueue(_ context.Context, it admission.Item) (admission.Admission, error) {
	tk := new(admission.Ticket)
	q.mu.Lock()
	q.tickets[it.ID] = tk
	q.mu.Unlock()
	return q.EnqueueTicket(tk, it)
}

func (q *tq) ticket(id string) *admission.Ticket {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.tickets[id]
}

func (q *tq) Cancel(_ context.Context, id string) (bool, error) { return q.Queue.Cancel(id), nil }

func (q *tq) Remove(_ context.Context, pool string) ([]admission.Item, error) {
	return q.Queue.Remove(pool)
}

func (q *tq) Position(_ context.Context, id string) (admission.Placement, bool, error) {
	pl, ok := q.Queue.Position(id)
	return pl, ok, nil
}

func (q *tq) SetPool(_ context.Context, id string, cfg admission.PoolConfig) error {
	return q.Queue.SetPool(id, cfg)
}

func (q *tq) Stats(context.Context) (admission.Stats, error) { return q.Queue.Stats(), nil }

func (q *tq) PoolRates(_ context.Context, pool string) (admission.Rates, error) {
	return q.Queue.PoolRates(pool)
}

// Done releases the slot of pool's earliest dispatched ticket.
func (q *tq) Done(_ context.Context, pool string, d admission.DoneInfo) error {
	if _, ok := q.Queue.Stats().Pools[pool]; !ok {
		return fmt.Errorf("%w: %q", admission.ErrUnknownPool, pool)
	}
	q.mu.Lock()
	ids := q.running[pool]
	if len(ids) == 0 {
		q.mu.Unlock()
		return fmt.Errorf("%w: pool %q", admission.ErrNotBusy, pool)
	}
	tk := q.tickets[ids[0]]
	q.running[pool] = ids[1:]
	q.mu.Unlock()
	return tk.Done(d) // outside q.mu: Done dispatches, and observe takes q.mu
}

// doneID releases the slot of pool's dispatched item id.
func (h *harness) doneID(pool, id string, d admission.DoneInfo) {
	h.t.Helper()
	q := h.q
	q.mu.Lock()
	ids := q.running[pool]
	i := slices.Index(ids, id)
	if i < 0 {
		q.mu.Unlock()
		h.t.Fatalf("doneID(%s): not running", id)
	}
	q.running[pool] = slices.Delete(ids, i, i+1)
	tk := q.tickets[id]
	q.mu.Unlock()
	if err := tk.Done(d); err != nil {
		h.t.Fatalf("Done(%s): %v", id, err)
	}
}

// harness is a queue with a recorder and a fake clock.
type harness struct {
	t     *testing.T
	q     *tq
	rec   *recorder
	clock *fakeClock
}

// start makes a queue whose dispatches and evictions h.rec records; unset Now is h.clock.
func start(t *testing.T, opts admission.Options) *harness {
	t.Helper()
	h := &harness{t: t, rec: &recorder{}, clock: &fakeClock{t: epoch}}
	if opts.Now == nil {
		opts.Now = h.clock.Now
	}
	q := &tq{tickets: map[string]*admission.Ticket{}, running: map[string][]string{}}
	opts.Observe = func(o admission.Outcome, it *admission.Item) {
		switch o {
		case admission.Dispatched:
			h.rec.dispatch(*it)
		case admission.Evicted:
			h.rec.evict(*it)
		}
		q.observe(o, it)
	}
	var err error
	if q.Queue, err = admission.New(opts); err != nil {
		t.Fatalf("New: %v", err)
	}
	h.q = q
	return h
}

func (h *harness) setPool(id string, cfg admission.PoolConfig) {
	h.t.Helper()
	if err := h.q.SetPool(context.Background(), id, cfg); err != nil {
		h.t.Fatalf("SetPool(%q): %v", id, err)
	}
}

func (h *harness) enqueue(id, pool string, p admission.Priority) admission.Admission {
	h.t.Helper()
	adm, err := h.q.Enqueue(context.Background(), admission.Item{ID: id, Pool: pool, Priority: p})
	if err != nil {
		h.t.Fatalf("Enqueue(%q): %v", id, err)
	}
	return adm
}

func (h *harness) done(pool string, d admission.DoneInfo) {
	h.t.Helper()
	if err := h.q.Done(context.Background(), pool, d); err != nil {
		h.t.Fatalf("Done(%q): %v", pool, err)
	}
}

func (h *harness) stats() admission.Stats {
	h.t.Helper()
	st, err := h.q.Stats(context.Background())
	if err != nil {
		h.t.Fatalf("Stats: %v", err)
	}
	return st
}

func (h *harness) position(id string) (admission.Placement, bool) {
	h.t.Helper()
	pl, ok, err := h.q.Position(context.Background(), id)
	if err != nil {
		h.t.Fatalf("Position(%q): %v", id, err)
	}
	return pl, ok
}

// Pool configurations used across tests.
func closedPool(slots int) admission.PoolConfig {
	return admission.PoolConfig{Slots: slots, Dispatchable: false, PriorServiceMs: 100, PriorTokensPerS: 50}
}

func openPool(slots int) admission.PoolConfig {
	return admission.PoolConfig{Slots: slots, Dispatchable: true, PriorServiceMs: 100, PriorTokensPerS: 50}
}

const (
	I = admission.Interactive
	B = admission.Batch
)

type in struct {
	id   string
	pool string
	prio admission.Priority
}
