package tenant

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestStreams(t *testing.T) {
	limited := &Key{Name: "alice", MaxStreams: 2}
	unlimited := &Key{Name: "bob"}
	seen := map[string]int{}
	s := NewStreams(func(name string, open int) { seen[name] = open })
	for _, step := range []struct {
		name   string
		k      *Key
		close  bool
		refuse bool
		open   int // the key's count after the step
	}{
		{"first", limited, false, false, 1},
		{"second", limited, false, false, 2},
		{"third refused", limited, false, true, 2},
		{"another key is counted apart", unlimited, false, false, 1},
		{"no limit: no refusal", unlimited, false, false, 2},
		{"one closes", limited, true, false, 1},
		{"a place again", limited, false, false, 2},
		{"refused again", limited, false, true, 2},
		{"closes", limited, true, false, 1},
		{"closes to none", limited, true, false, 0},
	} {
		var err error
		if step.close {
			s.Close(step.k.Name)
		} else {
			err = s.Open(step.k)
		}
		var le *LimitError
		switch {
		case step.refuse && !errors.As(err, &le):
			t.Fatalf("%s: err %v, want a *LimitError", step.name, err)
		case step.refuse && (le.Limit != LimitStreams || le.Max != 2 || le.RetryAfter != StreamRetry || le.Key != "alice" ||
			!strings.Contains(le.Error(), "2 streams open") || !strings.Contains(le.Error(), "max_streams")):
			t.Fatalf("%s: %+v %q", step.name, le, le.Error())
		case !step.refuse && err != nil:
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := s.open[step.k.Name]; got != step.open || seen[step.k.Name] != step.open && !step.refuse {
			t.Fatalf("%s: count %d, observed %d, want %d", step.name, got, seen[step.k.Name], step.open)
		}
	}
	if len(s.open) != 1 {
		t.Errorf("keys with nothing open are kept: %v", s.open)
	}
}

// A keys file reloaded with a lower max_streams keeps the open streams and refuses new ones
// until the count is under the new limit.
func TestStreamsLimitLowered(t *testing.T) {
	s := NewStreams(nil)
	k := &Key{Name: "alice", MaxStreams: 3}
	for range 3 {
		if err := s.Open(k); err != nil {
			t.Fatal(err)
		}
	}
	lowered := &Key{Name: "alice", MaxStreams: 1}
	var le *LimitError
	if err := s.Open(lowered); !errors.As(err, &le) || le.Asked != 4 || !strings.Contains(le.Error(), "3 streams open, its limit is 1") {
		t.Fatalf("over a lowered limit: %v", err)
	}
	s.Close("alice")
	s.Close("alice")
	if err := s.Open(lowered); err == nil {
		t.Fatal("at the lowered limit: admitted")
	}
	s.Close("alice")
	if err := s.Open(lowered); err != nil {
		t.Fatalf("under the lowered limit: %v", err)
	}
}

func TestStreamsConcurrent(t *testing.T) {
	s := NewStreams(nil)
	k := &Key{Name: "alice", MaxStreams: 5}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for range 50 {
		wg.Go(func() {
			if s.Open(k) == nil {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if admitted != 5 || s.open["alice"] != 5 {
		t.Fatalf("admitted %d, count %d, want 5", admitted, s.open["alice"])
	}
}
