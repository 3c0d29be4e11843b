package tasktest

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errCause = errors.New("deadline passed")

func TestTicker(t *testing.T) {
	c := NewClock(time.Unix(0, 0))
	tick, stop := c.NewTicker(time.Second)
	tests := []struct {
		advance time.Duration
		ticks   bool
	}{
		{999 * time.Millisecond, false},
		{time.Millisecond, true},
		{500 * time.Millisecond, false},
		{3 * time.Second, true}, // several periods at once: one tick, the rest dropped
		{400 * time.Millisecond, false},
		{100 * time.Millisecond, true},
	}
	for i, tt := range tests {
		c.Advance(tt.advance)
		select {
		case at := <-tick:
			if !tt.ticks {
				t.Fatalf("step %d: unexpected tick at %v", i, at)
			}
			if !at.Equal(c.Now()) {
				t.Fatalf("step %d: tick at %v, clock reads %v", i, at, c.Now())
			}
		default:
			if tt.ticks {
				t.Fatalf("step %d: no tick at %v", i, c.Now())
			}
		}
	}
	if c.Tickers() != 1 {
		t.Fatalf("Tickers = %d", c.Tickers())
	}
	stop()
	c.Advance(time.Hour)
	select {
	case <-tick:
		t.Fatal("a stopped ticker ticked")
	default:
	}
	if c.Tickers() != 0 {
		t.Fatalf("Tickers = %d after stop", c.Tickers())
	}
}

func TestWithDeadlineCause(t *testing.T) {
	start := time.Unix(100, 0)
	t.Run("fires when the clock reaches it", func(t *testing.T) {
		c := NewClock(start)
		ctx, cancel := c.WithDeadlineCause(context.Background(), start.Add(time.Second), errCause)
		defer cancel()
		c.Advance(999 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("cancelled before the deadline")
		}
		c.Advance(time.Millisecond)
		if !errors.Is(context.Cause(ctx), errCause) || c.Timers() != 0 {
			t.Fatalf("cause %v, %d timers left", context.Cause(ctx), c.Timers())
		}
	})
	t.Run("a passed deadline cancels at once", func(t *testing.T) {
		c := NewClock(start)
		ctx, cancel := c.WithDeadlineCause(context.Background(), start, errCause)
		defer cancel()
		if !errors.Is(context.Cause(ctx), errCause) {
			t.Fatalf("cause %v", context.Cause(ctx))
		}
	})
	t.Run("stops are counted once each, fired or not", func(t *testing.T) {
		c := NewClock(start)
		_, fired := c.WithDeadlineCause(context.Background(), start.Add(time.Second), errCause)
		_, pending := c.WithDeadlineCause(context.Background(), start.Add(time.Hour), errCause)
		_, passed := c.WithDeadlineCause(context.Background(), start, errCause)
		c.Advance(time.Second)
		if c.Stops() != 0 {
			t.Fatalf("%d stops before any CancelFunc", c.Stops())
		}
		for i, stop := range []context.CancelFunc{fired, pending, passed, fired} {
			stop()
			if want := min(i+1, 3); c.Stops() != want {
				t.Fatalf("after %d calls: %d stops, want %d", i+1, c.Stops(), want)
			}
		}
	})
	t.Run("cancel first", func(t *testing.T) {
		c := NewClock(start)
		ctx, cancel := c.WithDeadlineCause(context.Background(), start.Add(time.Second), errCause)
		cancel()
		if !errors.Is(context.Cause(ctx), context.Canceled) || c.Timers() != 0 {
			t.Fatalf("cause %v, %d timers left", context.Cause(ctx), c.Timers())
		}
		c.Advance(time.Hour)
		if !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Fatalf("cause changed to %v", context.Cause(ctx))
		}
	})
}
