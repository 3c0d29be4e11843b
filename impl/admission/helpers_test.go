package admission_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// recorder collects what the queue hands to its callbacks.
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

// harness is a running queue with a recorder and a fake clock.
type harness struct {
	t     *testing.T
	q     *admission.Queue
	rec   *recorder
	clock *fakeClock
}

// start runs a queue until the test ends. Unset callbacks record into h.rec; Now is h.clock.
func start(t *testing.T, opts admission.Options) *harness {
	t.Helper()
	h := &harness{t: t, rec: &recorder{}, clock: &fakeClock{t: epoch}}
	if opts.Dispatch == nil {
		opts.Dispatch = h.rec.dispatch
	}
	if opts.Evict == nil {
		opts.Evict = h.rec.evict
	}
	if opts.Now == nil {
		opts.Now = h.clock.Now
	}
	h.q = admission.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- h.q.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
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
