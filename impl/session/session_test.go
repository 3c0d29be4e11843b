package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(t *testing.T, o Options) (*Store, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	o.Now = clk.Now
	s, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, clk
}

// owner names the key of the tests that use one key.
const owner = "k"

func mustAdmit(t *testing.T, s *Store, id string) Info {
	t.Helper()
	info, err := s.Admit(id, owner)
	if err != nil {
		t.Fatalf("Admit(%q): %v", id, err)
	}
	return info
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"negative ttl", Options{TTL: -1}, false},
		{"negative turns", Options{MaxTurns: -1}, false},
		{"negative sessions", Options{MaxSessions: -1}, false},
		{"negative budget", Options{TokenBudget: -1}, false},
		{"negative sweep", Options{SweepInterval: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.o)
			if (err == nil) != tt.ok {
				t.Fatalf("New(%+v) error = %v, want ok=%v", tt.o, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %v does not match ErrInvalidOptions", err)
			}
		})
	}
}

func TestAdmitCreates(t *testing.T) {
	s, _ := newStore(t, Options{})
	info := mustAdmit(t, s, "a")
	want := Info{TTLRemaining: DefaultTTL, Turns: 1, Owner: owner, Gen: 1}
	if info != want {
		t.Fatalf("Admit info = %+v, want %+v", info, want)
	}
	got, ok := s.Get("a")
	if !ok || got != want {
		t.Fatalf("Get = %+v, %v; want %+v, true", got, ok, want)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
}

func TestInvalidID(t *testing.T) {
	s, _ := newStore(t, Options{})
	for _, id := range []string{"", strings.Repeat("x", MaxIDLen+1)} {
		t.Run(fmt.Sprintf("len%d", len(id)), func(t *testing.T) {
			if _, err := s.Admit(id, owner); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("Admit error = %v, want ErrInvalidID", err)
			}
		})
	}
}

func TestTurnLimit(t *testing.T) {
	tests := []struct {
		name     string
		maxTurns int
		wantMsg  string
	}{
		{"default", 0, "session has reached its limit of 8 turns"},
		{"three", 3, "session has reached its limit of 3 turns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newStore(t, Options{MaxTurns: tt.maxTurns})
			limit := s.opts.MaxTurns
			for i := 1; i <= limit; i++ {
				if info := mustAdmit(t, s, "a"); info.Turns != i {
					t.Fatalf("turn %d: Turns = %d", i, info.Turns)
				}
			}
			before, _ := s.Get("a")
			clk.Advance(time.Minute)
			_, err := s.Admit("a", owner)
			if !errors.Is(err, ErrTurnLimit) {
				t.Fatalf("Admit error = %v, want ErrTurnLimit", err)
			}
			if err.Error() != tt.wantMsg {
				t.Fatalf("message = %q, want %q", err.Error(), tt.wantMsg)
			}
			var tle *TurnLimitError
			if !errors.As(err, &tle) || tle.Limit != limit {
				t.Fatalf("error %#v is not a TurnLimitError{%d}", err, limit)
			}
			after, _ := s.Get("a")
			if after.Turns != before.Turns || after.TTLRemaining != before.TTLRemaining-time.Minute {
				t.Fatalf("refused Admit changed state: before %+v after %+v", before, after)
			}
		})
	}
}

func TestUnadmit(t *testing.T) {
	t.Run("rolls back one turn", func(t *testing.T) {
		s, _ := newStore(t, Options{MaxTurns: 2})
		mustAdmit(t, s, "a")
		mustAdmit(t, s, "a")
		s.Unadmit("a", genOf(s, "a"))
		if info, ok := s.Get("a"); !ok || info.Turns != 1 {
			t.Fatalf("Get = %+v, %v; want 1 turn", info, ok)
		}
		// The rolled-back turn is available again.
		mustAdmit(t, s, "a")
	})
	t.Run("forgets a session with no turns", func(t *testing.T) {
		s, _ := newStore(t, Options{})
		mustAdmit(t, s, "a")
		s.Unadmit("a", genOf(s, "a"))
		if _, ok := s.Get("a"); ok {
			t.Fatal("session still known after its only turn was undone")
		}
		if s.Len() != 0 {
			t.Fatalf("Len = %d", s.Len())
		}
	})
	t.Run("unknown is ignored", func(t *testing.T) {
		s, _ := newStore(t, Options{})
		s.Unadmit("nope", genOf(s, "nope"))
		if s.Len() != 0 {
			t.Fatalf("Len = %d", s.Len())
		}
	})
}

func TestExpiry(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration
		live    bool
	}{
		{"just before", DefaultTTL - time.Nanosecond, true},
		{"at ttl", DefaultTTL, false},
		{"after", DefaultTTL + time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newStore(t, Options{})
			mustAdmit(t, s, "a")
			clk.Advance(tt.advance)
			info, ok := s.Get("a")
			if ok != tt.live {
				t.Fatalf("Get ok = %v, want %v (%+v)", ok, tt.live, info)
			}
			if !tt.live && s.Len() != 0 {
				t.Fatalf("expired session not evicted on access: Len = %d", s.Len())
			}
			if tt.live && info.TTLRemaining != DefaultTTL-tt.advance {
				t.Fatalf("TTLRemaining = %s", info.TTLRemaining)
			}
		})
	}
}

func TestExpiredAdmitStartsFresh(t *testing.T) {
	s, clk := newStore(t, Options{MaxTurns: 2, TokenBudget: 100})
	mustAdmit(t, s, "a")
	mustAdmit(t, s, "a")
	if _, err := s.RecordTurn("a", genOf(s, "a"), TurnInfo{TokensIn: 1, TokensOut: 10, KVBytesPerToken: 2}); err != nil {
		t.Fatal(err)
	}
	s.Settle("a", owner, genOf(s, "a"), 0, 10)
	gen := genOf(s, "a")
	clk.Advance(DefaultTTL)
	if _, err := s.RecordTurn("a", gen, TurnInfo{TokensOut: 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RecordTurn on expired = %v, want ErrNotFound", err)
	}
	info := mustAdmit(t, s, "a")
	want := Info{TTLRemaining: DefaultTTL, Turns: 1, TokensBudgetRemaining: info.TokensBudgetRemaining, Owner: owner, Gen: gen + 1}
	if info != want || *info.TokensBudgetRemaining != 100 {
		t.Fatalf("fresh session = %+v (budget %d), want %+v (budget 100)", info, *info.TokensBudgetRemaining, want)
	}
}

func TestSlidingTTL(t *testing.T) {
	s, clk := newStore(t, Options{TTL: 10 * time.Second})
	mustAdmit(t, s, "a")
	clk.Advance(8 * time.Second)
	// Get does not slide the TTL.
	if info, _ := s.Get("a"); info.TTLRemaining != 2*time.Second {
		t.Fatalf("TTLRemaining = %s", info.TTLRemaining)
	}
	mustAdmit(t, s, "a") // slides
	clk.Advance(8 * time.Second)
	if _, err := s.RecordTurn("a", genOf(s, "a"), TurnInfo{}); err != nil { // slides
		t.Fatal(err)
	}
	clk.Advance(8 * time.Second)
	info, ok := s.Get("a")
	if !ok || info.TTLRemaining != 2*time.Second {
		t.Fatalf("Get = %+v, %v", info, ok)
	}
	clk.Advance(2 * time.Second)
	if _, ok := s.Get("a"); ok {
		t.Fatal("session alive after TTL")
	}
}

func TestRecordTurn(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name   string
		budget int64
		turns  []TurnInfo
		want   Info
	}{
		{
			name:  "no tokens stays cold",
			turns: []TurnInfo{{TokensIn: 5, KVBytesPerToken: 10}},
			want:  Info{Turns: 1, KVBytes: 50},
		},
		{
			name:  "tokens make it warm",
			turns: []TurnInfo{{TokensIn: 5, TokensOut: 3, KVBytesPerToken: 10}},
			want:  Info{Turns: 1, KVBytes: 80, KVWarm: true},
		},
		{
			name:  "warm flag",
			turns: []TurnInfo{{TokensIn: 5, Warm: true}},
			want:  Info{Turns: 1, KVWarm: true},
		},
		{
			name:  "warmth sticks, kv bytes are the last turn's",
			turns: []TurnInfo{{TokensIn: 5, TokensOut: 3, KVBytesPerToken: 10}, {TokensIn: 2, KVBytesPerToken: 7}},
			want:  Info{Turns: 1, KVBytes: 14, KVWarm: true},
		},
		{
			// The budget is charged by Settle, which ends the task's reservation, not here.
			name:   "recording spends no budget",
			budget: 100,
			turns:  []TurnInfo{{TokensOut: 30}, {TokensOut: 20}},
			want:   Info{Turns: 1, KVWarm: true, TokensBudgetRemaining: i64(100)},
		},
		{
			name:   "negative counts are ignored",
			budget: 10,
			turns:  []TurnInfo{{TokensIn: -5, TokensOut: -3, KVBytesPerToken: -1}},
			want:   Info{Turns: 1, TokensBudgetRemaining: i64(10)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t, Options{TokenBudget: tt.budget})
			mustAdmit(t, s, "a")
			for _, turn := range tt.turns {
				if _, err := s.RecordTurn("a", genOf(s, "a"), turn); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := s.Get("a")
			if !ok {
				t.Fatal("session gone")
			}
			tt.want.TTLRemaining, tt.want.Owner, tt.want.Gen = DefaultTTL, owner, 1
			if (got.TokensBudgetRemaining == nil) != (tt.want.TokensBudgetRemaining == nil) ||
				(got.TokensBudgetRemaining != nil && *got.TokensBudgetRemaining != *tt.want.TokensBudgetRemaining) {
				t.Fatalf("budget = %v, want %v", deref(got.TokensBudgetRemaining), deref(tt.want.TokensBudgetRemaining))
			}
			got.TokensBudgetRemaining, tt.want.TokensBudgetRemaining = nil, nil
			if got != tt.want {
				t.Fatalf("Info = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestRecordTurnUnknown(t *testing.T) {
	s, _ := newStore(t, Options{})
	if _, err := s.RecordTurn("nope", genOf(s, "nope"), TurnInfo{TokensOut: 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("error = %v, want ErrNotFound", err)
	}
}

func TestDeleteIdempotent(t *testing.T) {
	s, _ := newStore(t, Options{})
	mustAdmit(t, s, "a")
	for i := range 3 {
		s.Delete("a", owner)
		if _, ok := s.Get("a"); ok {
			t.Fatalf("delete %d: session still there", i)
		}
	}
	s.Delete("never", owner)
	if s.Len() != 0 {
		t.Fatalf("Len = %d", s.Len())
	}
}

func TestLRUBound(t *testing.T) {
	s, clk := newStore(t, Options{MaxSessions: 3})
	for _, id := range []string{"a", "b", "c"} {
		mustAdmit(t, s, id)
		clk.Advance(time.Second)
	}
	// Using "a" makes "b" the least recently used.
	mustAdmit(t, s, "a")
	clk.Advance(time.Second)
	mustAdmit(t, s, "d")
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	for id, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok := s.Get(id); ok != want {
			t.Errorf("Get(%q) ok = %v, want %v", id, ok, want)
		}
	}
}

func TestFullStoreDropsExpiredFirst(t *testing.T) {
	s, clk := newStore(t, Options{MaxSessions: 2, TTL: 10 * time.Second})
	mustAdmit(t, s, "a")
	clk.Advance(5 * time.Second)
	mustAdmit(t, s, "b")
	clk.Advance(6 * time.Second) // a expired, b live
	mustAdmit(t, s, "c")
	if _, ok := s.Get("b"); !ok {
		t.Fatal("live session evicted while an expired one was available")
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d", s.Len())
	}
}

func TestSweep(t *testing.T) {
	s, clk := newStore(t, Options{TTL: 10 * time.Second})
	mustAdmit(t, s, "a")
	clk.Advance(4 * time.Second)
	mustAdmit(t, s, "b")
	clk.Advance(4 * time.Second)
	mustAdmit(t, s, "c")
	mustAdmit(t, s, "a") // a is now the newest
	clk.Advance(7 * time.Second)
	if n := s.Sweep(); n != 1 {
		t.Fatalf("Sweep evicted %d, want 1 (b)", n)
	}
	if _, ok := s.Get("b"); ok {
		t.Fatal("b survived the sweep")
	}
	clk.Advance(time.Hour)
	if n := s.Sweep(); n != 2 || s.Len() != 0 {
		t.Fatalf("Sweep evicted %d, Len %d", n, s.Len())
	}
}

func TestRunSweeps(t *testing.T) {
	s, clk := newStore(t, Options{TTL: time.Second})
	ticks := make(chan time.Time) // unbuffered: a send completes only when Run receives it
	stopped := make(chan struct{})
	s.newTicker = func(time.Duration) (<-chan time.Time, func()) {
		return ticks, func() { close(stopped) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	mustAdmit(t, s, "a")
	mustAdmit(t, s, "b")
	clk.Advance(2 * time.Second)
	ticks <- time.Time{}
	ticks <- time.Time{} // received only after the first sweep finished
	if s.Len() != 0 {
		t.Fatalf("Len = %d after sweep", s.Len())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	<-stopped
}

func TestRunRealTicker(t *testing.T) {
	s, err := New(Options{SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	s, clk := newStore(t, Options{MaxSessions: 50, MaxTurns: 1000, TokenBudget: 1 << 40})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = s.Run(ctx)
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := fmt.Sprintf("s%d", (w*7+i)%80)
				if _, err := s.Admit(id, owner); err != nil && !errors.Is(err, ErrTurnLimit) {
					t.Error(err)
					return
				}
				if r, err := s.Reserve(id, owner, 2); err == nil {
					s.Settle(id, owner, r.Gen, r.Grant, 1)
				}
				_, _ = s.RecordTurn(id, genOf(s, id), TurnInfo{TokensIn: i, TokensOut: 1, KVBytesPerToken: 3})
				s.Get(id)
				if i%10 == 0 {
					s.Unadmit(id, genOf(s, id))
				}
				if i%17 == 0 {
					s.Delete(id, owner)
				}
				if i%50 == 0 {
					clk.Advance(time.Second)
					s.Sweep()
				}
				s.Len()
			}
		}()
	}
	wg.Wait()
	cancel()
	<-runDone
	if n := s.Len(); n > 50 {
		t.Fatalf("Len = %d exceeds MaxSessions", n)
	}
}

// genOf is session id's generation now (0: none).
func genOf(s *Store, id string) uint64 {
	info, _ := s.Get(id)
	return info.Gen
}

// TestNamedAgainIsANewSession: a session deleted, expired or evicted while its task runs, then
// named again, is another generation: what the old task does at its end (settle its grant,
// record its turn, set its replica, undo its admission) leaves the new session as it was. (A
// task holding a grant of the budget keeps its session from expiring and from eviction, see
// TestReservedSessionIsKept: those two cases are a task without one.)
func TestNamedAgainIsANewSession(t *testing.T) {
	tests := []struct {
		name    string
		reserve bool                           // the old task holds a grant of the budget
		end     func(s *Store, clk *fakeClock) // ends session "a"
	}{
		{"deleted", true, func(s *Store, _ *fakeClock) { s.Delete("a", owner) }},
		{"expired", false, func(_ *Store, clk *fakeClock) { clk.Advance(DefaultTTL) }},
		{"evicted", false, func(s *Store, _ *fakeClock) { mustAdmit(t, s, "b") }}, // MaxSessions 1
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newStore(t, Options{TokenBudget: 100, MaxSessions: 1})
			old := mustAdmit(t, s, "a")
			var oldRes Reservation
			if tt.reserve {
				var err error
				oldRes, err = s.Reserve("a", owner, 30)
				if err != nil || oldRes.Gen != old.Gen {
					t.Fatalf("Reserve = %+v, %v; want generation %d", oldRes, err, old.Gen)
				}
			}
			tt.end(s, clk)
			s.Delete("b", owner)
			again := mustAdmit(t, s, "a")
			res, err := s.Reserve("a", owner, 40)
			if err != nil || again.Gen == old.Gen || res.Gen != again.Gen {
				t.Fatalf("named again: generation %d, reserved %+v, %v; the old one was %d", again.Gen, res, err, old.Gen)
			}
			want, _ := s.Get("a")

			// The old task ends.
			if tt.reserve {
				s.Settle("a", owner, oldRes.Gen, oldRes.Grant, 10)
			}
			if _, err := s.RecordTurn("a", old.Gen, TurnInfo{TokensOut: 10, KVBytesPerToken: 2}); !errors.Is(err, ErrNotFound) {
				t.Errorf("RecordTurn of the old generation = %v, want ErrNotFound", err)
			}
			if err := s.SetReplica("a", old.Gen, "r1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("SetReplica of the old generation = %v, want ErrNotFound", err)
			}
			s.Unadmit("a", old.Gen)
			if got, ok := s.Get("a"); !ok || got.Turns != 1 || *got.TokensBudgetRemaining != 60 || got.KVWarm || got.Replica != "" ||
				got.Gen != want.Gen {
				t.Fatalf("the new session after the old task's end: %+v, %v; want %+v (60 tokens left)", got, ok, want)
			}
			// The new task's own end still counts.
			s.Settle("a", owner, res.Gen, res.Grant, 5)
			if got, _ := s.Get("a"); *got.TokensBudgetRemaining != 95 {
				t.Fatalf("after the new task's end: %d tokens left, want 95", *got.TokensBudgetRemaining)
			}
		})
	}
}

// TestReservedSessionIsKept: a session whose task holds a grant of its budget (queued or
// running) neither expires nor is evicted at MaxSessions: dropped, the next task naming it
// would start a new session with the whole budget while the first task still holds its grant,
// and the two would have more than the budget. The store holds more than MaxSessions while
// only such sessions are left; once the grant is settled, the session goes as any other.
func TestReservedSessionIsKept(t *testing.T) {
	s, clk := newStore(t, Options{TokenBudget: 100, MaxSessions: 1})
	mustAdmit(t, s, "a")
	res, err := s.Reserve("a", owner, 64)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * DefaultTTL) // a task queued longer than the TTL
	s.Sweep()
	mustAdmit(t, s, "b") // the store is full: "a" would be the one to evict
	info, ok := s.Get("a")
	if !ok || info.Gen != res.Gen || *info.TokensBudgetRemaining != 36 {
		t.Fatalf("session a while its task holds 64 tokens: %+v, %v; want it kept with 36 left", info, ok)
	}
	if again, err := s.Reserve("a", owner, 64); err != nil || again.Grant != 36 || again.Gen != res.Gen {
		t.Fatalf("a second task of session a: %+v, %v; want the 36 left of the same session", again, err)
	}
	if n := s.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2 (a held by its tasks, b)", n)
	}
	s.Settle("a", owner, res.Gen, 64, 10)
	s.Settle("a", owner, res.Gen, 36, 0)
	clk.Advance(time.Second)
	if n := s.Sweep(); n != 1 { // a's TTL passed long ago: it goes once its tasks ended
		t.Fatalf("Sweep after the tasks ended evicted %d, want 1 (a)", n)
	}
	if _, ok := s.Get("a"); ok {
		t.Fatal("session a outlived its TTL after its tasks ended")
	}
}

// TestMarkWarm: a turn's first token marks the session warm and extends its TTL, leaving the
// KV estimate the last recorded turn's; a later generation of the id is not marked.
func TestMarkWarm(t *testing.T) {
	s, clk := newStore(t, Options{TTL: time.Minute})
	info := mustAdmit(t, s, "a")
	if _, err := s.RecordTurn("a", info.Gen, TurnInfo{TokensIn: 5, KVBytesPerToken: 10}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(50 * time.Second)
	if err := s.MarkWarm("a", info.Gen); err != nil {
		t.Fatal(err)
	}
	clk.Advance(50 * time.Second) // past the TTL from the turn, within it from the mark
	got, ok := s.Get("a")
	if !ok || !got.KVWarm || got.KVBytes != 50 {
		t.Fatalf("after the mark: %+v, %v; want warm with the last turn's 50 bytes", got, ok)
	}
	if err := s.MarkWarm("a", info.Gen+1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a mark of another generation: %v, want ErrNotFound", err)
	}
}
