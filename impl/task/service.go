package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/orchestratord/orchestratord/engine/gpu"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
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
	Class      Class  // ClassQueueFull | ClassEvicted
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
	causeDrain      = errors.New("pool drain deadline passed")
	causeShutdown   = errors.New("daemon shutting down")
)

type pools interface {
	Views() []pool.View
	// ViewsInto is Views written over dst's storage (admission's placement keeps dst).
	ViewsInto(dst []pool.View) []pool.View
	// Get is one pool's view, as Views has it.
	Get(id string) (pool.View, bool)
	// GetInto is Get with the replicas written over reps (replica placement keeps reps).
	GetInto(id string, reps []pool.ReplicaView) (pool.View, bool)
	// Acquire hands out a replica's engine for one generation; release ends its use. Neither
	// counts busy slots: the runner puts the task's slot on the replica in the queue.
	Acquire(poolID, replicaID string) (lease pool.Lease, release func(), err error)
	// ReportFailure and ReportSuccess feed a replica's breaker (replica faults only), with
	// the lease Acquire handed out for the generation.
	ReportFailure(poolID, replicaID string, lease pool.Lease)
	ReportSuccess(poolID, replicaID string, lease pool.Lease)
}

type sessions interface {
	// Admit counts a turn of the session for the key named owner (another key's session is
	// session.ErrNotFound).
	Admit(id, owner string) (session.Info, error)
	Unadmit(id string, gen uint64)
	// Reserve takes a recovered task's reservation of its session's token budget again, and
	// Settle ends a task's reservation (Spec.SessionGrant), charging the tokens it produced.
	Reserve(id, owner string, want int) (session.Reservation, error)
	Settle(id, owner string, gen uint64, granted, used int)
	RecordTurn(id string, gen uint64, ti session.TurnInfo) (session.Info, error)
	// MarkWarm marks the session KV-warm at a turn's first token, its KV estimate left as the
	// last turn's.
	MarkWarm(id string, gen uint64) error
	SetReplica(id string, gen uint64, replica string) error
	Get(id string) (session.Info, bool)
	// Delete forgets a transient task's session when the task ends (Spec.Transient).
	Delete(id, owner string)
}

// gpuInventory is the GPU view placement reads (engine/gpu.Probe).
type gpuInventory interface {
	Snapshot(ctx context.Context) gpu.Inventory
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
	Clock              Clock // default: the system clock
	// Code names a failure class with its API error code, for error frames, logs and the
	// reason label of tasks_rejected_total (impl.FailureCode in production; Class.String
	// when nil).
	Code func(Class) string
	// MaxBatchWait bounds how long a batch task waits behind interactive ones (0: no bound).
	MaxBatchWait time.Duration
	// Journal records admissions, events and terminal states so that a restart loses nothing
	// admitted (see Recover). Nil: tasks live in memory only.
	Journal Journal
	// GPUs reports the memory of the devices replicas run on, for placement's VRAM fit
	// (the engine/gpu Probe, over NVML). Nil, or without NVML, the fit is unknown and
	// excludes no replica.
	GPUs gpuInventory
	// Tracer records the spans of a task: task.placement and task.admission under the
	// request's span, task.queue_wait from admission to dispatch, and task.engine for the
	// engine request. Default: a no-op tracer.
	Tracer trace.Tracer
	// Meter is told, when a task ends, how many of the max_tokens reserved at its admission it
	// used (the key's tokens-per-minute bucket gets the rest back). Nil: nobody is told.
	Meter Meter
}

// Meter settles what a task reserved at admission (reserved: its max_tokens; granted: its
// budget grant, 0 without a budget) against the tokens it used. mark is MarkPending with a
// journal (0 without): the settle comes before the task's final record is given to the journal,
// so that a meter that persists has the charge on disk before the record can be (a crash that
// kept the record and lost the charge would leave the task's tokens never charged), and may
// keep the task until that record is on disk, so that a restart that finds the task unended
// (its end lost with the machine) does not charge it twice; a meter that implements
// JournaledMeter is then told the record's sequence number. Restore takes again, at a restart,
// the grant of a recovered task not yet ended: the admission that reserved it was in the
// process before, and its Settle comes in this one. Recovered is told once the recovered tasks
// that had ended unrecorded were settled again.
type Meter interface {
	Settle(owner, task string, mark uint64, reserved, granted, used int)
	Restore(owner string, granted int)
	Recovered()
}

// MarkPending is the mark Settle is given for a journaled task: its final record is appended
// after the settle, and its sequence number is not known yet.
const MarkPending uint64 = math.MaxUint64

// JournaledMeter is a Meter told, after it settled a journaled task (mark MarkPending), the
// journal's sequence number of the task's final record.
type JournaledMeter interface {
	Journaled(task string, mark uint64)
}

// Service admits, dispatches, runs and tracks tasks.
type Service struct {
	opts    Options
	scratch sync.Pool // *placeScratch: placement's slices, reused from task to task
	log     *slog.Logger
	m       *metrics.Metrics
	queue   *admission.Queue
	now     func() time.Time
	j       Journal
	// tracing is false with the no-op tracer: the task's spans are then not started at all
	// (the no-op tracer still costs their options and attributes, about 13 allocations a task).
	tracing bool

	// poolMu orders the queue's pool updates (PoolChanged and the restart's syncPools).
	poolMu sync.Mutex
	// placeMu guards placing: per pool, the tasks placed on it and not yet enqueued (Submit).
	placeMu sync.Mutex
	placing map[string]int

	// mu guards the fields below. Admission enqueues under it, so that the journal records
	// admissions in the order the queue took them (lock order: mu, then a task's mu or the
	// queue's own lock).
	mu      sync.Mutex
	requeue []*Task // recovered tasks that were queued, in admission order
	tasks   map[string]*Task
	// admitting holds the ids of the tasks whose first post Submit is admitting: a concurrent
	// post of the same id waits for it to end (the channel, made by the first that waits, is
	// closed then) and is answered from the task it made, or admits it itself if it was refused.
	admitting map[string]chan struct{}
	finished  []finishedRef // in finish order, for retention
	seq       uint64        // admissions, for the replica scorer's tie-break
	closing   bool
	halted    bool // the shutdown grace is over: dispatched tasks stay queued (journal only)

	runCtx context.Context
	// early is the base of tasks submitted before Run set runCtx; Run ends it with its ctx.
	early     context.Context
	earlyStop context.CancelFunc
	wg        sync.WaitGroup // runner goroutines
}

type finishedRef struct {
	id string
	at time.Time
}

// New builds a Service, or fails on invalid queue options (capacity, policy, max batch wait).
// Call Run before Submit.
func New(opts Options) (*Service, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.Tracer == nil {
		opts.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if opts.Code == nil {
		opts.Code = Class.String
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
	s := &Service{opts: opts, log: opts.Logger, m: opts.Metrics, now: opts.Clock.Now, j: opts.Journal,
		tasks: map[string]*Task{}, admitting: map[string]chan struct{}{}, placing: map[string]int{}}
	s.early, s.earlyStop = context.WithCancel(context.Background())
	s.runCtx = s.early
	_, off := opts.Tracer.(noop.Tracer)
	s.tracing = !off
	var outcomes [admission.NumOutcomes]prometheus.Counter
	for o := range outcomes {
		outcomes[o] = opts.Metrics.AdmissionOutcomes.WithLabelValues(admission.Outcome(o).String())
	}
	q, err := admission.New(admission.Options{
		Capacity: opts.Capacity, Policy: opts.Policy, Now: opts.Clock.Now, MaxBatchWait: opts.MaxBatchWait,
		Observe: func(o admission.Outcome, _ *admission.Item) { outcomes[o].Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("task service: %w", err)
	}
	s.queue = q
	return s, nil
}

// Run runs the retention janitor until ctx is done. Task goroutines (queue waits and runs)
// derive from ctx: when it ends, running tasks are cancelled, and queued ones end (failed, or
// left queued in the journal for the next start). Run returns once they all have.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	// A task submitted before this point runs under s.early: it ends with ctx too (without it,
	// such a task outlived Run, and Run waited for it forever).
	defer context.AfterFunc(ctx, s.earlyStop)()
	s.resume(ctx)
	tick, stop := s.opts.Clock.NewTicker(time.Second)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return nil
		case <-tick:
			s.expire()
		}
	}
}

// SyncPools tells the queue every pool of the registry as it is now. The daemon calls it before
// the pools start: a pool turns ready in the registry before its PoolChanged reaches the queue,
// and a task placed on it in between must be queued there (and dispatched once PoolChanged
// arrives), never refused as bound for an unknown pool.
func (s *Service) SyncPools(context.Context) {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	for _, v := range s.opts.Pools.Views() {
		s.setPoolLocked(v)
	}
}

// PoolChanged updates the queue's view of a pool (slots, dispatchability).
func (s *Service) PoolChanged(_ context.Context, v pool.View) {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	s.setPoolLocked(v)
}

func (s *Service) setPoolLocked(v pool.View) {
	if err := s.queue.SetPool(v.ID, admission.PoolConfig{
		Slots: v.SlotsTotal(), Dispatchable: v.Healthy,
		PriorServiceMs: v.PriorServiceMs, PriorTokensPerS: v.PriorTokensPerS,
	}); err != nil {
		s.log.Warn("updating the queue's pool", "pool_id", v.ID, "err", err)
	}
}

// Stats returns the queue's statistics. Its pools' Busy is the one count of busy slots.
func (s *Service) Stats(context.Context) (admission.Stats, error) { return s.queue.Stats(), nil }

// Busy is a pool's busy slots and, when perReplica is not nil, fills it with the busy slots
// of each of its replicas, read together from the one count (the queue's).
func (s *Service) Busy(poolID string, perReplica map[string]int) int {
	return s.queue.Busy(poolID, perReplica)
}

// ReplicaBusy is the busy slots of one replica of a pool, from the one count (the queue's):
// the pool registry reads it for its views (pool.Options.ReplicaBusy).
func (s *Service) ReplicaBusy(poolID, replicaID string) int {
	return s.queue.ReplicaBusy(poolID, replicaID)
}

// Depth returns the number of queued tasks.
func (s *Service) Depth() int { return s.queue.Depth() }

func (s *Service) lookup(ctx context.Context, id string) *Task {
	s.mu.Lock()
	t := s.tasks[id]
	s.mu.Unlock()
	if t == nil || s.j == nil {
		return t
	}
	// A task is in the table, for a concurrent post of its id to find, from just before its
	// admission is recorded: it is shown once that is durable, as its 202 is answered (a crash
	// in between would take back a task somebody saw). The wait ends too when the journal
	// fails (the admission is then undone: the task ends refused) or the caller leaves.
	t.mu.Lock()
	seq := t.admitSeq
	t.mu.Unlock()
	if seq != 0 {
		_ = s.j.Wait(ctx, seq)
	}
	return t
}

// Get returns a task's snapshot.
func (s *Service) Get(ctx context.Context, id string) (Snapshot, error) {
	t := s.lookup(ctx, id)
	if t == nil {
		return Snapshot{}, ErrNotFound
	}
	snap := t.snapshot()
	info := &AdmissionInfo{KeyName: snap.Owner, Class: snap.Priority}
	if snap.Status == Queued {
		if pl, ok := t.ticket.Position(); ok {
			pos, pred := pl.Position, pl.PredictedStartMs
			snap.QueuePosition, snap.PredictedStartMs = &pos, &pred
			info.Placement = &pl
			snap.Admission = info
		} else if t.awaitLeft(ctx) {
			// Its ticket had just left the queue (granted a slot, or withdrawn): it is shown
			// as its runner moved it on, not as queued without a place.
			snap = t.snapshot()
		}
	}
	if e := snap.Error; e != nil && snap.Started.IsZero() && (e.Class == ClassEvicted || e.Class == ClassDeadline) {
		c := e.Class
		info.RefusedClass = &c
		snap.Admission = info
	}
	return snap, nil
}

// Task returns a known task, for streaming.
func (s *Service) Task(id string) (*Task, error) {
	return s.task(context.Background(), id)
}

// task is Task for a caller with a context (the wait for the task's admission ends with it).
func (s *Service) task(ctx context.Context, id string) (*Task, error) {
	t := s.lookup(ctx, id)
	if t == nil {
		return nil, ErrNotFound
	}
	t.mu.Lock()
	rejected := t.rejected
	t.mu.Unlock()
	if rejected {
		return nil, ErrNotFound
	}
	return t, nil
}
