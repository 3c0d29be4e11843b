// Package pool is the registry of engine pools: one model on one engine type, served by a
// replica that is either external (a URL) or managed (a process the daemon starts and
// supervises). The registry polls each replica's health, tracks draining and drain deadlines,
// and performs health-gated reloads with rollback.
//
// Concurrency: one mutex guards the registry's pool states; health polling runs in one goroutine
// per pool (started by Run) and never holds the mutex across an engine call. Changes are reported
// through OnChange, called without the mutex held, in the order they happen for a given pool.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/config"
)

// Errors.
var (
	ErrNotFound       = errors.New("pool not found")
	ErrNotReloadable  = errors.New("pool cannot be reloaded")
	ErrReloadFailed   = errors.New("reload failed")
	ErrReloadInFlight = errors.New("a reload of this pool is already in progress")
)

// Reasons a reload fails (ReloadError.Reason), a closed set that clients may match on.
const (
	ReasonNotReloadable     = "not_reloadable"      // the pool's replica is external
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
	ID              string
	Engine          string
	ModelRef        string
	ModelID         string
	CtxMax          int
	Slots           int
	KVBytesPerToken int64
	PriorServiceMs  float64
	PriorTokensPerS float64
	Workloads       []string
	// EngineOptions are the pool's engine-specific settings (config engine_options).
	EngineOptions map[string]string
	// URL of an external replica; empty for a managed one.
	URL string
	// Managed is true when the daemon runs the replica (StartManaged is used).
	Managed bool
}

// View is a snapshot of one pool.
type View struct {
	Spec
	Live          bool // the replica answers
	Healthy       bool // the replica reports ready: queued tasks may be dispatched
	Draining      bool
	DrainDeadline time.Time
	LastError     string
	EngineVersion string
	Busy          int // generations in flight on the replica
	// EngineLoad is the load the engine last reported (its driver's load probe), when
	// HasEngineLoad; refreshed with every successful health check.
	EngineLoad    engine.Load
	HasEngineLoad bool
}

// Ready reports whether new tasks may be placed on the pool.
func (v View) Ready() bool { return v.Healthy && !v.Draining }

// Managed is a running managed replica.
type Managed interface {
	BaseURL() string
	Stop(ctx context.Context) error
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
	StartManaged func(ctx context.Context, spec Spec, modelRef string) (Managed, error)
	// HealthInterval between health polls (default 2s).
	HealthInterval time.Duration
	// HealthTimeout bounds one health call (default 2s).
	HealthTimeout time.Duration
	// UnhealthyAfter is how many consecutive failed health checks take a healthy pool out of
	// service (default 3), so that one slow answer under load does not; one good answer brings
	// it back.
	UnhealthyAfter int
	// ReloadGrace bounds how long a reload waits for the old replica's in-flight tasks before
	// stopping it (default 30s).
	ReloadGrace time.Duration
	// OnChange is called after every change of a pool's view. It must not block.
	OnChange func(View)
	// OnDrainDeadline is called when a drain's deadline passes.
	OnDrainDeadline func(poolID string)
	Logger          *slog.Logger
}

// Registry holds the pools.
type Registry struct {
	opts  Options
	log   *slog.Logger
	mu    sync.Mutex
	pools map[string]*state
	order []string
	wg    sync.WaitGroup
}

type state struct {
	spec          Spec
	replica       *tracked
	replicaURL    string
	managed       Managed
	live, healthy bool
	draining      bool
	drainDeadline time.Time
	drainTimer    *time.Timer
	lastErr       string
	version       string
	reloading     bool
	load          *engine.Load // last load the engine reported; nil when it has no probe or it failed
	failures      int          // consecutive failed health checks
	poke          chan struct{}
}

// tracked counts in-flight generations of a replica.
type tracked struct {
	engine.Replica
	active atomic.Int64
}

func (t *tracked) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	t.active.Add(1)
	defer t.active.Add(-1)
	return t.Replica.Generate(ctx, req, emit)
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
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnChange == nil {
		opts.OnChange = func(View) {}
	}
	if opts.OnDrainDeadline == nil {
		opts.OnDrainDeadline = func(string) {}
	}
	r := &Registry{opts: opts, log: opts.Logger, pools: map[string]*state{}}
	for _, s := range opts.Pools {
		if s.Managed && opts.StartManaged == nil {
			return nil, fmt.Errorf("pool %s: managed replica but no StartManaged", s.ID)
		}
		if _, dup := r.pools[s.ID]; dup {
			return nil, fmt.Errorf("pool %s: duplicate id", s.ID)
		}
		r.pools[s.ID] = &state{spec: s, poke: make(chan struct{}, 1)}
		r.order = append(r.order, s.ID)
	}
	return r, nil
}

// Start starts managed replicas (in parallel, without waiting for them to become healthy) and
// the health pollers; they stop when ctx is done. Call Stop to stop managed replicas.
func (r *Registry) Start(ctx context.Context) {
	for _, id := range r.order {
		st := r.pools[id]
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if st.spec.Managed {
				m := r.startWithRetry(ctx, id, st.spec)
				if m == nil {
					return
				}
				r.mu.Lock()
				if st.managed != nil { // a reload installed a replica meanwhile
					r.mu.Unlock()
					_ = m.Stop(context.WithoutCancel(ctx))
				} else {
					st.managed = m
					st.replicaURL = m.BaseURL()
					st.replica = &tracked{Replica: r.opts.NewReplica(st.spec, endpointOf(m))}
					r.mu.Unlock()
				}
			} else {
				r.mu.Lock()
				st.replica = &tracked{Replica: r.opts.NewReplica(st.spec, Endpoint{URL: st.spec.URL})}
				r.mu.Unlock()
			}
			r.poll(ctx, id)
		}()
	}
}

// startWithRetry starts a pool's managed replica, retrying with exponential backoff (1 s to
// 30 s) until it starts, or fails with a permanent StartError, or ctx ends (then it returns
// nil).
func (r *Registry) startWithRetry(ctx context.Context, id string, spec Spec) Managed {
	backoff := time.Second
	for {
		m, err := r.opts.StartManaged(ctx, spec, spec.ModelRef)
		if err == nil {
			return m
		}
		if ctx.Err() != nil {
			return nil
		}
		msg := "the engine could not be started" // pool health is shown to clients: no engine output
		if se := (*StartError)(nil); errors.As(err, &se) {
			msg = se.Message
			if se.Permanent {
				r.log.Error("managed replica cannot start; not retrying", "pool_id", id, "err", err)
				r.update(id, func(s *state) { s.lastErr = msg })
				return nil
			}
		}
		r.log.Error("managed replica failed to start; retrying", "pool_id", id, "retry_in", backoff.String(), "err", err)
		r.update(id, func(s *state) { s.lastErr = msg })
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

// Stop stops every managed replica.
func (r *Registry) Stop(ctx context.Context) error {
	r.mu.Lock()
	var ms []Managed
	for _, st := range r.pools {
		if st.managed != nil {
			ms = append(ms, st.managed)
			st.managed = nil
		}
		if st.drainTimer != nil {
			st.drainTimer.Stop()
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, m := range ms {
		errs = append(errs, m.Stop(ctx))
	}
	return errors.Join(errs...)
}

func (r *Registry) poll(ctx context.Context, id string) {
	st := r.pools[id]
	t := time.NewTicker(r.opts.HealthInterval)
	defer t.Stop()
	for {
		r.check(ctx, id)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-st.poke:
		}
	}
}

// check polls one pool's replica health once and records the result.
func (r *Registry) check(ctx context.Context, id string) {
	r.mu.Lock()
	st := r.pools[id]
	if st.managed != nil && st.managed.BaseURL() != st.replicaURL {
		// The supervisor restarted the engine on another port: talk to the new one.
		st.replicaURL = st.managed.BaseURL()
		st.replica = &tracked{Replica: r.opts.NewReplica(st.spec, endpointOf(st.managed))}
	}
	rep := st.replica
	needVersion := st.version == ""
	r.mu.Unlock()
	if rep == nil {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, r.opts.HealthTimeout)
	h, err := rep.Health(hctx)
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
	cancel()
	if ctx.Err() != nil {
		return
	}
	r.update(id, func(s *state) {
		if s.replica != rep { // replaced by a reload meanwhile
			return
		}
		if err == nil && h.Ready {
			s.live, s.healthy, s.failures, s.lastErr = true, true, 0, ""
		} else {
			s.failures++
			switch {
			case err != nil:
				s.lastErr = err.Error()
			case h.Detail != "":
				s.lastErr = h.Detail
			case !h.Live:
				s.lastErr = "engine not reachable"
			}
			if !s.healthy || s.failures >= r.opts.UnhealthyAfter {
				s.live, s.healthy = err == nil && h.Live, false
			}
		}
		if version != "" {
			s.version = version
		}
		s.load = load
	})
}

// ReportFailure tells the registry a generation on the pool failed in a way that suggests the
// replica is unwell; its health is re-checked at once.
func (r *Registry) ReportFailure(id string) {
	r.mu.Lock()
	st, ok := r.pools[id]
	r.mu.Unlock()
	if !ok {
		return
	}
	select {
	case st.poke <- struct{}{}:
	default:
	}
}

// update applies f to a pool's state under the lock and reports the new view if it changed.
func (r *Registry) update(id string, f func(*state)) {
	r.mu.Lock()
	st := r.pools[id]
	before := st.view()
	f(st)
	after := st.view()
	r.mu.Unlock()
	if before.Live != after.Live || before.Healthy != after.Healthy || before.Draining != after.Draining ||
		before.LastError != after.LastError || before.EngineVersion != after.EngineVersion ||
		before.ModelRef != after.ModelRef {
		r.opts.OnChange(after)
	}
}

func (s *state) view() View {
	v := View{
		Spec: s.spec, Live: s.live, Healthy: s.healthy, Draining: s.draining,
		DrainDeadline: s.drainDeadline, LastError: s.lastErr, EngineVersion: s.version,
	}
	if s.replica != nil {
		v.Busy = int(s.replica.active.Load())
	}
	if s.load != nil {
		v.EngineLoad, v.HasEngineLoad = *s.load, true
	}
	return v
}

// Views returns every pool, in configuration order.
func (r *Registry) Views() []View {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]View, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, r.pools[id].view())
	}
	return out
}

// Get returns one pool.
func (r *Registry) Get(id string) (View, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[id]
	if !ok {
		return View{}, false
	}
	return st.view(), true
}

// Replica returns the engine replica currently serving the pool.
func (r *Registry) Replica(id string) (engine.Replica, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.pools[id]
	if !ok {
		return nil, ErrNotFound
	}
	if st.replica == nil {
		return nil, engine.Errorf(engine.KindPoolUnavailable, "pool %s has no running replica", id)
	}
	return st.replica, nil
}

// Drain stops placement on the pool; after deadline, OnDrainDeadline fires so that the owner of
// the pool's tasks can cancel what is left. Draining again moves the deadline.
func (r *Registry) Drain(id string, deadline time.Duration) error {
	r.mu.Lock()
	_, ok := r.pools[id]
	r.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	r.update(id, func(s *state) {
		s.draining = true
		s.drainDeadline = time.Now().Add(deadline)
		if s.drainTimer != nil {
			s.drainTimer.Stop()
		}
		s.drainTimer = time.AfterFunc(deadline, func() { r.opts.OnDrainDeadline(id) })
	})
	r.log.Info("pool draining", "pool_id", id, "deadline_ms", deadline.Milliseconds())
	return nil
}

// Reload switches a managed pool to newRef: it starts a new replica beside the old one, waits
// for it to be healthy, switches, then stops the old replica once its in-flight generations end
// (or ReloadGrace passes). On failure the new replica is stopped and the pool is unchanged.
// A successful reload ends a drain.
func (r *Registry) Reload(ctx context.Context, id, newRef string) (View, error) {
	r.mu.Lock()
	st, ok := r.pools[id]
	if !ok {
		r.mu.Unlock()
		return View{}, ErrNotFound
	}
	if !st.spec.Managed {
		v := st.view()
		r.mu.Unlock()
		return v, &ReloadError{Reason: ReasonNotReloadable, Err: ErrNotReloadable,
			Message: fmt.Sprintf("pool %s has an external replica (url); reload it where it runs", id)}
	}
	if st.reloading {
		v := st.view()
		r.mu.Unlock()
		return v, &ReloadError{Reason: ReasonInFlight, Err: ErrReloadInFlight, Message: "retry when it has finished"}
	}
	st.reloading = true
	spec := st.spec
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		st.reloading = false
		r.mu.Unlock()
	}()

	newSpec := spec
	newSpec.ModelRef = newRef
	newSpec.ModelID = config.ModelIDFromRef(newRef)
	m, err := r.opts.StartManaged(ctx, newSpec, newRef)
	if err != nil {
		r.log.Warn("reload rolled back", "pool_id", id, "model_ref", newRef, "err", err)
		re := &ReloadError{Reason: ReasonStartFailed, Message: "the engine could not be started", Err: ErrReloadFailed}
		var se *StartError
		switch {
		case errors.As(err, &se):
			re.Reason, re.Message = se.Reason, se.Message
		case ctx.Err() != nil:
			re.Reason, re.Message = ReasonInterrupted, "the reload was canceled"
		}
		return r.mustView(id), re
	}
	rep := &tracked{Replica: r.opts.NewReplica(newSpec, endpointOf(m))}
	hctx, cancel := context.WithTimeout(ctx, r.opts.HealthTimeout)
	h, herr := rep.Health(hctx)
	version := "" // known at switch-over, not at the next health check
	if v, ok := rep.Replica.(Versioner); ok && herr == nil && h.Ready {
		version, _ = v.Version(hctx)
	}
	cancel()
	if herr != nil || !h.Ready {
		_ = m.Stop(context.WithoutCancel(ctx))
		r.log.Warn("reload rolled back: the new replica is not ready", "pool_id", id, "model_ref", newRef,
			"err", herr, "detail", h.Detail)
		return r.mustView(id), &ReloadError{Reason: ReasonHealthCheckFailed, Err: ErrReloadFailed,
			Message: "the new replica did not report ready"}
	}
	var old *tracked
	var oldManaged Managed
	r.update(id, func(s *state) {
		old, oldManaged = s.replica, s.managed
		s.replica, s.managed, s.replicaURL = rep, m, m.BaseURL()
		s.spec = newSpec
		s.live, s.healthy, s.lastErr, s.version, s.load = true, true, "", version, nil
		s.draining, s.drainDeadline = false, time.Time{}
		if s.drainTimer != nil {
			s.drainTimer.Stop()
			s.drainTimer = nil
		}
	})
	r.log.Info("pool reloaded", "pool_id", id, "model_ref", newRef, "model_id", newSpec.ModelID)
	if oldManaged != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			deadline := time.Now().Add(r.opts.ReloadGrace)
			for old != nil && old.active.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			defer cancel()
			if err := oldManaged.Stop(sctx); err != nil {
				r.log.Warn("stopping the replaced replica", "pool_id", id, "err", err)
			}
		}()
	}
	return r.mustView(id), nil
}

func (r *Registry) mustView(id string) View {
	v, _ := r.Get(id)
	return v
}
