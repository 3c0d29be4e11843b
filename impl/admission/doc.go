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
// of busy slots (Load, Stats, Busy): nothing else counts them. The task service records which
// replica a granted slot is on (Ticket.Assign, again to move it on failover; Done takes it off),
// so that the busy slots of each replica (ReplicaBusy) are kept under the same lock, as a part
// of the pool's: see replica.go.
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
// links, O(log tenants + log sessions) heap steps, and O(log n) tree steps for positions (see
// Position), plus one step per irregular tenant.
// Waiting happens outside the lock: a ticket has a 1-buffered wake channel, signalled under the
// lock when its state leaves "queued"; Wait then re-reads the state under the lock, so a wake
// and a ctx that end together are resolved in one place. Depth is an atomic mirror updated as
// the lock is released, read without it. Options.Observe runs under the lock.
//
// # Position
//
// An item's position is the number of queued items of its pool that would be dispatched before
// it if nothing else arrived, no slot state changed and every dispatched item were charged its
// Cost: all of the pool's interactive items first when it is a batch item (AheadInteractive),
// then the items of its own class whose virtual start is before its own (AheadInteractive or
// AheadBatch). An item's virtual start is its tenant's counter when the item will be served:
// the counter now plus the cost/weight of the tenant's items served before it (its sessions
// played by their own counters); starts within before's rounding band are ordered by tenant
// name, as the tenant heap orders them. MaxBatchWait's promotions are not foreseen. The
// position is reported by Enqueue (Admission.Position: the 202's queue_position, the SSE
// started frame, the admission log line and the queue-wait span) and by Position (GET
// /v1/tasks/{id}: queue_position and admission.position, ahead_by_class, virtual_start, and
// an idempotent re-post's 202); PredictedStartMs (predicted_start_ms) is computed from it.
//
// Dispatching a tenant's next item moves its counter by exactly that item's charge, so the
// virtual starts of all other queued items stay where they were; only a settlement of a
// tenant's counter (Done with Settle), a withdrawal (cancel, expiry, eviction, removal: the
// tenant's later items move up) and a new session (the tenant's order interleaves its
// sessions) move the starts of one tenant's items. Each pool and class therefore keeps its
// queued items in an order-statistics B+-tree keyed by virtual start (ostree.go), as long as
// their tenant is regular: one session queued and starts unmoved since they were keyed. A
// tenant whose starts move is re-keyed when it has at most rekeyMax items queued, else it
// becomes irregular until its queue empties: its items leave the tree and are counted one
// tenant at a time, O(1) when they start all before or all after the item, else by a binary
// search or a play of its sessions. A tenant with a second session queued becomes irregular
// at once. A position is one O(log n) descent plus one step per irregular tenant; the
// position of an item of an irregular tenant (Position only) plays the counters forward,
// O(position x log tenants).
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
