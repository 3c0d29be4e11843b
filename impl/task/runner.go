package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/internal/textclip"
)

// StopBudget is the stop reason of a task that used all its budget grant.
const StopBudget engine.StopReason = "budget"

// errBudgetSpent refuses a token past the task's budget grant; the engine then ends the request.
var errBudgetSpent = errors.New("the task's token grant (its key's or its session's budget) is spent")

// errLimitReached refuses a token past the task's MaxTokens; the engine then ends the request
// (the adapter returns and closes it, as it does when a cancel ends its context). An
// open-ended request's engine was sent no limit and is always ended so; any other engine was
// sent the limit and overran it (misconfigured, a simulator, its own count differing).
var errLimitReached = errors.New("the task's max_tokens are streamed")

// DeadlineError is the cause of a task's context once its deadline passed, whether it was
// queued (its ticket then leaves the queue with outcome expired) or running. Its class is
// ClassDeadline, the contract's DEADLINE_EXCEEDED.
type DeadlineError struct {
	Deadline time.Duration // the task's deadline_ms
}

func (e *DeadlineError) Error() string {
	return fmt.Sprintf("the task's deadline of %d ms passed", e.Deadline.Milliseconds())
}

// Unwrap marks the cause as a deadline for the admission queue (outcome expired).
func (e *DeadlineError) Unwrap() error { return admission.ErrExpired }

// Class is the failure class the deadline maps to.
func (e *DeadlineError) Class() Class { return ClassDeadline }

// run is the task's goroutine (the caller did s.wg.Add): it waits on the task's ticket under a
// context derived from base (the service's Run context) carrying the task's deadline, then runs
// the task on its slot.
func (s *Service) run(base context.Context, t *Task) {
	defer s.wg.Done()
	ctx, cancel := context.WithCancelCause(base)
	defer cancel(nil)
	ctx, cancelDeadline := s.opts.Clock.WithDeadlineCause(ctx, t.deadline, &DeadlineError{Deadline: t.spec.Deadline})
	defer cancelDeadline()
	t.mu.Lock()
	t.cancel = cancel
	canceled := t.canceled // before the runner started: cancel found nothing to call
	t.mu.Unlock()
	if canceled {
		cancel(causeClient)
	}
	if err := t.ticket.Wait(ctx); err != nil {
		s.endQueued(t, err)
		return
	}
	s.mu.Lock()
	halted := s.halted
	s.mu.Unlock()
	if halted { // the journal keeps it queued for the next start
		s.release(t, s.now())
		t.mu.Lock()
		t.runner = false // none in this process runs it now: a cancel ends it (cancel)
		canceled := t.canceled
		t.mu.Unlock()
		switch {
		case canceled: // cancelled as it was given its slot: the next start must not run it
			s.finish(t, Canceled, nil, engine.Result{}, 0)
		case t.spec.Transient: // its client waits for it now, and none can resume it after
			s.failQueued(t, causeShutdown)
		}
		return
	}

	start := s.now()
	ctx, ok := s.dispatched(ctx, t, cancel, start)
	if !ok {
		return
	}
	// engineTime is the time inside Generate (over every replica tried) less the time its
	// callbacks spent in the daemon (relaying tokens): what daemon_overhead_seconds leaves out.
	var engineTime time.Duration
	res, err := s.generate(ctx, t, &engineTime)
	s.conclude(ctx, t, start, engineTime, res, err)
}

// dispatched marks the task running on the slot it got at start (or ends it, canceled, with ok
// false) and returns the context its generation runs under. It, like conclude, is kept out of
// run, whose frame stays on the stack for the whole generation.
func (s *Service) dispatched(ctx context.Context, t *Task, cancel context.CancelCauseFunc, start time.Time) (context.Context, bool) {
	t.endWait(start)
	t.mu.Lock()
	if t.canceled {
		t.mu.Unlock()
		s.release(t, start)
		s.finish(t, Canceled, nil, engine.Result{}, 0)
		return ctx, false
	}
	t.status = Running
	t.leftQueueLocked()
	t.started = start
	t.cancel = cancel
	t.recordRunningLocked()
	t.mu.Unlock()
	s.m.QueueWait.WithLabelValues(t.engine, t.version, t.poolID, t.spec.Priority.String()).Observe(ms(start.Sub(t.created)))
	s.m.TenantQueueWait.WithLabelValues(t.spec.Owner).Observe(ms(start.Sub(t.created)))
	if t.span.IsValid() { // without one (tracing off) the context would carry an empty span context
		ctx = trace.ContextWithSpanContext(ctx, t.span)
	}
	if s.log.Enabled(ctx, slog.LevelInfo) { // boxing the attributes allocates even when disabled
		s.log.InfoContext(ctx, "task started", "task_id", t.spec.ID, "session_id", t.spec.SessionID, "pool_id", t.poolID,
			"correlation_id", t.spec.CorrelationID, "queue_ms", start.Sub(t.created).Milliseconds())
	}
	return ctx, true
}

// conclude ends a task whose generation, started at start, returned res and err.
func (s *Service) conclude(ctx context.Context, t *Task, start time.Time, engineTime time.Duration, res engine.Result, err error) {
	defer func() { // after finish: the final frame, metrics and log are the daemon's work too
		over := t.placing + s.now().Sub(start) - engineTime
		s.m.Overhead.WithLabelValues(t.engine, t.poolID).Observe(max(over, 0).Seconds())
	}()
	decode := s.now().Sub(start)
	s.release(t, start)
	t.mu.Lock()
	canceled, cut, replica := t.canceled, t.cut, t.replicaID
	t.mu.Unlock()
	switch cause := context.Cause(ctx); {
	case cut != "" && !canceled: // onToken refused the token past the grant or max_tokens
		if cut == engine.StopLimit && !t.spec.OpenEnded { // (an open-ended one's engine was told no limit)
			s.log.Warn("the engine generated past the task's max_tokens; the daemon ended its request there",
				"task_id", t.spec.ID, "pool_id", t.poolID, "replica_id", replica, "max_tokens", t.spec.MaxTokens)
		}
		// As the engine's own end at the limit reads: stop "limit" (facade: finish_reason
		// "length"), tokens_out max_tokens; its usage is what it reported before the cut.
		res.Stop = cut
		s.finish(t, Succeeded, nil, res, decode)
	case err == nil:
		if _, budget := t.spec.engineLimit(); budget && res.Stop == engine.StopLimit {
			t.mu.Lock()
			if t.tokensOut >= t.spec.StopAt { // the engine stopped at the grant it was sent (not its context's end)
				res.Stop = StopBudget
			}
			t.mu.Unlock()
		}
		s.finish(t, Succeeded, nil, res, decode)
	// A cancel sets t.canceled before it cancels ctx: onToken may refuse a token (and the
	// engine return) in between, with no cause on ctx yet.
	case errors.Is(cause, causeClient) || errors.Is(cause, causeDisconnect) || (cause == nil && canceled):
		s.finish(t, Canceled, nil, res, decode)
	case errors.As(cause, new(*DeadlineError)):
		s.finish(t, Failed, &ErrorInfo{Class: ClassDeadline, Message: cause.Error(),
			PoolID: t.poolID, Engine: t.engine}, res, decode)
	// A plain context.Canceled is the end of the service's Run context: the daemon is stopping
	// (Shutdown cuts its tasks with causeShutdown first; this is for one it could not reach).
	case errors.Is(cause, causeDrain) || errors.Is(cause, causeShutdown) || errors.Is(cause, context.Canceled):
		msg := drainMessage(cause)
		if !errors.Is(cause, causeDrain) {
			msg = "the daemon shut down"
		}
		s.finish(t, Failed, &ErrorInfo{Class: ClassPoolUnavailable, Message: msg, Retriable: true,
			RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, res, decode)
	default:
		kind := engine.KindOf(err)
		fault := kind.Fault()
		ei := &ErrorInfo{Class: ClassOfKind(kind), Message: publicMessage(err), PoolID: t.poolID, Engine: t.engine,
			Retriable: fault == engine.FaultReplica || fault == engine.FaultOverload}
		if ei.Message != err.Error() {
			ei.Detail = err.Error()
		}
		if ei.Retriable {
			ei.RetryAfterMs = 1000
		}
		s.finish(t, Failed, ei, res, decode)
	}
}

// endQueued ends a task whose ticket's Wait returned err: it never got (or gave back) a slot.
func (s *Service) endQueued(t *Task, err error) {
	var de *DeadlineError
	switch {
	case errors.Is(err, admission.ErrEvicted):
		s.m.TasksRejected.WithLabelValues(t.engine, s.opts.Code(ClassEvicted)).Inc()
		s.finish(t, Failed, &ErrorInfo{Class: ClassEvicted,
			Message: "evicted from the full queue (drop-lru) to admit a newer task; submit it again under a new task_id", Retriable: true,
			RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
	case errors.Is(err, admission.ErrRemoved), errors.Is(err, causeDrain):
		s.failQueued(t, causeDrain)
	case errors.As(err, &de):
		s.finish(t, Failed, &ErrorInfo{Class: ClassDeadline,
			Message: fmt.Sprintf("the task's deadline of %d ms passed while it was queued", t.spec.Deadline.Milliseconds()),
			PoolID:  t.poolID, Engine: t.engine}, engine.Result{}, 0)
	case errors.Is(err, causeClient), errors.Is(err, causeDisconnect), errors.Is(err, admission.ErrCanceled):
		s.finish(t, Canceled, nil, engine.Result{}, 0)
	case s.j != nil && !errors.Is(err, causeShutdown):
		// The daemon is stopping (Run's ctx ended): with a journal, a task still queued stays
		// queued, and the next start runs it.
	default:
		s.failQueued(t, causeShutdown)
	}
}

// release gives the task's slot back to the queue with what it measured; the tenant's fair
// queueing charge is settled to the tokens the task actually produced.
func (s *Service) release(t *Task, start time.Time) {
	t.mu.Lock()
	first, n := t.firstToken, t.tokensOut
	t.mu.Unlock()
	info := admission.DoneInfo{Service: s.now().Sub(start), Settle: true, Used: n}
	if n > 1 && !first.IsZero() {
		info.Tokens, info.Decode = n, s.now().Sub(first)
	}
	if err := t.ticket.Done(info); err != nil {
		s.log.Warn("releasing a slot", "pool_id", t.poolID, "task_id", t.spec.ID, "err", err)
	}
}

// onToken appends a token, received at now, to the log unless the task was cancelled; it also
// emits a metrics frame after the first token and then at most once per MetricsInterval.
func (s *Service) onToken(ctx context.Context, t *Task, tok engine.Token, now time.Time) error {
	t.mu.Lock()
	if t.canceled {
		t.mu.Unlock()
		return context.Canceled
	}
	if t.spec.StopAt > 0 && t.tokensOut >= t.spec.StopAt {
		t.cut = StopBudget
		t.mu.Unlock()
		return errBudgetSpent
	}
	// The daemon's own max_tokens, whatever the engine was told: one compare per frame. The
	// count is of frames, which is at most the engine's count of tokens (a frame may carry
	// several, engine/llamacpp's split UTF-8 sequences), so a frame past MaxTokens is always
	// one the engine should not have generated; an overrun hidden inside multi-token frames is
	// known only from the engine's final count (attempt.end). The frame at MaxTokens is
	// relayed and the engine's own end awaited: an engine that stops there reports its usage.
	if t.tokensOut >= t.spec.MaxTokens {
		t.cut = engine.StopLimit
		t.mu.Unlock()
		return errLimitReached
	}
	idx := t.tokensOut
	t.tokensOut++
	if t.spec.continuable() {
		t.text.Write(tok.Text)
	}
	first := idx == 0
	if first {
		t.firstToken = now
	}
	if first && s.tracing {
		trace.SpanFromContext(ctx).AddEvent("first token", trace.WithTimestamp(now))
	}
	// Time to first token is measured at the first token with content: engines may emit an
	// empty one first (a role chunk, a partial UTF-8 sequence held back).
	ttft := !t.ttftSeen && len(tok.Text) > 0
	if ttft {
		t.ttftSeen = true
	}
	t.appendTokenLocked(tok.Text, idx)
	wantMetrics := t.nMetrics < maxMetricsFrames && (first || now.Sub(t.lastMetrics) >= s.opts.MetricsInterval)
	tokensOut := t.tokensOut
	t.mu.Unlock()

	if ttft {
		s.m.FirstToken.WithLabelValues(t.engine, t.version, t.poolID, t.spec.Priority.String()).Observe(ms(now.Sub(t.created)))
	}
	if first {
		_ = s.opts.Sessions.MarkWarm(t.spec.SessionID, t.sessionGen) // best effort: the session may have expired mid-task
	}
	if wantMetrics {
		plain, verbose := s.metricsData(t, tokensOut, now)
		t.mu.Lock()
		if !t.canceled && !t.status.Final() {
			t.appendLocked("metrics", plain, verbose)
			t.nMetrics++
			t.lastMetrics = now
		}
		t.mu.Unlock()
	}
	return nil
}

// finish records a task's final state, appends its final frame, updates metrics and logs.
func (s *Service) finish(t *Task, st Status, ei *ErrorInfo, res engine.Result, decode time.Duration) {
	now := s.now()
	t.endWait(now) // a task that ends queued (canceled, expired, evicted, shut down)
	t.mu.Lock()
	if t.status.Final() {
		t.mu.Unlock()
		return
	}
	if st == Succeeded && t.canceled { // cancelled after the engine's last token
		st = Canceled
	}
	t.status = st
	t.leftQueueLocked()
	t.releaseInputsLocked()
	t.finished = now
	if ei != nil && len(ei.Message) > MaxMessage { // an engine's error text can be long (read up to 64 KiB)
		clipped := *ei
		if clipped.Detail == "" {
			clipped.Detail = ei.Message // the whole of it for the log
		}
		clipped.Message = textclip.Clip(ei.Message, MaxMessage)
		ei = &clipped
	}
	t.errInfo = ei
	t.tokensIn = res.TokensIn
	if t.resent > 0 && res.TokensIn > 0 { // the client's prompt, less the text a migration added
		t.tokensIn = max(res.TokensIn-t.resent, 1)
	}
	tokensIn, tokensOut := t.tokensIn, t.tokensOut
	decodeMs := decode.Milliseconds()
	name, data := "end", []byte(nil)
	switch st {
	case Succeeded, Canceled:
		data = endData(tokensOut, decodeMs, st == Canceled, res.Stop, t.migrations, res.TokensCached)
	default:
		name, data = "error", errorData(s.opts.Code(ei.Class), ei)
	}
	if s.opts.Meter != nil {
		// Before the journal's final record: a crash once the journal has written it must find
		// the charge persisted too, and the meter keeps the task charged until the record is on
		// disk (so that a crash before it does not charge the task twice). Before the final
		// frame as well: a client that reads the end and submits again finds the key's budget
		// and tokens-per-minute already settled. (Lock order: t.mu, then the meter's own; the
		// meter never calls back.)
		var pending uint64
		if t.j != nil {
			pending = MarkPending
		}
		s.opts.Meter.Settle(t.spec.Owner, t.spec.ID, pending, t.spec.TPMReserved, t.spec.Grant, tokensOut)
	}
	mark := t.journalFinalLocked(name, data)
	if jm, ok := s.opts.Meter.(JournaledMeter); ok && mark != 0 {
		jm.Journaled(t.spec.ID, mark)
	}
	if t.spec.SessionGrant > 0 {
		// The session's reservation too, before the final frame, for the same reason.
		s.opts.Sessions.Settle(t.spec.SessionID, t.spec.Owner, t.spec.SessionGen, t.spec.SessionGrant, tokensOut)
	}
	switch {
	case t.spec.Transient:
		// Its session is its own, named by no other request: it goes with the task rather
		// than after sessions.ttl, or the facade's requests would fill max_sessions and push
		// out the sessions that clients name. Before the final frame too: the client, answered,
		// may send its next request at once.
		s.opts.Sessions.Delete(t.spec.SessionID, t.spec.Owner)
	case tokensOut > 0:
		// The turn, before the final frame as well: a client that reads the end and then
		// GETs the session sees it (its KV estimate, its TTL restarted).
		_, _ = s.opts.Sessions.RecordTurn(t.spec.SessionID, t.sessionGen, session.TurnInfo{ // best effort, as above
			TokensIn: tokensIn, TokensOut: tokensOut, KVBytesPerToken: t.kvBytes, Warm: true,
		})
	}
	t.logLocked(name, data, nil, mark)
	reason := t.cancelReason
	started, firstToken := t.started, t.firstToken
	replica := t.replicaID // "" when it never ran on one
	t.mu.Unlock()
	close(t.done)

	s.mu.Lock()
	s.finished = append(s.finished, finishedRef{id: t.spec.ID, at: now})
	s.mu.Unlock()

	s.m.TasksFinished.WithLabelValues(t.engine, t.poolID, st.String()).Inc()
	if st == Canceled {
		s.m.TasksCanceled.WithLabelValues(t.engine, t.version, t.poolID, replica, reason).Inc()
	}
	if tokensOut > 0 {
		// tokens_out is counted per replica as each one streams (generate); the tenant's total here.
		s.m.TenantTokens.WithLabelValues(t.spec.Owner).Add(float64(tokensOut))
	}
	if res.TokensIn > 0 { // the prompt the last replica read
		s.m.TokensIn.WithLabelValues(t.engine, t.version, t.poolID, replica).Add(float64(res.TokensIn))
	}
	if !started.IsZero() && !firstToken.IsZero() && st == Succeeded {
		// First token to last, as its help says: the wait for the first is latency_first_token_ms.
		s.m.Decode.WithLabelValues(t.engine, t.version, t.poolID, t.spec.Priority.String()).Observe(ms(now.Sub(firstToken)))
		if tokensOut > 1 { // the gaps the decode time spans: the dashboard's time per token
			s.m.DecodeTokens.WithLabelValues(t.engine, t.version, t.poolID, t.spec.Priority.String()).Add(float64(tokensOut - 1))
		}
	}
	s.logFinished(t, st, ei, tokensIn, tokensOut, decodeMs, started, reason)
}

// logFinished logs a task's end, building the record only when the logger takes info: boxing
// the attributes allocates even when it does not.
//
//nolint:contextcheck // the record has no request context, as with s.log.Info (context.Background)
func (s *Service) logFinished(t *Task, st Status, ei *ErrorInfo, tokensIn, tokensOut int, decodeMs int64, started time.Time, reason string) {
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := []any{"task_id", t.spec.ID, "session_id", t.spec.SessionID, "pool_id", t.poolID,
		"correlation_id", t.spec.CorrelationID, "state", st.String(), "tokens_in", tokensIn,
		"tokens_out", tokensOut, "decode_time_ms", decodeMs}
	if !started.IsZero() {
		attrs = append(attrs, "queue_time_ms", started.Sub(t.created).Milliseconds())
	}
	if st == Canceled {
		attrs = append(attrs, "reason", reason)
	}
	if ei != nil {
		msg := ei.Message
		if ei.Detail != "" {
			msg = ei.Detail
		}
		attrs = append(attrs, "code", s.opts.Code(ei.Class), "err", msg)
	}
	s.log.Info("task finished", attrs...)
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// publicMessage is err's text for the task's client: a network error's addresses (the
// engine's host and port, the daemon's own) are the operator's, shown in pool health to the
// control scope alone, so "dial tcp 10.0.0.7:8000: connect: connection refused" reads
// "dial: connect: connection refused". The log keeps the whole text.
func publicMessage(err error) string {
	msg := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		msg = strings.Replace(msg, op.Error(), op.Op+": "+op.Err.Error(), 1)
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		msg = strings.Replace(msg, dns.Error(), "lookup: "+dns.Err, 1)
	}
	return msg
}
