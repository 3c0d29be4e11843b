package httpengine

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The watchdog cancels only a single wait that lasted the idle bound, whatever the time spent
// between waits or in waits that ended (clock injected; the real timer is an hour away).
func TestWatchdog(t *testing.T) {
	const idle = time.Hour
	type step struct {
		at   time.Duration
		what string // wait, got, fire, stop
	}
	tests := []struct {
		name   string
		steps  []step
		cancel bool
	}{
		{name: "first wait shorter than idle", steps: []step{{59 * time.Minute, "fire"}}},
		{name: "first wait past idle", steps: []step{{idle, "fire"}}, cancel: true},
		{name: "waits adding up beyond idle", steps: []step{{30 * time.Minute, "got"}, {40 * time.Minute, "wait"},
			{90 * time.Minute, "fire"}, {99 * time.Minute, "got"}, {100 * time.Minute, "wait"}, {150 * time.Minute, "fire"}}},
		{name: "a later wait past idle", steps: []step{{10 * time.Minute, "got"}, {20 * time.Minute, "wait"},
			{70 * time.Minute, "fire"}, {80 * time.Minute, "fire"}}, cancel: true},
		{name: "no wait running", steps: []step{{time.Minute, "got"}, {5 * idle, "fire"}}},
		{name: "stopped", steps: []step{{time.Minute, "stop"}, {5 * idle, "fire"}}},
	}
	cause := errors.New("idle")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(t.Context())
			w := NewWatchdog(idle, cancel, cause)
			defer w.Stop()
			var now time.Duration
			w.clock = func() time.Duration { return now }
			w.since.Store(1) // the first wait began at 0 on the injected clock
			for _, s := range tc.steps {
				now = s.at
				switch s.what {
				case "wait":
					w.Wait()
				case "got":
					w.Got()
				case "fire":
					w.fire()
				case "stop":
					w.Stop()
				}
			}
			if got := errors.Is(context.Cause(ctx), cause); got != tc.cancel {
				t.Errorf("cancelled %v, want %v (cause %v)", got, tc.cancel, context.Cause(ctx))
			}
		})
	}
}
