// Package pool is the registry of engine pools: one model on one engine type, served by any
// number of replicas, each either external (a URL) or managed (a process the daemon starts and
// supervises). Each replica has its own slots, health, breaker and last error; the registry
// tracks draining and drain deadlines and performs reloads replica by replica, health-gated,
// with rollback.
//
// Ownership: a managed replica's lifecycle belongs to its supervisor (it probes and restarts
// the process; the registry reads its state), an external replica's to its poller here. Busy
// slots are counted once, by the dispatcher (the admission queue, which grants them): the
// registry reads a replica's count through Options.ReplicaBusy and counts nothing itself.
//
// Concurrency: one mutex guards the registry's pool states; polling runs in one goroutine per
// replica (started by Start) and never holds the mutex across an engine call. Changes are
// reported through OnChange, called without the mutex held, in the order they happen for a
// given pool: a change's view that reaches the notifier after a later one's is dropped.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/placement"
)

// Errors.
var (
	ErrNotFound = errors.New("pool not found")
	// ErrReplicaNotFound: the pool exists but has no replica of that id.
	ErrReplicaNotFound = errors.New("replica not found")
	ErrNotReloadable   = errors.New("pool cannot be reloaded")
	ErrReloadFailed    = errors.New("reload failed")
	ErrReloadInFlight  = errors.New("a reload of this pool is already in progress")
)

// Reasons a reload fails (ReloadError.Reason), a closed set that clients may match on.
const (
	ReasonNotReloadable     = "not_reloadable"      // the pool's replicas are external
	ReasonInFlight          = "reload_in_flight"    // another reload of the pool is running
	ReasonModelUnavailable  = "model_unavailable"   // the model file cannot be used
	ReasonStartFailed       = "start_failed"        // the engine process could not be started
	ReasonProgramNotFound   = "program_not_found"   // the engine's program is not installed where configured
	ReasonEngineExited      = "engine_exited"       // the engine exited before it was healthy
	ReasonHealthGateTimeout = "health_gate_timeout" // the engine was not healthy in time
	ReasonHealthCheckFailed = "health_check_failed" // the started replica did not report ready
	ReasonInterrupted       = "interrupted"         // the request or the daemon ended first
)

// StartError is how StartManaged reports a failure: a reason (one of the Reason constants) and
// a message that is safe to show a client. The engine's own output (which can echo the file it
// was given) belongs in the daemon's log, never in a StartError.
type StartError struct {
	Reason  string
	Message string
	// Permanent: starting again cannot help until the configuration changes (a missing
	// program). The pool stays failed with Message and is not retried.
	Permanent bool
}

func (e *StartError) Error() string { return e.Message }

// ReloadError is Reload's failure: a reason and a client-safe message. It wraps the sentinel
// (ErrNotReloadable, ErrReloadInFlight or ErrReloadFailed) for errors.Is.
type ReloadError struct {
	Reason  string
	Message string
	Err     error
}

func (e *ReloadError) Error() string { return e.Err.Error() + ": " + e.Message }
func (e *ReloadError) Unwrap() error { return e.Err }

// Spec is a pool's configuration.
type Spec struct {
	ID       string
	Engine   string
	ModelRef string
	ModelID  string
	// ModelIDDerived: ModelID comes from ModelRef's file name and follows it on reload; a
	// configured id stays, so clients that address the pool by it keep working.
	ModelIDDerived  bool
	CtxMax          int
	Slots           int // per replica
	KVBytesPerToken int64
	PriorServiceMs  float64
	PriorTokensPerS float64
	Workloads       []string
	// EngineOptions are the pool's engine-specific settings (config engine_options).
	EngineOptions map[string]string
	// MigrateOnFailure lets a task whose replica fails mid-stream continue on another.
	MigrateOnFailure bool
	// BreakerFaults and BreakerCooldown override the registry's breaker settings for this
	// pool's replicas (config breaker: {faults, cooldown}); zero keeps Options'.
	BreakerFaults   int
	BreakerCooldown time.Duration
	// Replicas of the pool. Empty: one replica, from URL and Managed below.
	Replicas []ReplicaSpec
	// URL of a single external replica (when Replicas is empty).
	URL string
	// Managed: the single replica is run by the daemon (when Replicas is empty).
	Managed bool
}

// ReplicaSpec is one replica's configuration.
type ReplicaSpec struct {
	ID      string // "<pool>/<n>" or a configured name
	URL     string // external replicas
	Managed bool
	Devices []int
	// Source is the index of the config entry it comes from (a managed entry with count N
	// makes N replicas).
	Source int
}

// replicaSpecs returns the pool's replicas, defaulting to the single URL/Managed one.
func (s Spec) replicaSpecs() []ReplicaSpec {
	if len(s.Replicas) > 0 {
		return s.Replicas
	}
	return []ReplicaSpec{{ID: s.ID + "/0", URL: s.URL, Managed: s.Managed}}
}

// HasManaged reports whether the daemon runs any of the pool's replicas (it can reload them).
func (s Spec) HasManaged() bool {
	for _, r := range s.replicaSpecs() {
		if r.Managed {
			return true
		}
	}
	return false
}

// Replica states (ReplicaView.State).
const (
	StateStarting  = "starting"
	StateReady     = "ready"
	StateDraining  = "draining"
	StateUnhealthy = "unhealthy"
	StateStopped   = "stopped"
)

// ReplicaView is a snapshot of one replica.
type ReplicaView struct {
	ReplicaSpec
	URL           string // where it answers now ("" before a managed one started)
	State         string
	Live, Healthy bool
	Slots         int
	Busy          int // slots held by tasks on it: the dispatcher's count (Options.ReplicaBusy)
	EngineLoad    engine.Load
	HasEngineLoad bool
	EngineVersion string
	LastError     string
	Restarts      int
	Breaker       placement.Breaker
	// ProbeInFlight: a task Acquire let through a half-open breaker as its probe runs; no
	// other task is let through until it ends.
	ProbeInFlight bool
	ModelRef      string
	// Draining: the replica itself is drained (DrainReplica), until ResumeReplica or a
	// reload; no new task is placed on it. A drained pool's replicas show StateDraining
	// without it: they still run the pool's queued tasks. A failed replica shows
	// StateUnhealthy (or StateStopped) whether drained or not.
	Draining      bool
	DrainDeadline time.Time
}

// Ready reports whether tasks may be placed on the replica (its breaker aside).
func (r ReplicaView) Ready() bool { return r.State == StateReady }

// View is a snapshot of one pool.
type View struct {
	Spec
	Live          bool // a replica answers
	Healthy       bool // a replica reports ready: queued tasks may be dispatched
	Draining      bool
	DrainDeadline time.Time
	LastError     string // the most recent replica error ("" when every replica is fine)
	EngineVersion string
	// EngineLoad is the load the engines last reported (summed; KVUsage is the mean), when
	// HasEngineLoad; refreshed with every successful health check.
	EngineLoad    engine.Load
	HasEngineLoad bool
	Replicas      []ReplicaView
}

// Ready reports whether new tasks may be placed on the pool.
func (v View) Ready() bool { return v.Healthy && !v.Draining }

// ReadyReplicas is the number of replicas that take tasks: a half-open one counts, probe in
// flight or not (it is ready; SlotsTotal counts the one slot it offers its probe).
func (v View) ReadyReplicas() int {
	n := 0
	for _, r := range v.Replicas {
		if r.takesTasks() {
			n++
		}
	}
	return n
}

// SlotsTotal is the pool's dispatchable slots, the sum of its replicas' (slotsOffered): the
// per-replica slots of each ready replica; the slots still held by tasks running on replicas
// that take no new task (drained, unhealthy, breaker open, left on another model by a failed
// rollback) and are not stopped; and a half-open replica's busy slots plus the one slot of its
// probe. Those tasks count as busy in the queue until they end, so without them they would
// take up the ready replicas' capacity: a generation that goes on while its replica fails its
// health checks would keep a task queued behind an idle ready replica. Such a replica reports
// each task's end (OnChange), and its slots leave the total one by one.
func (v View) SlotsTotal() int {
	n := 0
	for _, r := range v.Replicas {
		n += r.slotsOffered(v.Slots)
	}
	return n
}

// slotsOffered is the replica's share of SlotsTotal, with slots per replica.
func (r ReplicaView) slotsOffered(slots int) int {
	switch {
	case r.takesTasks() && r.Breaker == placement.BreakerHalfOpen:
		// A half-open breaker lets one task through, its probe, and placement excludes the
		// replica while the probe runs: counted with all its slots, it made the queue grant
		// tasks that no replica could take (they failed POOL_UNAVAILABLE). It offers the
		// slots of the tasks still running on it, and one free slot until its probe is in
		// flight; the probe's slot is then among the busy ones (the dispatcher assigns it
		// right after Acquire), so the total stays as it was until the probe's outcome
		// closes the breaker (all its slots) or opens it again (its busy slots).
		free := 1
		if r.ProbeInFlight {
			free = 0
		}
		return min(r.Busy+free, slots)
	case r.takesTasks():
		return slots
	case r.State != StateStopped:
		return min(r.Busy, slots)
	}
	return 0
}

// takesTasks reports whether new tasks may be placed on the replica (ReadyReplicas counts it):
// a half-open one takes its one probe (slotsOffered).
func (r ReplicaView) takesTasks() bool {
	return r.Healthy && !r.Draining && r.Breaker != placement.BreakerOpen
}

// Managed is a running managed replica.
type Managed interface {
	BaseURL() string
	Stop(ctx context.Context) error
}

// Supervised is implemented by managed replicas whose supervisor owns their health: the
// registry reads it instead of polling the engine's health itself.
type Supervised interface {
	Status() ManagedStatus
}

// ManagedStatus is what a supervisor says of its replica.
type ManagedStatus struct {
	Ready     bool // running and healthy
	Live      bool // a process runs
	LastError string
	Restarts  int
}

// Keyed is implemented by managed replicas started with an API key of their own, which every
// request to them must carry.
type Keyed interface {
	APIKey() string
}

// Endpoint is where a replica answers and how to authenticate to it.
type Endpoint struct {
	URL    string
	APIKey string // "" when the engine needs none
}

// endpointOf is a managed replica's endpoint.
func endpointOf(m Managed) Endpoint {
	ep := Endpoint{URL: m.BaseURL()}
	if k, ok := m.(Keyed); ok {
		ep.APIKey = k.APIKey()
	}
	return ep
}

// Versioner is implemented by replicas that can report their engine's version.
type Versioner interface {
	Version(ctx context.Context) (string, error)
}

// Options configures a Registry.
type Options struct {
	Pools []Spec
	// NewReplica builds the engine adapter for a pool's engine and endpoint.
	NewReplica func(spec Spec, ep Endpoint) engine.Replica
	// StartManaged starts a managed replica serving modelRef and returns once it is healthy (or
	// fails). Required when a pool is managed.
	StartManaged func(ctx context.Context, spec Spec, rep ReplicaSpec, modelRef string) (Managed, error)
	// HealthInterval between health polls (default 2s).
	HealthInterval time.Duration
	// HealthTimeout bounds one health call (default 2s).
	HealthTimeout time.Duration
	// UnhealthyAfter is how many consecutive failed health checks take a healthy replica out
	// of service (default 3), so that one slow answer under load does not; one good answer
	// brings it back.
	UnhealthyAfter int
	// ReloadGrace bounds how long a reload waits for an old replica's in-flight tasks before
	// stopping it (default 30s; the daemon passes its config's reload_grace, 5m by default).
	ReloadGrace time.Duration
	// BreakerFaults consecutive replica faults open a replica's breaker (default 3).
	BreakerFaults int
	// BreakerCooldown is how long an open breaker waits before it lets one probe task
	// through (default 10s).
	BreakerCooldown time.Duration
	// Now is the breaker's clock (default time.Now).
	Now func() time.Time
	// ReplicaBusy reads the busy slots of a replica from their one owner, the dispatcher (the
	// task service's admission queue), for ReplicaView.Busy. It is called with the registry's
	// mutex held: it must not call the registry. Nil: no slot is busy.
	ReplicaBusy func(poolID, replicaID string) int
	// OnChange is called after every change of a pool's view, one call at a time; a view
	// older than one already told is not told, so the last view told is current. It must not
	// block nor call the registry. A task's end on a drained replica, or on one whose breaker
	// is open or half-open, is a change (its slot leaves SlotsTotal).
	OnChange func(View)
	// OnDrainDeadline is called when a drain's deadline passes.
	OnDrainDeadline func(poolID string)
	// OnReplicaDrainDeadline is called when a replica's drain deadline passes (and the
	// replica is still draining), so that the tasks still running on it can be canceled.
	OnReplicaDrainDeadline func(poolID, replicaID string)
	Logger                 *slog.Logger
}

// Registry holds the pools.
type Registry struct {
	opts  Options
	log   *slog.Logger
	mu    sync.Mutex
	pools map[string]*state
	order []string
	wg    sync.WaitGroup
	// runCtx is Start's ctx (under mu): a reload that installs the first engine of a replica
	// whose start gave up polls it under it.
	runCtx context.Context
	// notifyMu orders the OnChange calls: each change of a pool takes the next seq under mu,
	// and a view older than one already delivered is dropped, so that the last view the
	// owner is told is the pool as it is now, whatever order the replicas' pollers end in.
	notifyMu sync.Mutex
}

type state struct {
	seq, told uint64 // changes made (under mu); the latest change told (under notifyMu)
	// last is the view of change seq (under mu): the one the owner is told, or is being. A
	// change is measured against it, not against the view just before the step that made it:
	// a breaker half-opens with time alone, between two steps, and must be told too.
	last          View
	spec          Spec
	reps          []*rstate
	draining      bool
	drainDeadline time.Time
	drainTimer    *time.Timer
	reloading     bool
}

// rstate is one replica's state, guarded by Registry.mu.
type rstate struct {
	spec     ReplicaSpec
	modelRef string
	replica  *tracked
	url      string
	managed  Managed
	started  bool // external, or a managed one whose first start succeeded
	// gaveUp: its first start failed for good (a StartError marked Permanent: no retry), so it
	// is unhealthy, not starting.
	gaveUp  bool
	stopped bool
	polling bool // a poller reads its health (Start's goroutine, or one a reload started)
	// draining: drained by DrainReplica until ResumeReplica or a successful reload; its
	// timer fires OnReplicaDrainDeadline at drainDeadline.
	draining      bool
	drainDeadline time.Time
	drainTimer    *time.Timer
	live          bool
	healthy       bool
	failures      int // consecutive failed health checks
	lastErr       string
	version       string
	restarts      int
	load          *engine.Load
	// breaker
	faults   int
	breaker  placement.Breaker
	openedAt time.Time
	probe    bool
	// epoch counts the breaker's changes (opened, closed, reset with a new engine): a Lease
	// taken before the last one reports on a breaker that is no longer there.
	epoch uint64
	// cooldown fires when an open breaker half-opens, so that the queue is told its probe's
	// slot then, not at the next health poll.
	cooldown *time.Timer
	poke     chan struct{}
}

// tracked is one engine instance of a replica. inflight counts the generations using it
// (Acquire to release) only so that a reload stops a replaced instance once none does; it is
// not a count of busy slots (the dispatcher's, Options.ReplicaBusy) and no view reads it.
type tracked struct {
	engine.Replica
	inflight atomic.Int64
}

// New builds a registry. Nothing is started until Start.
func New(opts Options) (*Registry, error) {
	if opts.NewReplica == nil {
		return nil, errors.New("pool: NewReplica is required")
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 2 * time.Second
	}
	if opts.HealthTimeout <= 0 {
		opts.HealthTimeout = 2 * time.Second
	}
	if opts.UnhealthyAfter <= 0 {
		opts.UnhealthyAfter = 3
	}
	if opts.ReloadGrace <= 0 {
		opts.ReloadGrace = 30 * time.Second
	}
	if opts.BreakerFaults <= 0 {
		opts.BreakerFaults = 3
	}
	if opts.BreakerCooldown <= 0 {
		opts.BreakerCooldown = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnChange == nil {
		opts.OnChange = func(View) {}
	}
	if opts.ReplicaBusy == nil {
		opts.ReplicaBusy = func(string, string) int { return 0 }
	}
	if opts.OnDrainDeadline == nil {
		opts.OnDrainDeadline = func(string) {}
	}
	if opts.OnReplicaDrainDeadline == nil {
		opts.OnReplicaDrainDeadline = func(string, string) {}
	}
	r := &Registry{opts: opts, log: opts.Logger, pools: map[string]*state{}}
	for _, s := range opts.Pools {
		if _, dup := r.pools[s.ID]; dup {
			return nil, fmt.Errorf("pool %s: duplicate id", s.ID)
		}
		st := &state{spec: s}
		seen := map[string]bool{}
		for _, rs := range s.replicaSpecs() {
			if rs.Managed && opts.StartManaged == nil {
				return nil, fmt.Errorf("pool %s: managed replica but no StartManaged", s.ID)
			}
			if seen[rs.ID] {
				return nil, fmt.Errorf("pool %s: duplicate replica id %s", s.ID, rs.ID)
			}
			seen[rs.ID] = true
			st.reps = append(st.reps, &rstate{spec: rs, modelRef: s.ModelRef, poke: make(chan struct{}, 1)})
		}
		r.pools[s.ID] = st
		r.order = append(r.order, s.ID)
	}
	return r, nil
}

// Start starts managed replicas (in parallel, without waiting for them to become healthy) and
// the replicas' pollers; they stop when ctx is done. Call Stop to stop managed replicas.
func (r *Registry) Start(ctx context.Context) {
	r.mu.Lock()
	r.runCtx = ctx
	r.mu.Unlock()
	for _, id := range r.order {
		st := r.pools[id]
		for _, rs := range st.reps {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				if rs.spec.Managed {
					m := r.startWithRetry(ctx, id, st.spec, rs)
					r.mu.Lock()
					switch {
					case m == nil: // gave up, or a reload installed one (and polls it), or Stop ran
						r.mu.Unlock()
						return
					case rs.managed != nil || rs.stopped: // a reload installed one meanwhile, or Stop ran
						r.mu.Unlock()
						_ = m.Stop(context.WithoutCancel(ctx))
						return
					}
					rs.managed, rs.started = m, true
					rs.url = m.BaseURL()
					rs.replica = &tracked{Replica: r.opts.NewReplica(st.spec, endpointOf(m))}
				} else {
					r.mu.Lock()
					rs.url, rs.started = rs.spec.URL, true
					rs.replica = &tracked{Replica: r.opts.NewReplica(st.spec, Endpoint{URL: rs.spec.URL})}
				}
				polled := rs.polling
				rs.polling = true
				r.mu.Unlock()
				if !polled {
					r.poll(ctx, id, rs)
				}
			}()
		}
	}
}

// installedOrStopped reports whether a reload has installed an engine on rs, or Stop ran: a
// first start still retrying has nothing left to do.
func (r *Registry) installedOrStopped(rs *rstate) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return rs.managed != nil || rs.stopped
}

// startWithRetry starts a managed replica, retrying with exponential backoff (1 s to 30 s)
// until it starts or ctx ends (then it returns nil).
func (r *Registry) startWithRetry(ctx context.Context, id string, spec Spec, rs *rstate) Managed {
	backoff := time.Second
	for {
		if r.installedOrStopped(rs) { // its spec's model is no longer the one to start
			return nil
		}
		m, err := r.opts.StartManaged(ctx, spec, rs.spec, spec.ModelRef)
		if err == nil {
			return m
		}
		if ctx.Err() != nil || r.installedOrStopped(rs) {
			return nil // a failure of the model a reload replaced is no news of the replica
		}
		msg := "the engine could not be started" // pool health is shown to clients: no engine output
		if se := (*StartError)(nil); errors.As(err, &se) {
			msg = se.Message
			if se.Permanent {
				r.log.Error("managed replica cannot start; not retrying", "pool_id", id, "replica_id", rs.spec.ID, "err", err)
				r.update(id, func(*state) { rs.lastErr, rs.gaveUp = msg, true })
				return nil
			}
		}
		r.log.Error("managed replica failed to start; retrying", "pool_id", id, "replica_id", rs.spec.ID,
			"retry_in", backoff.String(), "err", err)
		r.update(id, func(*state) { rs.lastErr = msg })
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Wait waits for the pollers started by Start to end (after its ctx is done).
func (r *Registry) Wait() { r.wg.Wait() }

// Stop stops every managed replica, all at once: each gets the engine's stop grace within ctx
// (one after another, the last ones would find ctx's time spent and be killed at once).
func (r *Registry) Stop(ctx context.Context) error {
	r.mu.Lock()
	var ms []Managed
	for _, st := range r.pools {
		for _, rs := range st.reps {
			if rs.managed != nil {
				ms = append(ms, rs.managed)
				rs.managed = nil
			}
			rs.stopped = true
		}
		if st.drainTimer != nil {
			st.drainTimer.Stop()
		}
		for _, rs := range st.reps {
			if rs.drainTimer != nil {
				rs.drainTimer.Stop()
			}
			if rs.cooldown != nil {
				rs.cooldown.Stop()
			}
		}
	}
	r.mu.Unlock()
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.Stop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *Registry) poll(ctx context.Context, id string, rs *rstate) {
	t := time.NewTicker(r.opts.HealthInterval)
	defer t.Stop()
	for {
		r.checkReplica(ctx, id, rs)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-rs.poke:
		}
	}
}

// check polls every replica of a pool once (tests).
func (r *Registry) check(ctx context.Context, id string) {
	for _, rs := range r.pools[id].reps {
		r.checkReplica(ctx, id, rs)
	}
}

// checkReplica reads one replica's health once and records it: a supervised replica's from
// its supervisor, an external one's from the engine. The engine's load is probed either way.
func (r *Registry) checkReplica(ctx context.Context, id string, rs *rstate) {
	r.mu.Lock()
	st := r.pools[id]
	if rs.managed != nil && rs.managed.BaseURL() != rs.url {
		// The supervisor restarted the engine on another port: talk to the new one. Tasks
		// still on the old adapter release it there; their slots stay the replica's.
		rs.url = rs.managed.BaseURL()
		rs.replica = &tracked{Replica: r.opts.NewReplica(st.spec, endpointOf(rs.managed))}
	}
	rep, managed := rs.replica, rs.managed
	needVersion := rs.version == ""
	r.mu.Unlock()
	if rep == nil {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, r.opts.HealthTimeout)
	defer cancel()
	var h engine.Health
	var err error
	restarts := -1
	if sv, ok := managed.(Supervised); ok {
		ms := sv.Status()
		h = engine.Health{Live: ms.Live, Ready: ms.Ready, Detail: ms.LastError}
		restarts = ms.Restarts
	} else {
		h, err = rep.Health(hctx)
	}
	version := ""
	if err == nil && h.Ready && needVersion {
		if v, ok := rep.Replica.(Versioner); ok {
			version, _ = v.Version(hctx)
		}
	}
	var load *engine.Load
	if lp, ok := rep.Replica.(engine.LoadProber); ok && err == nil && h.Ready {
		if l, lerr := lp.Load(hctx); lerr == nil {
			load = &l
		}
	}
	if ctx.Err() != nil {
		return
	}
	r.update(id, func(*state) {
		if rs.replica != rep { // replaced by a reload meanwhile
			return
		}
		if restarts >= 0 {
			rs.restarts = restarts
		}
		if err == nil && h.Ready {
			rs.live, rs.healthy, rs.failures, rs.lastErr = true, true, 0, ""
		} else {
			rs.failures++
			switch {
			case err != nil:
				rs.lastErr = err.Error()
			case h.Detail != "":
				rs.lastErr = h.Detail
			case !h.Live:
				rs.lastErr = "engine not reachable"
			}
			// The supervisor already debounces its own checks: its word is final.
			if (managed != nil && restarts >= 0) || !rs.healthy || rs.failures >= r.opts.UnhealthyAfter {
				rs.live, rs.healthy = err == nil && h.Live, false
			}
		}
		if version != "" {
			rs.version = version
		}
		rs.load = load
	})
}

// A Lease is one generation's use of a replica, as Acquire handed it out: the engine it runs on
// and the breaker's epoch then. ReportFailure and ReportSuccess take it back, and a report on an
// engine since replaced, or on a breaker that changed state since (a task that started before
// the breaker opened, ending after), moves nothing.
type Lease struct {
	Engine engine.Replica
	epoch  uint64
}

// current reports whether l is a lease of rs's engine as it is now: the same engine, the
// breaker in the state l was taken in.
func (l Lease) current(rs *rstate) bool { return rs.replica == l.Engine && rs.epoch == l.epoch }

// Acquire hands out a replica's engine for one generation: the dispatcher calls it once it has
// chosen the replica, then counts the slot there, and calls release when the generation ends,
// after it took the slot off the replica. A draining replica takes nothing new, nor one whose
// breaker is open (opened after the caller's snapshot). A half-open breaker lets this one task
// through as its probe, and refuses any other while the probe is in flight (two tasks placed
// together may both have seen it free). On a replica whose breaker
// is not closed, or that takes no new task, release reports the change: the slot leaves
// SlotsTotal. Acquire itself reports nothing: a probe's start leaves SlotsTotal as it was once
// the slot is counted on the replica (slotsOffered), and a view taken before would count one
// slot less.
func (r *Registry) Acquire(poolID, replicaID string) (lease Lease, release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[poolID]
	if !ok {
		return Lease{}, nil, ErrNotFound
	}
	for _, rs := range st.reps {
		if rs.spec.ID != replicaID {
			continue
		}
		if rs.replica == nil {
			return Lease{}, nil, engine.Errorf(engine.KindPoolUnavailable, "replica %s is not running", replicaID)
		}
		if rs.draining { // drained after the caller's snapshot: its deadline may have passed already
			return Lease{}, nil, engine.Errorf(engine.KindPoolUnavailable, "replica %s is draining", replicaID)
		}
		if offModel(st, rs) { // switched by a reload, or left by a failed one, after the caller's snapshot
			return Lease{}, nil, engine.Errorf(engine.KindPoolUnavailable, "replica %s serves model %s, not the pool's tasks' %s", replicaID, rs.modelRef, st.spec.ModelRef)
		}
		probe := false
		switch r.breakerLocked(st, rs) {
		case placement.BreakerOpen: // opened after the caller's snapshot
			return Lease{}, nil, engine.Errorf(engine.KindPoolUnavailable, "replica %s's breaker is open", replicaID)
		case placement.BreakerHalfOpen:
			if rs.probe { // placed from a view taken before the probe was: one probe at a time
				return Lease{}, nil, engine.Errorf(engine.KindPoolUnavailable, "replica %s is half-open and its probe task is running", replicaID)
			}
			rs.probe, probe = true, true
		}
		t := rs.replica
		t.inflight.Add(1)
		var once sync.Once
		return Lease{Engine: t, epoch: rs.epoch}, func() {
			once.Do(func() {
				t.inflight.Add(-1)
				r.mu.Lock()
				if probe && rs.replica == t { // else a reload replaced the engine it probed
					rs.probe = false
				}
				if !rs.draining && rs.healthy && !offModel(st, rs) && r.breakerLocked(st, rs) == placement.BreakerClosed {
					r.mu.Unlock()
					return // a ready replica: its slots are in SlotsTotal whether busy or not
				}
				// A replica that takes no new task, or a half-open one: its slots count in
				// SlotsTotal while they are busy (slotsOffered), and the dispatcher took this one
				// off the replica before release: report the new total. (update would see no
				// difference: the count changed before it looked.)
				v := r.viewLocked(st)
				st.seq++
				st.last = v
				seq := st.seq
				r.mu.Unlock()
				r.notify(st, seq, v)
			})
		}, nil
	}
	return Lease{}, nil, fmt.Errorf("%w: replica %s", ErrNotFound, replicaID)
}

// rolledBackElsewhere reports whether a reload's rollback failed on rs: it serves another model
// than the pool's, so it takes no task until a reload succeeds (during a reload, mixed models
// are the plan). Its view is not healthy.
func rolledBackElsewhere(st *state, rs *rstate) bool {
	return rs.spec.Managed && !st.reloading && rs.modelRef != st.spec.ModelRef
}

// offModel reports whether rs serves a model the tasks placed on the pool did not ask for
// (rolledBackElsewhere, switchedAhead): it takes no task.
func offModel(st *state, rs *rstate) bool {
	return rolledBackElsewhere(st, rs) || switchedAhead(st, rs)
}

// switchedAhead reports whether a reload in progress has switched rs to a model whose
// model_id is not the pool's yet (the pool's model_id follows its model_ref): the tasks placed
// on the pool asked for its current model_id and must not get another model's text, so rs takes
// no task until the reload ends. With a configured model_id the mixed models are the plan.
func switchedAhead(st *state, rs *rstate) bool {
	return rs.spec.Managed && st.reloading && st.spec.ModelIDDerived && rs.modelRef != st.spec.ModelRef &&
		config.ModelIDFromRef(rs.modelRef) != st.spec.ModelID
}

// breakerLocked is the replica's breaker now: an open one half-opens after the cooldown.
func (r *Registry) breakerLocked(st *state, rs *rstate) placement.Breaker {
	_, cooldown := r.breakerSettings(st.spec)
	if rs.breaker == placement.BreakerOpen && r.opts.Now().Sub(rs.openedAt) >= cooldown {
		return placement.BreakerHalfOpen
	}
	return rs.breaker
}

// breakerSettings are the pool's breaker faults and cooldown, or the registry's defaults.
func (r *Registry) breakerSettings(spec Spec) (faults int, cooldown time.Duration) {
	faults, cooldown = r.opts.BreakerFaults, r.opts.BreakerCooldown
	if spec.BreakerFaults > 0 {
		faults = spec.BreakerFaults
	}
	if spec.BreakerCooldown > 0 {
		cooldown = spec.BreakerCooldown
	}
	return faults, cooldown
}

// ReportFailure tells the registry a generation on a replica failed by the replica's own
// fault (never a task's own 4xx): it counts toward the replica's breaker, and its health is
// re-checked at once. l is what Acquire handed out for the generation: a failure of an engine
// that a reload has since replaced (stopped after the grace) says nothing of the new one, and
// one of a generation that started before the breaker last changed state (it opened, or
// closed after a probe) re-checks the health but counts toward nothing: an open breaker's
// cooldown is not cut short, nor does a half-open one open again but on its probe's failure.
func (r *Registry) ReportFailure(poolID, replicaID string, l Lease) {
	rs := r.replicaState(poolID, replicaID)
	if rs == nil {
		return
	}
	stale := false
	r.update(poolID, func(st *state) {
		if stale = rs.replica != l.Engine; !l.current(rs) {
			return
		}
		rs.faults++
		b := r.breakerLocked(st, rs)
		faults, _ := r.breakerSettings(st.spec)
		if b == placement.BreakerHalfOpen || (b == placement.BreakerClosed && rs.faults >= faults) {
			rs.breaker, rs.openedAt = placement.BreakerOpen, r.opts.Now()
			rs.epoch++
			_, cooldown := r.breakerSettings(st.spec)
			if rs.cooldown != nil {
				rs.cooldown.Stop()
			}
			rs.cooldown = time.AfterFunc(cooldown, func() { r.update(poolID, func(*state) {}) })
			r.log.Warn("replica breaker open", "pool_id", poolID, "replica_id", replicaID, "faults", rs.faults)
		}
	})
	if stale {
		return
	}
	select {
	case rs.poke <- struct{}{}:
	default:
	}
}

// ReportSuccess tells the registry a generation on a replica succeeded: its fault count
// resets and a half-open breaker closes. l is what Acquire handed out, as for ReportFailure: a
// generation that started before the breaker opened closes nothing (only the probe does).
func (r *Registry) ReportSuccess(poolID, replicaID string, l Lease) {
	rs := r.replicaState(poolID, replicaID)
	if rs == nil {
		return
	}
	r.mu.Lock()
	quiet := !l.current(rs) || rs.faults == 0 && rs.breaker == placement.BreakerClosed
	r.mu.Unlock()
	if quiet {
		return
	}
	r.update(poolID, func(*state) {
		if !l.current(rs) {
			return
		}
		if rs.breaker != placement.BreakerClosed {
			rs.epoch++
			r.log.Info("replica breaker closed", "pool_id", poolID, "replica_id", replicaID)
		}
		rs.faults, rs.breaker = 0, placement.BreakerClosed
	})
}

func (r *Registry) replicaState(poolID, replicaID string) *rstate {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[poolID]
	if !ok {
		return nil
	}
	for _, rs := range st.reps {
		if rs.spec.ID == replicaID {
			return rs
		}
	}
	return nil
}

// update applies f to a pool's state under the lock and reports the new view if it changed.
func (r *Registry) update(id string, f func(*state)) {
	r.mu.Lock()
	st := r.pools[id]
	f(st)
	after := r.viewLocked(st)
	if !changed(st.last, after) {
		r.mu.Unlock()
		return
	}
	st.seq++
	st.last = after
	seq := st.seq
	r.mu.Unlock()
	r.notify(st, seq, after)
}

// notify tells OnChange the view of st's change seq, unless a later change was told already.
func (r *Registry) notify(st *state, seq uint64, v View) {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	if seq <= st.told {
		return
	}
	st.told = seq
	r.opts.OnChange(v)
}

func changed(a, b View) bool {
	if a.Live != b.Live || a.Healthy != b.Healthy || a.Draining != b.Draining || a.LastError != b.LastError ||
		a.EngineVersion != b.EngineVersion || a.ModelRef != b.ModelRef || len(a.Replicas) != len(b.Replicas) {
		return true
	}
	for i := range a.Replicas {
		x, y := a.Replicas[i], b.Replicas[i]
		if x.State != y.State || x.Live != y.Live || x.Healthy != y.Healthy || x.Draining != y.Draining || x.Breaker != y.Breaker ||
			x.LastError != y.LastError || x.Restarts != y.Restarts || x.URL != y.URL || x.ModelRef != y.ModelRef {
			return true
		}
	}
	return false
}

func (r *Registry) viewLocked(s *state) View { return r.viewIntoLocked(s, nil) }

// viewIntoLocked is viewLocked with the replicas appended to reps[:0]: a caller that keeps
// reps from one view to the next allocates nothing.
func (r *Registry) viewIntoLocked(s *state, reps []ReplicaView) View {
	if cap(reps) < len(s.reps) {
		reps = make([]ReplicaView, 0, len(s.reps))
	}
	v := View{Spec: s.spec, Draining: s.draining, DrainDeadline: s.drainDeadline, Replicas: reps[:0]}
	kv, nkv := 0.0, 0
	for _, rs := range s.reps {
		rv := ReplicaView{ReplicaSpec: rs.spec, URL: rs.url, Live: rs.live, Healthy: rs.healthy, Slots: s.spec.Slots,
			EngineVersion: rs.version, LastError: rs.lastErr, Restarts: rs.restarts, Breaker: r.breakerLocked(s, rs),
			ProbeInFlight: rs.probe, ModelRef: rs.modelRef, Draining: rs.draining, DrainDeadline: rs.drainDeadline}
		rv.Busy = r.opts.ReplicaBusy(s.spec.ID, rs.spec.ID)
		if rolledBackElsewhere(s, rs) {
			rv.Healthy = false
			rv.LastError = fmt.Sprintf("runs model %s, not the pool's %s: rolling back a failed reload did not succeed; reload the pool", rs.modelRef, s.spec.ModelRef)
		}
		if switchedAhead(s, rs) {
			rv.Healthy = false // starting, as far as the pool's model goes: it serves once the reload ends
		}
		if rs.load != nil {
			rv.EngineLoad, rv.HasEngineLoad = *rs.load, true
		}
		switch {
		case rs.stopped:
			rv.State = StateStopped
		case rv.Healthy:
			rv.State = StateReady
		case (!rs.started && !rs.gaveUp) || (rs.failures == 0 && rs.lastErr == ""):
			rv.State = StateStarting
		default:
			rv.State = StateUnhealthy
		}
		// A drain shows over ready and starting, not over a failure: an operator watching a
		// drain must still see which replica is down (Draining says it is drained).
		if (rs.draining || s.draining) && (rv.State == StateReady || rv.State == StateStarting) {
			rv.State = StateDraining
		}
		v.Live = v.Live || rs.live
		if rv.Healthy && !rs.draining && rv.Breaker != placement.BreakerOpen {
			v.Healthy = true
		}
		if rv.LastError != "" {
			v.LastError = rv.LastError
		}
		if v.EngineVersion == "" {
			v.EngineVersion = rs.version
		}
		if rv.HasEngineLoad {
			v.HasEngineLoad = true
			v.EngineLoad.Running += rv.EngineLoad.Running
			v.EngineLoad.Waiting += rv.EngineLoad.Waiting
			kv += rv.EngineLoad.KVUsage
			nkv++
		}
		v.Replicas = append(v.Replicas, rv)
	}
	if nkv > 0 {
		v.EngineLoad.KVUsage = kv / float64(nkv)
	}
	return v
}

// ReplicaConns is one replica's engine connections.
type ReplicaConns struct {
	Pool, Replica string
	engine.ConnStats
}

// EngineConns returns the engine connections of every replica whose adapter keeps them
// (engine.ConnReporter), in configuration order. The adapters are asked outside r.mu.
func (r *Registry) EngineConns() []ReplicaConns {
	type reporter struct {
		pool, replica string
		cr            engine.ConnReporter
	}
	r.mu.Lock()
	var reps []reporter
	for _, id := range r.order {
		for _, rs := range r.pools[id].reps {
			if rs.replica == nil {
				continue
			}
			if cr, ok := rs.replica.Replica.(engine.ConnReporter); ok {
				reps = append(reps, reporter{id, rs.spec.ID, cr})
			}
		}
	}
	r.mu.Unlock()
	out := make([]ReplicaConns, 0, len(reps))
	for _, x := range reps {
		if s, ok := x.cr.EngineConns(); ok {
			out = append(out, ReplicaConns{Pool: x.pool, Replica: x.replica, ConnStats: s})
		}
	}
	return out
}

// Views returns every pool, in configuration order.
func (r *Registry) Views() []View {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]View, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, r.viewLocked(r.pools[id]))
	}
	return out
}

// ViewsInto is Views written over dst: the views reuse dst's storage and each view's replicas
// the slice that dst held at its index, so that a caller that keeps dst allocates nothing
// (admission places every task on them). The views share that storage: they are the caller's
// until it passes dst to ViewsInto again.
func (r *Registry) ViewsInto(dst []View) []View {
	r.mu.Lock()
	defer r.mu.Unlock()
	dst = dst[:cap(dst)]
	for i, id := range r.order {
		if i == len(dst) {
			dst = append(dst, View{})
		}
		dst[i] = r.viewIntoLocked(r.pools[id], dst[i].Replicas)
	}
	clear(dst[len(r.order):]) // the strings and slices of pools gone since
	return dst[:len(r.order)]
}

// GetInto is Get with the view's replicas written over reps (as ViewsInto).
func (r *Registry) GetInto(id string, reps []ReplicaView) (View, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[id]
	if !ok {
		return View{}, false
	}
	return r.viewIntoLocked(st, reps), true
}

// Get returns one pool.
func (r *Registry) Get(id string) (View, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[id]
	if !ok {
		return View{}, false
	}
	return r.viewLocked(st), true
}

// Drain stops placement on the pool; after deadline, OnDrainDeadline fires (if the pool is still
// draining) so that the owner of the pool's tasks can cancel what is left. Draining again moves
// the deadline; a successful reload ends a drain asked before it began. Either may come just as
// the deadline's timer fires, too late to stop it: the timer then finds its drain ended or
// replaced and does nothing.
func (r *Registry) Drain(id string, deadline time.Duration) error {
	r.mu.Lock()
	_, ok := r.pools[id]
	r.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	r.update(id, func(s *state) {
		s.draining = true
		s.drainDeadline = r.opts.Now().Add(deadline)
		s.drainTimer = r.armDrainTimer(s.drainTimer, deadline,
			func(t *time.Timer) bool { return s.draining && s.drainTimer == t }, // not reloaded, nor drained again since
			func() { r.opts.OnDrainDeadline(id) })
	})
	r.log.Info("pool draining", "pool_id", id, "deadline_ms", deadline.Milliseconds())
	return nil
}

// armDrainTimer stops old (when set) and returns a timer that calls fire after deadline, but only
// if current, asked under r.mu with the new timer, still holds: a Stop can come too late, so a
// timer of a drain that ended (resumed, reloaded) or was replaced (drained again) must not fire.
// Called under r.mu; fire runs without it.
func (r *Registry) armDrainTimer(old *time.Timer, deadline time.Duration, current func(*time.Timer) bool, fire func()) *time.Timer {
	if old != nil {
		old.Stop()
	}
	var timer *time.Timer
	timer = time.AfterFunc(deadline, func() {
		r.mu.Lock()
		ok := current(timer)
		r.mu.Unlock()
		if ok {
			fire()
		}
	})
	return timer
}

// DrainReplica stops placement on one replica of a pool; the others keep serving. After
// deadline, OnReplicaDrainDeadline fires (if the replica is still draining) so that the owner of
// the tasks running on it can cancel what is left. Draining again moves the deadline.
// ResumeReplica, or a successful reload, ends the drain.
func (r *Registry) DrainReplica(poolID, replicaID string, deadline time.Duration) error {
	rs, err := r.replicaOf(poolID, replicaID)
	if err != nil {
		return err
	}
	r.update(poolID, func(*state) {
		rs.draining = true
		rs.drainDeadline = r.opts.Now().Add(deadline)
		rs.drainTimer = r.armDrainTimer(rs.drainTimer, deadline,
			func(t *time.Timer) bool { return rs.draining && rs.drainTimer == t }, // not resumed, nor drained again since
			func() { r.opts.OnReplicaDrainDeadline(poolID, replicaID) })
	})
	r.log.Info("replica draining", "pool_id", poolID, "replica_id", replicaID, "deadline_ms", deadline.Milliseconds())
	return nil
}

// ResumeReplica ends a replica's drain (nothing changes when it is not draining) and returns
// the replica's view.
func (r *Registry) ResumeReplica(poolID, replicaID string) (ReplicaView, error) {
	rs, err := r.replicaOf(poolID, replicaID)
	if err != nil {
		return ReplicaView{}, err
	}
	was := false
	r.update(poolID, func(*state) {
		was = rs.draining
		resumeLocked(rs)
	})
	if was {
		r.log.Info("replica resumed", "pool_id", poolID, "replica_id", replicaID)
	}
	for _, rv := range r.mustView(poolID).Replicas {
		if rv.ID == replicaID {
			return rv, nil
		}
	}
	return ReplicaView{}, fmt.Errorf("%w: %s", ErrReplicaNotFound, replicaID)
}

// resumeLocked ends rs's drain; the caller holds the registry's mutex.
func resumeLocked(rs *rstate) {
	rs.draining, rs.drainDeadline = false, time.Time{}
	if rs.drainTimer != nil {
		rs.drainTimer.Stop()
		rs.drainTimer = nil
	}
}

// replicaOf finds a replica: ErrNotFound for an unknown pool, ErrReplicaNotFound for an
// unknown replica of a known pool.
func (r *Registry) replicaOf(poolID, replicaID string) (*rstate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[poolID]
	if !ok {
		return nil, ErrNotFound
	}
	for _, rs := range st.reps {
		if rs.spec.ID == replicaID {
			return rs, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrReplicaNotFound, replicaID)
}

// Reload switches a managed pool to newRef replica by replica: for each, it starts a new
// replica beside the old one, waits for it to be healthy, switches, then stops the old one
// once its in-flight generations end (or ReloadGrace passes), so that the others serve
// throughout. When one replica fails its start or health gate, the new one is stopped, the
// replicas already switched are switched back the same way, and the pool keeps its model.
// A successful reload ends a drain.
func (r *Registry) Reload(ctx context.Context, id, newRef string) (View, error) {
	r.mu.Lock()
	st, ok := r.pools[id]
	if !ok {
		r.mu.Unlock()
		return View{}, ErrNotFound
	}
	// Any external replica makes the pool not reloadable (the contract: "A pool with external
	// (URL) replicas cannot be reloaded by the daemon"): reloading only the managed ones would
	// leave the external ones ready on the old model, taking tasks for the new one.
	if slices.ContainsFunc(st.reps, func(rs *rstate) bool { return !rs.spec.Managed }) {
		v := r.viewLocked(st)
		r.mu.Unlock()
		return v, &ReloadError{Reason: ReasonNotReloadable, Err: ErrNotReloadable,
			Message: fmt.Sprintf("pool %s has external replicas (url); reload them where they run", id)}
	}
	if st.reloading {
		v := r.viewLocked(st)
		r.mu.Unlock()
		return v, &ReloadError{Reason: ReasonInFlight, Err: ErrReloadInFlight, Message: "retry when it has finished"}
	}
	st.reloading = true
	spec := st.spec
	reps := slices.Clone(st.reps)
	// The drains a successful reload ends are those asked before it began: each drain arms its
	// own timer, so one asked meanwhile (another timer, or one where there was none) stays.
	poolDrain := st.drainTimer
	repDrains := make(map[*rstate]*time.Timer, len(reps))
	for _, rs := range reps {
		repDrains[rs] = rs.drainTimer
	}
	r.mu.Unlock()
	// The reload ends through update, so OnChange hears a replica that a failed rollback left
	// on the new model turn unready; a failed reload ends it before taking the view it returns.
	end := sync.OnceFunc(func() { r.update(id, func(s *state) { s.reloading = false }) })
	defer end()

	newSpec := spec
	newSpec.ModelRef = newRef
	if spec.ModelIDDerived {
		newSpec.ModelID = config.ModelIDFromRef(newRef)
	}
	var switched []*rstate
	for _, rs := range reps {
		if !rs.spec.Managed {
			continue
		}
		if err := r.replace(ctx, id, newSpec, rs); err != nil {
			r.log.Warn("reload rolled back", "pool_id", id, "replica_id", rs.spec.ID, "model_ref", newRef, "err", err)
			for _, back := range switched {
				if berr := r.replace(context.WithoutCancel(ctx), id, spec, back); berr != nil {
					r.log.Error("rolling a replica back failed", "pool_id", id, "replica_id", back.spec.ID, "err", berr)
				}
			}
			end()
			return r.mustView(id), err
		}
		switched = append(switched, rs)
	}
	r.update(id, func(s *state) {
		s.spec = newSpec
		if s.drainTimer == poolDrain {
			s.draining, s.drainDeadline = false, time.Time{}
			if s.drainTimer != nil {
				s.drainTimer.Stop()
				s.drainTimer = nil
			}
		}
		for _, rs := range s.reps {
			if rs.drainTimer == repDrains[rs] {
				resumeLocked(rs)
			}
		}
	})
	r.log.Info("pool reloaded", "pool_id", id, "model_ref", newRef, "model_id", newSpec.ModelID, "replicas", len(switched))
	return r.mustView(id), nil
}

// replace starts a replica of spec beside rs's current one, health-gates it, switches rs to it
// and stops the old one in the background once its generations end. On failure nothing
// changes and the error is a *ReloadError. A replica that no poller reads yet (its first start
// gave up) gets one, under Start's ctx: it outlives the reload's request.
//
//nolint:contextcheck // that poller's ctx is Start's, not ctx
func (r *Registry) replace(ctx context.Context, id string, spec Spec, rs *rstate) error {
	m, err := r.opts.StartManaged(ctx, spec, rs.spec, spec.ModelRef)
	if err != nil {
		re := &ReloadError{Reason: ReasonStartFailed, Message: "the engine could not be started", Err: ErrReloadFailed}
		var se *StartError
		switch {
		case errors.As(err, &se):
			re.Reason, re.Message = se.Reason, se.Message
		case ctx.Err() != nil:
			re.Reason, re.Message = ReasonInterrupted, "the reload was canceled"
		}
		return re
	}
	rep := &tracked{Replica: r.opts.NewReplica(spec, endpointOf(m))}
	hctx, cancel := context.WithTimeout(ctx, r.opts.HealthTimeout)
	h, herr := rep.Health(hctx)
	version := "" // known at switch-over, not at the next health check
	if v, ok := rep.Replica.(Versioner); ok && herr == nil && h.Ready {
		version, _ = v.Version(hctx)
	}
	cancel()
	if herr != nil || !h.Ready {
		_ = m.Stop(context.WithoutCancel(ctx))
		r.log.Warn("the new replica is not ready", "pool_id", id, "replica_id", rs.spec.ID, "err", herr, "detail", h.Detail)
		return &ReloadError{Reason: ReasonHealthCheckFailed, Err: ErrReloadFailed,
			Message: "the new replica did not report ready"}
	}
	var old *tracked
	var oldManaged Managed
	stopped, poll := false, false
	var runCtx context.Context
	r.update(id, func(*state) {
		if stopped = rs.stopped; stopped { // Stop ran meanwhile: the new engine would outlive the daemon
			return
		}
		if !rs.polling && r.runCtx != nil && r.runCtx.Err() == nil {
			// Its first start gave up (or is still retrying): nothing reads its health yet.
			rs.polling, poll, runCtx = true, true, r.runCtx
		}
		old, oldManaged = rs.replica, rs.managed
		rs.replica, rs.managed, rs.url, rs.started = rep, m, m.BaseURL(), true
		rs.modelRef = spec.ModelRef
		rs.live, rs.healthy, rs.failures, rs.lastErr, rs.version, rs.load = true, true, 0, "", version, nil
		rs.faults, rs.breaker, rs.probe = 0, placement.BreakerClosed, false
		rs.epoch++
	})
	if stopped {
		_ = m.Stop(context.WithoutCancel(ctx))
		return &ReloadError{Reason: ReasonInterrupted, Err: ErrReloadFailed, Message: "the daemon is stopping"}
	}
	if poll {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.poll(runCtx, id, rs)
		}()
	}
	r.log.Info("replica switched", "pool_id", id, "replica_id", rs.spec.ID, "model_ref", spec.ModelRef)
	if oldManaged != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			deadline := time.Now().Add(r.opts.ReloadGrace)
			for old != nil && old.inflight.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			defer cancel()
			if err := oldManaged.Stop(sctx); err != nil {
				r.log.Warn("stopping the replaced replica", "pool_id", id, "replica_id", rs.spec.ID, "err", err)
			}
		}()
	}
	return nil
}

func (r *Registry) mustView(id string) View {
	v, _ := r.Get(id)
	return v
}
