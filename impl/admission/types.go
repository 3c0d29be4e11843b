package admission

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel error classes. Errors returned by the Queue wrap exactly one of them.
var (
	// ErrRejected: the queue is full under the Reject policy; nothing was enqueued.
	ErrRejected = errors.New("admission rejected")
	// ErrDropLRUFull: the queue is full under the DropLRU policy and the new Batch item had no
	// Batch item to evict; nothing was enqueued.
	ErrDropLRUFull = errors.New("queue full, nothing to drop")
	// ErrDuplicate: an item with the same ID is already queued.
	ErrDuplicate = errors.New("duplicate queued item")
	// ErrUnknownPool: the pool was never passed to SetPool.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrNotBusy: Done was called for a ticket that holds no slot.
	ErrNotBusy = errors.New("no busy slot")
	// ErrEvicted: Wait's item was pushed out of the full queue under DropLRU.
	ErrEvicted = errors.New("evicted from the full queue")
	// ErrRemoved: Wait's item was withdrawn by Remove (its pool's drain deadline passed).
	ErrRemoved = errors.New("removed from the queue")
	// ErrCanceled: Wait's item was withdrawn by Cancel.
	ErrCanceled = errors.New("canceled while queued")
	// ErrExpired marks a deadline: a Wait context canceled with a cause that wraps it counts
	// as Expired, like one whose deadline passed (for clocks that cancel with a cause).
	ErrExpired = errors.New("deadline passed while queued")
	// ErrInvalid: an argument is malformed (empty id, unknown priority, negative slots, ...).
	ErrInvalid = errors.New("invalid argument")
)

// Priority is an item's class. Interactive items of a pool are dispatched before its Batch items.
type Priority uint8

// Priority classes, in dispatch order.
const (
	Interactive Priority = iota
	Batch
	numPriorities
)

var priorityNames = [numPriorities]string{"interactive", "batch"}

func (p Priority) String() string {
	if p < numPriorities {
		return priorityNames[p]
	}
	return fmt.Sprintf("priority(%d)", uint8(p))
}

// ParsePriority parses "interactive" or "batch".
func ParsePriority(s string) (Priority, error) {
	for p, name := range priorityNames {
		if s == name {
			return Priority(p), nil
		}
	}
	return 0, fmt.Errorf("%w: priority %q (want interactive or batch)", ErrInvalid, s)
}

// Policy says what Enqueue does when the queue is full.
type Policy uint8

// Policies.
const (
	// Reject refuses the new item with ErrRejected.
	Reject Policy = iota
	// DropLRU evicts the oldest queued item (Batch first) to make room; see the package doc.
	DropLRU
	numPolicies
)

var policyNames = [numPolicies]string{"reject", "drop-lru"}

func (p Policy) String() string {
	if p < numPolicies {
		return policyNames[p]
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParsePolicy parses "reject" or "drop-lru" (the configuration's admission.policy).
func ParsePolicy(s string) (Policy, error) {
	for p, name := range policyNames {
		if s == name {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("%w: policy %q (want reject or drop-lru)", ErrInvalid, s)
}

// Outcome is what happened to an item at one step; a low-cardinality metrics label.
type Outcome uint8

// Outcomes, counted in Stats.Outcomes.
const (
	Admitted        Outcome = iota // Enqueue accepted the item (queued or dispatched at once)
	RejectedFull                   // refused under Reject: the queue was full
	RejectedDropLRU                // refused under DropLRU: full, and no Batch item to evict
	Evicted                        // pushed out of the queue under DropLRU
	Canceled                       // withdrawn while queued by Cancel or its waiter's context
	Removed                        // removed by Remove (pool drain deadline)
	Dispatched                     // given a slot
	Expired                        // withdrawn while queued: its waiter's deadline passed
	numOutcomes
)

// NumOutcomes is the number of Outcomes, for arrays indexed by Outcome.
const NumOutcomes = int(numOutcomes)

var outcomeNames = [numOutcomes]string{
	"admitted", "rejected_full", "rejected_drop_lru", "evicted", "canceled", "removed", "dispatched", "expired",
}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Item is one task as the queue sees it.
type Item struct {
	// ID names the task; unique among queued items.
	ID string
	// Pool is the pool the task was placed on; it must have been passed to SetPool.
	Pool string
	// Priority is the task's class.
	Priority Priority
	// EnqueuedAt is set by Enqueue from Options.Now; whatever the caller passes is ignored.
	EnqueuedAt time.Time
	// Tenant names who submitted the item (the key): within a pool and class, tenants are
	// served by virtual token counters. "" is a tenant like any other.
	Tenant string
	// Session names the item's session within its tenant: a tenant's sessions are served by
	// their own counters. Items without one ("") share one lane.
	Session string
	// Weight is the tenant's share (<= 0: 1).
	Weight float64
	// Cost is the service the item is charged when dispatched, in tokens (<= 0: 1).
	Cost float64
}

func (it Item) weight() float64 {
	if it.Weight > 0 {
		return it.Weight
	}
	return 1
}

func (it Item) cost() float64 {
	if it.Cost > 0 {
		return it.Cost
	}
	return 1
}

// Placement is a queued item's place in its pool's dispatch order and its predicted wait.
type Placement struct {
	// Position is the 0-based position in the pool's dispatch order (its interactive items, then
	// its batch items).
	Position int
	// PredictedStartMs is PredictStartMs for Position with the pool's current mean service time,
	// slots and free slots (free slots count only while the pool is dispatchable).
	PredictedStartMs int64
	// AheadInteractive and AheadBatch split Position by class.
	AheadInteractive, AheadBatch int
	// VirtualStart is the item's tenant counter when the item will be served (fair queueing).
	VirtualStart float64
}

// Admission is Enqueue's answer.
type Admission struct {
	// Placement is where the item stands; {0, 0} when it was dispatched at once.
	Placement
	// Evicted is the item pushed out to make room (DropLRU only), else nil. Its ticket's Wait
	// returns ErrEvicted and its waiter finalizes it; this copy is informational.
	Evicted *Item
	// RetryAfter is set when Enqueue refuses the item because the queue is full (ErrRejected,
	// ErrDropLRUFull): RetryAfter(mean_service_ms, slots) of the target pool.
	RetryAfter time.Duration
}

// PoolConfig is a pool's dispatch configuration, set with SetPool.
type PoolConfig struct {
	// Slots is the number of engine slots (concurrent dispatched items); 0 dispatches nothing.
	Slots int
	// Dispatchable is false while the pool is unhealthy, draining or reloading: its items stay
	// queued (and count against capacity).
	Dispatchable bool
	// PriorServiceMs is the mean service time used before the first measurement.
	PriorServiceMs float64
	// PriorTokensPerS is the decode rate used before the first measurement.
	PriorTokensPerS float64
}

// DoneInfo is what a finished (or aborted) dispatched item measured. A zero Service, or zero
// Tokens or Decode, means "not measured" and leaves the corresponding average unchanged.
type DoneInfo struct {
	Service time.Duration // wall time the item held its slot
	Tokens  int           // tokens decoded
	Decode  time.Duration // time spent decoding them
	// Settle corrects the tenant's fair-queueing counter, charged Item.Cost at dispatch, to
	// Used tokens (the item's actual output); without it the charge stands.
	Settle bool
	Used   int
}

// Rates are a pool's measured (or prior) service rates.
type Rates struct {
	MeanServiceMs float64
	TokensPerS    float64
}

// PoolStats is one pool's snapshot.
type PoolStats struct {
	QueuedInteractive int
	QueuedBatch       int
	Busy              int
	Slots             int
	MeanServiceMs     float64
	TokensPerS        float64
	Dispatchable      bool
}

// Stats is a snapshot of the whole queue.
type Stats struct {
	Capacity          int
	Depth             int // queued items, all pools and classes
	QueuedInteractive int
	QueuedBatch       int
	Busy              int
	Slots             int
	Pools             map[string]PoolStats
	// Outcomes counts each Outcome since New, indexed by Outcome.
	Outcomes [numOutcomes]uint64
}
