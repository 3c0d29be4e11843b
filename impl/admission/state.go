package admission

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// ewmaAlpha weighs a new service measurement against the running average.
const ewmaAlpha = 0.2

// maxFreeNodes bounds the owner's node free list.
const maxFreeNodes = 4096

// pool is one pool's state. Owned by the owner goroutine.
type pool struct {
	id   string
	cfg  PoolConfig
	q    [numPriorities]dlist // k = linkPool
	fair [numPriorities]fairQueue
	busy int

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

func (p *pool) head() *node {
	if n := p.q[Interactive].head; n != nil {
		return n
	}
	return p.q[Batch].head
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

// state is everything the owner goroutine owns.
type state struct {
	capacity int
	policy   Policy
	dispatch func(Item)
	evict    func(Item)
	now      func() time.Time
	// maxBatchWait: see Options.MaxBatchWait.
	maxBatchWait time.Duration

	pools    map[string]*pool
	index    map[string]*node     // queued items by id
	global   [numPriorities]dlist // k = linkGlobal; admission (LRU) order across pools
	depth    int                  // queued items
	outcomes [numOutcomes]uint64  // cumulative
	freeList []*node              // recycled nodes
}

func newState(o Options) state {
	s := state{
		capacity: o.Capacity,
		policy:   o.Policy,
		dispatch: o.Dispatch,
		evict:    o.Evict,
		now:      o.Now,
		pools:    make(map[string]*pool),

		maxBatchWait: o.MaxBatchWait,
		index:        make(map[string]*node),
	}
	for c := range s.global {
		s.global[c].k = linkGlobal
	}
	return s
}

func (s *state) handle(c *call) {
	switch c.op {
	case opEnqueue:
		c.adm, c.err = s.enqueue(c.item)
	case opCancel:
		c.ok = s.cancel(c.key)
	case opRemove:
		c.items, c.err = s.remove(c.key)
	case opPosition:
		c.place, c.ok = s.position(c.key)
	case opSetPool:
		c.err = s.setPool(c.key, c.cfg)
	case opDone:
		c.err = s.done(c.key, c.info)
	case opStats:
		c.stats = s.stats()
	case opRates:
		c.rates, c.err = s.rates(c.key)
	default:
		// Unreachable: every op is sent by a method of Queue.
		c.err = fmt.Errorf("admission: unknown op %d", c.op)
	}
}

func (s *state) enqueue(it Item) (Admission, error) {
	if it.ID == "" {
		return Admission{}, fmt.Errorf("%w: empty item id", ErrInvalid)
	}
	if it.Priority >= numPriorities {
		return Admission{}, fmt.Errorf("%w: item %q has %v", ErrInvalid, it.ID, it.Priority)
	}
	p := s.pools[it.Pool]
	if p == nil {
		return Admission{}, fmt.Errorf("%w: %q (item %q)", ErrUnknownPool, it.Pool, it.ID)
	}
	if _, dup := s.index[it.ID]; dup {
		return Admission{}, fmt.Errorf("%w: %q", ErrDuplicate, it.ID)
	}
	it.EnqueuedAt = s.now()

	// A free slot on a dispatchable pool implies nothing of that pool is queued (pump keeps it
	// so): the item starts at once and takes no queue place.
	if p.free() > 0 && p.queued() == 0 {
		s.outcomes[Admitted]++
		p.fair[it.Priority].charge(it.Tenant, it.cost(), it.weight())
		s.start(p, it)
		return Admission{}, nil
	}

	var adm Admission
	if s.depth >= s.capacity {
		victim, err := s.makeRoom(it.Priority)
		if err != nil {
			adm.RetryAfter = RetryAfter(p.meanServiceMs, p.cfg.Slots)
			return adm, err
		}
		adm.Evicted = &victim
	}

	n := s.newNode(it, p)
	p.q[it.Priority].pushBack(n)
	s.global[it.Priority].pushBack(n)
	p.fair[it.Priority].push(n)
	s.index[it.ID] = n
	s.depth++
	s.outcomes[Admitted]++

	adm.Placement = s.placementOf(n, true)
	adm.PredictedStartMs = PredictStartMs(adm.Position, p.cfg.Slots, p.free(), p.meanServiceMs)
	return adm, nil
}

// makeRoom applies the policy to a full queue for an incoming item of class c: it evicts one
// item (handing it to Evict) or returns the refusal.
func (s *state) makeRoom(c Priority) (Item, error) {
	if s.policy != DropLRU {
		s.outcomes[RejectedFull]++
		return Item{}, fmt.Errorf("%w: queue is full (capacity %d); retry later", ErrRejected, s.capacity)
	}
	victim := s.global[Batch].head
	if victim == nil && c == Interactive {
		victim = s.global[Interactive].head
	}
	if victim == nil {
		s.outcomes[RejectedDropLRU]++
		return Item{}, fmt.Errorf("%w: queue is full (capacity %d) and holds no batch task to drop",
			ErrDropLRUFull, s.capacity)
	}
	it := s.unlink(victim)
	s.outcomes[Evicted]++
	s.evict(it)
	return it, nil
}

// start hands it to Dispatch on a free slot of p. The caller charged its tenant.
func (s *state) start(p *pool, it Item) {
	p.busy++
	s.outcomes[Dispatched]++
	s.dispatch(it)
}

// next is the item p serves next: the interactive class's fair head, unless the oldest batch
// item has waited maxBatchWait; then the batch class's fair head.
func (s *state) next(p *pool) *node {
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
		p.fair[n.item.Priority].charge(n.item.Tenant, n.item.cost(), n.item.weight())
		s.start(p, s.unlink(n))
	}
}

func (s *state) newNode(it Item, p *pool) *node {
	var n *node
	if k := len(s.freeList); k > 0 {
		n, s.freeList = s.freeList[k-1], s.freeList[:k-1]
	} else {
		n = new(node)
	}
	n.item, n.pool = it, p
	return n
}

// unlink takes n off every list and the index, recycles it and returns its item.
func (s *state) unlink(n *node) Item {
	it := n.item
	n.pool.q[it.Priority].remove(n)
	s.global[it.Priority].remove(n)
	n.pool.fair[it.Priority].remove(n)
	delete(s.index, it.ID)
	s.depth--
	*n = node{}
	if len(s.freeList) < maxFreeNodes {
		s.freeList = append(s.freeList, n)
	}
	return it
}

func (s *state) cancel(id string) bool {
	n := s.index[id]
	if n == nil {
		return false
	}
	s.unlink(n)
	s.outcomes[Canceled]++
	return true
}

func (s *state) remove(poolID string) ([]Item, error) {
	p := s.pools[poolID]
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPool, poolID)
	}
	items := s.takeAll(p)
	s.outcomes[Removed] += uint64(len(items))
	return items, nil
}

// takeAll unlinks and returns p's queued items in dispatch order.
func (s *state) takeAll(p *pool) []Item {
	if p.queued() == 0 {
		return nil
	}
	items := make([]Item, 0, p.queued())
	for n := p.head(); n != nil; n = p.head() {
		items = append(items, s.unlink(n))
	}
	return items
}

// drain unlinks every queued item: pools in id order, each in dispatch order.
func (s *state) drain() []Item {
	ids := make([]string, 0, len(s.pools))
	for id := range s.pools {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var items []Item
	for _, id := range ids {
		items = append(items, s.takeAll(s.pools[id])...)
	}
	return items
}

func (s *state) position(id string) (Placement, bool) {
	n := s.index[id]
	if n == nil {
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
		ahead, vstart = p.fair[n.item.Priority].order(n)
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

func (s *state) done(poolID string, d DoneInfo) error {
	p := s.pools[poolID]
	if p == nil {
		return fmt.Errorf("%w: %q", ErrUnknownPool, poolID)
	}
	if p.busy == 0 {
		return fmt.Errorf("%w: pool %q", ErrNotBusy, poolID)
	}
	p.busy--
	p.observe(d)
	s.pump(p)
	return nil
}

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
