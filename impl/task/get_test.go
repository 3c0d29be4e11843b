package task

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// heldTracer's task.queue_wait spans hold their End (a runner ending a task's queue wait,
// before it changes the task's status) on its hold. Other spans are no-ops.
type heldTracer struct {
	noop.Tracer
	*hold
}

func (h *heldTracer) Start(ctx context.Context, name string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	var sp trace.Span = noop.Span{}
	if name == "task.queue_wait" {
		sp = heldSpan{h: h.hold}
	}
	return trace.ContextWithSpan(ctx, sp), sp
}

type heldSpan struct {
	noop.Span
	h *hold
}

func (s heldSpan) End(...trace.SpanEndOption) { s.h.wait() }

// TestGetNeverQueuedWithoutPlace: between the moment a task's ticket leaves the queue and the
// moment its runner changes its status, Get shows the task as the runner leaves it, never as
// queued without a queue position (the contract has queue_position present while queued).
func TestGetNeverQueuedWithoutPlace(t *testing.T) {
	for _, tc := range []struct {
		name string
		// leave makes the task's ticket leave the queue (granted: at once, the slot is free) and
		// returns the status expected after.
		leave func(h *harness, id string) Status
	}{
		{name: "granted a slot", leave: func(*harness, string) Status { return Running }},
		{name: "canceled", leave: func(h *harness, id string) Status {
			go func() { _ = h.svc.Cancel(context.WithoutCancel(h.ctx), id) }()
			return Canceled
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &heldTracer{hold: newHold()}
			h := newHarnessWith(t, 4, 1, admission.Reject, func(o *Options) { o.Tracer = tr })
			t.Cleanup(tr.free) // runs before the harness stops
			s := spec(admission.Interactive)
			blocker := spec(admission.Interactive)
			if tc.name == "canceled" {
				h.submit(blocker) // takes the one slot: s stays queued until cancelled
				<-tr.entered      // blocker's runner ends its wait, held
				tr.entered = make(chan struct{}, 1)
			}
			h.submit(s)
			want := tc.leave(h, s.ID)
			<-tr.entered // s's runner: its ticket left the queue, its status not changed yet
			got := make(chan Snapshot, 1)
			go func() {
				snap, err := h.svc.Get(h.ctx, s.ID)
				if err != nil {
					t.Error(err)
				}
				got <- snap
			}()
			select {
			case snap := <-got:
				if snap.Status == Queued && snap.QueuePosition == nil {
					t.Fatalf("Get showed the task queued without a place: %+v", snap)
				}
				t.Fatalf("Get returned %v before the runner moved the task on", snap.Status)
			case <-time.After(100 * time.Millisecond): // with the wait, Get cannot return before the release
			}
			tr.free()
			if snap := <-got; snap.Status != want {
				t.Fatalf("Get = %v, want %v", snap.Status, want)
			}
			close(h.eng.tokens)
		})
	}
}
