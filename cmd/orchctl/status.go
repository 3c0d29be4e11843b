package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/creack/pty"
	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/sdk"
)

// spinner frames of the status line.
var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// statusState is what the status line shows; its owner is the status goroutine.
type statusState struct {
	frame     int
	maxTokens int32
	position  int32
	started   bool      // the started event arrived
	startAt   time.Time // predicted start
	firstTok  time.Time
	lastTok   time.Time
	tokens    int
	hidden    bool // the text is being written to the same terminal
}

// render is the status line for s at now (without the leading carriage return).
func render(s statusState, now time.Time) string {
	var b strings.Builder
	b.WriteString(spinner[s.frame%len(spinner)])
	if !s.started {
		b.WriteString(" submitting")
		return b.String()
	}
	phase := "waiting"
	if s.tokens > 0 {
		phase = "generating"
	}
	fmt.Fprintf(&b, " %s · queue position %d", phase, s.position)
	rate := tokensPerSecond(s)
	switch {
	case s.tokens == 0:
		fmt.Fprintf(&b, " · ETA %s", fmtDuration(max(s.startAt.Sub(now), 0)))
	case rate > 0 && s.maxTokens > 0:
		left := float64(max(int(s.maxTokens)-s.tokens, 0)) / rate
		fmt.Fprintf(&b, " · ETA %s", fmtDuration(time.Duration(left*float64(time.Second))))
	}
	fmt.Fprintf(&b, " · %d tokens · %.1f tok/s", s.tokens, rate)
	return b.String()
}

// tokensPerSecond is the decode rate after the first token (0 until there are two).
func tokensPerSecond(s statusState) float64 {
	d := s.lastTok.Sub(s.firstTok).Seconds()
	if s.tokens < 2 || d <= 0 {
		return 0
	}
	return float64(s.tokens-1) / d
}

// truncate cuts line to fit in width columns without wrapping (a wrapped line could not be
// redrawn in place). width 0: unknown, no cut.
func truncate(line string, width int) string {
	r := []rune(line)
	if width <= 1 || len(r) < width {
		return line
	}
	return string(r[:width-1])
}

// fmtDuration is "850ms" under a second, "1.5s" above.
func fmtDuration(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// status draws a live status line on a terminal. One goroutine owns the state; the methods
// hand it changes and wait until they are drawn, so that the text written by the caller never
// interleaves with a half-drawn line.
type status struct {
	w     io.Writer
	width int // the terminal's columns (0: unknown)
	now   func() time.Time
	ops   chan func(*statusState)
	done  chan struct{}
	start time.Time
}

// startStatus starts the status goroutine; close stops it.
func startStatus(w io.Writer, maxTokens int32, now func() time.Time) *status {
	s := &status{w: w, now: now, ops: make(chan func(*statusState)), done: make(chan struct{}), start: now()}
	if f, ok := w.(*os.File); ok {
		if _, cols, err := pty.Getsize(f); err == nil {
			s.width = cols
		}
	}
	go s.loop(statusState{maxTokens: maxTokens})
	return s
}

func (s *status) loop(st statusState) {
	defer close(s.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	draw := func() {
		if !st.hidden {
			fmt.Fprint(s.w, "\r\x1b[K"+truncate(render(st, s.now()), s.width))
		}
	}
	draw()
	for {
		select {
		case op, ok := <-s.ops:
			if !ok {
				return
			}
			op(&st)
			draw()
		case <-tick.C:
			st.frame++
			draw()
		}
	}
}

// do applies op in the status goroutine and returns once it is drawn.
func (s *status) do(op func(*statusState)) {
	applied := make(chan struct{})
	s.ops <- func(st *statusState) { op(st); close(applied) }
	<-applied
}

func (s *status) started(ev *sdk.Started) {
	if s == nil {
		return
	}
	at := s.now().Add(time.Duration(ev.PredictedStartMs) * time.Millisecond)
	s.do(func(st *statusState) { st.started, st.position, st.startAt = true, ev.QueuePosition, at })
}

// queued updates the queue position and the predicted start of a task still queued.
func (s *status) queued(position int32, predictedStartMs int64) {
	at := s.now().Add(time.Duration(predictedStartMs) * time.Millisecond)
	s.do(func(st *statusState) {
		if st.tokens == 0 {
			st.started, st.position, st.startAt = true, position, at
		}
	})
}

// token counts a token. When the text goes to the same terminal (sameTTY), the status line is
// cleared before the first token and stays hidden until the summary.
func (s *status) token(sameTTY bool) {
	now := s.now()
	s.do(func(st *statusState) {
		if st.tokens == 0 {
			st.firstTok = now
			if sameTTY {
				fmt.Fprint(s.w, "\r\x1b[K")
				st.hidden = true
			}
		}
		st.tokens++
		st.lastTok = now
	})
}

// finish replaces the status line with a summary.
func (s *status) finish(id uuid.UUID, end *sdk.End) {
	total := s.now().Sub(s.start)
	s.do(func(st *statusState) {
		word := "✓"
		if end.Canceled {
			word = "✗ canceled:"
		}
		fmt.Fprintf(s.w, "\r\x1b[K%s %d tokens in %s · %.1f tok/s · task %s\n", word, end.TokensOut, fmtDuration(total), tokensPerSecond(*st), id)
		st.hidden = true
	})
}

// close stops the goroutine and clears a line still shown.
func (s *status) close() {
	s.do(func(st *statusState) {
		if !st.hidden {
			fmt.Fprint(s.w, "\r\x1b[K")
			st.hidden = true
		}
	})
	close(s.ops)
	<-s.done
}
