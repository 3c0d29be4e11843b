// Package task is orchestratord's scheduler: it validates placement, admits tasks into the
// bounded priority queue (impl/admission), runs each dispatched task on its pool's engine replica,
// and records everything a client can observe in a per-task event log that SSE streams read.
//
// Ownership. The admission queue (one mutex) owns queue order and slot accounting: its per-pool
// busy count is the one count of busy slots (pool health, placement's pool load), and the runner
// records on it which replica each slot is on (Ticket.Assign, moved on failover), so that the
// per-replica counts that replica placement, pool health and the registry's views read are part
// of the same count (the registry counts nothing; pool.Options.ReplicaBusy reads it). Each admitted
// task has one goroutine (run): it waits on the task's ticket under a context carrying the
// task's deadline, which a cancel, a drain or shutdown also ends, then runs the task on the slot
// and gives it back. An evicted, removed, expired or canceled queued task is failed by that same
// goroutine. The Service's mutex guards the task registry and the retention list, and orders
// admissions (the queue and the journal see them in the same order). Each Task's mutex
// guards its state and its event log; the runner goroutine writes tokens, Cancel and the
// finishers write the final frame, exactly once (finish is idempotent on a final task).
//
// Event log. Frames are encoded once, at append time, into one append-only buffer per task
// (the SSE wire format, with `id:` = event index). Readers (Cursor) copy what they have not sent
// yet and wait on a one-slot wake channel, so any number of streams, Last-Event-ID resumes and
// late subscribers read the same bytes. The log of a task is bounded by its max_tokens plus a
// bounded number of metrics frames; finished tasks are forgotten after tasks.retention or beyond
// tasks.max_retained.
//
// Durability. With a Journal (Options.Journal), Submit records the admission and the `started`
// frame and answers only once the journal acknowledges them (Wait: durable, for the file
// journal's default); every later frame is appended to the journal under the task's mutex (so
// in log order) and shown to readers only once the journal lets it be (Visible: written to the
// kernel, for the file journal's default), and the final frame travels with the final state in
// one record. A reader resuming after an id beyond a finished log's end (it saw frames that a
// crash of the machine took back) gets the final frame, numbered after its Last-Event-ID. Recover rebuilds the tasks after a restart:
// finished ones as they were, running ones end with a retriable worker_reset error (canceled,
// when their cancel was journaled), queued ones are queued again (Run holds the pools until all
// are back, so the queue orders them as before; one cancelled before that ends at its cancel).
// Tasks forgotten by retention are retired from the journal. See journal.go.
//
// Ordering guarantees. `started` is appended before the runner may append anything (the runner
// starts once the admission is recorded); no `token` is appended once a cancel is recorded
// (checked under the task's mutex); exactly one `end` or `error` frame ends the log.
package task
