package task

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// scripted is an engine whose time passes on the test's fake clock: its first generation
// holds the only slot until release is closed; later ones advance the clock by each step's
// wait, then emit its text. All of that time is the engine's, none the daemon's.
type scripted struct {
	clock   *tasktest.Clock
	started chan string
	release chan struct{}
	proceed chan struct{} // later generations start their steps when it is closed
	steps   []step
	calls   int // Generate runs one at a time here (one slot)
}

type step struct {
	wait time.Duration
	text string
}

func (e *scripted) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	e.calls++
	e.started <- req.TaskID
	if e.calls == 1 {
		<-e.release
		return engine.Result{Stop: engine.StopLimit}, nil
	}
	<-e.proceed
	for i, s := range e.steps {
		e.clock.Advance(s.wait)
		if err := emit(engine.Token{Text: []byte(s.text), Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
	}
	return engine.Result{TokensOut: len(e.steps), TokensIn: 3, Stop: engine.StopLimit}, nil
}

func (e *scripted) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

func histogram(t *testing.T, o prometheus.Observer) (count uint64, sum float64) {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// TestLatencyMetrics: queue wait, time to first token (at the first token with text, not an
// empty one before it) and the daemon's own overhead, which leaves out the queue wait and the
// engine's time. The fake clock moves only inside the engine and while a task is queued, so
// the daemon's overhead is exactly zero.
func TestLatencyMetrics(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	eng := &scripted{clock: h.clock, started: make(chan string, 2), release: make(chan struct{}), proceed: make(chan struct{}),
		steps: []step{{500 * time.Millisecond, ""}, {time.Second, " The"}, {250 * time.Millisecond, " end"}}}
	h.pools.rep = eng

	blocker, s := spec(admission.Interactive), spec(admission.Interactive)
	h.submit(blocker)
	<-eng.started
	h.submit(s)
	h.clock.Advance(2 * time.Second) // s waits in the queue, the blocker is in its engine
	over := h.m.Overhead.WithLabelValues("llamacpp", "p")
	close(eng.release)
	<-eng.started
	// The clock is shared: s's engine time starts once the blocker's overhead is observed.
	waitFor(t, func() bool { n, _ := histogram(t, over); return n == 1 })
	close(eng.proceed)
	if got := strings.ReplaceAll(names(h.events(s.ID)), ",metrics", ""); got != "started,token,token,token,end" {
		t.Fatalf("events = %s", got)
	}
	h.events(blocker.ID)

	labels := []string{"llamacpp", "", "p", "interactive"}
	if n, sum := histogram(t, h.m.QueueWait.WithLabelValues(labels...)); n != 2 || sum != 2000 {
		t.Errorf("queue_wait_ms: %d samples, sum %v ms; want 2 and 2000 (0 + 2000)", n, sum)
	}
	// Admission at t, dispatch at t+2s, the empty token at +0.5s, the first text at +1s more.
	if n, sum := histogram(t, h.m.FirstToken.WithLabelValues(labels...)); n != 1 || sum != 3500 {
		t.Errorf("latency_first_token_ms: %d samples, sum %v ms; want 1 and 3500", n, sum)
	}
	waitFor(t, func() bool { n, _ := histogram(t, over); return n == 2 }) // observed just after the final frame
	if n, sum := histogram(t, over); n != 2 || sum != 0 {
		t.Errorf("daemon_overhead_seconds: %d samples, sum %v s; want 2 and 0 (the engine's and the queue's time excluded)", n, sum)
	}
}
