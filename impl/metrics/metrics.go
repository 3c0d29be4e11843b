// Package metrics defines every Prometheus series orchestratord exports, registered on an
// injected prometheus.Registerer. All series of the metrics contract are created up front, so
// `/metrics` shows their `# HELP`/`# TYPE` lines from start-up, before any sample exists.
// Label values are bounded: engine, pool, replica and priority come from configuration, reasons
// and outcomes from closed enums; task ids are never labels.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/httpengine"
)

// Buckets for the latency histograms, in milliseconds.
var (
	FirstTokenBuckets = []float64{5, 10, 25, 50, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000, 300000}
	DecodeBuckets     = []float64{10, 50, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 30000, 60000}
	QueueWaitBuckets  = []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}
	// OverheadBuckets are in seconds: the daemon's own time per task is sub-millisecond when
	// all is well.
	OverheadBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
)

// Metrics holds the collectors.
type Metrics struct {
	TasksEnqueued       *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id, priority
	TasksStarted        *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id, priority
	TasksCanceled       *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id, reason
	TasksRejected       *prometheus.CounterVec   // engine, reason
	TasksFinished       *prometheus.CounterVec   // engine, pool_id, outcome
	QueueDepth          *prometheus.GaugeVec     // engine, engine_version, pool_id, priority
	KVCacheUsage        *prometheus.GaugeVec     // engine, engine_version, pool_id, replica_id
	GPUUtilization      *prometheus.GaugeVec     // engine, engine_version, pool_id, replica_id, device
	VRAMUsed            *prometheus.GaugeVec     // engine, engine_version, pool_id, replica_id, device
	FirstToken          *prometheus.HistogramVec // engine, engine_version, pool_id, priority
	Decode              *prometheus.HistogramVec // engine, engine_version, pool_id, priority
	DecodeTokens        *prometheus.CounterVec   // engine, engine_version, pool_id, priority
	QueueWait           *prometheus.HistogramVec // engine, engine_version, pool_id, priority
	Overhead            *prometheus.HistogramVec // engine, pool_id
	TokensIn            *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id
	TokensOut           *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id
	Backpressure        *prometheus.CounterVec   // engine, policy
	AdmissionOutcomes   *prometheus.CounterVec   // outcome (the admission queue's Outcome enum)
	CatalogVerify       *prometheus.CounterVec   // result, reason, engine
	ModelState          *prometheus.GaugeVec     // model_id, state
	PlacementDecisions  *prometheus.CounterVec   // outcome, pinned, fallback
	PlacementConsidered prometheus.Gauge
	PoolReady           *prometheus.GaugeVec   // pool_id
	ActiveLeases        *prometheus.GaugeVec   // pool_id
	DrainEvents         *prometheus.CounterVec // pool_id, reason
	StreamsOpen         prometheus.Gauge
	SSEDisconnects      prometheus.Counter
	SSEBatches          *prometheus.CounterVec // writer
	ConnectionsOpen     prometheus.Gauge
	ConnectionsWaited   prometheus.Counter
	ArtifactsStored     prometheus.Gauge       // artifacts in the store
	ArtifactsBytes      prometheus.Gauge       // size of their files
	EngineErrors        *prometheus.CounterVec // engine, pool_id, kind, fault
	Placements          *prometheus.CounterVec // pool_id, reason
	Migrations          *prometheus.CounterVec // pool_id
	ReplicaReady        *prometheus.GaugeVec   // pool_id, replica_id
	ReplicaBreaker      *prometheus.GaugeVec   // pool_id, replica_id
	// Per key (its name from the keys file: bounded by the file).
	TenantTokens         *prometheus.CounterVec   // key
	TenantStreams        *prometheus.GaugeVec     // key
	TenantStreamsRefused *prometheus.CounterVec   // key
	TenantQueueWait      *prometheus.HistogramVec // key
	TenantRejections     *prometheus.CounterVec   // key, reason
	// The journal's compactions.
	JournalCompactions    *prometheus.CounterVec // outcome: done, failed
	JournalCompactionHold prometheus.Histogram   // seconds writers waited for a compaction's switch
	JournalFailed         prometheus.Gauge       // 1 once a write or sync failed

	// The engine_connection families: sampled from SetEngineConns' snapshot at each scrape.
	engineConns struct {
		mu    sync.Mutex
		conns []EngineConns // replaced, never written in place
	}

	families []family
}

// EngineConns is one replica's engine connections (the counts its adapter keeps), with the
// labels of its series.
type EngineConns struct {
	Engine, EngineVersion, Pool, Replica string
	engine.ConnStats
}

// SetEngineConns hands over every replica's engine connections before a scrape: the
// engine_connection families show these, and no series of a replica left out (one a reload
// replaced). The adapters keep the counts, so the counters start again from 0 with a new
// replica, as a process's do when it restarts.
func (m *Metrics) SetEngineConns(conns []EngineConns) {
	m.engineConns.mu.Lock()
	m.engineConns.conns = conns
	m.engineConns.mu.Unlock()
}

// sampledVec is a family whose samples are read from SetEngineConns' snapshot when collected.
type sampledVec struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	m     *Metrics
	value func(*EngineConns) float64
}

func (s *sampledVec) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *sampledVec) Collect(ch chan<- prometheus.Metric) {
	s.m.engineConns.mu.Lock()
	conns := s.m.engineConns.conns
	s.m.engineConns.mu.Unlock()
	for i := range conns {
		c := &conns[i]
		ch <- prometheus.MustNewConstMetric(s.desc, s.typ, s.value(c), c.Engine, c.EngineVersion, c.Pool, c.Replica)
	}
}

// family is one row of the table New builds every series from: name, help and labels, and
// the Metrics field that receives the collector (its Go type decides the metric type).
type family struct {
	name    string
	help    string
	labels  []string  // nil for a single series
	buckets []float64 // histograms only
	into    kind
	c       prometheus.Collector // set by New
}

// kind creates a family's collector into its Metrics field; typ is the metric type that
// collector exposes.
type kind struct {
	typ  string
	make func(f family) prometheus.Collector
}

func counterVec(p **prometheus.CounterVec) kind {
	return kind{"counter", func(f family) prometheus.Collector {
		*p = prometheus.NewCounterVec(prometheus.CounterOpts{Name: f.name, Help: f.help}, f.labels)
		return *p
	}}
}

func gaugeVec(p **prometheus.GaugeVec) kind {
	return kind{"gauge", func(f family) prometheus.Collector {
		*p = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: f.name, Help: f.help}, f.labels)
		return *p
	}}
}

func histogramVec(p **prometheus.HistogramVec) kind {
	return kind{"histogram", func(f family) prometheus.Collector {
		*p = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: f.name, Help: f.help, Buckets: f.buckets}, f.labels)
		return *p
	}}
}

func histogram(p *prometheus.Histogram) kind {
	return kind{"histogram", func(f family) prometheus.Collector {
		*p = prometheus.NewHistogram(prometheus.HistogramOpts{Name: f.name, Help: f.help, Buckets: f.buckets})
		return *p
	}}
}

func counter(p *prometheus.Counter) kind {
	return kind{"counter", func(f family) prometheus.Collector {
		*p = prometheus.NewCounter(prometheus.CounterOpts{Name: f.name, Help: f.help})
		return *p
	}}
}

// engineConns is a family of m's engine connection snapshot: typ "counter" or "gauge", each
// replica's value.
func engineConns(m *Metrics, typ string, value func(*EngineConns) float64) kind {
	vt := prometheus.CounterValue
	if typ == "gauge" {
		vt = prometheus.GaugeValue
	}
	return kind{typ, func(f family) prometheus.Collector {
		return &sampledVec{desc: prometheus.NewDesc(f.name, f.help, f.labels, nil), typ: vt, m: m, value: value}
	}}
}

func gauge(p *prometheus.Gauge) kind {
	return kind{"gauge", func(f family) prometheus.Collector {
		*p = prometheus.NewGauge(prometheus.GaugeOpts{Name: f.name, Help: f.help})
		return *p
	}}
}

// table is the one list of every family: New creates and registers its collectors, WriteText
// writes its # HELP/# TYPE lines for families without samples, and the golden test
// (metrics_test.go) covers all of it.
func (m *Metrics) table() []family {
	replica := []string{"engine", "engine_version", "pool_id", "replica_id"}
	with := func(extra ...string) []string { return append(append([]string(nil), replica...), extra...) }
	return []family{
		{name: "tasks_enqueued_total", help: "Tasks admitted into the queue.", labels: with("priority"), into: counterVec(&m.TasksEnqueued)},
		{name: "tasks_started_total", help: "Tasks dispatched to an engine.", labels: with("priority"), into: counterVec(&m.TasksStarted)},
		{name: "tasks_canceled_total", help: "Tasks canceled, by reason (client, disconnect). A drain's or the shutdown's deadline ends a task as failed (POOL_UNAVAILABLE): tasks_finished_total{outcome=\"failed\"}.", labels: with("reason"), into: counterVec(&m.TasksCanceled)},
		{name: "tasks_rejected_total", help: "Tasks refused or evicted, by error code.", labels: []string{"engine", "reason"}, into: counterVec(&m.TasksRejected)},
		{name: "tasks_finished_total", help: "Tasks that reached a final state, by outcome.", labels: []string{"engine", "pool_id", "outcome"}, into: counterVec(&m.TasksFinished)},
		{name: "queue_depth", help: "Queued tasks per pool and priority.", labels: []string{"engine", "engine_version", "pool_id", "priority"}, into: gaugeVec(&m.QueueDepth)},
		{name: "kv_cache_usage_ratio", help: "Busy slots over total slots of a replica (KV cache occupancy proxy).", labels: with(), into: gaugeVec(&m.KVCacheUsage)},
		{name: "gpu_utilization", help: "GPU utilisation in percent (NVML).", labels: with("device"), into: gaugeVec(&m.GPUUtilization)},
		{name: "vram_used_bytes", help: "GPU memory used in bytes (NVML).", labels: with("device"), into: gaugeVec(&m.VRAMUsed)},
		{name: "latency_first_token_ms", help: "Time from admission to the first token with content, in milliseconds.",
			labels: []string{"engine", "engine_version", "pool_id", "priority"}, buckets: FirstTokenBuckets, into: histogramVec(&m.FirstToken)},
		{name: "latency_decode_ms", help: "Decode time of a whole task (first token to last), in milliseconds.",
			labels: []string{"engine", "engine_version", "pool_id", "priority"}, buckets: DecodeBuckets, into: histogramVec(&m.Decode)},
		{name: "decode_tokens_total", help: "Tokens after the first of the tasks latency_decode_ms observes: latency_decode_ms_sum over it is the time per token.",
			labels: []string{"engine", "engine_version", "pool_id", "priority"}, into: counterVec(&m.DecodeTokens)},
		{name: "queue_wait_ms", help: "Time from admission to dispatch onto an engine slot, in milliseconds.",
			labels: []string{"engine", "engine_version", "pool_id", "priority"}, buckets: QueueWaitBuckets, into: histogramVec(&m.QueueWait)},
		{name: "daemon_overhead_seconds", help: "Time a task spent in the daemon itself, excluding its queue wait and the engine's time, in seconds.",
			labels: []string{"engine", "pool_id"}, buckets: OverheadBuckets, into: histogramVec(&m.Overhead)},
		{name: "tokens_in_total", help: "Prompt tokens evaluated by engines.", labels: with(), into: counterVec(&m.TokensIn)},
		{name: "tokens_out_total", help: "Tokens generated and relayed.", labels: with(), into: counterVec(&m.TokensOut)},
		{name: "admission_backpressure_events_total", help: "Admissions refused or evictions made because the queue was full.", labels: []string{"engine", "policy"}, into: counterVec(&m.Backpressure)},
		{name: "admission_outcomes_total", help: "Admission queue events by outcome: admitted, rejected_full, rejected_drop_lru, evicted, canceled, removed, dispatched, expired.",
			labels: []string{"outcome"}, into: counterVec(&m.AdmissionOutcomes)},
		{name: "catalog_verifications_total", help: "Model catalog verifications (no catalog in this build: stays 0).", labels: []string{"result", "reason", "engine"}, into: counterVec(&m.CatalogVerify)},
		{name: "model_state", help: "1 for the state each served model is in.", labels: []string{"model_id", "state"}, into: gaugeVec(&m.ModelState)},
		{name: "placement_decisions_total", help: "Placement decisions by outcome.", labels: []string{"outcome", "pinned", "fallback"}, into: counterVec(&m.PlacementDecisions)},
		{name: "placement_candidates_considered", help: "Pools considered by the last placement decision.", into: gauge(&m.PlacementConsidered)},
		{name: "pool_ready", help: "1 when the pool accepts new tasks.", labels: []string{"pool_id"}, into: gaugeVec(&m.PoolReady)},
		{name: "active_leases", help: "Engine slots in use per pool.", labels: []string{"pool_id"}, into: gaugeVec(&m.ActiveLeases)},
		{name: "drain_events_total", help: "Pool drains, by reason.", labels: []string{"pool_id", "reason"}, into: counterVec(&m.DrainEvents)},
		{name: "sse_streams_open", help: "Open SSE streams.", into: gauge(&m.StreamsOpen)},
		{name: "sse_client_disconnects_total", help: "Streams whose client went away before the task ended.", into: counter(&m.SSEDisconnects)},
		{name: "sse_batches_written_total", help: "Batches of stream frames written to clients, by who wrote them: journal (the journal's goroutine as it showed them, without waiting), drain (the stream's own goroutine) or net_http (a stream that net/http serves).",
			labels: []string{"writer"}, into: counterVec(&m.SSEBatches)},
		{name: "engine_errors_total", help: "Generations that failed in the engine, by kind and by whose fault (request, replica, overload, daemon).",
			labels: []string{"engine", "pool_id", "kind", "fault"}, into: counterVec(&m.EngineErrors)},
		{name: "placements_total", help: "Tasks placed on a replica, by why that replica (pinned, session, prefix, least_loaded, only_choice, retry).",
			labels: []string{"pool_id", "reason"}, into: counterVec(&m.Placements)},
		{name: "task_migrations_total", help: "Tasks moved mid-stream to another replica after theirs failed.", labels: []string{"pool_id"}, into: counterVec(&m.Migrations)},
		{name: "replica_ready", help: "1 when the replica takes tasks.", labels: []string{"pool_id", "replica_id"}, into: gaugeVec(&m.ReplicaReady)},
		{name: "replica_breaker_state", help: "A replica's circuit breaker: 0 closed, 1 open, 2 half-open.", labels: []string{"pool_id", "replica_id"}, into: gaugeVec(&m.ReplicaBreaker)},
		{name: "http_connections_open", help: "Client connections open (at most server.max_connections).", into: gauge(&m.ConnectionsOpen)},
		{name: "http_connections_waited_total", help: "Client connections that waited for a free slot because server.max_connections were open.", into: counter(&m.ConnectionsWaited)},
		{name: "artifacts_stored", help: "Artifacts in the artifact store (limit: artifacts.max_count).", into: gauge(&m.ArtifactsStored)},
		{name: "tenant_tokens_served_total", help: "Tokens generated for each key.", labels: []string{"key"}, into: counterVec(&m.TenantTokens)},
		{name: "tenant_queue_wait_ms", help: "Time each key's tasks waited in the queue before they started, in milliseconds.",
			labels: []string{"key"}, buckets: QueueWaitBuckets, into: histogramVec(&m.TenantQueueWait)},
		{name: "tenant_rejections_total", help: "Task submissions refused, per key and error code.", labels: []string{"key", "reason"}, into: counterVec(&m.TenantRejections)},
		{name: "tenant_streams_open", help: "Responses each key holds open while tasks run: event streams and OpenAI completions (limit: the key's max_streams).",
			labels: []string{"key"}, into: gaugeVec(&m.TenantStreams)},
		{name: "tenant_streams_refused_total", help: "Event streams and OpenAI completions refused because the key held its max_streams open.",
			labels: []string{"key"}, into: counterVec(&m.TenantStreamsRefused)},
		{name: "artifacts_stored_bytes", help: "Bytes of the artifact store's files (limit: artifacts.max_total_bytes).", into: gauge(&m.ArtifactsBytes)},
		{name: "journal_compactions_total", help: "Compactions of the journal's segment that ended, by outcome: done, failed (retried after a back-off).",
			labels: []string{"outcome"}, into: counterVec(&m.JournalCompactions)},
		{name: "journal_compaction_writers_held_seconds", help: "Seconds each journal compaction held the journal's writers to switch segments: every stream's next frame waited that long (the rewrite itself runs beside the writers).",
			buckets: OverheadBuckets, into: histogram(&m.JournalCompactionHold)},
		{name: "journal_failed", help: "1 once the journal could not write or sync its file (a full or failing disk): admissions are refused until the daemon restarts, and what ends after it is not recorded.",
			into: gauge(&m.JournalFailed)},
		{name: "engine_connections_dialed_total", help: "Connections set up to a replica's engine for generations (adapters that keep their engine connections: plain HTTP engines).",
			labels: with(), into: engineConns(m, "counter", func(c *EngineConns) float64 { return float64(c.Dialed) })},
		{name: "engine_connections_reused_total", help: "Generations sent on an engine connection kept from an earlier generation.",
			labels: with(), into: engineConns(m, "counter", func(c *EngineConns) float64 { return float64(c.Reused) })},
		{name: "engine_connection_retries_total", help: "Requests sent again on a new engine connection because a kept one failed before any answer (the engine had closed it).",
			labels: with(), into: engineConns(m, "counter", func(c *EngineConns) float64 { return float64(c.Retried) })},
		{name: "engine_connection_fallbacks_total", help: fmt.Sprintf("Times a replica fell back to one engine connection per generation: its engine closes streamed connections, or ended %d answers in a row late. Keep-alive is tried again after %d generations.", httpengine.SlowEndsBeforeFallback, httpengine.ReprobeAfter),
			labels: with(), into: engineConns(m, "counter", func(c *EngineConns) float64 { return float64(c.Fallbacks) })},
		{name: "engine_answers_ended_late_total", help: fmt.Sprintf("Complete engine answers whose end did not come within %d ms of their final event: their connections were closed, not kept.", httpengine.DrainWait.Milliseconds()),
			labels: with(), into: engineConns(m, "counter", func(c *EngineConns) float64 { return float64(c.LateEnds) })},
		{name: "engine_connections_idle", help: "Engine connections kept now, waiting for a generation (at most the replica's slots).",
			labels: with(), into: engineConns(m, "gauge", func(c *EngineConns) float64 { return float64(c.Idle) })},
		{name: "engine_connections_one_per_generation", help: "1 while the replica gets one engine connection per generation (after a fallback), else 0.",
			labels: with(), into: engineConns(m, "gauge", func(c *EngineConns) float64 { return b2f(c.OnePerGeneration) })},
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// New creates and registers every series of the table on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	fams := m.table()
	cs := make([]prometheus.Collector, 0, len(fams))
	for i := range fams {
		fams[i].c = fams[i].into.make(fams[i])
		cs = append(cs, fams[i].c)
	}
	m.families = fams
	reg.MustRegister(cs...)
	return m
}

// ContentType is the exposition's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteText writes the text exposition of g to w, followed by # HELP/# TYPE lines for every
// declared family that has no sample yet.
func (m *Metrics) WriteText(w io.Writer, g prometheus.Gatherer) error {
	mfs, err := g.Gather()
	if err != nil {
		return fmt.Errorf("gather: %w", err)
	}
	bw := bufio.NewWriter(w)
	enc := expfmt.NewEncoder(bw, expfmt.NewFormat(expfmt.TypeTextPlain))
	seen := make(map[string]bool, len(mfs))
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("encode %s: %w", mf.GetName(), err)
		}
	}
	for _, f := range m.families {
		if !seen[f.name] {
			fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.into.typ)
		}
	}
	return bw.Flush()
}
