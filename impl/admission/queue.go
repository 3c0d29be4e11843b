package admission

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Queue.
type Options struct {
	// Capacity is the maximum number of queued items, all pools and classes together (> 0).
	Capacity int
	// Policy applies when the queue is full.
	Policy Policy
	// Now stamps Item.EnqueuedAt; defaults to time.Now.
	Now func() time.Time
	// MaxBatchWait bounds how long a pool's oldest batch item waits while interactive items
	// keep arriving: once it has waited that long it is dispatched before them. 0: interactive
	// items always go first.
	MaxBatchWait time.Duration
	// Observe, when set, is told every outcome as it happens (metrics, tests), with the item
	// it happened to (the zero Item for a refusal of an invalid item). It runs under the
	// queue's lock: it must not block nor call the Queue, and it owns nothing it is shown.
	Observe func(Outcome, *Item)
}

// Queue is the bounded two-class priority queue and slot dispatcher. Create it with New; every
// method may be called from any goroutine.
type Queue struct {
	mu    sync.Mutex
	st    state        // guarded by mu
	depth atomic.Int64 // mirror of st.depth for Depth
}

// New returns a Queue, or an error of class ErrInvalid for invalid Options: Capacity < 1, an
// unknown Policy or a negative MaxBatchWait.
func New(opts Options) (*Queue, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Queue{st: newState(opts)}, nil
}

// check reports the first invalid field of o.
func (o Options) check() error {
	switch {
	case o.Capacity < 1:
		return fmt.Errorf("%w: admission capacity %d < 1", ErrInvalid, o.Capacity)
	case o.Policy >= numPolicies:
		return fmt.Errorf("%w: admission %v", ErrInvalid, o.Policy)
	case o.MaxBatchWait < 0:
		return fmt.Errorf("%w: admission max batch wait %v < 0", ErrInvalid, o.MaxBatchWait)
	}
	return nil
}

// Depth is the number of queued items, read without the lock.
func (q *Queue) Depth() int { return int(q.depth.Load()) }

// Enqueue admits it on it.Pool with a new Ticket; see EnqueueTicket.
func (q *Queue) Enqueue(it Item) (*Ticket, Admission, error) {
	tk := new(Ticket)
	adm, err := q.EnqueueTicket(tk, it)
	if err != nil {
		return nil, adm, err
	}
	return tk, adm, nil
}

// EnqueueTicket admits it on it.Pool and ties it to tk, which the caller provides (embedded in
// its own task, or reused once its previous item ended) so that admission allocates nothing.
// The item starts at once when the pool has a free slot (tk is then dispatched before
// EnqueueTicket returns); otherwise it is queued, possibly evicting another item under
// DropLRU. The caller then waits on tk.Wait. A refusal because the queue is full wraps
// ErrRejected or ErrDropLRUFull and sets Admission.RetryAfter; other errors: ErrInvalid (also
// for a ticket still in use), ErrUnknownPool, ErrDuplicate.
func (q *Queue) EnqueueTicket(tk *Ticket, it Item) (Admission, error) {
	q.mu.Lock()
	defer q.unlock()
	return q.st.enqueue(q, tk, it)
}

// unlock publishes the depth and releases the lock.
func (q *Queue) unlock() {
	q.depth.Store(int64(q.st.depth))
	q.mu.Unlock()
}

// Cancel withdraws a queued item: its ticket's Wait returns ErrCanceled. It reports false when
// id is not queued (unknown, already dispatched, evicted or removed).
func (q *Queue) Cancel(id string) bool {
	q.mu.Lock()
	defer q.unlock()
	tk := q.st.index.get(id)
	if tk == nil {
		return false
	}
	q.st.withdraw(tk, stCanceled, Canceled)
	return true
}

// Remove withdraws all queued items of pool (used when a drain deadline passes): each ticket's
// Wait returns ErrRemoved. The items are returned for the record, interactive first, each
// tenant's together (not in the order dispatching would have interleaved them).
func (q *Queue) Remove(pool string) ([]Item, error) {
	q.mu.Lock()
	defer q.unlock()
	return q.st.remove(pool)
}

// Position reports where a queued item stands; ok is false when id is not queued. See the
// package doc's Position for what it means and costs.
func (q *Queue) Position(id string) (pl Placement, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.position(q.st.index.get(id))
}

// SetPool creates or updates pool id, then dispatches its items if it has become dispatchable
// or gained slots. Lowering Slots below the busy count only holds back new dispatches until
// enough slots are released. Measured rates survive updates; the priors apply until the first
// measurement.
func (q *Queue) SetPool(id string, cfg PoolConfig) error {
	q.mu.Lock()
	defer q.unlock()
	return q.st.setPool(id, cfg)
}

// Stats returns a snapshot of the queue.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.stats()
}

// Load is pool's busy slots and queued items (0, 0 for an unknown pool). It is the one count
// of busy slots: placement and pool health read it from here.
func (q *Queue) Load(pool string) (busy, queued int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p := q.st.pools[pool]; p != nil {
		return p.busy, p.queued()
	}
	return 0, 0
}

// PoolRates returns pool's mean service time and decode rate (measured, else the priors).
func (q *Queue) PoolRates(pool string) (Rates, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.rates(pool)
}

// ticketState is where a ticket stands. Guarded by the queue's lock.
type ticketState uint8

const (
	stIdle       ticketState = iota // never used, or its item ended: may be enqueued (again)
	stQueued                        // waiting for a slot
	stDispatched                    // holds a slot; Wait has not handed it over yet
	stRunning                       // Wait handed the slot to the caller, who owes Done
	stEvicted                       // pushed out under DropLRU
	stRemoved                       // withdrawn by Remove
	stCanceled                      // withdrawn by Cancel or its Wait's context
)

// Ticket is one admitted item's claim on a slot. The goroutine that admitted it calls Wait,
// then (when Wait returned nil) Done exactly once when the item stops using its slot.
// A Ticket may be embedded in the caller's own struct and reused for another item once its
// Wait returned an error or its Done was called.
type Ticket struct {
	// What a dispatch reads and writes comes first, in the ticket's first cache lines: a
	// queued ticket is cold when its turn comes at depth.
	ot        treeNode // its key in its fairQueue's tree while queued and its tenant is regular
	cw        float64  // item's cost/weight
	prio      Priority // item.Priority
	state     ticketState
	pool      *pool
	tq        *tenantQ // while queued
	lq        *laneQ   // while queued
	links     [numLinks]link
	charged   float64       // cost/weight charged to the tenant at dispatch, corrected at Done
	chargedTo *tenantQ      // the tenant charged
	chargedL  *laneQ        // the session charged (nil: dispatched without queueing)
	chargedG  uint64        // chargedL's gen then
	idHash    uint64        // the hash of item.ID in the queue's index, while queued
	wake      chan struct{} // capacity 1: a state change out of stQueued; made once, reused

	item    Item
	q       *Queue
	replica string // the replica its slot is on (Assign), "" none
	err     error  // why Wait gave up, for a second Wait
}

// Item is a copy of the ticket's item (EnqueuedAt set).
func (t *Ticket) Item() Item {
	if t.q == nil {
		return t.item
	}
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	return t.item
}

// Wait blocks until the ticket's item is given a slot, leaves the queue, or ctx ends. It
// returns nil when the caller now owns a slot (and must call Done exactly once); ErrEvicted,
// ErrRemoved or ErrCanceled when the queue let the item go; or, when ctx ended first,
// context.Cause(ctx): the item is then withdrawn atomically (outcome Expired when ctx's
// deadline passed or its cause wraps ErrExpired, else Canceled), and a slot granted
// concurrently is given back to the pool, so that no slot is lost or freed twice.
func (t *Ticket) Wait(ctx context.Context) error {
	q := t.q
	if q == nil {
		return fmt.Errorf("%w: ticket was never enqueued", ErrInvalid)
	}
	q.mu.Lock()
	st := t.state
	q.mu.Unlock()
	if st == stQueued {
		select {
		case <-t.wake:
		case <-ctx.Done():
		}
	}
	q.mu.Lock()
	defer q.unlock()
	cause := ctx.Err()
	if cause != nil {
		cause = context.Cause(ctx)
	}
	switch t.state {
	case stQueued:
		if cause == nil { // cannot happen: only a state change or ctx wakes the waiter
			return fmt.Errorf("%w: woken while queued", ErrInvalid)
		}
		o := Canceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(cause, ErrExpired) {
			o = Expired
		}
		q.st.withdraw(t, stCanceled, o)
		t.err = cause
		return cause
	case stDispatched:
		if cause != nil { // granted as ctx ended: the caller will not run it, the pool gets it back
			q.st.release(t, DoneInfo{Settle: true}, true) // and the tenant its charge: nothing ran
			t.err = cause
			return cause
		}
		t.state = stRunning
		return nil
	case stRunning:
		return nil
	case stEvicted:
		return ErrEvicted
	case stRemoved:
		return ErrRemoved
	case stCanceled:
		if t.err != nil {
			return t.err
		}
		return ErrCanceled
	default: // stIdle: released by Done, or withdrawn
		if t.err != nil {
			return t.err
		}
		return fmt.Errorf("%w: ticket already released", ErrNotBusy)
	}
}

// Done gives the ticket's slot back with what the item measured, and dispatches the pool's next
// item. With d.Settle the tenant's counter, charged the item's cost at dispatch, is corrected
// to d.Used tokens. It fails with ErrNotBusy unless the ticket holds a slot (Done called twice,
// or Wait did not return nil).
func (t *Ticket) Done(d DoneInfo) error {
	q := t.q
	if q == nil {
		return fmt.Errorf("%w: ticket was never enqueued", ErrNotBusy)
	}
	q.mu.Lock()
	defer q.unlock()
	if t.state != stDispatched && t.state != stRunning {
		return fmt.Errorf("%w: ticket %q holds no slot", ErrNotBusy, t.item.ID)
	}
	q.st.release(t, d, d.Settle)
	return nil
}

// Position reports where the ticket's item stands while it is queued.
func (t *Ticket) Position() (Placement, bool) {
	q := t.q
	if q == nil {
		return Placement{}, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.state != stQueued {
		return Placement{}, false
	}
	return q.st.position(t)
}

// signal wakes the ticket's waiter. The queue's lock is held.
func (t *Ticket) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}
