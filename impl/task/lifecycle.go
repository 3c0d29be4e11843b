package task

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
)

// Cancel cancels a task: a queued one leaves the queue, a running one has its engine request
// aborted. Cancelling a finished task changes nothing.
func (s *Service) Cancel(ctx context.Context, id string) error {
	t, err := s.Task(id)
	if err != nil {
		return err
	}
	s.cancel(ctx, t, causeClient)
	return nil
}

// Disconnected is called when a stream's client went away before the task ended. The task's
// policy decides: cancel it, leave it running (detach), or cancel it after its grace unless a
// reader came back by then (a reader attached when the grace ends keeps it running).
func (s *Service) Disconnected(ctx context.Context, t *Task) {
	s.m.SSEDisconnects.Inc()
	policy := t.spec.OnDisconnect
	if policy == "" {
		policy = OnDisconnectDetach
		if s.opts.CancelOnDisconnect {
			policy = OnDisconnectCancel
		}
	}
	t.mu.Lock()
	t.disconnects++
	gen := t.disconnects
	t.mu.Unlock()
	switch policy {
	case OnDisconnectCancel:
		s.cancel(ctx, t, causeDisconnect)
	case OnDisconnectGrace:
		s.wg.Add(1)
		go s.graceWait(ctx, t, gen, s.now().Add(t.spec.DisconnectGrace))
	}
}

// graceWait cancels t once its disconnect grace has passed, unless it ended, a reader is
// attached, or another disconnect started a later grace.
func (s *Service) graceWait(ctx context.Context, t *Task, gen uint64, until time.Time) {
	defer s.wg.Done()
	gctx, stop := s.opts.Clock.WithDeadlineCause(context.WithoutCancel(ctx), until, causeDisconnect)
	defer stop()
	select {
	case <-t.done:
		return
	case <-gctx.Done():
	}
	t.mu.Lock()
	stale := t.disconnects != gen || len(t.subs) > 0
	t.mu.Unlock()
	if !stale {
		s.cancel(ctx, t, causeDisconnect)
	}
}

func (s *Service) cancel(ctx context.Context, t *Task, cause error) {
	t.mu.Lock()
	if t.status.Final() || t.canceled {
		t.mu.Unlock()
		return
	}
	t.canceled = true
	t.cancelReason = reasonOf(cause)
	running := t.cancel
	t.mu.Unlock()
	if running != nil {
		running(cause)
		return
	}
	// Queued (or dispatched but not yet running: the runner sees t.canceled and finishes).
	if ok, err := s.queue.Cancel(ctx, t.spec.ID); err == nil && ok {
		s.finish(t, Canceled, nil, engine.Result{}, 0)
	}
}

func reasonOf(cause error) string {
	switch {
	case errors.Is(cause, causeDisconnect):
		return "disconnect"
	case errors.Is(cause, causeDrain):
		return "drain"
	case errors.Is(cause, causeShutdown):
		return "shutdown"
	default:
		return "client"
	}
}

// PoolDrained cancels what is left on a pool whose drain deadline passed.
func (s *Service) PoolDrained(ctx context.Context, poolID string) {
	items, err := s.queue.Remove(ctx, poolID)
	if err != nil {
		s.log.Warn("removing a drained pool's queue", "pool_id", poolID, "err", err)
	}
	for _, it := range items {
		if t := s.lookup(it.ID); t != nil {
			s.failQueued(t, causeDrain)
		}
	}
	s.mu.Lock()
	var running []*Task
	for _, t := range s.tasks {
		if t.poolID == poolID {
			running = append(running, t)
		}
	}
	s.mu.Unlock()
	for _, t := range running {
		t.mu.Lock()
		c := t.cancel
		final := t.status.Final()
		t.mu.Unlock()
		if c != nil && !final {
			c(causeDrain)
		}
	}
}

// failQueued ends a task that never ran because its pool or the daemon went away.
func (s *Service) failQueued(t *Task, cause error) {
	msg := "the pool's drain deadline passed before the task ran"
	if errors.Is(cause, causeShutdown) {
		msg = "the daemon shut down before the task ran"
	}
	s.finish(t, Failed, &ErrorInfo{Class: ClassPoolUnavailable, Message: msg, Retriable: true,
		PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
}

// Shutdown stops admission, waits for queued and running tasks to end until ctx is done, then
// cancels what is left.
func (s *Service) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if s.active() == 0 {
			return
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			// Journaled tasks still queued wait for the next start: the slots that the
			// cancellations below free must not start them now only to cut them.
			s.halted = s.j != nil
			var left []*Task
			for _, tk := range s.tasks {
				left = append(left, tk)
			}
			s.mu.Unlock()
			for _, tk := range left {
				tk.mu.Lock()
				final, c := tk.status.Final(), tk.cancel
				tk.mu.Unlock()
				if final {
					continue
				}
				switch {
				case c != nil:
					c(causeShutdown)
				case s.j != nil:
					// Journaled: it stays queued, and the next start runs it.
				default:
					if ok, err := s.queue.Cancel(context.WithoutCancel(ctx), tk.spec.ID); err == nil && ok {
						s.failQueued(tk, causeShutdown)
					}
				}
			}
			return
		case <-t.C:
		}
	}
}

func (s *Service) active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.load {
		n += v
	}
	return n
}

// evict is the queue's Evict callback (owner goroutine: must not block).
func (s *Service) evict(it admission.Item) {
	t := s.lookup(it.ID)
	if t == nil {
		return
	}
	go func() {
		<-t.admitted
		s.m.TasksRejected.WithLabelValues(t.engine, s.opts.Code(ClassEvicted)).Inc()
		s.finish(t, Failed, &ErrorInfo{Class: ClassEvicted,
			Message: "evicted from the full queue (drop-lru) to admit a newer task", Retriable: true,
			RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
	}()
}

// expire forgets finished tasks beyond the retention bounds.
func (s *Service) expire() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.finished {
		if len(s.finished)-n <= s.opts.MaxRetained && now.Sub(f.at) < s.opts.Retention {
			break
		}
		delete(s.tasks, f.id)
		if s.j != nil {
			s.j.Retire(f.id)
		}
		n++
	}
	if n > 0 {
		s.finished = append(s.finished[:0], s.finished[n:]...)
	}
}

// expireQueued fails queued tasks whose deadline passed before they could start.
func (s *Service) expireQueued(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	var late []*Task
	for _, t := range s.tasks {
		if now.After(t.deadline) {
			late = append(late, t)
		}
	}
	s.mu.Unlock()
	for _, t := range late {
		t.mu.Lock()
		queued := t.status == Queued && !t.rejected
		t.mu.Unlock()
		if !queued {
			continue
		}
		if ok, err := s.queue.Cancel(ctx, t.spec.ID); err == nil && ok {
			s.finish(t, Failed, &ErrorInfo{Class: ClassDeadline,
				Message: fmt.Sprintf("the task's deadline of %d ms passed while it was queued", t.spec.Deadline.Milliseconds()),
				PoolID:  t.poolID, Engine: t.engine}, engine.Result{}, 0)
		}
	}
}
