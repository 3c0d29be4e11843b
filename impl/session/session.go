package session

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults applied to zero-valued Options fields.
const (
	DefaultTTL           = 10 * time.Minute
	DefaultMaxTurns      = 8
	DefaultMaxSessions   = 10000
	DefaultSweepInterval = 30 * time.Second
)

// MaxIDLen bounds the length of a session id in bytes.
const MaxIDLen = 256

// Errors returned by the store. Match them with errors.Is.
var (
	// ErrTurnLimit: the session has taken Options.MaxTurns turns. The concrete error is a
	// *TurnLimitError whose message names the limit.
	ErrTurnLimit = errors.New("session turn limit reached")
	// ErrNotFound: the session is unknown or has expired.
	ErrNotFound = errors.New("session not found")
	// ErrInvalidID: the id is empty or longer than MaxIDLen.
	ErrInvalidID = errors.New("invalid session id")
	// ErrInvalidOptions: an Options field is out of range.
	ErrInvalidOptions = errors.New("invalid session options")
	// ErrBudgetSpent: the session's token budget has nothing left to reserve. The concrete
	// error is a *BudgetError.
	ErrBudgetSpent = errors.New("session token budget spent")
)

// BudgetError is the error Reserve returns when nothing is left of the session's token budget.
// It matches ErrBudgetSpent.
type BudgetError struct {
	// Pending is what the session's admitted tasks still hold reserved: a retry may succeed
	// once they end with tokens unused.
	Pending int64
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("session token budget spent (%d tokens still reserved by its tasks)", e.Pending)
}

// Is makes errors.Is(err, ErrBudgetSpent) true.
func (e *BudgetError) Is(target error) bool { return target == ErrBudgetSpent }

// TurnLimitError is the error Admit returns when a session has no turns left. It matches
// ErrTurnLimit.
type TurnLimitError struct {
	Limit int
}

func (e *TurnLimitError) Error() string {
	return fmt.Sprintf("session has reached its limit of %d turns", e.Limit)
}

// Is makes errors.Is(err, ErrTurnLimit) true.
func (e *TurnLimitError) Is(target error) bool { return target == ErrTurnLimit }

// Options configures a Store. The zero value is valid and uses the defaults above.
type Options struct {
	// TTL is how long a session lives after its last Admit or RecordTurn (default 10 min).
	TTL time.Duration
	// MaxTurns is the number of turns a session may take (default 8).
	MaxTurns int
	// MaxSessions bounds the number of sessions held (default 10000); see the package doc
	// for the eviction rule.
	MaxSessions int
	// TokenBudget is each session's output-token budget; 0 means no budget.
	TokenBudget int64
	// SweepInterval is how often Run evicts expired sessions (default 30 s).
	SweepInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives debug logs about evictions (default: discard).
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	switch {
	case o.TTL < 0:
		return o, fmt.Errorf("%w: TTL %s is negative", ErrInvalidOptions, o.TTL)
	case o.MaxTurns < 0:
		return o, fmt.Errorf("%w: MaxTurns %d is negative", ErrInvalidOptions, o.MaxTurns)
	case o.MaxSessions < 0:
		return o, fmt.Errorf("%w: MaxSessions %d is negative", ErrInvalidOptions, o.MaxSessions)
	case o.TokenBudget < 0:
		return o, fmt.Errorf("%w: TokenBudget %d is negative", ErrInvalidOptions, o.TokenBudget)
	case o.SweepInterval < 0:
		return o, fmt.Errorf("%w: SweepInterval %s is negative", ErrInvalidOptions, o.SweepInterval)
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.MaxTurns == 0 {
		o.MaxTurns = DefaultMaxTurns
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Info is a snapshot of one session's metadata.
type Info struct {
	// TTLRemaining is the time left before the session expires.
	TTLRemaining time.Duration
	// Turns is the number of admitted turns.
	Turns int
	// KVBytes estimates the KV-cache bytes of the last recorded turn.
	KVBytes int64
	// KVWarm is true once a turn of the session produced a token.
	KVWarm bool
	// TokensBudgetRemaining is what a new task of the session may still reserve: the budget
	// less the tokens charged to its ended tasks and those reserved by its admitted ones; nil
	// when no budget is configured.
	TokensBudgetRemaining *int64
	// Owner names the key the session belongs to.
	Owner string
	// Replica is the replica that holds the session's KV cache: where its last turn ran
	// ("" before any).
	Replica string
	// Gen tells this session from another of the same id before or after it (one deleted,
	// expired or evicted, then named again): never 0, and never the same twice in a Store.
	// What ends a task's part in its session (Settle, Unadmit, RecordTurn, SetReplica) names
	// the generation that admitted it, and leaves a later session of the id alone.
	Gen uint64
}

// Admitted reports whether the session is still the one a task was admitted into, by gen (its
// Info.Gen then) and owner (its key): not deleted, expired or evicted since, nor named again,
// perhaps by another key. A task's session budget and KV facts are shown only then.
func (i Info) Admitted(gen uint64, owner string) bool {
	return i.Gen == gen && i.Owner == owner
}

// Reservation is what Reserve granted a task of a session.
type Reservation struct {
	// Grant is the tokens reserved (0 without a budget).
	Grant int
	// Remaining is what is left to reserve after this grant; -1 without a budget.
	Remaining int64
	// Gen is the session's generation (Info.Gen), for the Settle that ends the reservation.
	Gen uint64
}

// TurnInfo is what a finished task reports to RecordTurn.
type TurnInfo struct {
	TokensIn  int
	TokensOut int
	// KVBytesPerToken is the KV-cache cost of one token on the pool that ran the turn.
	KVBytesPerToken int64
	// Warm marks the session KV-warm even when no token was produced (for example when the
	// engine reported prompt tokens served from its cache).
	Warm bool
}

type entry struct {
	id       string
	owner    string
	lastUsed time.Time
	turns    int
	kvBytes  int64
	kvWarm   bool
	budget   int64 // tokens not yet charged; meaningful only when Options.TokenBudget > 0
	reserved int64 // tokens reserved by admitted tasks not yet settled
	replica  string
	gen      uint64 // Info.Gen
}

// Store holds session metadata. Create it with New; it is safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger

	// newTicker is replaced by internal tests to drive Run deterministically.
	newTicker func(time.Duration) (<-chan time.Time, func())

	mu       sync.Mutex
	sessions map[string]*list.Element // of *entry
	lru      *list.List               // front: most recently used
	gens     uint64                   // the last generation given
}

// New returns an empty Store.
func New(opts Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{
		opts:     o,
		log:      o.Logger,
		sessions: make(map[string]*list.Element),
		lru:      list.New(),
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
	}, nil
}

func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: length %d, want 1..%d bytes", ErrInvalidID, len(id), MaxIDLen)
	}
	return nil
}

// Admit counts one turn for session id on behalf of the key named owner, creating the
// session (owned by owner) on first use or when the previous one expired, and restarting its
// TTL. Another key's session is ErrNotFound, exactly like an unknown one would be to that key,
// and is left untouched. When the session has already taken MaxTurns turns it returns a
// *TurnLimitError (matching ErrTurnLimit) and changes nothing.
func (s *Store) Admit(id, owner string) (Info, error) {
	if err := checkID(id); err != nil {
		return Info{}, err
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()

	e := s.liveLocked(id, now)
	switch {
	case e == nil:
		e = s.createLocked(id, owner, now)
	case e.owner != owner:
		return Info{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	case e.turns >= s.opts.MaxTurns:
		return Info{}, &TurnLimitError{Limit: s.opts.MaxTurns}
	}
	e.turns++
	s.touchLocked(e, now)
	return s.infoLocked(e, now), nil
}

// Reserve reserves up to want tokens of session id's budget for a task of the key named
// owner, before the task is admitted: the grant is want, or what is left when that is less.
// It creates the session (owned by owner, with no turns) when it is unknown or expired, so
// that the first key to name a session owns it even when two race. Another key's session is
// ErrNotFound. Without a configured budget it reserves nothing and returns grant 0 and
// remaining -1. A session with nothing left is a *BudgetError (matching ErrBudgetSpent).
// remaining is what is left to reserve after this grant. Every Reserve that succeeds is ended
// by one Settle with the grant and the generation.
func (s *Store) Reserve(id, owner string, want int) (Reservation, error) {
	if err := checkID(id); err != nil {
		return Reservation{}, err
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.liveLocked(id, now)
	switch {
	case e == nil:
		e = s.createLocked(id, owner, now)
	case e.owner != owner:
		return Reservation{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if s.opts.TokenBudget <= 0 {
		return Reservation{Remaining: -1, Gen: e.gen}, nil
	}
	left := e.budget - e.reserved
	if left <= 0 {
		err := &BudgetError{Pending: e.reserved}
		s.forgetUnusedLocked(e)
		return Reservation{}, err
	}
	grant := int(min(int64(max(want, 0)), left))
	e.reserved += int64(grant)
	return Reservation{Grant: grant, Remaining: left - int64(grant), Gen: e.gen}, nil
}

// Settle ends a Reserve of session id, generation gen, by the key named owner: used tokens are
// charged to its budget (never below zero) and the rest of granted returns. An unknown or
// expired session, one that is now another key's, and a later generation of the id are
// ignored: the reservation went with the session that gave it. A session that took no turn
// and holds no reservation any more (named only by refused tasks) is forgotten. Settle does
// not touch the TTL.
func (s *Store) Settle(id, owner string, gen uint64, granted, used int) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.liveLocked(id, now)
	if e == nil || e.owner != owner || e.gen != gen {
		return
	}
	// Never below zero, should a grant be settled that this session did not give (a caller
	// that settles twice): the budget stays consistent, if generous.
	e.reserved = max(e.reserved-int64(max(granted, 0)), 0)
	if s.opts.TokenBudget > 0 {
		e.budget = max(e.budget-int64(max(used, 0)), 0)
	}
	s.forgetUnusedLocked(e)
}

// Unadmit undoes one Admit of session id in generation gen: it removes one turn and leaves the
// TTL alone. A session left with no turns and no reservation is forgotten. Unknown or expired
// sessions, and a later generation of the id, are left alone.
func (s *Store) Unadmit(id string, gen uint64) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.liveLocked(id, now)
	if e == nil || e.gen != gen {
		return
	}
	e.turns--
	s.forgetUnusedLocked(e)
}

// createLocked adds a fresh session owned by owner, with the full budget and no turns.
func (s *Store) createLocked(id, owner string, now time.Time) *entry {
	s.makeRoomLocked(now)
	s.gens++
	e := &entry{id: id, owner: owner, budget: s.opts.TokenBudget, lastUsed: now, gen: s.gens}
	s.sessions[id] = s.lru.PushFront(e)
	return e
}

// forgetUnusedLocked removes a session that has no turn and no reservation: one that only
// refused tasks named, as if it had never been named.
func (s *Store) forgetUnusedLocked(e *entry) {
	if e.turns <= 0 && e.reserved == 0 {
		s.removeLocked(e.id)
	}
}

// RecordTurn records what a turn of session id, admitted in generation gen, produced (see the
// package doc) and restarts the session's TTL. It returns ErrNotFound when the session is
// unknown or has expired, or is a later generation of the id.
func (s *Store) RecordTurn(id string, gen uint64, t TurnInfo) (Info, error) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.genLocked(id, gen, now)
	if err != nil {
		return Info{}, err
	}
	if t.TokensOut > 0 || t.Warm {
		e.kvWarm = true
	}
	tokens := int64(max(t.TokensIn, 0)) + int64(max(t.TokensOut, 0))
	e.kvBytes = tokens * max(t.KVBytesPerToken, 0)
	s.touchLocked(e, now)
	return s.infoLocked(e, now), nil
}

// MarkWarm marks session id, admitted in generation gen, KV-warm: a turn produced its first
// token. The KV estimate stays the last turn's until RecordTurn records this one. It extends
// the TTL, and returns ErrNotFound as RecordTurn does.
func (s *Store) MarkWarm(id string, gen uint64) error {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.genLocked(id, gen, now)
	if err != nil {
		return err
	}
	e.kvWarm = true
	s.touchLocked(e, now)
	return nil
}

// genLocked is the live session id of generation gen, or ErrNotFound (unknown, expired, or a
// later generation of the id).
func (s *Store) genLocked(id string, gen uint64, now time.Time) (*entry, error) {
	e := s.liveLocked(id, now)
	if e == nil || e.gen != gen {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e, nil
}

// SetReplica records the replica a turn of session id, admitted in generation gen, was placed
// on (session affinity). It returns ErrNotFound when the session is unknown or has expired, or
// is a later generation of the id; it does not extend the TTL.
func (s *Store) SetReplica(id string, gen uint64, replica string) error {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.genLocked(id, gen, now)
	if err != nil {
		return err
	}
	e.replica = replica
	return nil
}

// Get returns the metadata of session id; false when it is unknown or has expired (an
// expired session is evicted). Get does not extend the TTL.
func (s *Store) Get(id string) (Info, bool) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.liveLocked(id, now)
	if e == nil {
		return Info{}, false
	}
	return s.infoLocked(e, now), true
}

// Delete forgets session id if the key named owner owns it. Deleting an unknown session, or
// another key's, changes nothing and is not an error: to that key both look the same.
func (s *Store) Delete(id, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.sessions[id]; ok && el.Value.(*entry).owner == owner {
		s.removeLocked(id)
	}
}

// Len returns the number of sessions held, including expired ones not yet evicted.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Sweep evicts every expired session and returns how many it evicted.
func (s *Store) Sweep() int {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked(now)
}

// Run evicts expired sessions every Options.SweepInterval until ctx is done, then returns
// ctx's error.
func (s *Store) Run(ctx context.Context) error {
	tick, stop := s.newTicker(s.opts.SweepInterval)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			if n := s.Sweep(); n > 0 {
				s.log.DebugContext(ctx, "evicted expired sessions", "count", n)
			}
		}
	}
}

// liveLocked returns the unexpired entry for id, evicting it when it has expired.
func (s *Store) liveLocked(id string, now time.Time) *entry {
	el, ok := s.sessions[id]
	if !ok {
		return nil
	}
	e := el.Value.(*entry)
	if s.expired(e, now) {
		s.removeLocked(id)
		return nil
	}
	return e
}

// expired: the TTL passed since the session's last use, and no admitted task holds a
// reservation of its budget. A session whose task is still queued or running is in use: were
// it dropped, the next task naming it would start a new one with the whole budget while the
// first still holds its grant.
func (s *Store) expired(e *entry, now time.Time) bool {
	return e.reserved == 0 && !now.Before(e.lastUsed.Add(s.opts.TTL))
}

func (s *Store) touchLocked(e *entry, now time.Time) {
	e.lastUsed = now
	s.lru.MoveToFront(s.sessions[e.id])
}

func (s *Store) removeLocked(id string) {
	if el, ok := s.sessions[id]; ok {
		s.lru.Remove(el)
		delete(s.sessions, id)
	}
}

// sweepLocked evicts expired sessions from the back of the LRU list. The list is ordered by
// last use and the TTL is uniform, so it stops at the first live session that holds no
// reservation; those that do (their tasks still run) are stepped over.
func (s *Store) sweepLocked(now time.Time) int {
	n := 0
	for el := s.lru.Back(); el != nil; {
		e := el.Value.(*entry)
		prev := el.Prev()
		switch {
		case e.reserved > 0:
		case s.expired(e, now):
			s.removeLocked(e.id)
			n++
		default:
			return n
		}
		el = prev
	}
	return n
}

// makeRoomLocked ensures there is room for one more session, evicting the least recently used
// ones that hold no reservation. Sessions whose tasks hold a grant of their budget are never
// evicted (see expired): while only those are left, the store holds more than MaxSessions, as
// many more as admitted tasks, which the queue's capacity bounds.
func (s *Store) makeRoomLocked(now time.Time) {
	if len(s.sessions) < s.opts.MaxSessions {
		return
	}
	s.sweepLocked(now)
	for el := s.lru.Back(); el != nil && len(s.sessions) >= s.opts.MaxSessions; {
		e := el.Value.(*entry)
		prev := el.Prev()
		if e.reserved == 0 {
			s.removeLocked(e.id)
			s.log.Debug("evicted least-recently-used session", "max_sessions", s.opts.MaxSessions,
				"idle", now.Sub(e.lastUsed))
		}
		el = prev
	}
}

func (s *Store) infoLocked(e *entry, now time.Time) Info {
	info := Info{
		TTLRemaining: max(e.lastUsed.Add(s.opts.TTL).Sub(now), 0),
		Turns:        e.turns,
		KVBytes:      e.kvBytes,
		KVWarm:       e.kvWarm,
		Replica:      e.replica,
		Owner:        e.owner,
		Gen:          e.gen,
	}
	if s.opts.TokenBudget > 0 {
		b := max(e.budget-e.reserved, 0)
		info.TokensBudgetRemaining = &b
	}
	return info
}
