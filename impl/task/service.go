package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// Error classes returned by the Service. Handlers map them to API codes in one place.
var (
	ErrNotFound     = errors.New("task not found")
	ErrConflict     = errors.New("task id already used with a different request")
	ErrInvalid      = errors.New("invalid task")
	ErrUnavailable  = placement.ErrNoPool
	ErrNoMatch      = placement.ErrNoMatch
	ErrShuttingDown = errors.New("daemon is shutting down")
	ErrRejected     = errors.New("queue full")
)

// RejectError is a refusal because the queue is full.
type RejectError struct {
	Policy     string // reject | drop-lru
	Code       string // ADMISSION_REJECT | QUEUE_FULL_DROP_LRU
	RetryAfter time.Duration
	PoolID     string
	Engine     string
	Capacity   int
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("queue is full (capacity %d, policy %s); retry in %d ms", e.Capacity, e.Policy, e.RetryAfter.Milliseconds())
}

func (e *RejectError) Unwrap() error { return ErrRejected }

// Causes of a running task's cancellation.
var (
	causeClient     = errors.New("canceled by client")
	causeDisconnect = errors.New("client disconnected")
	causeDeadline   = errors.New("deadline passed")
	causeDrain      = errors.New("pool drain deadline passed")
	causeShutdown   = errors.New("daemon shutting down")
)

type pools interface {
	Views() []pool.View
	Replica(id string) (engine.Replica, error)
	ReportFailure(id string)
}

type sessions interface {
	Admit(id string) (session.Info, error)
	Unadmit(id string)
	RecordTurn(id string, ti session.TurnInfo) (session.Info, error)
	Get(id string) (session.Info, bool)
}

// Options configures a Service.
type Options struct {
	Capacity           int
	Policy             admission.Policy
	Pools              pools
	Sessions           sessions
	Metrics            *metrics.Metrics
	Logger             *slog.Logger
	Retention          time.Duration // how long finished tasks stay visible
	MaxRetained        int           // how many finished tasks stay visible
	MetricsInterval    time.Duration // between SSE metrics frames of a running task (default 1s)
	CancelOnDisconnect bool
	Now                func() time.Time
}

// Service admits, dispatches, runs and tracks tasks.
type Service struct {
	opts  Options
	log   *slog.Logger
	m     *metrics.Metrics
	queue *admission.Queue
	now   func() time.Time

	mu       sync.Mutex
	tasks    map[string]*Task
	finished []finishedRef // in finish order, for retention
	load     map[string]int
	closing  bool

	runCtx context.Context
	wg     sync.WaitGroup // runner goroutines
}

type finishedRef struct {
	id string
	at time.Time
}

// New builds a Service. Call Run before Submit.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MetricsInterval <= 0 {
		opts.MetricsInterval = time.Second
	}
	if opts.MaxRetained <= 0 {
		opts.MaxRetained = 1024
	}
	if opts.Retention <= 0 {
		opts.Retention = 10 * time.Minute
	}
	s := &Service{opts: opts, log: opts.Logger, m: opts.Metrics, now: opts.Now,
		tasks: map[string]*Task{}, load: map[string]int{}, runCtx: context.Background()}
	s.queue = admission.New(admission.Options{
		Capacity: opts.Capacity, Policy: opts.Policy,
		Dispatch: s.dispatch, Evict: s.evict, Now: opts.Now,
	})
	return s
}

// Run runs the queue's owner goroutine and the retention janitor until ctx is done. Runner
// goroutines derive from ctx: when it ends, running tasks are cancelled.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.queue.Run(ctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			err := <-done
			for _, it := range s.queue.Drain() {
				if tk := s.lookup(it.ID); tk != nil {
					s.failQueued(tk, causeShutdown)
				}
			}
			s.wg.Wait()
			return err
		case <-t.C:
			s.expire()
			s.expireQueued(ctx)
		}
	}
}

// PoolChanged updates the queue's view of a pool (slots, dispatchability).
func (s *Service) PoolChanged(ctx context.Context, v pool.View) {
	if err := s.queue.SetPool(ctx, v.ID, admission.PoolConfig{
		Slots: v.Slots, Dispatchable: v.Healthy,
		PriorServiceMs: v.PriorServiceMs, PriorTokensPerS: v.PriorTokensPerS,
	}); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, admission.ErrClosed) {
		s.log.Warn("updating the queue's pool", "pool_id", v.ID, "err", err)
	}
}

// Stats returns the queue's statistics.
func (s *Service) Stats(ctx context.Context) (admission.Stats, error) { return s.queue.Stats(ctx) }

// Depth returns the number of queued tasks.
func (s *Service) Depth() int { return s.queue.Depth() }

func (s *Service) lookup(id string) *Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[id]
}

// Submit validates, places and admits a task.
func (s *Service) Submit(ctx context.Context, spec Spec) (Admission, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return Admission{}, ErrShuttingDown
	}
	if t, ok := s.tasks[spec.ID]; ok {
		s.mu.Unlock()
		return s.replay(ctx, t, spec)
	}
	s.mu.Unlock()

	views := s.opts.Pools.Views()
	cands := make([]placement.Candidate, 0, len(views))
	s.mu.Lock()
	for _, v := range views {
		cands = append(cands, placement.Candidate{
			PoolID: v.ID, Engine: v.Engine, ModelRef: v.ModelRef, ModelID: v.ModelID, CtxMax: v.CtxMax,
			Workloads: v.Workloads, Admittable: v.Ready(), Slots: v.Slots, Load: s.load[v.ID],
		})
	}
	s.mu.Unlock()
	mode := placement.Mode(spec.Placement.Mode)
	if mode == "" {
		mode = placement.ModeAuto
	}
	dec, err := placement.Choose(cands, placement.Request{
		Engine: spec.Engine, ModelRef: spec.ModelRef, Workload: spec.Workload, Ctx: spec.Ctx,
		Mode: mode, PinPool: spec.Placement.PinPool, PreferPools: spec.Placement.PreferPools,
		AvoidPools: spec.Placement.AvoidPools, AllowFallback: spec.Placement.AllowFallback,
	})
	s.m.PlacementConsidered.Set(float64(dec.Considered))
	if err != nil {
		s.m.PlacementDecisions.WithLabelValues("no_capacity", strconv.FormatBool(dec.Pinned), strconv.FormatBool(dec.Fallback)).Inc()
		code := "POOL_UNAVAILABLE"
		switch {
		case errors.Is(err, placement.ErrCtxTooLarge):
			code = "INVALID_PARAMS"
			err = fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		s.m.TasksRejected.WithLabelValues(spec.Engine, code).Inc()
		return Admission{}, err
	}
	s.m.PlacementDecisions.WithLabelValues("assigned", strconv.FormatBool(dec.Pinned), strconv.FormatBool(dec.Fallback)).Inc()
	var view pool.View
	for _, v := range views {
		if v.ID == dec.PoolID {
			view = v
		}
	}

	info, err := s.opts.Sessions.Admit(spec.SessionID)
	if err != nil {
		s.m.TasksRejected.WithLabelValues(spec.Engine, "INVALID_PARAMS").Inc()
		return Admission{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}

	now := s.now()
	t := &Task{
		spec: spec, poolID: view.ID, engine: view.Engine, version: view.EngineVersion,
		kvBytes: view.KVBytesPerToken, created: now, deadline: now.Add(spec.Deadline),
		admitted: make(chan struct{}), status: Queued, done: make(chan struct{}),
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.opts.Sessions.Unadmit(spec.SessionID)
		return Admission{}, ErrShuttingDown
	}
	if prev, ok := s.tasks[spec.ID]; ok { // a concurrent post of the same id won
		s.mu.Unlock()
		s.opts.Sessions.Unadmit(spec.SessionID)
		return s.replay(ctx, prev, spec)
	}
	s.tasks[spec.ID] = t
	s.load[t.poolID]++
	s.mu.Unlock()

	adm, err := s.queue.Enqueue(ctx, admission.Item{ID: spec.ID, Pool: t.poolID, Priority: spec.Priority})
	if err != nil {
		s.mu.Lock()
		delete(s.tasks, spec.ID)
		s.load[t.poolID]--
		s.mu.Unlock()
		t.mu.Lock()
		t.rejected = true
		t.mu.Unlock()
		close(t.admitted)
		s.opts.Sessions.Unadmit(spec.SessionID)
		return Admission{}, s.refusal(err, t, adm)
	}
	t.mu.Lock()
	t.appendLocked("started", startedData(adm.Position, adm.PredictedStartMs, t.poolID, t.engine), nil)
	t.mu.Unlock()
	s.m.TasksEnqueued.WithLabelValues(t.engine, t.version, t.poolID, "r0", spec.Priority.String()).Inc()
	if adm.Evicted != nil {
		s.m.Backpressure.WithLabelValues(t.engine, "drop-lru").Inc()
	}
	s.log.Info("task admitted", "task_id", spec.ID, "session_id", spec.SessionID, "pool_id", t.poolID,
		"correlation_id", spec.CorrelationID, "priority", spec.Priority.String(),
		"queue_position", adm.Position, "predicted_start_ms", adm.PredictedStartMs)
	close(t.admitted) // the runner may start now: the admission is recorded and logged first
	return Admission{
		TaskID: spec.ID, PoolID: t.poolID, Engine: t.engine, QueuePosition: adm.Position,
		PredictedStartMs: adm.PredictedStartMs, TokensBudgetRemaining: info.TokensBudgetRemaining,
		TimeBudgetRemaining: spec.Deadline,
	}, nil
}

func (s *Service) refusal(err error, t *Task, adm admission.Admission) error {
	switch {
	case errors.Is(err, admission.ErrRejected), errors.Is(err, admission.ErrDropLRUFull):
		re := &RejectError{Policy: s.opts.Policy.String(), Code: "ADMISSION_REJECT", RetryAfter: adm.RetryAfter,
			PoolID: t.poolID, Engine: t.engine, Capacity: s.opts.Capacity}
		if errors.Is(err, admission.ErrDropLRUFull) {
			re.Code = "QUEUE_FULL_DROP_LRU"
		}
		s.m.TasksRejected.WithLabelValues(t.engine, re.Code).Inc()
		s.m.Backpressure.WithLabelValues(t.engine, re.Policy).Inc()
		s.log.Info("task refused: queue full", "task_id", t.spec.ID, "session_id", t.spec.SessionID,
			"pool_id", t.poolID, "correlation_id", t.spec.CorrelationID, "code", re.Code,
			"retry_after_ms", re.RetryAfter.Milliseconds())
		return re
	case errors.Is(err, admission.ErrClosed):
		return ErrShuttingDown
	case errors.Is(err, admission.ErrUnknownPool):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	default:
		return err
	}
}

// replay answers an idempotent re-post of a known task id.
func (s *Service) replay(ctx context.Context, t *Task, spec Spec) (Admission, error) {
	if t.spec.Fingerprint != spec.Fingerprint {
		return Admission{}, fmt.Errorf("%w: task %s", ErrConflict, spec.ID)
	}
	<-t.admitted
	t.mu.Lock()
	rejected := t.rejected
	t.mu.Unlock()
	if rejected {
		return s.Submit(ctx, spec)
	}
	a := Admission{TaskID: t.spec.ID, PoolID: t.poolID, Engine: t.engine, Replayed: true,
		TimeBudgetRemaining: max(0, t.deadline.Sub(s.now()))}
	if pl, ok, err := s.queue.Position(ctx, t.spec.ID); err == nil && ok {
		a.QueuePosition, a.PredictedStartMs = pl.Position, pl.PredictedStartMs
	}
	if info, ok := s.opts.Sessions.Get(t.spec.SessionID); ok {
		a.TokensBudgetRemaining = info.TokensBudgetRemaining
	}
	return a, nil
}

// Get returns a task's snapshot.
func (s *Service) Get(ctx context.Context, id string) (Snapshot, error) {
	t := s.lookup(id)
	if t == nil {
		return Snapshot{}, ErrNotFound
	}
	<-t.admitted
	snap := t.snapshot()
	if snap.Status == Queued {
		if pl, ok, err := s.queue.Position(ctx, id); err == nil && ok {
			pos, pred := pl.Position, pl.PredictedStartMs
			snap.QueuePosition, snap.PredictedStartMs = &pos, &pred
		}
	}
	return snap, nil
}

// Task returns a known task, for streaming.
func (s *Service) Task(id string) (*Task, error) {
	t := s.lookup(id)
	if t == nil {
		return nil, ErrNotFound
	}
	<-t.admitted
	t.mu.Lock()
	rejected := t.rejected
	t.mu.Unlock()
	if rejected {
		return nil, ErrNotFound
	}
	return t, nil
}

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

// Disconnected is called when a stream's client went away before the task ended.
func (s *Service) Disconnected(ctx context.Context, t *Task) {
	s.m.SSEDisconnects.Inc()
	if s.opts.CancelOnDisconnect {
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
	switch cause {
	case causeDisconnect:
		return "disconnect"
	case causeDrain:
		return "drain"
	case causeShutdown:
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
	if cause == causeShutdown {
		msg = "the daemon shut down before the task ran"
	}
	s.finish(t, Failed, &ErrorInfo{Code: "POOL_UNAVAILABLE", Message: msg, Retriable: true,
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
				if c != nil {
					c(causeShutdown)
				} else if ok, err := s.queue.Cancel(context.Background(), tk.spec.ID); err == nil && ok {
					s.failQueued(tk, causeShutdown)
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
		s.m.TasksRejected.WithLabelValues(t.engine, "QUEUE_FULL_DROP_LRU").Inc()
		s.finish(t, Failed, &ErrorInfo{Code: "QUEUE_FULL_DROP_LRU",
			Message: "evicted from the full queue (drop-lru) to admit a newer task", Retriable: true,
			RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
	}()
}

// dispatch is the queue's Dispatch callback (owner goroutine: must not block).
func (s *Service) dispatch(it admission.Item) {
	t := s.lookup(it.ID)
	if t == nil { // cannot happen: tasks are registered before Enqueue
		s.log.Error("dispatched an unknown task", "task_id", it.ID)
		go func() { _ = s.queue.Done(context.Background(), it.Pool, admission.DoneInfo{}) }()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(t)
	}()
}

// run executes a dispatched task on its pool's replica.
func (s *Service) run(t *Task) {
	<-t.admitted
	s.mu.Lock()
	base := s.runCtx
	s.mu.Unlock()
	ctx, cancel := context.WithCancelCause(base)
	defer cancel(nil)
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, t.deadline, causeDeadline)
	defer cancelDeadline()

	start := s.now()
	t.mu.Lock()
	if t.canceled {
		t.mu.Unlock()
		s.release(t, start, engine.Result{})
		s.finish(t, Canceled, nil, engine.Result{}, 0)
		return
	}
	t.status = Running
	t.started = start
	t.cancel = cancel
	t.mu.Unlock()
	s.m.TasksStarted.WithLabelValues(t.engine, t.version, t.poolID, "r0", t.spec.Priority.String()).Inc()
	s.log.Info("task started", "task_id", t.spec.ID, "session_id", t.spec.SessionID, "pool_id", t.poolID,
		"correlation_id", t.spec.CorrelationID, "queue_ms", start.Sub(t.created).Milliseconds())

	var res engine.Result
	rep, err := s.opts.Pools.Replica(t.poolID)
	if err == nil {
		res, err = rep.Generate(ctx, engine.Request{
			TaskID: t.spec.ID, Prompt: t.spec.Prompt, MaxTokens: t.spec.MaxTokens, Seed: t.spec.Seed,
			Deterministic: t.spec.Deterministic, Ctx: t.spec.Ctx,
		}, func(tok engine.Token) error { return s.onToken(ctx, t, tok) })
	}
	decode := s.now().Sub(start)
	s.release(t, start, res)
	switch cause := context.Cause(ctx); {
	case err == nil:
		s.finish(t, Succeeded, nil, res, decode)
	case cause == causeClient || cause == causeDisconnect:
		s.finish(t, Canceled, nil, res, decode)
	case cause == causeDeadline:
		s.finish(t, Failed, &ErrorInfo{Code: "DEADLINE_UNMET",
			Message: fmt.Sprintf("the task's deadline of %d ms passed", t.spec.Deadline.Milliseconds()),
			PoolID:  t.poolID, Engine: t.engine}, res, decode)
	case cause == causeDrain || cause == causeShutdown:
		msg := "the pool's drain deadline passed"
		if cause == causeShutdown {
			msg = "the daemon shut down"
		}
		s.finish(t, Failed, &ErrorInfo{Code: "POOL_UNAVAILABLE", Message: msg, Retriable: true,
			RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, res, decode)
	default:
		kind := engine.KindOf(err)
		if kind == engine.KindPoolUnavailable || kind == engine.KindWorkerReset {
			s.opts.Pools.ReportFailure(t.poolID)
		}
		ei := &ErrorInfo{Code: kind.String(), Message: err.Error(), PoolID: t.poolID, Engine: t.engine,
			Retriable: kind != engine.KindInvalidRequest && kind != engine.KindInternal}
		if ei.Retriable {
			ei.RetryAfterMs = 1000
		}
		s.finish(t, Failed, ei, res, decode)
	}
}

// release frees the task's slot in the queue with what it measured.
func (s *Service) release(t *Task, start time.Time, res engine.Result) {
	t.mu.Lock()
	first, n := t.firstToken, t.tokensOut
	t.mu.Unlock()
	info := admission.DoneInfo{Service: s.now().Sub(start)}
	if n > 1 && !first.IsZero() {
		info.Tokens, info.Decode = n, s.now().Sub(first)
	}
	if err := s.queue.Done(context.Background(), t.poolID, info); err != nil && !errors.Is(err, admission.ErrClosed) {
		s.log.Warn("releasing a slot", "pool_id", t.poolID, "err", err)
	}
}

// onToken appends a token to the log unless the task was cancelled; it also emits a metrics
// frame after the first token and then at most once per MetricsInterval.
func (s *Service) onToken(ctx context.Context, t *Task, tok engine.Token) error {
	now := s.now()
	t.mu.Lock()
	if t.canceled {
		t.mu.Unlock()
		return context.Canceled
	}
	idx := t.tokensOut
	t.tokensOut++
	first := idx == 0
	if first {
		t.firstToken = now
	}
	var data [256]byte
	t.appendLocked("token", sse.AppendTokenData(data[:0], tok.Text, idx), nil)
	wantMetrics := t.nMetrics < maxMetricsFrames && (first || now.Sub(t.lastMetrics) >= s.opts.MetricsInterval)
	tokensOut := t.tokensOut
	t.mu.Unlock()

	if first {
		s.m.FirstToken.WithLabelValues(t.engine, t.version, t.poolID, t.spec.Priority.String()).
			Observe(float64(now.Sub(t.created).Microseconds()) / 1000)
		s.opts.Sessions.RecordTurn(t.spec.SessionID, session.TurnInfo{Warm: true})
	}
	if wantMetrics {
		plain, verbose := s.metricsData(ctx, t, tokensOut, now)
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

// metricsData builds a metrics frame's payload, plain and verbose.
func (s *Service) metricsData(ctx context.Context, t *Task, tokensOut int, now time.Time) ([]byte, []byte) {
	rates, err := s.queue.PoolRates(ctx, t.poolID)
	tps := rates.TokensPerS
	if err != nil || tps <= 0 {
		tps = 1
	}
	want := t.spec.MaxTokens
	if t.spec.ExpectedTokens > 0 {
		want = min(t.spec.ExpectedTokens, t.spec.MaxTokens)
	}
	remaining := float64(max(want-tokensOut, 0))
	a := float64(t.deadline.Sub(now).Milliseconds())
	r := remaining / tps * 1000
	p := OnTimeProbability(a, r)
	depth := s.queue.Depth()
	warm := tokensOut > 0
	b := make([]byte, 0, 160)
	b = append(b, `{"queue_depth":`...)
	b = strconv.AppendInt(b, int64(depth), 10)
	b = append(b, `,"on_time_probability":`...)
	b = strconv.AppendFloat(b, p, 'f', -1, 64)
	b = append(b, `,"kv_warmth":`...)
	b = strconv.AppendBool(b, warm)
	b = append(b, `,"tokens_out":`...)
	b = strconv.AppendInt(b, int64(tokensOut), 10)
	b = append(b, `,"time_budget_remaining_ms":`...)
	b = strconv.AppendInt(b, max(int64(a), 0), 10)
	if info, ok := s.opts.Sessions.Get(t.spec.SessionID); ok && info.TokensBudgetRemaining != nil {
		b = append(b, `,"tokens_budget_remaining":`...)
		b = strconv.AppendInt(b, *info.TokensBudgetRemaining, 10)
	}
	plain := append(b, '}')
	human := fmt.Sprintf("decoding on pool %s: %d of up to %d tokens, %.0f tokens/s, %d ms left, on-time probability %.2f",
		t.poolID, tokensOut, want, tps, max(int64(a), 0), p)
	verbose := append(append(append([]byte(nil), b...), `,"human":`...), sse.AppendString(nil, human)...)
	verbose = append(verbose, '}')
	return plain, verbose
}

// OnTimeProbability is the documented estimate p = 1 / (1 + exp(−(A − R) / s)) with
// s = max(50, 0.25·R), where A is the time left until the deadline and R the predicted time
// still needed, both in milliseconds; rounded to 3 decimals. It is 0 once no time is left.
func OnTimeProbability(a, r float64) float64 {
	if a <= 0 {
		return 0
	}
	sc := math.Max(50, 0.25*r)
	p := 1 / (1 + math.Exp(-(a-r)/sc))
	return math.Round(p*1000) / 1000
}

// finish records a task's final state, appends its final frame, updates metrics and logs.
func (s *Service) finish(t *Task, st Status, ei *ErrorInfo, res engine.Result, decode time.Duration) {
	now := s.now()
	t.mu.Lock()
	if t.status.Final() {
		t.mu.Unlock()
		return
	}
	if st == Succeeded && t.canceled { // cancelled after the engine's last token
		st = Canceled
	}
	t.status = st
	t.finished = now
	t.errInfo = ei
	tokensOut := t.tokensOut
	decodeMs := decode.Milliseconds()
	switch st {
	case Succeeded, Canceled:
		t.appendLocked("end", endData(tokensOut, decodeMs, st == Canceled, res.Stop), nil)
	default:
		t.appendLocked("error", errorData(ei), nil)
	}
	reason := t.cancelReason
	started := t.started
	t.mu.Unlock()
	close(t.done)

	s.mu.Lock()
	s.load[t.poolID]--
	s.finished = append(s.finished, finishedRef{id: t.spec.ID, at: now})
	s.mu.Unlock()

	s.m.TasksFinished.WithLabelValues(t.engine, t.poolID, st.String()).Inc()
	if st == Canceled {
		s.m.TasksCanceled.WithLabelValues(t.engine, t.version, t.poolID, "r0", reason).Inc()
	}
	if tokensOut > 0 {
		s.m.TokensOut.WithLabelValues(t.engine, t.version, t.poolID, "r0").Add(float64(tokensOut))
	}
	if res.TokensIn > 0 {
		s.m.TokensIn.WithLabelValues(t.engine, t.version, t.poolID, "r0").Add(float64(res.TokensIn))
	}
	if !started.IsZero() && st == Succeeded {
		s.m.Decode.WithLabelValues(t.engine, t.version, t.poolID, t.spec.Priority.String()).Observe(float64(decode.Microseconds()) / 1000)
	}
	if tokensOut > 0 {
		s.opts.Sessions.RecordTurn(t.spec.SessionID, session.TurnInfo{
			TokensIn: res.TokensIn, TokensOut: tokensOut, KVBytesPerToken: t.kvBytes, Warm: true,
		})
	}
	attrs := []any{"task_id", t.spec.ID, "session_id", t.spec.SessionID, "pool_id", t.poolID,
		"correlation_id", t.spec.CorrelationID, "state", st.String(), "tokens_in", res.TokensIn,
		"tokens_out", tokensOut, "decode_time_ms", decodeMs}
	if !started.IsZero() {
		attrs = append(attrs, "queue_time_ms", started.Sub(t.created).Milliseconds())
	}
	if st == Canceled {
		attrs = append(attrs, "reason", reason)
	}
	if ei != nil {
		attrs = append(attrs, "code", ei.Code, "err", ei.Message)
	}
	s.log.Info("task finished", attrs...)
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
			s.finish(t, Failed, &ErrorInfo{Code: "DEADLINE_UNMET",
				Message: fmt.Sprintf("the task's deadline of %d ms passed while it was queued", t.spec.Deadline.Milliseconds()),
				PoolID:  t.poolID, Engine: t.engine}, engine.Result{}, 0)
		}
	}
}

func startedData(pos int, predicted int64, poolID, eng string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"queue_position":`...)
	b = strconv.AppendInt(b, int64(pos), 10)
	b = append(b, `,"predicted_start_ms":`...)
	b = strconv.AppendInt(b, predicted, 10)
	b = append(b, `,"pool_id":`...)
	b = sse.AppendString(b, poolID)
	b = append(b, `,"engine":`...)
	b = sse.AppendString(b, eng)
	return append(b, '}')
}

func endData(tokensOut int, decodeMs int64, canceled bool, stop engine.StopReason) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"tokens_out":`...)
	b = strconv.AppendInt(b, int64(tokensOut), 10)
	b = append(b, `,"decode_ms":`...)
	b = strconv.AppendInt(b, decodeMs, 10)
	b = append(b, `,"decode_time_ms":`...)
	b = strconv.AppendInt(b, decodeMs, 10)
	switch {
	case canceled:
		b = append(b, `,"canceled":true,"stop_reason":"canceled"`...)
	case stop != "":
		b = append(b, `,"stop_reason":`...)
		b = sse.AppendString(b, string(stop))
	}
	return append(b, '}')
}

func errorData(ei *ErrorInfo) []byte {
	b := make([]byte, 0, 192)
	b = append(b, `{"code":`...)
	b = sse.AppendString(b, ei.Code)
	b = append(b, `,"message":`...)
	b = sse.AppendString(b, ei.Message)
	b = append(b, `,"retriable":`...)
	b = strconv.AppendBool(b, ei.Retriable)
	if ei.RetryAfterMs > 0 {
		b = append(b, `,"retry_after_ms":`...)
		b = strconv.AppendInt(b, ei.RetryAfterMs, 10)
	}
	if ei.Engine != "" {
		b = append(b, `,"engine":`...)
		b = sse.AppendString(b, ei.Engine)
	}
	if ei.PoolID != "" {
		b = append(b, `,"pool_id":`...)
		b = sse.AppendString(b, ei.PoolID)
	}
	return append(b, '}')
}
