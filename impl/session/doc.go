// Package session keeps per-session metadata for the data plane: how many turns a session has
// taken, how warm its KV cache is believed to be, an estimate of its KV-cache bytes and what is
// left of its token budget. It never stores prompts or outputs.
//
// # Lifecycle
//
// A session is created by the first Reserve or Admit that names it. Every Admit adds one
// turn; an Admit that would take a session past Options.MaxTurns fails with an error that
// matches ErrTurnLimit and leaves the session untouched. When admission fails later on (the
// task is refused after the session said yes), the caller undoes the turn with Unadmit; a
// session left with no turn and no reservation is forgotten, as if it had never been named.
// RecordTurn records what a finished task produced: once any token was produced the session
// is KV-warm and its KV estimate becomes (TokensIn + TokensOut) × KVBytesPerToken of that turn.
//
// # Ownership
//
// A session belongs to the key (by name) whose task first named it. Reserve, Admit, Get (via
// Info.Owner) and Delete take the caller's key name: another key's session is ErrNotFound to
// Reserve and Admit, and Delete leaves it alone, so a session id tells another key nothing.
// Keys without a name are one tenant (tenant.DefaultName), as before keys had names.
//
// # Token budget
//
// With Options.TokenBudget set, each session has that many output tokens. A task reserves its
// max_tokens with Reserve before it is admitted, or what is left when that is less (its grant;
// the caller stops the task there), and a session with nothing left is refused with a
// *BudgetError. Reservations are counted under the same mutex as the budget, so concurrent
// tasks of one session can never together be granted more than it has. When the task ends the
// caller Settles the grant with the tokens produced: those are charged (never below zero) and
// the rest returns. Info.TokensBudgetRemaining is what a new task could still reserve. Like
// every other piece of session state the budget is in memory only: a restart, an expiry, an
// eviction or a Delete starts the session over with a full budget.
//
// # Expiry
//
// The TTL slides: it restarts at every Admit and RecordTurn (Get, Unadmit and Delete do not
// touch it). A session whose tasks hold a reservation of its budget (queued or running) is in
// use and does not expire until they settle. An expired session is gone: Get reports it unknown and evicts it, Admit evicts it
// and starts a fresh one, RecordTurn returns ErrNotFound. Run sweeps expired sessions
// periodically so that idle ones do not stay in memory until they are next named. Time comes
// from Options.Now, so tests drive expiry with a fake clock.
//
// # Bounds
//
// At most Options.MaxSessions sessions are held, beyond those whose tasks hold a reservation.
// When the store is full, Admit of a new session first drops expired sessions and then evicts
// the least-recently-used one that holds no reservation (the one whose last Admit/RecordTurn
// is oldest), logging the eviction at debug level. A session holding a grant is never evicted:
// the next task naming it would get a whole new budget while the first still holds its grant.
// While only such sessions are left the store holds more, as many as admitted tasks, which
// the admission queue bounds. Ids are at most MaxIDLen bytes. Every operation is O(1) except
// the sweep and the eviction, O(expired sessions) plus the reserved sessions they step over:
// sessions are kept in a list ordered by last use, and because the TTL is the same for every
// session that order is also the order of expiry.
//
// # Concurrency
//
// All state (the map, the LRU list and every session record) is guarded by one mutex in Store;
// no callback or I/O runs under it. Run is the only goroutine the package starts, and only
// when the caller runs it; it returns when its context is done.
package session
