package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
)

// Submit validates, places and admits a task.
func (s *Service) Submit(ctx context.Context, spec Spec) (_ Admission, retErr error) {
	if math.IsNaN(spec.Weight) || math.IsInf(spec.Weight, 0) {
		// Its admission record could not be encoded: the journal would hold an empty one,
		// which no restart could read.
		return Admission{}, fmt.Errorf("%w: weight %v of key %q is not a number", ErrInvalid, spec.Weight, spec.Owner)
	}
	enqueued := func() {} // ends the task's pending count in its pool's load, once placed
	entered := s.now()
	s.mu.Lock()
	for {
		if s.closing {
			s.mu.Unlock()
			s.m.TasksRejected.WithLabelValues(spec.Engine, s.opts.Code(ClassPoolUnavailable)).Inc()
			return Admission{}, ErrShuttingDown
		}
		if t, ok := s.tasks[spec.ID]; ok {
			s.mu.Unlock()
			return s.replay(ctx, t, spec)
		}
		first, ok := s.admitting[spec.ID]
		if !ok {
			break
		}
		// A concurrent post of the same id is being admitted: its outcome is this one's too
		// (the task it made, replayed), unless it was refused (then this one admits it). Not
		// waiting, this post would meet the session's turn, the queue's room, that the first
		// one took, and be refused for a task that stands admitted.
		if first == nil {
			first = make(chan struct{})
			s.admitting[spec.ID] = first
		}
		s.mu.Unlock()
		select {
		case <-first:
		case <-ctx.Done():
			return Admission{}, context.Cause(ctx)
		}
		s.mu.Lock()
	}
	s.admitting[spec.ID] = nil
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		waiting := s.admitting[spec.ID]
		delete(s.admitting, spec.ID)
		s.mu.Unlock()
		if waiting != nil {
			close(waiting)
		}
	}()

	reqCtx := ctx
	var placeSpan, admitSpan trace.Span // nil when tracing is off
	if s.tracing {
		_, placeSpan = s.opts.Tracer.Start(ctx, "task.placement", trace.WithTimestamp(entered),
			trace.WithAttributes(attribute.String("task.id", spec.ID), attribute.String("engine", spec.Engine)))
	}
	sc := s.placeScratch()
	defer s.scratch.Put(sc) // views and cands are not used past Submit
	sc.views = s.opts.Pools.ViewsInto(sc.views)
	views := sc.views
	cands := sc.cands[:0]
	mode := placement.Mode(spec.Placement.Mode)
	if mode == "" {
		mode = placement.ModeAuto
	}
	// Placement and its pending count are one step under placeMu: a task placed on a pool
	// counts in that pool's load from the decision until the queue counts it (Enqueue), so
	// that admissions placing at the same moment see each other and spread out, instead of
	// all choosing the pool that was least loaded before any of them was enqueued.
	s.placeMu.Lock()
	for _, v := range views {
		// The pool's load is the queue's own count (busy slots plus queued tasks), the same
		// that pool health reports as slots_busy and queue_depth, plus the tasks placed on
		// it and not enqueued yet.
		busy, queued := s.queue.Load(v.ID)
		cands = append(cands, placement.Candidate{
			PoolID: v.ID, Engine: v.Engine, ModelRef: v.ModelRef, ModelID: v.ModelID, CtxMax: v.CtxMax,
			Workloads: v.Workloads, Admittable: v.Ready(), Slots: v.SlotsTotal(), Load: busy + queued + s.placing[v.ID],
		})
	}
	sc.cands = cands
	dec, err := placement.Choose(cands, placement.Request{
		Engine: spec.Engine, ModelRef: spec.ModelRef, Workload: spec.Workload, Ctx: spec.Ctx,
		Mode: mode, PinPool: spec.Placement.PinPool, PreferPools: spec.Placement.PreferPools,
		AvoidPools: spec.Placement.AvoidPools, AllowFallback: spec.Placement.AllowFallback,
	})
	if err == nil {
		s.placing[dec.PoolID]++
		placed := dec.PoolID
		defer func() { // normally done at Enqueue already: then placed is ""
			if placed != "" {
				s.placed(placed)
			}
		}()
		enqueued = func() { s.placed(placed); placed = "" }
	}
	s.placeMu.Unlock()
	s.m.PlacementConsidered.Set(float64(dec.Considered))
	if placeSpan != nil {
		placeSpan.SetAttributes(attribute.String("pool.id", dec.PoolID), attribute.Int("placement.considered", dec.Considered))
		endSpan(placeSpan, err, s.now())
	}
	if err != nil {
		s.m.PlacementDecisions.WithLabelValues("no_capacity", strconv.FormatBool(dec.Pinned), strconv.FormatBool(dec.Fallback)).Inc()
		class := ClassPoolUnavailable
		if errors.Is(err, placement.ErrCtxTooLarge) {
			class = ClassInvalid
			err = fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		s.m.TasksRejected.WithLabelValues(spec.Engine, s.opts.Code(class)).Inc()
		return Admission{}, err
	}
	s.m.PlacementDecisions.WithLabelValues("assigned", strconv.FormatBool(dec.Pinned), strconv.FormatBool(dec.Fallback)).Inc()
	var view pool.View
	for _, v := range views {
		if v.ID == dec.PoolID {
			view = v
		}
	}
	if pin := spec.Placement.PinReplica; pin != "" && !slices.ContainsFunc(view.Replicas, func(r pool.ReplicaView) bool { return r.ID == pin }) {
		s.m.TasksRejected.WithLabelValues(spec.Engine, s.opts.Code(ClassPoolUnavailable)).Inc()
		return Admission{}, fmt.Errorf("%w: pool %s has no replica %s", ErrNoMatch, view.ID, pin)
	}
	if pin := spec.Placement.PinReplica; pin != "" && slices.ContainsFunc(view.Replicas, func(r pool.ReplicaView) bool { return r.ID == pin && r.Draining }) {
		// It would wait in the queue for a replica that takes no task until it is resumed.
		s.m.TasksRejected.WithLabelValues(spec.Engine, s.opts.Code(ClassPoolUnavailable)).Inc()
		return Admission{}, fmt.Errorf("%w: replica %s of pool %s is draining", ErrUnavailable, pin, view.ID)
	}

	if s.tracing {
		ctx, admitSpan = s.opts.Tracer.Start(reqCtx, "task.admission", trace.WithTimestamp(s.now()),
			trace.WithAttributes(attribute.String("task.id", spec.ID), attribute.String("pool.id", view.ID)))
		defer func() { endSpan(admitSpan, retErr, s.now()) }()
	}
	info, err := s.opts.Sessions.Admit(spec.SessionID, spec.Owner)
	if err != nil {
		s.m.TasksRejected.WithLabelValues(spec.Engine, s.opts.Code(ClassInvalid)).Inc()
		if errors.Is(err, session.ErrNotFound) { // another key's session: as unknown as a task id
			return Admission{}, err
		}
		return Admission{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}

	now := s.now()
	t := &Task{
		spec: spec, poolID: view.ID, engine: view.Engine, version: view.EngineVersion,
		kvBytes: view.KVBytesPerToken, created: now, placing: now.Sub(entered), deadline: now.Add(spec.Deadline),
		span: trace.SpanContextFromContext(reqCtx), status: Queued, done: make(chan struct{}), j: s.j, sessionGen: info.Gen,
		runner: true, // it ends refused, or its runner starts once the admission is durable
	}
	// Enqueued under s.mu: the task becomes visible with its admission recorded (the journal
	// sees admissions in the queue's order, the started frame comes first in its log), and a
	// concurrent post of the same id finds it. Its runner starts once the admission is durable.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.opts.Sessions.Unadmit(spec.SessionID, info.Gen)
		s.m.TasksRejected.WithLabelValues(spec.Engine, s.opts.Code(ClassPoolUnavailable)).Inc()
		return Admission{}, ErrShuttingDown
	}
	if prev, ok := s.tasks[spec.ID]; ok { // a concurrent post of the same id won
		s.mu.Unlock()
		s.opts.Sessions.Unadmit(spec.SessionID, info.Gen)
		return s.replay(ctx, prev, spec)
	}
	adm, err := s.queue.EnqueueTicket(&t.ticket, spec.item(t.poolID))
	enqueued()
	if err != nil {
		s.mu.Unlock()
		s.opts.Sessions.Unadmit(spec.SessionID, info.Gen)
		return Admission{}, s.refusal(err, t, adm)
	}
	s.tasks[spec.ID] = t
	s.seq++
	t.seq = s.seq
	t.mu.Lock()
	if s.j != nil {
		t.recordAdmissionLocked()
	}
	t.appendLocked("started", startedData(adm.Position, adm.PredictedStartMs, t.poolID, t.engine), nil)
	seq := t.spans[0].seq
	t.admitSeq = seq
	t.mu.Unlock()
	s.mu.Unlock()
	if s.j != nil {
		// 202 means durable. The wait is one batch (a few ms); a client that leaves meanwhile
		// does not undo the admission.
		if jerr := s.j.Wait(context.WithoutCancel(ctx), seq); jerr != nil {
			return Admission{}, s.undoAdmission(ctx, t, jerr)
		}
	}
	// Queued tasks are not placed yet (the replica is chosen at dispatch): replica_id is empty.
	s.m.TasksEnqueued.WithLabelValues(t.engine, t.version, t.poolID, "", spec.Priority.String()).Inc()
	if adm.Evicted != nil {
		s.m.Backpressure.WithLabelValues(t.engine, "drop-lru").Inc()
	}
	if s.log.Enabled(ctx, slog.LevelInfo) { // boxing the attributes allocates even when disabled
		s.log.InfoContext(ctx, "task admitted", "task_id", spec.ID, "session_id", spec.SessionID, "pool_id", t.poolID,
			"correlation_id", spec.CorrelationID, "priority", spec.Priority.String(),
			"queue_position", adm.Position, "predicted_start_ms", adm.PredictedStartMs)
	}
	if s.tracing {
		_, wait := s.opts.Tracer.Start(reqCtx, "task.queue_wait", trace.WithTimestamp(t.created),
			trace.WithAttributes(attribute.String("task.id", spec.ID), attribute.String("pool.id", t.poolID),
				attribute.Int("queue.position", adm.Position)))
		t.mu.Lock()
		t.waitSpan = wait
		t.mu.Unlock()
	}
	// The runner waits on the ticket: the admission is recorded and logged first.
	s.mu.Lock()
	base := s.runCtx
	s.mu.Unlock()
	s.wg.Add(1)
	go s.run(base, t) //nolint:contextcheck // the task outlives the request: it runs under the service's Run context

	return Admission{
		TaskID: spec.ID, PoolID: t.poolID, Engine: t.engine, QueuePosition: adm.Position,
		PredictedStartMs: adm.PredictedStartMs, TokensBudgetRemaining: info.TokensBudgetRemaining,
		TimeBudgetRemaining: spec.Deadline,
	}, nil
}

// placed ends one pending placement on pool: the queue counts the task now, or it was refused.
func (s *Service) placed(pool string) {
	s.placeMu.Lock()
	if s.placing[pool]--; s.placing[pool] <= 0 {
		delete(s.placing, pool)
	}
	s.placeMu.Unlock()
}

// errNotDurable withdraws the ticket of a task whose admission the journal could not make durable.
var errNotDurable = errors.New("the admission is not durable")

// undoAdmission refuses an admitted task whose admission the journal could not make durable.
// Its runner never started: the task's ticket is withdrawn here.
func (s *Service) undoAdmission(ctx context.Context, t *Task, jerr error) error {
	s.log.Error("task refused: the journal failed", "task_id", t.spec.ID, "correlation_id", t.spec.CorrelationID, "err", jerr)
	t.mu.Lock()
	t.canceled, t.rejected, t.cancelReason = true, true, "journal"
	t.mu.Unlock()
	s.mu.Lock()
	delete(s.tasks, t.spec.ID)
	s.mu.Unlock()
	// Still queued: it leaves the queue. Granted a slot already: the slot goes back to the pool.
	withdraw, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	stop(errNotDurable)
	_ = t.ticket.Wait(withdraw) // returns errNotDurable, or why the queue already let it go
	s.opts.Sessions.Unadmit(t.spec.SessionID, t.sessionGen)
	s.j.Retire(t.spec.ID)
	s.m.TasksRejected.WithLabelValues(t.engine, s.opts.Code(ClassInternal)).Inc()
	return fmt.Errorf("%w: %w", ErrNotDurable, jerr)
}

func (s *Service) refusal(err error, t *Task, adm admission.Admission) error {
	switch {
	case errors.Is(err, admission.ErrRejected), errors.Is(err, admission.ErrDropLRUFull):
		re := &RejectError{Policy: s.opts.Policy.String(), Class: ClassQueueFull, RetryAfter: adm.RetryAfter,
			PoolID: t.poolID, Engine: t.engine, Capacity: s.opts.Capacity}
		if errors.Is(err, admission.ErrDropLRUFull) {
			re.Class = ClassEvicted
		}
		code := s.opts.Code(re.Class)
		s.m.TasksRejected.WithLabelValues(t.engine, code).Inc()
		s.m.Backpressure.WithLabelValues(t.engine, re.Policy).Inc()
		s.log.Info("task refused: queue full", "task_id", t.spec.ID, "session_id", t.spec.SessionID,
			"pool_id", t.poolID, "correlation_id", t.spec.CorrelationID, "code", code,
			"retry_after_ms", re.RetryAfter.Milliseconds())
		return re
	case errors.Is(err, admission.ErrUnknownPool):
		s.m.TasksRejected.WithLabelValues(t.engine, s.opts.Code(ClassPoolUnavailable)).Inc()
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return err
	}
}

// replay answers an idempotent re-post of a known task id.
func (s *Service) replay(ctx context.Context, t *Task, spec Spec) (Admission, error) {
	// Another key's task under the same id is a conflict too: its body is not this one's to see.
	if t.spec.Fingerprint != spec.Fingerprint || t.spec.Owner != spec.Owner {
		return Admission{}, fmt.Errorf("%w: task %s", ErrConflict, spec.ID)
	}
	t.mu.Lock()
	rejected := t.rejected
	t.mu.Unlock()
	if rejected {
		return s.Submit(ctx, spec)
	}
	a := Admission{TaskID: t.spec.ID, PoolID: t.poolID, Engine: t.engine, Replayed: true,
		TimeBudgetRemaining: max(0, t.deadline.Sub(s.now())), SessionGen: t.SessionGen()}
	if pl, ok := t.ticket.Position(); ok {
		a.QueuePosition, a.PredictedStartMs = pl.Position, pl.PredictedStartMs
	}
	if info, ok := s.sessionOf(t); ok {
		a.TokensBudgetRemaining = info.TokensBudgetRemaining
	}
	return a, nil
}

// sessionOf is t's session, if the session of its id is still the one t was admitted into (not
// deleted, expired or evicted since, and perhaps named again by another key).
func (s *Service) sessionOf(t *Task) (session.Info, bool) {
	info, ok := s.opts.Sessions.Get(t.spec.SessionID)
	if !ok || !info.Admitted(t.SessionGen(), t.spec.Owner) {
		return session.Info{}, false
	}
	return info, true
}

// Replay answers a re-post of a task that stands admitted under spec's id: its admission again
// (Replayed), or ErrConflict for another body. ok is false when there is no such task of
// spec's owner (none, another key's, or one refused, which a re-post admits anew): Submit
// then decides. It
// reserves and counts nothing, so that a re-post is never refused for the rate or the budget
// its first post used.
func (s *Service) Replay(ctx context.Context, spec Spec) (_ Admission, ok bool, _ error) {
	t := s.lookup(ctx, spec.ID)
	if t == nil {
		return Admission{}, false, nil
	}
	if t.spec.Owner != spec.Owner {
		return Admission{}, false, nil // another key's: admission answers as for any post of it
	}
	t.mu.Lock()
	rejected := t.rejected
	t.mu.Unlock()
	if rejected {
		return Admission{}, false, nil
	}
	adm, err := s.replay(ctx, t, spec)
	return adm, true, err
}

// endSpan ends a span at now, with an error status when err is not nil.
func endSpan(sp trace.Span, err error, now time.Time) {
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End(trace.WithTimestamp(now))
}

// endWait ends the task's task.queue_wait span (at dispatch, or when it ends queued); a
// second call does nothing.
func (t *Task) endWait(now time.Time) {
	t.mu.Lock()
	sp := t.waitSpan
	t.waitSpan = nil
	t.mu.Unlock()
	if sp != nil {
		sp.End(trace.WithTimestamp(now))
	}
}
