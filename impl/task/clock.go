package task

import (
	"context"
	"time"
)

// Clock is the Service's source of time: timestamps, the tick of the janitor that forgets old
// finished tasks, and tasks' deadlines (one context per task, from admission: it ends the
// queue wait of a task still queued and the run of a running one). The default is the system clock; tests inject a fake they advance by hand
// (tasktest.Clock).
type Clock interface {
	Now() time.Time
	// NewTicker returns a channel that receives the time every d, and a function that stops it.
	NewTicker(d time.Duration) (<-chan time.Time, func())
	// WithDeadlineCause is context.WithDeadlineCause on this clock.
	WithDeadlineCause(ctx context.Context, d time.Time, cause error) (context.Context, context.CancelFunc)
}

// systemClock is the real Clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

func (systemClock) WithDeadlineCause(ctx context.Context, d time.Time, cause error) (context.Context, context.CancelFunc) {
	return context.WithDeadlineCause(ctx, d, cause)
}
