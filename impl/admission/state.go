package admission

import (
	"fmt"
	"math"
	"time"
)

// ewmaAlpha weighs a new service measurement against the running average.
const ewmaAlpha = 0.2

// pool is one pool's state. Guarded by the queue's lock.
type pool struct {
	id   string
	cfg  PoolConfig
	q    [numPriorities]dlist // k = linkPool
	fair [numPriorities]fairQueue
	busy int
	reps map[string]int // busy slots per replica (Ticket.Assign), part of busy: see replica.go

	meanServiceMs   float64
	tokensPerS      float64
	measuredService bool
	measuredTokens  bool
}

func (p *pool) queued() int { return p.q[Interactive].len + p.q[Batch].len }

// free is the number of slots an item could start on now: 0 unless dispatchable.
func (p *pool) free() int {
	if !p.cfg.Dispatchable {
		return 0
	}
	return max(p.cfg.Slots-p.busy, 0)
}

func (p *pool) observe(d DoneInfo) {
	if d.Service > 0 {
		x := float64(d.Service) / float64(time.Millisecond)
		if p.measuredService {
			p.meanServiceMs = ewmaAlpha*x + (1-ewmaAlpha)*p.meanServiceMs
		} else {
			p.meanServiceMs, p.measuredService = x, true
		}
	}
	if d.Tokens > 0 && d.Decode > 0 {
		x := float64(d.Tokens) / d.Decode.Seconds()
		if p.measuredTokens {
			p.tokensPerS = ewmaAlpha*x + (1-ewmaAlpha)*p.tokensPerS
		} else {
			p.tokensPerS, p.measuredTokens = x, true
		}
	}
}

// state is the whole queue, guarded by Queue.mu.
type state struct {
	capacity int
	policy   Policy
	now      func() time.Time
	observe  func(Outcome, *Item)
	// maxBatchWait: see Options.MaxBatchWait.
	maxBatchWait time.Duration

	pools    map[string]*pool
	index    idIndex              // queued items by id
	global   [numPriorities]dlist // k = linkGlobal; admission (LRU) order across pools
	depth    int                  // queued items
	outcomes [numOutcomes]uint64  // cumulative
}

func newState(o Options) state {
	s := state{
		capacity: o.Capacity,
		policy:   o.Policy,
		now:      o.Now,
		observe:  o.Observe,
		pools:    make(map[string]*pool),

		maxBatchWait: o.MaxBatchWait,
		index:        newIDIndex(),
	}
	for c := range s.global {
		s.global[c].k = linkGlobal
	}
	return s
}

// count records outcome o of it.
func (s *state) count(o Outcome, it *Item) {
	s.outcomes[o]++
	if s.observe != nil {
		s.observe(o, it)
	}
}

func (s *state) enqueue(q *Queue, tk *Ticket, it Item) (Admission, error) {
	if tk.q != nil && tk.state != stIdle && tk.state != stEvicted && tk.state != stRemoved && tk.state != stCanceled {
		return Admission{}, fmt.Errorf("%w: ticket of %q still in use", ErrInvalid, tk.item.ID)
	}
	if tk.q != nil && tk.q != q {
		return Admission{}, fmt.Errorf("%w: ticket of another queue", ErrInvalid)
	}
	if it.ID == "" {
		return Admission{}, fmt.Errorf("%w: empty item id", ErrInvalid)
	}
	if it.Priority >= numPriorities {
		return Admission{}, fmt.Errorf("%w: item %q has %v", ErrInvalid, it.ID, it.Priority)
	}
	if cw := it.cost() / it.weight(); math.IsInf(it.Cost, 0) || math.IsInf(it.Weight, 0) || math.IsInf(cw, 0) || math.IsNaN(cw) {
		// An infinite charge would lift every tenant's counter to +Inf after it: fair queueing
		// of the pool and class would be gone until a restart.
		return Admission{}, fmt.Errorf("%w: item %q cost %v / weight %v is not a finite charge", ErrInvalid, it.ID, it.Cost, it.Weight)
	}
	p := s.pools[it.Pool]
	if p == nil {
		return Admission{}, fmt.Errorf("%w: %q (item %q)", ErrUnknownPool, it.Pool, it.ID)
	}
	h := s.index.hash(it.ID)
	if s.index.lookup(it.ID, h) != nil {
		return Admission{}, fmt.Errorf("%w: %q", ErrDuplicate, it.ID)
	}
	it.EnqueuedAt = s.now()
	if tk.wake == nil {
		tk.wake = make(chan struct{}, 1)
	} else {
		select { // a signal left from the ticket's previous item
		case <-tk.wake:
		default:
		}
	}
	tk.q, tk.item, tk.pool, tk.err, tk.charged, tk.chargedTo, tk.chargedL = q, it, p, nil, 0, nil, nil
	tk.cw, tk.prio = it.cost()/it.weight(), it.Priority

	// A free slot on a dispatchable pool implies nothing of that pool is queued (pump keeps it
	// so): the item starts at once and takes no queue place.
	if p.free() > 0 && p.queued() == 0 {
		s.count(Admitted, &tk.item)
		s.charge(p, tk)
		s.start(p, tk)
		return Admission{}, nil
	}

	var adm Admission
	if s.depth >= s.capacity {
		victim, err := s.makeRoom(tk)
		if err != nil {
			tk.state = stIdle
			adm.RetryAfter = RetryAfter(p.meanServiceMs, p.cfg.Slots)
			return adm, err
		}
		adm.Evicted = &victim
	}

	tk.state = stQueued
	p.q[it.Priority].pushBack(tk)
	s.global[it.Priority].pushBack(tk)
	p.fair[it.Priority].push(tk)
	s.index.put(tk, h)
	s.depth++
	s.count(Admitted, &tk.item)

	adm.Placement = s.placementOf(tk, true)
	adm.PredictedStartMs = PredictStartMs(adm.Position, p.cfg.Slots, p.free(), p.meanServiceMs)
	return adm, nil
}

// makeRoom applies the policy to a full queue for the incoming tk: it evicts one item (waking
// its ticket with ErrEvicted) or returns the refusal.
func (s *state) makeRoom(tk *Ticket) (Item, error) {
	if s.policy != DropLRU {
		s.count(RejectedFull, &tk.item)
		return Item{}, fmt.Errorf("%w: queue is full (capacity %d); retry later", ErrRejected, s.capacity)
	}
	victim := s.global[Batch].head
	if victim == nil && tk.item.Priority == Interactive {
		victim = s.global[Interactive].head
	}
	if victim == nil {
		s.count(RejectedDropLRU, &tk.item)
		return Item{}, fmt.Errorf("%w: queue is full (capacity %d) and holds no batch task to drop",
			ErrDropLRUFull, s.capacity)
	}
	s.withdraw(victim, stEvicted, Evicted)
	return victim.item, nil
}

// charge charges tk's cost to its tenant's counter, as it is dispatched.
func (s *state) charge(p *pool, tk *Ticket) {
	f := &p.fair[tk.prio]
	t := tk.tq // queued: its tenant, looked up at push
	if t == nil {
		t = f.tenant(tk.item.Tenant)
	}
	tk.chargedTo, tk.chargedL = t, tk.lq
	if tk.lq != nil {
		tk.chargedG = tk.lq.gen
	}
	tk.charged = tk.cw
	f.charge(tk.chargedTo, tk.chargedL, tk.charged, tk.tq != nil && tk.tq.n == 1)
}

// start gives tk a free slot of p and wakes its waiter. The caller charged its tenant.
func (s *state) start(p *pool, tk *Ticket) {
	p.busy++
	tk.state = stDispatched
	s.count(Dispatched, &tk.item)
	tk.signal()
}

// release frees tk's slot; with settle its tenant's charge is corrected to d.Used tokens. Then
// the pool's next items are dispatched.
func (s *state) release(tk *Ticket, d DoneInfo, settle bool) {
	p := tk.pool
	s.place(tk, "")
	p.busy--
	p.observe(d)
	if settle && tk.chargedTo != nil {
		p.fair[tk.item.Priority].correct(tk.chargedTo, tk.chargedL, tk.chargedG, float64(max(d.Used, 0))/tk.item.weight()-tk.charged)
	}
	tk.state, tk.chargedTo, tk.chargedL = stIdle, nil, nil
	s.pump(p)
}

// next is the item p serves next: the interactive class's fair head, unless the oldest batch
// item has waited maxBatchWait; then the batch class's fair head.
func (s *state) next(p *pool) *Ticket {
	if n := p.fair[Interactive].head(); n != nil {
		if b := p.q[Batch].head; b != nil && s.maxBatchWait > 0 && s.now().Sub(b.item.EnqueuedAt) >= s.maxBatchWait {
			return b
		}
		return n
	}
	return p.fair[Batch].head()
}

// pump dispatches p's queued items while it has free slots.
func (s *state) pump(p *pool) {
	for p.free() > 0 {
		n := s.next(p)
		if n == nil {
			return
		}
		// Charged while still backlogged: its counter moves from where it stood.
		s.charge(p, n)
		s.unlink(n, true)
		s.start(p, n)
	}
}

// unlink takes n off every list and the index; dispatched: charged and given a slot.
func (s *state) unlink(n *Ticket, dispatched bool) {
	n.pool.q[n.prio].remove(n)
	s.global[n.prio].remove(n)
	n.pool.fair[n.prio].remove(n, dispatched)
	s.index.remove(n)
	s.depth--
}

// withdraw takes queued n out of the queue without a slot, in state st, counting o, and wakes
// its waiter.
func (s *state) withdraw(n *Ticket, st ticketState, o Outcome) {
	s.unlink(n, false)
	n.state = st
	s.count(o, &n.item)
	n.signal()
}

func (s *state) remove(poolID string) ([]Item, error) {
	p := s.pools[poolID]
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPool, poolID)
	}
	if p.queued() == 0 {
		return nil, nil
	}
	// The interactive items, then the batch items; within a class, by fair head, none charged:
	// the tenant with the least counter gives all its items first (not the interleaved order
	// dispatching would follow: the list is for the record only).
	items := make([]Item, 0, p.queued())
	for n := s.fairHead(p); n != nil; n = s.fairHead(p) {
		items = append(items, n.item)
		s.withdraw(n, stRemoved, Removed)
	}
	return items, nil
}

// fairHead is p's next item in dispatch order, whatever its free slots.
func (s *state) fairHead(p *pool) *Ticket {
	if n := p.fair[Interactive].head(); n != nil {
		return n
	}
	return p.fair[Batch].head()
}

// position is n's place while it is queued.
func (s *state) position(n *Ticket) (Placement, bool) {
	if n == nil || n.state != stQueued {
		return Placement{}, false
	}
	pl := s.placementOf(n, false)
	p := n.pool
	pl.PredictedStartMs = PredictStartMs(pl.Position, p.cfg.Slots, p.free(), p.meanServiceMs)
	return pl, true
}

// placementOf is n's place in its pool's dispatch order: the interactive items, then the
// batch items, each class in fair order (PredictedStartMs left to the caller). tail: n was
// just enqueued.
func (s *state) placementOf(n *node, tail bool) Placement {
	p := n.pool
	var pl Placement
	var ahead int
	var vstart float64
	if tail { // just enqueued: the last of its tenant
		ahead, vstart = p.fair[n.item.Priority].tailOrder(n)
	} else {
		ahead, vstart = p.fair[n.item.Priority].orderOf(n)
	}
	pl.VirtualStart = vstart
	if n.item.Priority == Batch {
		pl.AheadInteractive, pl.AheadBatch = p.q[Interactive].len, ahead
	} else {
		pl.AheadInteractive = ahead
	}
	pl.Position = pl.AheadInteractive + pl.AheadBatch
	return pl
}

func (s *state) setPool(id string, cfg PoolConfig) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty pool id", ErrInvalid)
	case cfg.Slots < 0:
		return fmt.Errorf("%w: pool %q slots %d", ErrInvalid, id, cfg.Slots)
	case !finiteNonNegative(cfg.PriorServiceMs):
		return fmt.Errorf("%w: pool %q prior_service_ms %v", ErrInvalid, id, cfg.PriorServiceMs)
	case !finiteNonNegative(cfg.PriorTokensPerS):
		return fmt.Errorf("%w: pool %q prior_tokens_per_s %v", ErrInvalid, id, cfg.PriorTokensPerS)
	}
	p := s.pools[id]
	if p == nil {
		p = &pool{id: id}
		s.pools[id] = p
	}
	p.cfg = cfg
	if !p.measuredService {
		p.meanServiceMs = cfg.PriorServiceMs
	}
	if !p.measuredTokens {
		p.tokensPerS = cfg.PriorTokensPerS
	}
	s.pump(p)
	return nil
}

func finiteNonNegative(f float64) bool { return f >= 0 && !math.IsInf(f, 1) }

func (s *state) stats() Stats {
	st := Stats{
		Capacity: s.capacity,
		Depth:    s.depth,
		Pools:    make(map[string]PoolStats, len(s.pools)),
		Outcomes: s.outcomes,
	}
	for id, p := range s.pools {
		ps := PoolStats{
			QueuedInteractive: p.q[Interactive].len,
			QueuedBatch:       p.q[Batch].len,
			Busy:              p.busy,
			Slots:             p.cfg.Slots,
			MeanServiceMs:     p.meanServiceMs,
			TokensPerS:        p.tokensPerS,
			Dispatchable:      p.cfg.Dispatchable,
		}
		st.Pools[id] = ps
		st.QueuedInteractive += ps.QueuedInteractive
		st.QueuedBatch += ps.QueuedBatch
		st.Busy += ps.Busy
		st.Slots += ps.Slots
	}
	return st
}

func (s *state) rates(poolID string) (Rates, error) {
	p := s.pools[poolID]
	if p == nil {
		return Rates{}, fmt.Errorf("%w: %q", ErrUnknownPool, poolID)
	}
	return Rates{MeanServiceMs: p.meanServiceMs, TokensPerS: p.tokensPerS}, nil
}
