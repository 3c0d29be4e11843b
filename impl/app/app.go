// Package app assembles orchestratord from a validated configuration and runs it: stores, pool
// registry (with managed engine processes), the scheduler, the HTTP server with its middleware
// and the generated strict handlers. Tests and other binaries embed it in-process; cmd/
// orchestratord only parses flags and signals.
package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/drivers"
	"github.com/orchestratord/orchestratord/engine/gpu"
	"github.com/orchestratord/orchestratord/engine/process"
	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/artifact"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/connlimit"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/tenant"
	"github.com/orchestratord/orchestratord/openapi"
)

// Options are what New needs besides the configuration.
type Options struct {
	Logger *slog.Logger
	// NewReplica overrides the engine adapter factory (tests use engine/fake). Default: the
	// pool's engine driver (engine/drivers).
	NewReplica func(spec pool.Spec, ep pool.Endpoint) engine.Replica
	// NVML overrides the NVML library (tests use mocks). Default: nvml.New().
	NVML nvml.Interface
	// Registry overrides the Prometheus registry. Default: a new one with Go and process
	// collectors.
	Registry *prometheus.Registry
	// HealthInterval overrides the pools' health poll interval.
	HealthInterval time.Duration
	// TaskClock overrides the task service's clock (tests use tasktest.Clock). Default: the
	// system clock.
	TaskClock task.Clock
	// TracerProvider records the daemon's spans (otelhttp on the server, the tasks' spans).
	// Default: a no-op provider (tracing.Setup decides from the OTEL_* environment).
	TracerProvider trace.TracerProvider
}

// App is an assembled daemon.
type App struct {
	cfg       *config.Config
	log       *slog.Logger
	echo      *echo.Echo
	server    *impl.Server
	handler   http.Handler // echo behind impl.HeadAsGet, under otelhttp
	tasks     *task.Service
	sessions  *session.Store
	pools     *pool.Registry
	gpus      *gpu.Probe
	metrics   *metrics.Metrics
	artifacts *artifact.Store
	ln        net.Listener
	apiKeyLoc string
	keys      *tenant.Ring
	plainKeys []tenant.Key // the generated key or api_keys_file / ORCHD_API_KEYS: kept on reload
	limits    *tenant.Limiter
	budgets   *tenant.Budgets
	journal   *journal.Journal // nil when disabled

	ready chan struct{}
}

// New assembles the daemon from cfg. It creates the state directory and, when no API key is
// configured, generates one into it.
func New(cfg *config.Config, opts Options) (*App, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := checkOwnDir("state dir", cfg.StateDir, "the API key"); err != nil {
		return nil, err
	}
	removeStaleEngineKeys(filepath.Join(cfg.StateDir, engineKeysDir), log)
	if n := process.ReapOrphans(engineMark(cfg.StateDir)); n > 0 {
		log.Warn("killed engine processes left running by an earlier run (kill -9 or a crash of the daemon)", "processes", n)
	}
	a := &App{cfg: cfg, log: log, ready: make(chan struct{})}
	var plain []tenant.Key
	for _, k := range cfg.APIKeys {
		plain = append(plain, tenant.PlainKey(k))
	}
	switch {
	case len(cfg.APIKeys) == 0 && len(cfg.Keys) == 0:
		k, path, err := generatedKey(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		plain = []tenant.Key{tenant.PlainKey(k)}
		a.apiKeyLoc = path
		log.Info("no API key configured: using the generated key", "path", path, "fingerprint", Fingerprint(k))
	case len(cfg.APIKeys) > 0:
		fps := make([]string, len(cfg.APIKeys))
		for i, k := range cfg.APIKeys {
			fps[i] = Fingerprint(k)
		}
		log.Info("API keys configured", "count", len(cfg.APIKeys), "fingerprints", strings.Join(fps, ","))
	}
	if len(cfg.Keys) > 0 {
		log.Info("keys file loaded", "path", cfg.KeysFile, "names", strings.Join(keyNames(cfg.Keys), ","))
	}
	a.plainKeys = plain
	a.keys = tenant.NewRing(append(slices.Clone(plain), cfg.Keys...))
	a.limits = tenant.NewLimiter(nil)
	budgets, err := tenant.OpenBudgets(filepath.Join(cfg.StateDir, "budgets.json"))
	if err != nil {
		return nil, err
	}
	a.budgets = budgets

	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	a.metrics = metrics.New(reg)

	ss, err := session.New(session.Options{TTL: cfg.Sessions.TTL.D(), MaxTurns: cfg.Sessions.MaxTurns,
		MaxSessions: cfg.Sessions.MaxSessions, TokenBudget: cfg.Sessions.TokenBudget, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	a.sessions = ss
	arts, err := artifact.Open(filepath.Join(cfg.StateDir, "artifacts"), artifact.Options{MaxBytes: cfg.Artifacts.MaxBytes,
		MaxTotalBytes: cfg.Artifacts.MaxTotalBytes, MaxCount: cfg.Artifacts.MaxCount, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	a.artifacts = arts
	lib := opts.NVML
	if lib == nil {
		lib = nvml.New()
	}
	a.gpus = gpu.New(lib, log)

	engines := drivers.Registry()
	newReplica := opts.NewReplica
	if newReplica == nil {
		newReplica = func(spec pool.Spec, ep pool.Endpoint) engine.Replica {
			d, ok := engines.Lookup(spec.Engine)
			if !ok { // config validation rules this out
				return unregistered{engine: spec.Engine}
			}
			return d.New(engine.ReplicaOptions{BaseURL: ep.URL, APIKey: ep.APIKey, ModelRef: spec.ModelRef, ModelID: spec.ModelID,
				EngineOptions: spec.EngineOptions, Logger: log, Slots: spec.Slots})
		}
	}
	var specs []pool.Spec
	for _, p := range cfg.Pools {
		s := pool.Spec{ID: p.ID, Engine: p.Engine, ModelRef: p.ModelRef, ModelID: p.ModelID, ModelIDDerived: p.ModelIDDerived, CtxMax: p.CtxMax,
			Slots: p.Slots, KVBytesPerToken: p.KVBytesPerToken, PriorServiceMs: p.PriorServiceMs,
			PriorTokensPerS: p.PriorTokensPerS, Workloads: p.Workloads, EngineOptions: p.EngineOptions,
			MigrateOnFailure: p.MigrateOnFailureOrDefault()}
		s.BreakerFaults, s.BreakerCooldown = p.Breaker.Settings()
		for _, ri := range p.Instances() {
			s.Replicas = append(s.Replicas, pool.ReplicaSpec{ID: ri.ID, URL: ri.URL, Managed: ri.Managed != nil,
				Devices: ri.Devices, Source: ri.Source})
		}
		specs = append(specs, s)
	}
	policy, err := admission.ParsePolicy(cfg.Admission.Policy)
	if err != nil {
		return nil, err
	}
	var svc *task.Service
	a.pools, err = pool.New(pool.Options{
		Pools: specs, NewReplica: newReplica, StartManaged: a.startManaged, HealthInterval: opts.HealthInterval,
		ReloadGrace: cfg.ReloadGrace.D(), // (tests without config.Load: 0, the registry's default)
		OnChange: func(v pool.View) {
			a.metrics.PoolReady.WithLabelValues(v.ID).Set(b2f(v.Ready()))
			svc.PoolChanged(context.Background(), v)
			log.Info("pool state", "pool_id", v.ID, "live", v.Live, "ready", v.Ready(), "draining", v.Draining,
				"model_ref", v.ModelRef, "engine_version", v.EngineVersion, "last_error", v.LastError)
		},
		// Busy slots have one owner, the task service's admission queue; views read it there.
		ReplicaBusy:     func(poolID, replicaID string) int { return svc.ReplicaBusy(poolID, replicaID) },
		OnDrainDeadline: func(id string) { svc.PoolDrained(context.Background(), id) },
		OnReplicaDrainDeadline: func(poolID, replicaID string) {
			svc.ReplicaDrained(context.Background(), poolID, replicaID)
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	topts := task.Options{
		Capacity: cfg.Admission.Capacity, Policy: policy, MaxBatchWait: cfg.Admission.MaxBatchWait.D(), Pools: a.pools, Sessions: ss, Metrics: a.metrics,
		Logger: log, Retention: cfg.Tasks.Retention.D(), MaxRetained: cfg.Tasks.MaxRetained,
		CancelOnDisconnect: cfg.Stream.CancelOnDisconnectOrDefault(), Code: impl.FailureCode,
		Clock: opts.TaskClock, GPUs: a.gpus, Tracer: tp.Tracer("github.com/orchestratord/orchestratord/impl/task"),
		Meter: meter{limits: a.limits, budgets: a.budgets, log: log},
	}
	for _, w := range cfg.Warnings() {
		log.Warn("deprecated configuration", "warning", w)
	}
	if cfg.Journal.EnabledOrDefault() {
		dir := cfg.Journal.Dir
		mode, perr := journal.ParseSync(cfg.Journal.Sync)
		if perr != nil {
			return nil, perr
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("journal dir: %w", err)
		}
		if err := checkOwnDir("journal dir", dir, "the tasks a restart runs again"); err != nil {
			return nil, err
		}
		a.journal, err = journal.Open(journal.Options{Dir: dir, Sync: mode, Logger: log,
			MaxUnsynced: cfg.Journal.MaxUnsynced.D(), MaxUnsyncedBytes: cfg.Journal.MaxUnsyncedBytes,
			OnCompaction: compactionMetrics(a.metrics), OnFailure: func(error) { a.metrics.JournalFailed.Set(1) }})
		if err != nil {
			return nil, err
		}
		topts.Journal = a.journal
		// A task's charge is kept in the budget file until its final record is on disk.
		jr := a.journal
		a.budgets.TrackDurable(jr.OnDisk)
		log.Info("journal open", "dir", dir, "sync", mode.String(), "max_unsynced", cfg.Journal.MaxUnsynced.D())
	}
	if svc, err = task.New(topts); err != nil {
		return nil, err
	}
	if err := svc.Recover(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	a.tasks = svc
	for _, p := range cfg.Pools {
		a.metrics.ModelState.WithLabelValues(p.ModelID, "Active").Set(1)
		a.metrics.PoolReady.WithLabelValues(p.ID).Set(0)
	}

	spec, err := api.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("embedded spec: %w", err)
	}
	specJSON, err := openapi.JSON()
	if err != nil {
		return nil, err
	}
	spec.Servers = nil
	srv := impl.NewServer(impl.Options{
		Tasks: svc, Sessions: ss, Artifacts: arts, Pools: a.pools, GPUs: a.gpus, Metrics: a.metrics,
		Gatherer: reg, Logger: log, Heartbeat: cfg.Stream.Heartbeat.D(), StreamWriteTimeout: cfg.Stream.WriteTimeout.D(),
		NetHTTPStreams: !cfg.Stream.HijackOrDefault(),
		SpecJSON:       specJSON, BeforeScrape: a.refreshGauges, Models: cfg, Engines: engines, Limits: a.limits, Budgets: a.budgets,
		Streams: tenant.NewStreams(func(name string, open int) { a.metrics.TenantStreams.WithLabelValues(name).Set(float64(open)) }),
		Tracer:  tp.Tracer("github.com/orchestratord/orchestratord/impl"),
	})
	auth, err := impl.Auth(spec, a.keys, a.limits, impl.OptionalAuth(cfg.Auth.MetricsPublicOrDefault()))
	if err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = impl.HTTPErrorHandler(log)
	e.JSONSerializer = impl.JSONSerializer{} // task bodies the validator's fast check passed: decoded by hand
	// Nothing reads a body before Auth has accepted the request; BodyDeadline bounds the read
	// that follows, and closes the connection of an error answered with the body unread.
	// The chain is applied to each route once (impl.Routes), not per request.
	routes := impl.NewRoutes(e, impl.Correlation(), impl.WriteDeadline(cfg.Stream.WriteTimeout.D()), impl.Recover(log),
		impl.BodyDeadline(cfg.BodyLimitBytes, cfg.Server.BodyReadTimeout.D(), cfg.Server.BodyMinBytesPerSecond),
		impl.BodyLimit(cfg.BodyLimitBytes), auth, impl.JSONBody(), impl.Validator(spec))
	api.RegisterHandlers(routes, api.NewStrictHandler(srv, nil))
	a.echo = e
	a.server = srv
	// HEAD is served as GET (impl.HeadAsGet). The server span of every request; Correlation
	// names it after the route. W3C trace context and baggage from the client make it a child
	// of the caller's span.
	// With tracing off, impl.TraceContext does what otelhttp would (the client's trace context
	// into the request's) without otelhttp's span and response wrapper: ~10 allocations and a
	// few microseconds per request.
	a.handler = impl.TraceContext(impl.HeadAsGet(e))
	if _, off := tp.(tracenoop.TracerProvider); !off {
		a.handler = otelhttp.NewHandler(impl.HeadAsGet(e), "http.server", otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
			otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()))
	}
	return a, nil
}

// ReloadKeys reads the keys file again and swaps the key set (SIGHUP). Requests in flight and
// open streams keep the key they were admitted with; a file that does not parse leaves the
// current keys in place.
func (a *App) ReloadKeys() error {
	if a.cfg.KeysFile == "" {
		return nil
	}
	keys, err := tenant.ParseFile(a.cfg.KeysFile)
	if err != nil {
		a.log.Error("keys file not reloaded: keeping the current keys", "path", a.cfg.KeysFile, "err", err)
		return err
	}
	a.keys.Replace(append(slices.Clone(a.plainKeys), keys...))
	a.log.Info("keys file reloaded", "path", a.cfg.KeysFile, "names", strings.Join(keyNames(keys), ","))
	return nil
}

// meter settles a finished task with the rate limits and the budgets.
type meter struct {
	limits  *tenant.Limiter
	budgets *tenant.Budgets
	log     *slog.Logger
}

func (m meter) Settle(owner, taskID string, mark uint64, reserved, granted, used int) {
	m.limits.Settle(owner, reserved, used)
	if mark == task.MarkPending {
		mark = tenant.PendingMark
	}
	if err := m.budgets.SettleTask(owner, taskID, mark, granted, used); err != nil {
		m.log.Error("token budget not persisted", "key", owner, "err", err)
	}
}

// Journaled gives the budgets the mark of a settled task's final journal record.
func (m meter) Journaled(taskID string, mark uint64) { m.budgets.Journaled(taskID, mark) }

// Restore takes a recovered task's budget grant again. Its tokens-per-minute reservation is not
// taken again: that bucket is a window of the process, and a restart starts it full.
func (m meter) Restore(owner string, granted int) { m.budgets.Restore(owner, granted) }

// Recovered forgets the tasks the budget file kept from the process before.
func (m meter) Recovered() { m.budgets.Recovered() }

func keyNames(keys []tenant.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Name
	}
	return out
}

// Handler returns the HTTP handler (for httptest servers).
func (a *App) Handler() http.Handler { return a.handler }

// Addr returns the address the daemon listens on, once Run has bound it.
func (a *App) Addr() string {
	<-a.ready
	return a.ln.Addr().String()
}

// APIKeyPath is where the generated key was written ("" when keys are configured).
func (a *App) APIKeyPath() string { return a.apiKeyLoc }

// Run binds the configured address and serves until ctx is done, then shuts down gracefully:
// admission stops, running tasks get shutdown_grace to finish, streams end, managed engines stop.
func (a *App) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		close(a.ready)
		return fmt.Errorf("listen %s: %w", a.cfg.Addr, err)
	}
	return a.Serve(ctx, ln)
}

// Serve is Run on an existing listener. At most server.max_connections of its connections
// are open at once; the others wait in its backlog.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	a.ln = ln
	close(a.ready)
	deferred := deferAccept(ln, a.cfg.Server.ReadHeaderTimeout.D())
	maxConns := a.cfg.Server.MaxConnections
	if maxConns == 0 {
		maxConns = connlimit.DefaultMax()
	}
	ln = connlimit.New(ln, maxConns, a.metrics.ConnectionsOpen, a.metrics.ConnectionsWaited)
	// A hijacked event stream that ends cleanly gives its connection back, to be served again
	// (keep-alive); connections given back already hold their connlimit slot.
	rl := impl.NewReturnListener(ln)
	ln = rl
	a.server.ReturnConnections(rl.Return, a.cfg.Server.IdleTimeout.D())
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	// The journal outlives the task service: the final frames of a shutdown are written too.
	jctx, stopJournal := context.WithCancel(context.WithoutCancel(ctx))
	jdone := make(chan struct{})
	if a.journal != nil {
		go func() { defer close(jdone); _ = a.journal.Run(jctx) }()
	} else {
		close(jdone)
	}
	defer func() { stopJournal(); <-jdone }()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = a.tasks.Run(runCtx) }()
	go func() { defer wg.Done(); _ = a.sessions.Run(runCtx) }()
	// The queue knows every configured pool before any can turn ready (a task placed on a
	// pool must never find it unknown to the queue); later changes follow through OnChange.
	a.tasks.SyncPools(runCtx)
	a.pools.Start(runCtx)

	hs := &http.Server{Handler: a.handler, ReadHeaderTimeout: a.cfg.Server.ReadHeaderTimeout.D(), IdleTimeout: a.cfg.Server.IdleTimeout.D(),
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	a.log.Info("orchestratord listening", "addr", ln.Addr().String(), "max_connections", maxConns, "defer_accept", deferred)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	a.log.Info("shutting down: admission stopped", "grace", a.cfg.ShutdownGrace.D().String())
	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownGrace.D())
	a.tasks.Shutdown(graceCtx)
	cancel()
	// Every task is final now, so every stream has its last frame: let them drain.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	if serr := hs.Shutdown(sctx); serr != nil {
		_ = hs.Close()
	}
	a.server.CloseStreams(sctx) // the streams on hijacked connections, which hs does not see
	cancel()
	stopRun()
	wg.Wait()
	a.pools.Wait()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	if perr := a.pools.Stop(pctx); perr != nil {
		a.log.Warn("stopping managed engines", "err", perr)
	}
	cancel()
	// A worker that left its engine's process group (a new session) outlives the engine's
	// stop; it still carries the engine's mark.
	if n := process.ReapOrphans(engineMark(a.cfg.StateDir)); n > 0 {
		a.log.Warn("killed engine processes that outlived their engine's stop", "processes", n)
	}
	_ = a.gpus.Close()
	a.log.Info("orchestratord stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// refreshGauges sets the gauges that mirror live state, before a scrape.
func (a *App) refreshGauges(ctx context.Context) {
	u := a.artifacts.Usage()
	a.metrics.ArtifactsStored.Set(float64(u.Count))
	a.metrics.ArtifactsBytes.Set(float64(u.Bytes))
	st, err := a.tasks.Stats(ctx)
	views := a.pools.Views()
	var inv gpu.Inventory
	if len(views) > 0 {
		inv = a.gpus.Snapshot(ctx)
	}
	a.metrics.SetEngineConns(engineConns(views, a.pools.EngineConns()))
	for _, v := range views {
		a.metrics.PoolReady.WithLabelValues(v.ID).Set(b2f(v.Ready()))
		if err != nil {
			continue
		}
		ps := st.Pools[v.ID]
		// These gauges mirror the pool as it is now: one series per pool (and priority,
		// replica, device), under the engine version it reports now. A series left under an
		// earlier version ("" before the first health check, the old engine after a reload)
		// would stay beside the real one with its last value.
		forgetOtherVersions(v.ID, v.EngineVersion, a.metrics.QueueDepth, a.metrics.KVCacheUsage,
			a.metrics.GPUUtilization, a.metrics.VRAMUsed)
		a.metrics.QueueDepth.WithLabelValues(v.Engine, v.EngineVersion, v.ID, "interactive").Set(float64(ps.QueuedInteractive))
		a.metrics.QueueDepth.WithLabelValues(v.Engine, v.EngineVersion, v.ID, "batch").Set(float64(ps.QueuedBatch))
		a.metrics.ActiveLeases.WithLabelValues(v.ID).Set(float64(ps.Busy))
		for _, r := range v.Replicas {
			a.metrics.ReplicaReady.WithLabelValues(v.ID, r.ID).Set(b2f(r.Ready() && r.Breaker != placement.BreakerOpen))
			a.metrics.ReplicaBreaker.WithLabelValues(v.ID, r.ID).Set(float64(r.Breaker))
		}
		for _, r := range v.Replicas {
			switch {
			case r.HasEngineLoad && r.EngineLoad.KVUsage >= 0:
				// The engine's own figure, from its driver's load probe (e.g. vllm:kv_cache_usage_perc).
				a.metrics.KVCacheUsage.WithLabelValues(v.Engine, v.EngineVersion, v.ID, r.ID).Set(r.EngineLoad.KVUsage)
			case r.Slots > 0:
				a.metrics.KVCacheUsage.WithLabelValues(v.Engine, v.EngineVersion, v.ID, r.ID).Set(float64(r.Busy) / float64(r.Slots))
			}
			if !inv.Available {
				// NVML failed since the last scrape: its figures are unknown now, not the last ones.
				labels := prometheus.Labels{"pool_id": v.ID, "replica_id": r.ID}
				a.metrics.GPUUtilization.DeletePartialMatch(labels)
				a.metrics.VRAMUsed.DeletePartialMatch(labels)
			}
			for _, d := range replicaDevices(r, inv) {
				dev := strconv.Itoa(d.Index)
				a.metrics.GPUUtilization.WithLabelValues(v.Engine, v.EngineVersion, v.ID, r.ID, dev).Set(float64(d.UtilizationPct))
				a.metrics.VRAMUsed.WithLabelValues(v.Engine, v.EngineVersion, v.ID, r.ID, dev).Set(float64(d.MemoryUsed))
			}
		}
	}
}

// engineConns labels each replica's engine connections with its pool's engine and the
// engine version the pool reports now (as the other replica series).
func engineConns(views []pool.View, conns []pool.ReplicaConns) []metrics.EngineConns {
	out := make([]metrics.EngineConns, 0, len(conns))
	for _, c := range conns {
		for _, v := range views {
			if v.ID == c.Pool {
				out = append(out, metrics.EngineConns{Engine: v.Engine, EngineVersion: v.EngineVersion, Pool: c.Pool,
					Replica: c.Replica, ConnStats: c.ConnStats})
				break
			}
		}
	}
	return out
}

// replicaDevices is the part of the inventory a replica runs on: its configured devices, or
// every device when it names none (it sees them all). An external replica is on this host only
// when its URL is a loopback one: another host's replica gets none of this host's devices.
func replicaDevices(r pool.ReplicaView, inv gpu.Inventory) []gpu.Device {
	if !r.Managed && !loopbackURL(r.URL) {
		return nil
	}
	if len(r.Devices) == 0 {
		return inv.Devices
	}
	var out []gpu.Device
	for _, d := range inv.Devices {
		if slices.Contains(r.Devices, d.Index) {
			out = append(out, d)
		}
	}
	return out
}

// forgetOtherVersions deletes pool's series of each gauge whose engine_version is not version.
func forgetOtherVersions(pool, version string, gauges ...*prometheus.GaugeVec) {
	for _, g := range gauges {
		ch := make(chan prometheus.Metric, 16)
		go func() { g.Collect(ch); close(ch) }()
		var stale []prometheus.Labels
		for m := range ch {
			var d dto.Metric
			if m.Write(&d) != nil {
				continue
			}
			ls := prometheus.Labels{}
			for _, lp := range d.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			if ls["pool_id"] == pool && ls["engine_version"] != version {
				stale = append(stale, ls)
			}
		}
		for _, ls := range stale {
			g.Delete(ls)
		}
	}
}

// withheldEnv are the variables of the daemon's environment its engines do not inherit: the
// API keys of its own clients (every one an all-scopes key), which no engine needs.
var withheldEnv = []string{"ORCHD_API_KEYS", "ORCHD_API_KEY"}

// startManaged starts a managed replica for spec serving modelRef and waits for it to be healthy.
// The command line is the pool's engine driver's template (or the configured command); each
// start gets a fresh random API key that only the daemon knows: it reaches the engine through
// the template ({api_key_file}, {api_key}), every request carries it, and the supervisor
// redacts it from what it logs.
func (a *App) startManaged(ctx context.Context, spec pool.Spec, rs pool.ReplicaSpec, modelRef string) (pool.Managed, error) {
	var pc config.Pool
	for _, p := range a.cfg.Pools {
		if p.ID == spec.ID {
			pc = p
		}
	}
	if rs.Source >= len(pc.Replicas) || pc.Replicas[rs.Source].Managed == nil {
		return nil, &pool.StartError{Reason: pool.ReasonStartFailed, Message: fmt.Sprintf("replica %s is not managed", rs.ID)}
	}
	m := pc.Replicas[rs.Source].Managed
	// Replica ids are unique within a pool only (a name may be used by two pools), and a
	// default id is "<pool>/<n>" while a name never holds a dot: the pool's directory and the
	// id with "/" as "." name each replica's files apart.
	fileID := strings.ReplaceAll(rs.ID, "/", ".")
	drv, ok := drivers.Registry().Lookup(spec.Engine)
	if !ok {
		return nil, &pool.StartError{Reason: pool.ReasonStartFailed, Message: fmt.Sprintf("engine %q is not registered", spec.Engine)}
	}
	// "hf:org/name" (checked by config) goes to the engine as a hub name, which it fetches;
	// anything else is a file inside models_dirs.
	modelPath, hub := config.HubModel(modelRef)
	if !hub {
		var err error
		if modelPath, err = a.cfg.ResolveModel(modelRef); err != nil {
			return nil, &pool.StartError{Reason: pool.ReasonModelUnavailable, Message: err.Error()}
		}
	}
	var tmpl engine.ManagedTemplate
	if drv.Managed != nil {
		tmpl = *drv.Managed
	}
	argv := m.Command
	if len(argv) == 0 {
		argv = append(slices.Clone(tmpl.Argv), m.Args...)
	}
	program := a.cfg.Programs[drv.Name]
	isDefault := program == ""
	if isDefault {
		program = tmpl.Program
	}
	// The program (or a custom command's first word) must exist: a missing one fails the pool
	// at once with what to set, instead of a restart loop.
	if len(argv) > 0 && (argv[0] == "{program}" || !strings.Contains(argv[0], "{")) {
		exe, _ := os.Executable()
		wd, _ := os.Getwd()
		name, dflt := argv[0], false
		if name == "{program}" {
			name, dflt = program, isDefault
		}
		p, err := resolveProgram(drv.Name, name, dflt, exe, wd)
		if err != nil {
			a.log.Error("managed replica program missing", "pool_id", spec.ID, "err", err)
			return nil, err
		}
		if argv[0] == "{program}" {
			program = p
		}
	}
	keyDir := filepath.Join(a.cfg.StateDir, engineKeysDir)
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, err
	}
	key, keyFile, err := replicaKey(keyDir, fileID)
	if err != nil {
		return nil, err
	}
	devs := make([]string, len(rs.Devices))
	for i, d := range rs.Devices {
		devs[i] = strconv.Itoa(d)
	}
	devices := strings.Join(devs, ",")
	repl := strings.NewReplacer("{program}", program, "{model}", modelPath, "{model_id}", spec.ModelID,
		"{slots}", strconv.Itoa(spec.Slots), "{ctx_max}", strconv.Itoa(spec.CtxMax),
		"{ctx_total}", strconv.Itoa(spec.CtxMax*spec.Slots), "{devices}", devices,
		"{api_key}", key, "{api_key_file}", keyFile)
	expanded := make([]string, len(argv))
	for i, s := range argv {
		expanded[i] = repl.Replace(s)
	}
	// The mark lets the next start find what this engine leaves running if the daemon dies
	// without stopping it: Pdeathsig ends the engine, not the workers it starts.
	// SPT_NOENV keeps Python's setproctitle (vLLM's and SGLang's process titles) from
	// overwriting the environment area where the mark is read.
	env := []string{engineMark(a.cfg.StateDir), "SPT_NOENV=1"}
	ordered := false // the template or the user set CUDA_DEVICE_ORDER
	for _, e := range append(slices.Clone(tmpl.Env), m.Env...) {
		if devices == "" && strings.Contains(e, "{devices}") {
			continue // no devices configured: leave CUDA_VISIBLE_DEVICES and the like alone
		}
		ordered = ordered || strings.HasPrefix(e, "CUDA_DEVICE_ORDER=")
		env = append(env, repl.Replace(e))
	}
	if devices != "" && !ordered {
		// The devices are NVML's indices, which follow the PCI bus; CUDA numbers devices
		// fastest first unless told otherwise, so on a host with mixed GPUs the same index
		// could name another card.
		env = append(env, "CUDA_DEVICE_ORDER=PCI_BUS_ID")
	}
	logDir := filepath.Join(a.cfg.StateDir, "logs", spec.ID)
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		_ = os.Remove(keyFile)
		return nil, err
	}
	var probe struct { // one health client per replica, following its port
		sync.Mutex
		url string
		r   engine.Replica
	}
	sup, err := process.New(process.Options{
		Argv: expanded, Env: env, Withheld: withheldEnv, StartTimeout: m.StartTimeout.D(), Secrets: []string{key},
		LogFile: filepath.Join(logDir, fileID+".log"), LogMaxBytes: m.LogMaxBytes,
		RestartUnhealthyAfter: m.RestartUnhealthyAfter.D(),
		Health: func(ctx context.Context, baseURL string) (bool, error) {
			probe.Lock()
			defer probe.Unlock()
			if probe.url != baseURL || probe.r == nil {
				probe.url, probe.r = baseURL, drv.New(engine.ReplicaOptions{BaseURL: baseURL, APIKey: key,
					ModelID: spec.ModelID, EngineOptions: spec.EngineOptions})
			}
			h, err := probe.r.Health(ctx)
			return h.Ready, err
		},
		Logger: a.log.With("pool_id", spec.ID, "replica_id", rs.ID),
	})
	if err != nil {
		_ = os.Remove(keyFile)
		a.log.Error("managed replica options", "pool_id", spec.ID, "err", err)
		return nil, &pool.StartError{Reason: pool.ReasonStartFailed, Message: "the engine could not be started (see the daemon log)"}
	}
	a.log.Info("starting managed replica", "pool_id", spec.ID, "replica_id", rs.ID, "engine", drv.Name, "model", modelPath, "argv0", expanded[0],
		"api_key_fingerprint", Fingerprint(key))
	if err := sup.Start(ctx); err != nil {
		_ = os.Remove(keyFile)
		// err carries the engine's output tail, which can echo the model file it was given:
		// it goes to the daemon's log only, and the caller gets a reason and a fixed sentence.
		a.log.Warn("managed replica failed to start", "pool_id", spec.ID, "model", modelPath, "err", err)
		return nil, startFailure(ctx, err)
	}
	return &keyedReplica{Supervisor: sup, key: key, keyFile: keyFile}, nil
}

// startFailure classifies a managed replica's start error into a client-safe StartError.
func startFailure(ctx context.Context, err error) *pool.StartError {
	switch {
	case errors.Is(err, process.ErrExitedEarly):
		return &pool.StartError{Reason: pool.ReasonEngineExited, Message: "the engine exited before it became healthy (see the daemon log)"}
	case errors.Is(err, process.ErrStartTimeout):
		return &pool.StartError{Reason: pool.ReasonHealthGateTimeout, Message: "the engine was not healthy within its start timeout (see the daemon log)"}
	case ctx.Err() != nil:
		return &pool.StartError{Reason: pool.ReasonInterrupted, Message: "the start was canceled"}
	default:
		return &pool.StartError{Reason: pool.ReasonStartFailed, Message: "the engine could not be started (see the daemon log)"}
	}
}

// unregistered stands for a replica of an engine no driver serves (configuration validation
// refuses such pools): it is never ready and fails every generation.
type unregistered struct{ engine string }

func (u unregistered) Generate(context.Context, engine.Request, engine.EmitFunc) (engine.Result, error) {
	return engine.Result{}, engine.Errorf(engine.KindInternal, "engine %q is not registered", u.engine)
}

func (u unregistered) Health(context.Context) (engine.Health, error) {
	return engine.Health{Detail: fmt.Sprintf("engine %q is not registered", u.engine)}, nil
}

// keyedReplica is a supervised engine with its API key; stopping it removes the key file.
type keyedReplica struct {
	*process.Supervisor
	key, keyFile string
}

func (k *keyedReplica) APIKey() string { return k.key }

// Status is the supervisor's view of the replica: it owns the replica's health.
func (k *keyedReplica) Status() pool.ManagedStatus {
	st := k.State()
	ms := pool.ManagedStatus{Ready: st == process.StateRunning, Restarts: k.Restarts(),
		Live: st == process.StateRunning || st == process.StateUnhealthy}
	if st != process.StateRunning {
		// Pool health is shown to clients: the state, never the engine's output (which
		// LastError carries, for the daemon's log).
		ms.LastError = "engine " + st.String()
	}
	return ms
}

func (k *keyedReplica) Stop(ctx context.Context) error {
	err := k.Supervisor.Stop(ctx)
	_ = os.Remove(k.keyFile)
	return err
}

// engineMark is the environment entry every managed engine of the state directory dir gets,
// and passes on to the processes it starts (process.ReapOrphans).
func engineMark(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil { // one mark however the config names it
		dir = resolved
	}
	return "ORCHD_ENGINE_OF=" + dir
}

// engineKeysDir holds the managed replicas' key files, under the state directory.
const engineKeysDir = "engine-keys"

// removeStaleEngineKeys removes the key files an earlier run left when it ended without
// stopping its engines (kill -9, a crash): those engines died with it (Pdeathsig), and their
// keys are secrets nobody needs. The state directory is this daemon's alone
// (cmd/orchestratord locks it), so no running engine's key is among them.
func removeStaleEngineKeys(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // none yet
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".key") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				n++
			}
		}
	}
	if n > 0 {
		log.Info("removed engine key files left by an earlier run", "dir", dir, "files", n)
	}
}

// replicaKey makes a random key and writes it (0600) to a new file in dir.
func replicaKey(dir, poolID string) (key, path string, err error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", "", err
	}
	key = "orchd-engine-" + hex.EncodeToString(buf)
	f, err := os.CreateTemp(dir, poolID+"-*.key")
	if err != nil {
		return "", "", fmt.Errorf("engine key: %w", err)
	}
	_, werr := f.WriteString(key + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return "", "", fmt.Errorf("engine key: %w", err)
	}
	return key, f.Name(), nil
}

// generatedKey returns the key stored in <stateDir>/api-key, creating it (0600) if absent.
func generatedKey(stateDir string) (key, path string, err error) {
	path = filepath.Join(stateDir, "api-key")
	if b, err := os.ReadFile(path); err == nil {
		if k := strings.TrimSpace(string(b)); len(k) >= 16 {
			fi, err := os.Stat(path)
			if err == nil {
				err = checkKeyFile(path, fi)
			}
			if err != nil {
				return "", "", err
			}
			return k, path, nil
		}
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", "", err
	}
	key = "orchd_" + hex.EncodeToString(buf)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write api key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", "", fmt.Errorf("write api key: %w", err)
	}
	return key, path, nil
}

// Fingerprint is the first 6 hex digits of a key's SHA-256: safe to log.
func Fingerprint(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:3])
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// compactionMetrics returns the journal's OnCompaction: it counts compactions by outcome and
// observes how long each one that succeeded held the writers. Both outcomes' series exist
// from start-up.
func compactionMetrics(m *metrics.Metrics) func(journal.Compaction) {
	done, failed := m.JournalCompactions.WithLabelValues("done"), m.JournalCompactions.WithLabelValues("failed")
	return func(c journal.Compaction) {
		if c.Err != nil {
			failed.Inc()
			return
		}
		done.Inc()
		m.JournalCompactionHold.Observe(c.WritersHeld.Seconds())
	}
}

// loopbackURL reports whether raw names this host: localhost or a loopback address.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	return strings.EqualFold(host, "localhost") || (ip != nil && ip.IsLoopback())
}
