// Package admission is the daemon's bounded two-class priority queue and slot dispatcher.
//
// # Model
//
// One Queue holds every queued task of every pool. Capacity counts queued items only (running
// items hold an engine slot, not a queue place) and is shared by all pools and both priority
// classes. An item is placed on a pool at admission; each pool keeps its own FIFO list per class,
// so a pool whose slots are all busy (or that is not dispatchable) never holds up another pool.
// Interactive items of a pool are dispatched before its Batch items; within a class, FIFO.
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
// item (interactive head, else batch head) is popped and handed to Options.Dispatch; the slot stays
// busy until the caller reports Done. Done also feeds the pool's measured rates: exponentially
// weighted moving averages (alpha 0.2) of service time and of decode tokens/s. Until the first
// measurement the pool's configured prior is used; the first measurement replaces the prior and
// later ones are averaged in. The rates drive PredictStartMs and RetryAfter, the formulas of the
// API contract ("Predictions" and "Backpressure").
//
// # Concurrency
//
// One owner goroutine, Run, owns all queue state: pools, lists, the id index, counters. Every
// method taking a ctx sends a request to it over an unbuffered channel and waits for the answer.
// A request is either taken by the owner or not at all: the method returns ctx's error if ctx
// ends first and ErrClosed once Run has returned, and in both cases nothing happened. Once taken,
// the owner answers without blocking, so a method never reports failure for an operation that was
// in fact applied. Calls made before Run starts wait for it (or for their ctx). Depth is the only
// read that bypasses the owner: an atomic mirror the owner updates after each request.
//
// Dispatch and Evict are called on the owner goroutine while it serves a request. They must not
// block and must not call back into the Queue synchronously (that would deadlock); they hand the
// item to a goroutine or a buffered channel.
//
// # Who finalizes each item
//
// Every admitted item leaves the queue exactly once, and exactly one party then owns it:
//   - refused by Enqueue (any error): never entered; the Enqueue caller fails the task;
//   - dispatched: the Dispatch callback owns the task and must call Done exactly once for its slot;
//   - evicted (DropLRU): the Evict callback fails the task; Admission.Evicted is only a copy for
//     the admitting request (logs, headers) and must not finalize it again;
//   - canceled: the caller whose Cancel returned true;
//   - removed: the caller of Remove (a drain deadline passed), for every item returned;
//   - still queued when Run returns: Run leaves them in place; the caller collects them with
//     Drain after Run has returned and fails them.
//
// # Errors
//
// Failures wrap one of the sentinel classes (ErrRejected, ErrDropLRUFull, ErrDuplicate,
// ErrUnknownPool, ErrNotBusy, ErrInvalid, ErrClosed) with fmt.Errorf("%w: ..."); test them with
// errors.Is. Pool-keyed calls (Enqueue, Done, Remove, PoolRates) fail with ErrUnknownPool for a
// pool never passed to SetPool; id-keyed lookups (Cancel, Position) report a missing id with a
// false ok, since "no longer queued" is an ordinary answer.
//
// Outcomes (Admitted, RejectedFull, RejectedDropLRU, Evicted, Canceled, Removed, Dispatched) are
// counted in Stats.Outcomes and are meant as low-cardinality metric labels.
package admission
