package httpengine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Watchdog cancels a request whose wait for the engine lasts longer than its idle bound. A
// stream marks each wait with Wait and its end with Got, which cost a clock read and an atomic
// store: one timer per request, re-armed when it fires during a wait that began later (or
// while no wait runs), instead of a timer reset and stop around every frame.
type Watchdog struct {
	idle   time.Duration
	cancel context.CancelCauseFunc
	cause  error
	clock  func() time.Duration // monotonic time since the watchdog started
	since  atomic.Int64         // when the current wait began (clock), plus one; 0: no wait

	mu      sync.Mutex // guards t and stopped against fire
	t       *time.Timer
	stopped bool
}

// NewWatchdog starts a watchdog with a wait running: cancel(cause) is called once a wait has
// lasted idle.
func NewWatchdog(idle time.Duration, cancel context.CancelCauseFunc, cause error) *Watchdog {
	start := time.Now()
	w := &Watchdog{idle: idle, cancel: cancel, cause: cause, clock: func() time.Duration { return time.Since(start) }}
	w.since.Store(1)
	w.mu.Lock()
	w.t = time.AfterFunc(idle, w.fire)
	w.mu.Unlock()
	return w
}

// Wait marks the beginning of a wait for the engine.
func (w *Watchdog) Wait() { w.since.Store(int64(w.clock()) + 1) }

// Got marks the end of a wait: what the engine sent has come.
func (w *Watchdog) Got() { w.since.Store(0) }

// Stop ends the watchdog; it cancels nothing after Stop returns.
func (w *Watchdog) Stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}

func (w *Watchdog) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	next := w.idle
	if s := w.since.Load(); s != 0 {
		waited := w.clock() - time.Duration(s-1)
		if waited >= w.idle {
			w.stopped = true
			w.cancel(w.cause)
			return
		}
		next = w.idle - waited
	}
	w.t.Reset(next)
}
