package tenant

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Limit names a rate limit.
type Limit string

// The limits.
const (
	LimitRequests Limit = "requests"
	LimitTokens   Limit = "tokens"
	// LimitStreams is the key's open streams (Key.MaxStreams), not a rate: see Streams.
	LimitStreams Limit = "streams"
)

// LimitError is a submission refused by a rate limit.
type LimitError struct {
	Key   string
	Limit Limit
	// Max is the limit per minute; Asked what the submission needed.
	Max, Asked int
	// RetryAfter is when the bucket will hold enough; 0 when it never can (Asked > Max).
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	if e.Limit == LimitStreams {
		return fmt.Sprintf("key %q: %d streams open, its limit is %d (max_streams); close one or retry in %s",
			e.Key, e.Asked-1, e.Max, e.RetryAfter.Round(time.Millisecond))
	}
	if e.RetryAfter == 0 {
		return fmt.Sprintf("key %q: %d %s exceed the limit of %d per minute", e.Key, e.Asked, e.Limit, e.Max)
	}
	return fmt.Sprintf("key %q: %s per minute limit (%d) reached; retry in %s", e.Key, e.Limit, e.Max, e.RetryAfter.Round(time.Millisecond))
}

// Window is one limit's state as the x-ratelimit-* headers report it.
type Window struct {
	Limit     Limit
	Max       int
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
}

// bucket is a token bucket holding up to max, refilled at max per minute. level may go below
// zero when a task used more than it reserved; the debt is paid by the refill.
type bucket struct {
	max   int
	level float64
	at    time.Time
}

func (b *bucket) refill(now time.Time, limit int) {
	if b.max != limit { // the keys file was reloaded
		b.max = limit
		b.level = math.Min(b.level, float64(limit))
	}
	if dt := now.Sub(b.at); dt > 0 {
		b.level = math.Min(float64(b.max), b.level+dt.Minutes()*float64(b.max))
	}
	b.at = now
}

// wait is how long until the bucket holds n.
func (b *bucket) wait(n int) time.Duration {
	if b.level >= float64(n) {
		return 0
	}
	return time.Duration(math.Ceil((float64(n) - b.level) / float64(b.max) * float64(time.Minute)))
}

func (b *bucket) window(l Limit) Window {
	rem := int(math.Floor(math.Max(b.level, 0)))
	return Window{Limit: l, Max: b.max, Remaining: rem, Reset: b.wait(b.max)}
}

// Limiter holds every key's buckets. The clock is injected (tests advance it by hand). Its
// state is guarded by one mutex; each call is a few arithmetic operations.
type Limiter struct {
	now func() time.Time
	mu  sync.Mutex
	rpm map[string]*bucket
	tpm map[string]*bucket
}

// NewLimiter returns a Limiter on the clock now (time.Now when nil).
func NewLimiter(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, rpm: map[string]*bucket{}, tpm: map[string]*bucket{}}
}

func (l *Limiter) bucketLocked(m map[string]*bucket, name string, limit int, now time.Time) *bucket {
	b := m[name]
	if b == nil {
		b = &bucket{max: limit, level: float64(limit), at: now}
		m[name] = b
	}
	b.refill(now, limit)
	return b
}

// Admit takes one request and tokens from k's buckets, both or neither. Refused: a
// *LimitError, with the windows to report either way.
func (l *Limiter) Admit(k *Key, tokens int) ([]Window, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var rb, tb *bucket
	var err error
	if k.TPM > 0 && tokens > k.TPM { // no wait helps: say so before any wait
		return l.windowsLocked(k, now), &LimitError{Key: k.Name, Limit: LimitTokens, Max: k.TPM, Asked: tokens}
	}
	if k.RPM > 0 {
		rb = l.bucketLocked(l.rpm, k.Name, k.RPM, now)
		if w := rb.wait(1); w > 0 {
			err = &LimitError{Key: k.Name, Limit: LimitRequests, Max: k.RPM, Asked: 1, RetryAfter: w}
		}
	}
	if k.TPM > 0 && err == nil {
		tb = l.bucketLocked(l.tpm, k.Name, k.TPM, now)
		if w := tb.wait(tokens); w > 0 {
			err = &LimitError{Key: k.Name, Limit: LimitTokens, Max: k.TPM, Asked: tokens, RetryAfter: w}
		}
	}
	if err == nil {
		if rb != nil {
			rb.level--
		}
		if tb != nil {
			tb.level -= float64(tokens)
		}
	}
	return l.windowsLocked(k, now), err
}

// Settle corrects the token bucket of the key named name once a task has ended: reserved tokens
// were taken at admission, used is what the task produced. Unused tokens go back; extra ones are
// taken. A key without a tokens limit has no bucket: nothing to do. It implements task.Meter.
func (l *Limiter) Settle(name string, reserved, used int) {
	if reserved == used {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.tpm[name]
	if b == nil {
		return
	}
	b.refill(l.now(), b.max)
	b.level = math.Min(float64(b.max), b.level+float64(reserved-used))
}

// Unadmit gives back the request Admit took from the key named name, for a submission that
// turned out to be no new request (a re-post answered with the task it names). Its tokens go
// back through Settle. A key without a requests limit has no bucket: nothing to do.
func (l *Limiter) Unadmit(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.rpm[name]
	if b == nil {
		return
	}
	b.refill(l.now(), b.max)
	b.level = math.Min(float64(b.max), b.level+1)
}

// Windows reports k's limits without taking anything.
func (l *Limiter) Windows(k *Key) []Window {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.windowsLocked(k, l.now())
}

func (l *Limiter) windowsLocked(k *Key, now time.Time) []Window {
	var out []Window
	if k.RPM > 0 {
		out = append(out, l.bucketLocked(l.rpm, k.Name, k.RPM, now).window(LimitRequests))
	}
	if k.TPM > 0 {
		out = append(out, l.bucketLocked(l.tpm, k.Name, k.TPM, now).window(LimitTokens))
	}
	return out
}
