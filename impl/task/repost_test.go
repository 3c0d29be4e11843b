package task

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/session"
)

// twinSessions holds the first Admit, after it took its turn, until the test releases it: one
// of two posts of one task, racing past Submit's check for a known id.
type twinSessions struct {
	*session.Store
	n        atomic.Int32
	entered  chan struct{} // closed once the first Admit took its turn
	release  chan struct{}
	secondIn chan struct{} // closed when a second Admit comes in
}

func (s *twinSessions) Admit(id, owner string) (session.Info, error) {
	switch s.n.Add(1) {
	case 1:
		info, err := s.Store.Admit(id, owner)
		close(s.entered)
		<-s.release
		return info, err
	case 2:
		close(s.secondIn)
	}
	return s.Store.Admit(id, owner)
}

// TestConcurrentRepostAtTheTurnLimit: two concurrent posts of one task are one task and one
// turn. With max_turns 1, the second post, had it gone on while the first was being admitted,
// would meet the turn the first took and be refused (409 CONFLICT) for a task that stands
// admitted. It waits for the first and is answered with its task.
func TestConcurrentRepostAtTheTurnLimit(t *testing.T) {
	ss, err := session.New(session.Options{MaxTurns: 1})
	if err != nil {
		t.Fatal(err)
	}
	tw := &twinSessions{Store: ss, entered: make(chan struct{}), release: make(chan struct{}), secondIn: make(chan struct{})}
	h := newHarnessWith(t, 8, 1, admission.Reject, func(o *Options) { o.Sessions = tw })
	s := spec(admission.Interactive)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	post := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.svc.Submit(h.ctx, s)
		}()
	}
	post(0)
	<-tw.entered
	post(1)
	// Released once the second post waits for the first, or (the race) took its own turn.
	waitFor(t, func() bool {
		select {
		case <-tw.secondIn:
			return true
		default:
		}
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		return h.svc.admitting[s.ID] != nil
	})
	close(tw.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("post %d of one task (session max_turns 1, the other post admitted it): %v, want its admission", i, err)
		}
	}
	if info, ok := ss.Get(s.SessionID); !ok || info.Turns != 1 {
		t.Errorf("session after two posts of one task: %+v %v, want 1 turn", info, ok)
	}
}

// TestNonFiniteWeightRefused: a task whose key's weight is not a number is refused at
// admission: its admission record could not be encoded, and the journal would hold an empty
// one that no restart could read.
func TestNonFiniteWeightRefused(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	for _, w := range []float64{math.NaN(), math.Inf(1)} {
		s := spec(admission.Interactive)
		s.Weight = w
		if _, err := h.svc.Submit(h.ctx, s); !errors.Is(err, ErrInvalid) {
			t.Errorf("weight %v: %v, want ErrInvalid", w, err)
		}
	}
}
