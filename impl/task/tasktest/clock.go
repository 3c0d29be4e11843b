// Package tasktest holds test doubles for the task service. Only tests import it.
package tasktest

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake task.Clock: time stands still until Advance moves it, which delivers the
// ticks and fires the deadlines that fall due. It is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*ticker
	timers  []*timer
	stops   int // deadlines whose CancelFunc was called
}

type ticker struct {
	ch    chan time.Time
	every time.Duration
	next  time.Time
}

type timer struct {
	at   time.Time
	fire func()
}

// NewClock returns a fake clock that reads start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTicker returns a ticker that ticks when Advance passes each multiple of d (at least 1 ns).
// Like a time.Ticker, its channel holds one tick and drops those a slow reader misses.
func (c *Clock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	d = max(d, time.Nanosecond)
	tk := &ticker{ch: make(chan time.Time, 1), every: d}
	c.mu.Lock()
	tk.next = c.now.Add(d)
	c.tickers = append(c.tickers, tk)
	c.mu.Unlock()
	return tk.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.tickers {
			if x == tk {
				c.tickers = append(c.tickers[:i], c.tickers[i+1:]...)
				break
			}
		}
	}
}

// Tickers returns the number of running tickers, so that a test can wait for a goroutine to
// have started its ticker before it advances the clock.
func (c *Clock) Tickers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tickers)
}

// Timers returns the number of pending deadlines.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Stops returns the number of deadlines (of WithDeadlineCause, fired or not) whose CancelFunc
// has been called, each counted once: a test waits on it for the goroutine that held a deadline
// to be done with it, e.g. for a timer that Advance fired to have had its effect.
func (c *Clock) Stops() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stops
}

// WithDeadlineCause returns a context cancelled with cause once Advance reaches d (at once
// when d has passed). Its CancelFunc cancels it with context.Canceled, as the real one does.
func (c *Clock) WithDeadlineCause(ctx context.Context, d time.Time, cause error) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	tm := &timer{at: d, fire: func() { cancel(cause) }}
	stopped := false // guarded by c.mu
	c.mu.Lock()
	if !c.now.Before(d) {
		c.mu.Unlock()
		cancel(cause)
		return ctx, func() {
			c.mu.Lock()
			if !stopped {
				stopped = true
				c.stops++
			}
			c.mu.Unlock()
			cancel(context.Canceled)
		}
	}
	c.timers = append(c.timers, tm)
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		if !stopped {
			stopped = true
			c.stops++
		}
		for i, x := range c.timers {
			if x == tm {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		cancel(context.Canceled)
	}
}

// Advance moves the clock by d, delivers the ticks that fall due and fires the deadlines that
// passed.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	for _, tk := range c.tickers {
		if now.Before(tk.next) {
			continue
		}
		select {
		case tk.ch <- now:
		default:
		}
		for !now.Before(tk.next) {
			tk.next = tk.next.Add(tk.every)
		}
	}
	var due []*timer
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if now.Before(tm.at) {
			kept = append(kept, tm)
		} else {
			due = append(due, tm)
		}
	}
	clear(c.timers[len(kept):])
	c.timers = kept
	c.mu.Unlock()
	for _, tm := range due {
		tm.fire()
	}
}
