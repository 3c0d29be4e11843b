// Package session keeps per-session metadata for the data plane: how many turns a session has
// taken, how warm its KV cache is believed to be, an estimate of its KV-cache bytes and what is
// left of its token budget. It never stores prompts or outputs.
//
// # Lifecycle
//
// A session is created by the first Admit that names it. Every Admit adds one turn; an Admit
// that would take a session past Options.MaxTurns fails with an error that matches
// ErrTurnLimit and leaves the session untouched. When admission fails later on (the task is
// refused after the session said yes), the caller undoes the turn with Unadmit; a session whose
// turn count drops back to zero is forgotten, as if it had never been admitted. RecordTurn
// records what a finished task produced: once any token was produced the session is KV-warm,
// its KV estimate becomes (TokensIn + TokensOut) × KVBytesPerToken of that turn, and TokensOut
// is spent from the token budget (never below zero). The store does not refuse work when the
// budget is spent; that policy is the caller's, read from Info.TokensBudgetRemaining.
//
// # Expiry
//
// The TTL slides: it restarts at every Admit and RecordTurn (Get, Unadmit and Delete do not
// touch it). An expired session is gone: Get reports it unknown and evicts it, Admit evicts it
// and starts a fresh one, RecordTurn returns ErrNotFound. Run sweeps expired sessions
// periodically so that idle ones do not stay in memory until they are next named. Time comes
// from Options.Now, so tests drive expiry with a fake clock.
//
// # Bounds
//
// At most Options.MaxSessions sessions are held. When the store is full, Admit of a new
// session first drops expired sessions and then evicts the least-recently-used one (the one
// whose last Admit/RecordTurn is oldest), logging the eviction at debug level. Ids are at most
// MaxIDLen bytes. Every operation is O(1) except the sweep, which is O(expired sessions):
// sessions are kept in a list ordered by last use, and because the TTL is the same for every
// session that order is also the order of expiry.
//
// # Concurrency
//
// All state (the map, the LRU list and every session record) is guarded by one mutex in Store;
// no callback or I/O runs under it. Run is the only goroutine the package starts, and only
// when the caller runs it; it returns when its context is done.
package session
