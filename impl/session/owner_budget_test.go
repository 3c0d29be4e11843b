package session

import (
	"errors"
	"sync"
	"testing"
)

// TestOwnership: a session belongs to the key whose task first named it (by Reserve or
// Admit); to another key every operation sees it as unknown, and changes nothing.
func TestOwnership(t *testing.T) {
	const alice, bob = "alice", "bob"
	tests := []struct {
		name string
		// claim creates the session as alice.
		claim func(s *Store) error
	}{
		{"claimed by Admit", func(s *Store) error { _, err := s.Admit("a", alice); return err }},
		{"claimed by Reserve", func(s *Store) error { _, err := s.Reserve("a", alice, 5); return err }},
	}
	ops := []struct {
		name string
		// do runs the operation as bob and reports whether bob was refused as for an unknown
		// session.
		do func(t *testing.T, s *Store) bool
	}{
		{"admit", func(t *testing.T, s *Store) bool {
			_, err := s.Admit("a", bob)
			return errors.Is(err, ErrNotFound)
		}},
		{"reserve", func(t *testing.T, s *Store) bool {
			_, err := s.Reserve("a", bob, 5)
			return errors.Is(err, ErrNotFound)
		}},
		{"get", func(t *testing.T, s *Store) bool {
			info, ok := s.Get("a")
			return ok && info.Owner == alice // the handler compares Owner with the caller's key
		}},
		{"settle", func(t *testing.T, s *Store) bool {
			s.Settle("a", bob, genOf(s, "a"), 5, 50) // as if bob's task of an id now alice's ended
			return true                              // unchanged is checked below
		}},
		{"delete", func(t *testing.T, s *Store) bool {
			s.Delete("a", bob)
			_, ok := s.Get("a")
			return ok
		}},
	}
	for _, c := range tests {
		for _, op := range ops {
			t.Run(c.name+"/"+op.name, func(t *testing.T) {
				s, _ := newStore(t, Options{TokenBudget: 100})
				if err := c.claim(s); err != nil {
					t.Fatal(err)
				}
				before, _ := s.Get("a")
				if !op.do(t, s) {
					t.Fatalf("bob's %s was not refused as for an unknown session", op.name)
				}
				after, ok := s.Get("a")
				if !ok || *after.TokensBudgetRemaining != *before.TokensBudgetRemaining {
					t.Fatalf("bob's %s changed alice's budget: %d, then %d", op.name, *before.TokensBudgetRemaining, *after.TokensBudgetRemaining)
				}
				after.TokensBudgetRemaining, before.TokensBudgetRemaining = nil, nil
				if after != before {
					t.Fatalf("bob's %s changed alice's session: %+v, then %+v (%v)", op.name, before, after, ok)
				}
				// Alice still uses it.
				if _, err := s.Admit("a", alice); err != nil {
					t.Fatalf("alice after bob's %s: %v", op.name, err)
				}
				s.Delete("a", alice)
				if _, ok := s.Get("a"); ok {
					t.Fatal("alice's delete left her session")
				}
			})
		}
	}
}

// TestExpiredSessionIsAnyonesAgain: an expired session is gone; the next key to name it owns
// the new one.
func TestExpiredSessionIsAnyonesAgain(t *testing.T) {
	s, clk := newStore(t, Options{})
	if _, err := s.Admit("a", "alice"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultTTL)
	info, err := s.Admit("a", "bob")
	if err != nil || info.Owner != "bob" || info.Turns != 1 {
		t.Fatalf("bob after alice's session expired: %+v %v", info, err)
	}
}

// TestReserveSettle walks one session's budget through reservations and settlements.
func TestReserveSettle(t *testing.T) {
	type step struct {
		op         string // reserve, settle, admit, unadmit
		want, used int    // reserve: want; settle: grant (in want) and used
		grant      int
		remaining  int64
		err        error
		// after: TokensBudgetRemaining afterwards; -1: the session is gone.
		after int64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"grant all, settle part", []step{
			{op: "reserve", want: 30, grant: 30, remaining: 70, after: 70},
			{op: "admit", after: 70},
			{op: "settle", want: 30, used: 10, after: 90},
		}},
		{"grant what is left", []step{
			{op: "reserve", want: 80, grant: 80, remaining: 20, after: 20},
			{op: "admit", after: 20},
			{op: "reserve", want: 50, grant: 20, remaining: 0, after: 0},
			{op: "admit", after: 0},
			{op: "reserve", want: 1, err: ErrBudgetSpent, after: 0},
			{op: "settle", want: 80, used: 80, after: 0},
			{op: "settle", want: 20, used: 5, after: 15},
			{op: "reserve", want: 40, grant: 15, remaining: 0, after: 0},
		}},
		{"use beyond the grant floors at zero", []step{
			{op: "reserve", want: 10, grant: 10, remaining: 90, after: 90},
			{op: "admit", after: 90},
			{op: "settle", want: 10, used: 500, after: 0},
			{op: "reserve", want: 1, err: ErrBudgetSpent, after: 0},
		}},
		{"a refused first task leaves no session", []step{
			{op: "reserve", want: 10, grant: 10, remaining: 90, after: 90},
			{op: "settle", want: 10, used: 0, after: -1},
		}},
		{"an unadmitted task's reservation keeps the session", []step{
			{op: "reserve", want: 10, grant: 10, remaining: 90, after: 90},
			{op: "reserve", want: 10, grant: 10, remaining: 80, after: 80},
			{op: "admit", after: 80},
			{op: "unadmit", after: 80},
			{op: "settle", want: 10, after: 90},
			{op: "settle", want: 10, after: -1},
		}},
		{"settling more than is reserved floors at zero", []step{
			{op: "admit", after: 100},
			{op: "reserve", want: 10, grant: 10, remaining: 90, after: 90},
			{op: "settle", want: 50, used: 20, after: 80},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t, Options{TokenBudget: 100})
			for i, st := range tt.steps {
				switch st.op {
				case "reserve":
					r, err := s.Reserve("a", owner, st.want)
					g, rem := r.Grant, r.Remaining
					if !errors.Is(err, st.err) || (st.err == nil && err != nil) {
						t.Fatalf("step %d: Reserve err %v, want %v", i, err, st.err)
					}
					var be *BudgetError
					if st.err != nil && !errors.As(err, &be) {
						t.Fatalf("step %d: Reserve err %T, want *BudgetError", i, err)
					}
					if st.err == nil && (g != st.grant || rem != st.remaining) {
						t.Fatalf("step %d: Reserve = %d, %d; want %d, %d", i, g, rem, st.grant, st.remaining)
					}
				case "settle":
					s.Settle("a", owner, genOf(s, "a"), st.want, st.used)
				case "admit":
					mustAdmit(t, s, "a")
				case "unadmit":
					s.Unadmit("a", genOf(s, "a"))
				}
				info, ok := s.Get("a")
				switch {
				case st.after < 0 && ok:
					t.Fatalf("step %d: session still there: %+v", i, info)
				case st.after >= 0 && (!ok || info.TokensBudgetRemaining == nil || *info.TokensBudgetRemaining != st.after):
					t.Fatalf("step %d: remaining %v (%v), want %d", i, deref(info.TokensBudgetRemaining), ok, st.after)
				}
			}
		})
	}
}

// TestReserveWithoutBudget: without a budget Reserve only claims the session.
func TestReserveWithoutBudget(t *testing.T) {
	s, _ := newStore(t, Options{})
	r, err := s.Reserve("a", owner, 50)
	g, rem := r.Grant, r.Remaining
	if err != nil || g != 0 || rem != -1 {
		t.Fatalf("Reserve = %d, %d, %v; want 0, -1, nil", g, rem, err)
	}
	if info, ok := s.Get("a"); !ok || info.Owner != owner || info.TokensBudgetRemaining != nil {
		t.Fatalf("claimed session = %+v, %v", info, ok)
	}
	s.Settle("a", owner, genOf(s, "a"), 0, 0) // the task was refused
	if _, ok := s.Get("a"); ok {
		t.Fatal("a session named only by a refused task is still there")
	}
}

// TestConcurrentReservesNeverExceed: tasks of one session reserving at once are never granted
// more than the budget together, and every token comes back once they settle unused.
func TestConcurrentReservesNeverExceed(t *testing.T) {
	const budget = 1000
	s, _ := newStore(t, Options{TokenBudget: budget, MaxTurns: 1 << 20})
	mustAdmit(t, s, "a")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted []int
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				r, err := s.Reserve("a", owner, 7)
				g := r.Grant
				if errors.Is(err, ErrBudgetSpent) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				granted = append(granted, g)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, g := range granted {
		total += g
	}
	if total != budget {
		t.Fatalf("granted %d tokens in all, want exactly the budget %d", total, budget)
	}
	for _, g := range granted {
		s.Settle("a", owner, genOf(s, "a"), g, 0)
	}
	if info, _ := s.Get("a"); *info.TokensBudgetRemaining != budget {
		t.Fatalf("after settling unused: remaining %d, want %d", *info.TokensBudgetRemaining, budget)
	}
}
