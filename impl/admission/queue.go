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
	// Dispatch receives each item that got a slot. Called on the owner goroutine: it must not
	// block nor call the Queue. Required.
	Dispatch func(Item)
	// Evict receives each item evicted under DropLRU and finalizes it. Called on the owner
	// goroutine: it must not block nor call the Queue. Required when Policy is DropLRU.
	Evict func(Item)
	// Now stamps Item.EnqueuedAt; defaults to time.Now.
	Now func() time.Time
	// MaxBatchWait bounds how long a pool's oldest batch item waits while interactive items
	// keep arriving: once it has waited that long it is dispatched before them. 0: interactive
	// items always go first.
	MaxBatchWait time.Duration
}

// Queue is the bounded two-class priority queue and slot dispatcher. Create it with New, start
// Run on its own goroutine, then call the other methods from any goroutine.
type Queue struct {
	calls   chan *call
	stopped chan struct{} // closed when Run returns
	phase   atomic.Int32
	depth   atomic.Int64 // mirror of st.depth for Depth
	st      state        // owned by Run while it runs, then by Drain
}

const (
	phaseIdle int32 = iota
	phaseRunning
	phaseStopped
	phaseDrained
)

// New returns a Queue. It panics on invalid Options (a programming error): Capacity < 1, an
// unknown Policy, a nil Dispatch, or a nil Evict under DropLRU.
func New(opts Options) *Queue {
	if err := opts.check(); err != nil {
		panic(err) //nolint:forbidigo // documented contract: invalid Options are a programming error, caught by the first test
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Evict == nil {
		opts.Evict = func(Item) {} // never called under Reject
	}
	return &Queue{
		calls:   make(chan *call),
		stopped: make(chan struct{}),
		st:      newState(opts),
	}
}

// check reports the first invalid field of o.
func (o Options) check() error {
	switch {
	case o.Capacity < 1:
		return fmt.Errorf("admission: capacity %d < 1", o.Capacity)
	case o.Policy >= numPolicies:
		return fmt.Errorf("admission: %v", o.Policy)
	case o.Dispatch == nil:
		return errors.New("admission: nil Dispatch")
	case o.Policy == DropLRU && o.Evict == nil:
		return errors.New("admission: nil Evict under drop-lru")
	case o.MaxBatchWait < 0:
		return fmt.Errorf("admission: max batch wait %v < 0", o.MaxBatchWait)
	}
	return nil
}

// Run is the owner goroutine: it serves every request until ctx is done, then returns nil.
// Items still queued stay in place; collect them with Drain. After Run returns every method
// returns ErrClosed. Run may be called once; a second call returns an error of class ErrClosed.
func (q *Queue) Run(ctx context.Context) error {
	if !q.phase.CompareAndSwap(phaseIdle, phaseRunning) {
		return fmt.Errorf("%w: Run called more than once", ErrClosed)
	}
	defer func() {
		q.phase.Store(phaseStopped)
		close(q.stopped)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-q.calls:
			q.st.handle(c)
			q.depth.Store(int64(q.st.depth))
			c.done <- struct{}{}
		}
	}
}

// Drain removes and returns the items still queued after Run has returned: pools in id order,
// each in dispatch order. The caller finalizes them. It returns nil while Run has not returned,
// and on every call after the first.
func (q *Queue) Drain() []Item {
	if !q.phase.CompareAndSwap(phaseStopped, phaseDrained) {
		return nil
	}
	<-q.stopped // Run's writes happen before this
	items := q.st.drain()
	q.depth.Store(0)
	return items
}

// Depth is the number of queued items, read without the owner (it may lag a request in flight).
func (q *Queue) Depth() int { return int(q.depth.Load()) }

// Enqueue admits it on it.Pool. It starts at once when the pool has a free slot (Dispatch is
// called before Enqueue returns); otherwise it is queued, possibly evicting another item under
// DropLRU. A refusal because the queue is full wraps ErrRejected or ErrDropLRUFull and sets
// Admission.RetryAfter; other errors: ErrInvalid, ErrUnknownPool, ErrDuplicate, ErrClosed, or
// ctx's error.
func (q *Queue) Enqueue(ctx context.Context, it Item) (Admission, error) {
	c := getCall(opEnqueue)
	c.item = it
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return Admission{}, err
	}
	adm, err := c.adm, c.err
	putCall(c)
	return adm, err
}

// Cancel removes a queued item. It reports false when id is not queued (unknown, already
// dispatched, evicted or removed).
func (q *Queue) Cancel(ctx context.Context, id string) (bool, error) {
	c := getCall(opCancel)
	c.key = id
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return false, err
	}
	ok := c.ok
	putCall(c)
	return ok, nil
}

// Remove removes and returns all queued items of pool, in dispatch order (used when a drain
// deadline passes). The caller finalizes them.
func (q *Queue) Remove(ctx context.Context, pool string) ([]Item, error) {
	c := getCall(opRemove)
	c.key = pool
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return nil, err
	}
	items, err := c.items, c.err
	putCall(c)
	return items, err
}

// Position reports where a queued item stands; ok is false when id is not queued. O(n) in the
// item's pool.
func (q *Queue) Position(ctx context.Context, id string) (pl Placement, ok bool, err error) {
	c := getCall(opPosition)
	c.key = id
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return Placement{}, false, err
	}
	pl, ok = c.place, c.ok
	putCall(c)
	return pl, ok, nil
}

// SetPool creates or updates pool id, then dispatches its items if it has become dispatchable
// or gained slots. Lowering Slots below the busy count only holds back new dispatches until
// enough Done calls arrive. Measured rates survive updates; the priors apply until the first
// measurement.
func (q *Queue) SetPool(ctx context.Context, id string, cfg PoolConfig) error {
	c := getCall(opSetPool)
	c.key, c.cfg = id, cfg
	return q.doErr(ctx, c)
}

// Done frees one busy slot of pool, folds d into the pool's rates and dispatches the pool's next
// item. It fails with ErrNotBusy if no slot of pool is busy.
func (q *Queue) Done(ctx context.Context, pool string, d DoneInfo) error {
	c := getCall(opDone)
	c.key, c.info = pool, d
	return q.doErr(ctx, c)
}

// Stats returns a snapshot of the queue.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	c := getCall(opStats)
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return Stats{}, err
	}
	st := c.stats
	putCall(c)
	return st, nil
}

// PoolRates returns pool's mean service time and decode rate (measured, else the priors).
func (q *Queue) PoolRates(ctx context.Context, pool string) (Rates, error) {
	c := getCall(opRates)
	c.key = pool
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return Rates{}, err
	}
	r, err := c.rates, c.err
	putCall(c)
	return r, err
}

// --- requests to the owner ---

type opKind uint8

const (
	opEnqueue opKind = iota
	opCancel
	opRemove
	opPosition
	opSetPool
	opDone
	opStats
	opRates
)

// call is one request and its answer. The caller fills the request fields, the owner the
// answer fields, then signals done. Calls are recycled through callPool; a call is never
// abandoned once the owner has taken it (see do), so recycling is safe.
type call struct {
	op   opKind
	item Item
	key  string // item id or pool id
	cfg  PoolConfig
	info DoneInfo

	adm   Admission
	place Placement
	rates Rates
	stats Stats
	items []Item
	ok    bool
	err   error

	done chan struct{} // capacity 1
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func getCall(op opKind) *call {
	c := callPool.Get().(*call)
	c.op = op
	return c
}

func putCall(c *call) {
	*c = call{done: c.done}
	callPool.Put(c)
}

// do hands c to the owner and waits for its answer. The channel is unbuffered, so either the owner
// takes c — and then always answers promptly — or do returns ctx's error / ErrClosed and c was
// never applied.
func (q *Queue) do(ctx context.Context, c *call) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case q.calls <- c:
		<-c.done
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-q.stopped:
		return ErrClosed
	}
}

func (q *Queue) doErr(ctx context.Context, c *call) error {
	if err := q.do(ctx, c); err != nil {
		putCall(c)
		return err
	}
	err := c.err
	putCall(c)
	return err
}
