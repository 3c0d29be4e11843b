// Package admission is the daemon's bounded two-class priority queue and slot dispatcher.
//
// # Model
//
// One Queue holds every queued task of every pool. Capacity counts queued items only (running
// items hold an engine slot, not a queue place) and is shared by all pools and both priority
// classes. An item is placed on a pool at admission; each pool keeps its own FIFO list per class,
// so a pool whose slots are all busy (or that is not dispatchable) never holds up another pool.
// Interactive items of a pool are dispatched before its Batch items (MaxBatchWait bounds how
// long the oldest batch item waits); within a class, items are served by virtual token counters
// per tenant (Item.Tenant, weighted by Item.Weight) and, within a tenant, per session
// (Item.Session), each FIFO: see fair.go. The counters are charged Item.Cost at dispatch and
// settled to the tokens actually produced at Done (DoneInfo.Settle).
//
// When the queue is full, Policy decides: Reject refuses the new item (ErrRejected); DropLRU
// evicts the oldest queued item (LRU order is global across pools) — for an incoming Interactive
// item the oldest Batch item, else the oldest Interactive item; for an incoming Batch item only the
// oldest Batch item, and with no Batch item queued the new one is refused (ErrDropLRUFull): a batch
// task never pushes out an interactive one. An item that can start at once (its pool is
// dispatchable and has a free slot, so nothing of that pool is queued) is dispatched without
// taking a queue place, even when the queue is full.
//
// Each pool has Slots engine slots. Whenever a pool is dispatchable and has a free slot, its next
// item (interactive head, else batch head) is popped and its ticket is granted the slot; the slot
// stays busy until the ticket's Done. Done also feeds the pool's measured rates: exponentially
// weighted moving averages (alpha 0.2) of service time and of decode tokens/s. Until the first
// measurement the pool's configured prior is used; the first measurement replaces the prior and
// later ones are averaged in. The rates drive PredictStartMs and RetryAfter, the formulas of the
// API contract ("Predictions" and "Backpressure"). The pool's busy count is the daemon's one count
// of busy slots (Load, Stats): nothing else counts them.
//
// # Tickets
//
// Enqueue (or EnqueueTicket, with a ticket the caller embeds in its own task so that admission
// allocates nothing) returns a Ticket. The goroutine that admitted the item waits on
// Ticket.Wait(ctx), ctx carrying the item's deadline (context.WithDeadlineCause), and learns
// what became of it:
//   - nil: dispatched; the caller owns one slot of the pool and calls Ticket.Done exactly once;
//   - ErrEvicted: pushed out under DropLRU to admit a newer item;
//   - ErrRemoved: withdrawn by Remove (the pool's drain deadline passed);
//   - ErrCanceled: withdrawn by Cancel;
//   - context.Cause(ctx): ctx ended first. The item is withdrawn in the same critical section
//     that observes it still queued (outcome Expired for a deadline, else Canceled); if the slot
//     was granted just as ctx ended, Wait gives it back to the pool itself (and refunds the
//     tenant's charge) before returning, so that a slot is never lost nor freed twice.
//
// # Concurrency
//
// All queue state (pools, lists, the id index, tickets' states, counters) is guarded by one
// mutex, Queue.mu; every operation is one short critical section that never blocks: O(1) list
// links, O(log tenants + log sessions) heap steps, and an O(tenants) walk for the position
// reported at Enqueue (longer when other tenants' items straddle the new one's virtual start,
// or have several sessions queued; Position of an older item plays the counters forward,
// O(position x log tenants)).
// Waiting happens outside the lock: a ticket has a 1-buffered wake channel, signalled under the
// lock when its state leaves "queued"; Wait then re-reads the state under the lock, so a wake
// and a ctx that end together are resolved in one place. Depth is an atomic mirror updated as
// the lock is released, read without it. Options.Observe runs under the lock.
//
// # Who finalizes each item
//
// Every admitted item leaves the queue exactly once, and exactly one party then owns it: the
// goroutine waiting on its ticket. Enqueue's refusals (any error) never entered; the caller fails
// the task. Admission.Evicted and the items Remove returns are copies, for logs and headers;
// the waiters of those tickets finalize them.
//
// # Errors
//
// Failures wrap one of the sentinel classes (ErrRejected, ErrDropLRUFull, ErrDuplicate,
// ErrUnknownPool, ErrNotBusy, ErrInvalid) with fmt.Errorf("%w: ..."); test them with errors.Is.
// New refuses invalid Options with ErrInvalid (it never panics). Pool-keyed calls (Enqueue,
// Remove, PoolRates) fail with ErrUnknownPool for a pool never passed to SetPool; id-keyed
// lookups (Cancel, Position) report a missing id with a false ok, since "no longer queued" is an
// ordinary answer.
//
// Outcomes (Admitted, RejectedFull, RejectedDropLRU, Evicted, Canceled, Removed, Dispatched,
// Expired) are counted in Stats.Outcomes, told to Options.Observe, and are the outcome label of
// the admission metrics.
package admission
