package task

import (
	"context"
	"errors"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// Cancel cancels a task: a queued one leaves the queue, a running one has its engine request
// aborted. Cancelling a finished task changes nothing.
//
// The task's runner ends it; one that no runner of this process will end (recovered and not
// queued again yet, or kept queued for the next start past the shutdown grace) the cancel ends
// itself. Cancel returns once it has ended (a Get then shows it canceled, with its final frame
// in the log) and the journal shows its final record (written: a crash of the process that
// follows the answer does not bring the task back to run again), or when ctx ends, or after
// CancelWait at the longest: a runner that cannot end it sooner (the daemon is stopping, or an
// engine is slow to give up a request) still ends it later. A running task's cancel is
// journaled (recCancel) and shown before that: a crash before its end is journaled ends it
// canceled at the next start, as its client was told, not failed.
func (s *Service) Cancel(ctx context.Context, id string) error {
	t, err := s.task(ctx, id)
	if err != nil {
		return err
	}
	ctx, stop := context.WithTimeout(ctx, CancelWait) // all waits together
	defer stop()
	if s.cancel(t, causeClient) {
		// A running task's cancel is journaled first (recCancel): shown, a crash that comes
		// before its runner ends it (an engine slow to give the request up) still ends it
		// canceled at the next start.
		t.mu.Lock()
		seq := t.cancelSeq
		t.mu.Unlock()
		s.awaitShown(ctx, seq)
		select {
		case <-t.done:
		case <-ctx.Done():
		}
	}
	s.awaitFinalShown(ctx, t)
	return nil
}

// awaitFinalShown waits until the journal shows t's final record, or ctx ends. It returns at
// once for a task not final, or without a journal.
func (s *Service) awaitFinalShown(ctx context.Context, t *Task) {
	if s.j == nil {
		return
	}
	t.mu.Lock()
	var seq uint64
	if t.status.Final() && len(t.spans) > 0 {
		seq = t.spans[len(t.spans)-1].seq
	}
	t.mu.Unlock()
	s.awaitShown(ctx, seq)
}

// awaitShown waits until the journal shows the record seq (0: none), or ctx ends.
func (s *Service) awaitShown(ctx context.Context, seq uint64) {
	for seq != 0 {
		visible, advanced := s.j.Visible()
		if visible >= seq {
			return
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return
		}
	}
}

// CancelWait bounds how long Cancel waits for the task's runner to end a cancelled task and
// for the journal to show its end.
const CancelWait = 2 * time.Second

// Disconnected is called when a stream's client went away before the task ended, its cursor
// closed. The task's policy decides, once the last reader is gone: cancel it, leave it running
// (detach), or cancel it after its grace unless a reader came back by then (a reader attached
// when the grace ends keeps it running). While another reader is attached, cancel does nothing.
func (s *Service) Disconnected(ctx context.Context, t *Task) {
	if s.abandon(ctx, t) {
		s.m.SSEDisconnects.Inc()
	}
}

// Abandoned is Disconnected for a client that waited for the task's end without a stream (a
// non-streaming completion of the OpenAI facade): the task's policy applies the same, and no
// stream is counted in sse_client_disconnects_total.
func (s *Service) Abandoned(ctx context.Context, t *Task) { s.abandon(ctx, t) }

// abandon applies t's disconnect policy to a client's going away: false when it was no
// client's, the daemon past its shutdown grace closing what is left open.
func (s *Service) abandon(ctx context.Context, t *Task) bool {
	policy := t.spec.OnDisconnect
	if policy == "" {
		policy = OnDisconnectDetach
		if s.opts.CancelOnDisconnect {
			policy = OnDisconnectCancel
		}
	}
	s.mu.Lock()
	halted := s.halted
	s.mu.Unlock()
	if halted {
		// Past the shutdown grace (journal on) every task is final or kept queued for the next
		// start, and the daemon closes the streams left open itself: that close is no client's
		// disconnect, and a task kept queued must not be cancelled by it.
		return false
	}
	t.mu.Lock()
	t.disconnects++
	gen := t.disconnects
	attached := len(t.subs) > 0 // another client still reads the task
	t.mu.Unlock()
	switch policy {
	case OnDisconnectCancel:
		if !attached {
			s.cancel(t, causeDisconnect)
		}
	case OnDisconnectGrace:
		s.startGrace(ctx, t, gen)
	}
	return true
}

// startGrace starts t's disconnect grace for its disconnect number gen (t.disconnects then): t
// is cancelled once the grace passes with no reader attached (graceWait).
func (s *Service) startGrace(ctx context.Context, t *Task, gen uint64) {
	gctx, stop := s.opts.Clock.WithDeadlineCause(context.WithoutCancel(ctx), s.now().Add(t.spec.DisconnectGrace), causeDisconnect)
	t.mu.Lock()
	prev := t.graceStop
	t.graceStop = stop
	t.mu.Unlock()
	if prev != nil { // the grace of an earlier disconnect: this one's replaces it
		prev()
	}
	s.mu.Lock()
	run := s.runCtx
	s.mu.Unlock()
	s.wg.Add(1)
	go s.graceWait(run, gctx, stop, t, gen)
}

// graceAfterRestart starts the disconnect grace of a recovered task with on_disconnect: grace
// that had a reader before the restart (recReader) and has none now. Its readers' connections
// ended with the process before (or its client was gone already): the restart is their
// disconnect, and without a grace the task would run to its end for nobody. A client that
// resumes its stream within the grace keeps it, as after any disconnect. A task whose client
// only polls had no reader to lose, and runs as it would have. A reader already back (or one
// that came and left, whose own disconnect started a grace) has nothing to add.
func (s *Service) graceAfterRestart(ctx context.Context, t *Task) {
	t.mu.Lock()
	if !t.hadReader || len(t.subs) > 0 || t.graceStop != nil { // hadReader: grace tasks only
		t.mu.Unlock()
		return
	}
	t.disconnects++
	gen := t.disconnects
	t.mu.Unlock()
	s.startGrace(ctx, t, gen)
}

// graceWait cancels t once its disconnect grace gctx has passed, unless it ended, a reader is
// attached, or another disconnect started a later grace. A later disconnect, or a reader
// attaching, ends the wait at once (stop), so that a client reconnecting in a loop keeps one
// waiting goroutine and timer per task, not one per reconnect for the whole grace. The end of
// run (the service's Run context: the daemon stops) ends it too: Run waits for this goroutine,
// and a task kept queued for the next start (journal) never ends in this process, so the wait
// would hold the shutdown for the rest of the grace, up to disconnect_grace_ms.
func (s *Service) graceWait(run, gctx context.Context, stop context.CancelFunc, t *Task, gen uint64) {
	defer s.wg.Done()
	defer stop()
	select {
	case <-t.done:
		return
	case <-run.Done():
		return
	case <-gctx.Done():
	}
	if !errors.Is(context.Cause(gctx), causeDisconnect) { // ended early: replaced, or a reader came back
		return
	}
	t.mu.Lock()
	stale := t.disconnects != gen || len(t.subs) > 0
	if t.disconnects == gen {
		t.graceStop = nil
	}
	t.mu.Unlock()
	if !stale {
		s.cancel(t, causeDisconnect)
	}
}

// cancel marks t canceled and tells its runner (one that has not started sees t.canceled when
// it starts). It reports whether a runner will end t: false when t had ended, or had no runner
// (recovered and not queued again yet, or kept queued past the shutdown grace), which cancel
// then ends itself. A task cancelled before and not ended yet is left to whoever ends it, and
// the answer is true, so that every Cancel waits for the end.
func (s *Service) cancel(t *Task, cause error) bool {
	t.mu.Lock()
	if t.status.Final() {
		t.mu.Unlock()
		return false
	}
	if t.canceled {
		// Its runner ends it, or the cancel that marked it (no runner) is ending it now: the
		// final record may not be appended yet.
		t.mu.Unlock()
		return true
	}
	t.canceled = true
	t.cancelReason = reasonOf(cause)
	if t.j != nil && t.status == Running {
		t.cancelSeq = t.j.Append(t.spec.ID, recCancel, "", []byte(t.cancelReason), nil)
	}
	stop, runner := t.cancel, t.runner
	t.mu.Unlock()
	// Queued: its runner's Wait returns cause and the ticket leaves the queue; running: the
	// engine request is aborted. A runner not started yet sees t.canceled when it starts.
	if stop != nil {
		stop(cause)
	}
	if !runner {
		// No runner of this process will see t.canceled: kept queued for the next start past
		// the shutdown grace, or recovered and not taken up by resume yet (which leaves a
		// task cancelled by then alone: the check and t.runner are read and set under t.mu).
		// It ends now, its final record journaled (Cancel waits for the journal to show it),
		// or the next start would run a task its client canceled. A recovered one holds no
		// reservation of its session in this process (its SessionGen is 0, which the session
		// leaves alone), and its key's grant, restored by Recover, is settled here.
		s.finish(t, Canceled, nil, engine.Result{}, 0)
	}
	return runner
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

// PoolDrained cancels what is left on a pool whose drain deadline passed: its queued tasks
// leave the queue (their runners fail them), and every other task of the pool not yet ended
// is cancelled: the running ones, and those whose ticket got a slot but whose runner has not
// marked them running yet (Remove no longer sees them).
func (s *Service) PoolDrained(_ context.Context, poolID string) {
	items, err := s.queue.Remove(poolID)
	if err != nil {
		s.log.Warn("removing a drained pool's queue", "pool_id", poolID, "err", err)
	}
	if len(items) > 0 {
		s.log.Info("drained pool's queued tasks removed", "pool_id", poolID, "tasks", len(items))
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
				final, c, running := tk.status.Final(), tk.cancel, tk.status == Running
				tk.mu.Unlock()
				if !final && !running && c != nil && s.j != nil {
					// Its ticket may have got a slot, and its runner read halted before it was
					// set: it is about to run, and is cut as the running ones are. (A runner
					// that reads halted now keeps it queued; the cancel then ends nothing.)
					_, queued := tk.ticket.Position()
					running = !queued
				}
				switch {
				case final || c == nil:
				case running || s.j == nil || tk.spec.Transient:
					c(causeShutdown) // a queued one's runner fails it (a transient one's client waits for it)
				default:
					// Journaled and queued: it stays queued, and the next start runs it. Its
					// streams end now (their clients resume after the restart), not when the
					// daemon's wait for open streams runs out.
					tk.keepForNextStart()
				}
			}
			return
		case <-t.C:
		}
	}
}

// active is the number of tasks queued or holding a slot, from the queue's own counts.
func (s *Service) active() int {
	st := s.queue.Stats()
	return st.Depth + st.Busy
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
