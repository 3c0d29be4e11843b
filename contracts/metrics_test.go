package contracts

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// TestDecodeHistogramExcludesPrefill: latency_decode_ms is documented as "Decode time of a
// whole task (first token to last)". A task whose engine takes ~500 ms before its first token
// and then emits all its tokens at once decodes in a few ms; the histogram must not record the
// wait before the first token (that is latency_first_token_ms).
func TestDecodeHistogramExcludesPrefill(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.SetGated(true)
	r := taskReq(uuid.New())
	r.MaxTokens = 4
	h.submit(t, r)
	h.waitPlaced(t, r.TaskId)
	const prefill = 500 * time.Millisecond
	time.Sleep(prefill) // the engine "prefills": no token yet
	h.fake.Allow(4)     // then every token at once
	h.waitState(t, r.TaskId, client.Succeeded)
	m := h.metricsText(t)
	count := metricSum(m, "latency_decode_ms_count")
	sum := metricSum(m, "latency_decode_ms_sum")
	if count != 1 {
		t.Fatalf("latency_decode_ms_count = %v, want 1:\n%s", count, grepLines(m, "latency_decode_ms"))
	}
	if sum >= float64(prefill.Milliseconds())/2 {
		t.Errorf("latency_decode_ms_sum = %v ms for a task whose tokens all came within a few ms of its first one "+
			"(it waited %v before the first): the decode histogram counts the time to the first token:\n%s",
			sum, prefill, grepLines(m, "latency_decode_ms_sum"))
	}
}

// TestRecoveredQueuedTaskCountedEnqueued: a task queued when the daemon stopped is queued
// again by the next start (admission_outcomes_total{outcome="admitted"} counts it there) and
// then started and finished. The restarted daemon's tasks_started_total and
// tasks_finished_total count it, its tasks_enqueued_total does not: started exceeds enqueued,
// and "enqueued - started" (the queue's inflow less its outflow) goes negative after a restart.
func TestRecoveredQueuedTaskCountedEnqueued(t *testing.T) {
	t.Parallel()
	stateDir := t.TempDir()
	h := newHarness(t, withStateDir(stateDir), withSlots(1), withFakeSetup(func(f *fakeEngine) { f.SetGated(true) }))
	x := taskReq(uuid.New())
	h.submit(t, x)
	h.waitState(t, x.TaskId, client.Running)
	a := taskReq(uuid.New())
	h.submit(t, a)
	h.waitState(t, a.TaskId, client.Queued)
	h.stop()

	h2 := newHarness(t, withStateDir(stateDir), withSlots(1))
	h2.waitState(t, a.TaskId, client.Succeeded)
	m := h2.metricsText(t)
	enq, started := metricSum(m, "tasks_enqueued_total"), metricSum(m, "tasks_started_total")
	if started != 1 {
		t.Fatalf("tasks_started_total = %v after the restart, want 1:\n%s", started, grepLines(m, "tasks_"))
	}
	if enq < started {
		t.Errorf("after a restart that queued a recovered task again: tasks_enqueued_total = %v < tasks_started_total = %v "+
			"(admission_outcomes_total admitted = %v):\n%s", enq, started,
			metricSum(m, `admission_outcomes_total{outcome="admitted"}`), grepLines(m, "tasks_"))
	}
}
