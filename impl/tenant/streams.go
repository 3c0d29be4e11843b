package tenant

import (
	"sync"
	"time"
)

// StreamRetry is the Retry-After of a stream refused by a key's max_streams: a stream ends when
// its task does or its client leaves, which no clock foresees; a second is a short, honest
// guess that keeps a polling client from spinning.
const StreamRetry = time.Second

// Streams counts the responses each key holds open while tasks run (event streams and
// OpenAI completions) and refuses one past the key's MaxStreams, so that one key cannot take
// every connection the daemon serves (server.max_connections) from the others. Its state is one
// map under one mutex; Open and Close are a lookup and an increment.
type Streams struct {
	mu   sync.Mutex
	open map[string]int
	// observe, when set, is told a key's count after each change, under the lock (a gauge).
	observe func(name string, open int)
}

// NewStreams returns an empty count; observe (nil: none) is told each key's count as it changes.
func NewStreams(observe func(name string, open int)) *Streams {
	return &Streams{open: map[string]int{}, observe: observe}
}

// Open counts one more open response for k, or refuses it with a *LimitError (LimitStreams)
// when k already holds MaxStreams. Every nil return is paired with one Close(k.Name).
func (s *Streams) Open(k *Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.open[k.Name]
	if k.MaxStreams > 0 && n >= k.MaxStreams {
		return &LimitError{Key: k.Name, Limit: LimitStreams, Max: k.MaxStreams, Asked: n + 1, RetryAfter: StreamRetry}
	}
	s.open[k.Name] = n + 1
	if s.observe != nil {
		s.observe(k.Name, n+1)
	}
	return nil
}

// Close ends one response Open counted for the key named name.
func (s *Streams) Close(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.open[name] - 1
	if n <= 0 {
		n = 0
		delete(s.open, name)
	} else {
		s.open[name] = n
	}
	if s.observe != nil {
		s.observe(name, n)
	}
}
